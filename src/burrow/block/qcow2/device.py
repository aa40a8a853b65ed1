"""``Qcow2Device``: a qcow2 image (v2/v3) as a ``BlockDevice``, read and write.

Reads are split in two phases. Under the metadata lock, a guest range is *mapped* to runs
(host data, zeros, backing, compressed); then, outside the lock, each run is one system call:
contiguous clusters coalesce into a single ``preadv`` per host run, so a sequential read of a
freshly converted image costs about one syscall per read request. Several threads may read at
once; freed clusters are not recycled while a read is between its two phases.

Writes hold the lock for the whole request. New clusters are allocated (refcount first), the
data is written, and the L2/L1 updates stay in the cache until ``flush`` writes them back in
crash-safe order (see ``refcount.py`` and ``docs/formats/qcow2.md``).
"""

from __future__ import annotations

import os
import stat
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from typing import NamedTuple

from burrow.block.device import BlockDevice, Extent, ExtentFlags, check_range
from burrow.block.qcow2.backing import open_backing
from burrow.block.qcow2.compressed import compressed_extent, compressed_host_range, inflate
from burrow.block.qcow2.header import (
    AUTOCLEAR_BITMAPS,
    HEADER_V2,
    INCOMPAT_CORRUPT,
    INCOMPAT_DIRTY,
    Snapshot,
    parse_header,
    parse_snapshots,
)
from burrow.block.qcow2.hostfile import HostFile
from burrow.block.qcow2.refcount import Refcounts
from burrow.block.qcow2.tables import (
    L2_BITMAP_ALLOC,
    L2_BITMAP_ZERO_ALL,
    OFFSET_MASK,
    OFLAG_COMPRESSED,
    OFLAG_COPIED,
    OFLAG_ZERO,
    L2Cache,
    L2Table,
    decode_table,
    encode_table,
)
from burrow.errors import CorruptImage, Unsupported

__all__ = ["Qcow2Device", "open_qcow2"]

MAX_SNAPSHOT_L1_BYTES = 64 << 20  # snapshot L1 tables read to open such an image for writing
L2_CACHE_BYTES = 32 << 20  # decoded L2 tables kept (qemu's default covers less)
L2_CACHE_TABLES = 4096  # and at most this many (small clusters: many small tables)
COMPRESSED_CACHE = 8
SMALL_READ = 65536  # requests up to this size are served entirely under the lock
_ZEROS = bytes(1 << 21)  # one largest cluster
# Run kinds produced by the mapper.
DATA, ZERO, BACKING, COMPRESSED, ZERO_ALLOC = 0, 1, 2, 3, 4  # ZERO_ALLOC: zeros, space kept


class Run(NamedTuple):
    kind: int
    offset: int  # guest offset
    length: int
    host: int  # host offset (DATA) or the L2 entry (COMPRESSED)


def open_qcow2(
    path: str, *, readonly: bool = True, allow_probe_backing: bool = False
) -> Qcow2Device:
    """Open a qcow2 image and, when it has one, its backing chain (always read-only)."""
    return Qcow2Device(path, readonly=readonly, allow_probe_backing=allow_probe_backing)


class Qcow2Device(BlockDevice):
    """A qcow2 image. ``statistics()`` reports metadata reads and cache behaviour."""

    can_extents = True
    can_cache = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = True,
        allow_probe_backing: bool = False,
        _visited: frozenset[tuple[int, int]] = frozenset(),
        _depth: int = 0,
    ) -> None:
        self.path = os.fspath(path)
        fd = os.open(self.path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        self.f = HostFile(fd, self.path, readonly)
        self.backing: BlockDevice | None = None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) and not stat.S_ISBLK(st.st_mode):
                raise Unsupported("qcow2 on a non-regular file", self.path)
            self._setup(readonly)
            if self.hdr.backing_file:
                key = (st.st_dev, st.st_ino)
                self.backing = open_backing(
                    self.path,
                    self.hdr,
                    allow_probe=allow_probe_backing,
                    visited=_visited | {key},
                    depth=_depth + 1,
                )
        except BaseException:
            if self.backing is not None:
                self.backing.close()
            self.f.close()
            raise

    # -- opening ------------------------------------------------------------------------------
    def _setup(self, readonly: bool) -> None:
        f = self.f
        first = f.read_upto(HEADER_V2.size, 0)
        if len(first) < HEADER_V2.size:
            raise CorruptImage("qcow2 header", 0, f"file of {len(first)} bytes is too short")
        cluster_bits = int.from_bytes(first[20:24], "big")
        if not 9 <= cluster_bits <= 21:
            raise CorruptImage("qcow2 header", 20, f"cluster_bits {cluster_bits} outside 9..21")
        head = f.read_upto(1 << cluster_bits, 0)
        hdr = self.hdr = parse_header(head, f.size)
        self._cb = hdr.cluster_bits
        self._cs = 1 << self._cb
        self._ext = hdr.extended_l2
        self._l2_entries = hdr.l2_entries
        self._sub = self._cs // 32  # subcluster size (extended L2 only)
        self._size = hdr.size
        self._block_size = 512
        self._readonly = readonly
        self._lock = threading.RLock()
        self._readers = 0
        l1_bytes = f.read_meta(hdr.l1_size * 8, hdr.l1_table_offset, "qcow2 L1 table")
        self._l1 = decode_table(l1_bytes)
        self._l1_dirty: set[int] = set()
        self._l2 = L2Cache(max(16, min(L2_CACHE_TABLES, L2_CACHE_BYTES // self._cs)))
        self._zcache: OrderedDict[int, bytes] = OrderedDict()
        self._stats = {"compressed_reads": 0, "data_syscalls": 0, "clusters_written": 0}
        self.snapshots: list[Snapshot] = []
        if hdr.nb_snapshots:
            self.snapshots = parse_snapshots(hdr, f.read_meta)
        self._meta: set[int] = set()
        self._refs: Refcounts | None = None
        if not readonly:
            self._setup_write()
        self.can_discard = self.can_write_zeroes = not readonly

    def _setup_write(self) -> None:
        hdr = self.hdr
        if hdr.incompatible_features & INCOMPAT_CORRUPT:
            raise Unsupported("corrupt bit", "qemu marked this image corrupt; open it read-only")
        if hdr.has_bitmaps_extension and hdr.autoclear_features & AUTOCLEAR_BITMAPS:
            # A writer without bitmap support must clear the bitmaps bit, which makes qemu
            # drop every bitmap (and report their clusters as leaked): refuse instead.
            raise Unsupported(
                "bitmaps", "writing would invalidate the image's persistent dirty bitmaps"
            )
        meta = self._meta
        meta.add(0)
        first = hdr.l1_table_offset >> self._cb
        meta.update(range(first, first + -(-hdr.l1_size * 8 // self._cs)))
        for i, entry in enumerate(self._l1):
            off = entry & OFFSET_MASK
            if off:
                self._check_l2_offset(i, off)
                if off >> self._cb in meta:
                    raise CorruptImage(
                        "qcow2 L1 table",
                        hdr.l1_table_offset + i * 8,
                        f"L2 table {off:#x} overlaps other metadata or another L2 table",
                    )
                meta.add(off >> self._cb)
        if hdr.nb_snapshots:
            self._track_snapshots()
        self._refs = Refcounts(self.f, hdr, meta)
        if hdr.incompatible_features & INCOMPAT_DIRTY:
            # Lazy refcounts left stale by a crash: rebuild them first, as qemu does.
            from burrow.block.qcow2.repair import rebuild_refcounts

            self._stats["repaired_refcount_blocks"] = rebuild_refcounts(
                self.f, hdr, self._l1, self.snapshots, self._refs
            )
        if hdr.autoclear_features:
            # The spec: a writer that does not maintain these features must clear their bits
            # (for bitmaps, so that qemu knows they are stale).
            hdr.autoclear_features = 0
            self.f.write(bytes(8), HEADER_V2.size + 16)
            self.f.sync()

    def _track_snapshots(self) -> None:
        """Record every cluster the snapshots' tables use, so writes never land there.

        The snapshots' data stays safe through refcounts: a cluster shared with a snapshot
        has a refcount above one and no COPIED flag, so writing to it copies it first.
        """
        hdr, cs, cb = self.hdr, self._cs, self._cb
        meta = self._meta
        first = hdr.snapshots_offset >> cb
        meta.update(range(first, first + -(-hdr.snapshots_size // cs)))
        total = sum(s.l1_size for s in self.snapshots) * 8
        if total > MAX_SNAPSHOT_L1_BYTES:
            raise Unsupported(
                "internal snapshots", f"{total} bytes of snapshot L1 tables are too many to track"
            )
        for snap in self.snapshots:
            if not snap.l1_size:
                continue
            where = snap.l1_table_offset
            if where % cs or where + snap.l1_size * 8 > self.f.size:
                raise CorruptImage("qcow2 snapshot table", where, f"snapshot {snap.id} L1 table")
            meta.update(range(where >> cb, (where >> cb) + -(-snap.l1_size * 8 // cs)))
            l1 = decode_table(self.f.read_meta(snap.l1_size * 8, where, "qcow2 snapshot L1 table"))
            for i, entry in enumerate(l1):
                off = entry & OFFSET_MASK
                if off:
                    if off % cs or off + cs > self.f.size:
                        raise CorruptImage(
                            "qcow2 snapshot L1 table", where + i * 8, f"L2 table {off:#x}"
                        )
                    meta.add(off >> cb)

    def _exclusive(self, host: int) -> bool:
        """True when the host cluster is referenced once (may be written in place).

        Without snapshots the COPIED flag says so; with snapshots burrow double-checks the
        refcount, so a wrong flag can never make it write into a snapshot's data.
        """
        if not self.hdr.nb_snapshots:
            return True
        refs = self._refs
        assert refs is not None
        return refs.get(host >> self._cb) == 1

    # -- L2 lookup ----------------------------------------------------------------------------
    def _check_l2_offset(self, l1i: int, off: int) -> None:
        where = self.hdr.l1_table_offset + l1i * 8
        if off % self._cs:
            raise CorruptImage("qcow2 L1 table", where, f"L2 table offset {off:#x} unaligned")
        if off + self._cs > self.f.size:
            raise CorruptImage(
                "qcow2 L1 table", where, f"L2 table offset {off:#x} is beyond the file"
            )

    def _l2_read(self, l1i: int) -> L2Table | None:
        """The L2 table for L1 index ``l1i`` or None when unallocated. Lock held."""
        off = self._l1[l1i] & OFFSET_MASK
        if not off:
            return None
        tbl = self._l2.get(off)
        if tbl is None:
            self._check_l2_offset(l1i, off)
            tbl = L2Table(off, decode_table(self.f.read_meta(self._cs, off, "qcow2 L2 table")))
            self._l2.put(tbl)
        return tbl

    def _l2_write(self, l1i: int) -> L2Table:
        """The L2 table for ``l1i``, allocated (or copied when shared) for writing."""
        entry = self._l1[l1i]
        tbl = self._l2_read(l1i)
        refs = self._refs
        assert refs is not None
        if tbl is not None and entry & OFLAG_COPIED and self._exclusive(tbl.offset):
            return tbl
        c = refs.alloc()
        self._meta.add(c)
        off = c << self._cb
        if tbl is None:
            new = L2Table(off, decode_table(bytes(self._cs)), True)
        else:  # shared with something else: copy, then drop our reference to the old one
            new = L2Table(off, array("Q", tbl.entries), True)
            refs.free_later(tbl.offset >> self._cb)
            self._l2.drop(tbl.offset)
        # A new table is written now so that no L1 entry ever points at garbage.
        self.f.write(encode_table(new.entries), off)
        new.dirty = False
        self._l2.put(new)
        self._l1[l1i] = off | OFLAG_COPIED
        self._l1_dirty.add(l1i)
        return new

    # -- mapping ------------------------------------------------------------------------------
    def _bad_entry(self, tbl: L2Table, l2i: int, detail: str) -> CorruptImage:
        esize = 16 if self._ext else 8
        return CorruptImage("qcow2 L2 table", tbl.offset + l2i * esize, detail)

    def _data_host(self, tbl: L2Table, l2i: int, host: int) -> int:
        if host % self._cs:
            raise self._bad_entry(tbl, l2i, f"data cluster offset {host:#x} unaligned")
        if host >= self.f.size:
            raise self._bad_entry(tbl, l2i, f"data cluster offset {host:#x} beyond the file")
        return host

    def _map(self, offset: int, n: int) -> list[Run]:
        """Guest range -> runs, merging neighbours (contiguous host runs coalesce). Lock held."""
        runs: list[Run] = []
        cb, cs = self._cb, self._cs
        mask = cs - 1
        l2n = self._l2_entries
        pos, end = offset, offset + n
        ext = self._ext
        k_kind, k_off, k_len, k_host = -1, 0, 0, 0  # the run being built

        while pos < end:
            gcl = pos >> cb
            l1i, l2i = divmod(gcl, l2n)
            span_end = min(end, (l1i + 1) * l2n << cb)
            tbl = self._l2_read(l1i)
            if tbl is None:
                if k_kind == BACKING:
                    k_len += span_end - pos
                else:
                    if k_kind >= 0:
                        runs.append(Run(k_kind, k_off, k_len, k_host))
                    k_kind, k_off, k_len, k_host = BACKING, pos, span_end - pos, 0
                pos = span_end
                continue
            entries = tbl.entries
            while pos < span_end:
                within = pos & mask
                take = min(cs - within, span_end - pos)
                if ext:
                    e = entries[2 * l2i]
                    bm = entries[2 * l2i + 1]
                    pieces = self._classify_ext(tbl, l2i, e, bm, within, take)
                else:
                    e = entries[l2i]
                    if e & OFLAG_COMPRESSED:
                        pieces = [(COMPRESSED, 0, take, e)]
                    else:
                        host = e & OFFSET_MASK
                        if e & OFLAG_ZERO:
                            pieces = [(ZERO_ALLOC if host else ZERO, 0, take, 0)]
                        elif host:
                            pieces = [(DATA, 0, take, self._data_host(tbl, l2i, host) + within)]
                        else:
                            pieces = [(BACKING, 0, take, 0)]
                for kind, rel, length, host in pieces:
                    gpos = pos + rel
                    if (
                        kind == k_kind
                        and kind != COMPRESSED
                        and (kind != DATA or k_host + k_len == host)
                    ):
                        k_len += length
                    else:
                        if k_kind >= 0:
                            runs.append(Run(k_kind, k_off, k_len, k_host))
                        k_kind, k_off, k_len, k_host = kind, gpos, length, host
                pos += take
                l2i += 1
        if k_kind >= 0:
            runs.append(Run(k_kind, k_off, k_len, k_host))
        return runs

    def _classify_ext(
        self, tbl: L2Table, l2i: int, e: int, bm: int, within: int, take: int
    ) -> list[tuple[int, int, int, int]]:
        """Pieces ``(kind, offset from pos, length, host)`` of one extended-L2 cluster."""
        if e & OFLAG_COMPRESSED:
            return [(COMPRESSED, 0, take, e)]
        host = e & OFFSET_MASK
        alloc = bm & L2_BITMAP_ALLOC
        zero = bm >> 32
        if alloc & zero:
            raise self._bad_entry(tbl, l2i, "subcluster both allocated and zero")
        if host:
            host = self._data_host(tbl, l2i, host)
        elif alloc:
            raise self._bad_entry(tbl, l2i, "allocated subclusters in an unallocated cluster")
        if alloc == L2_BITMAP_ALLOC:
            return [(DATA, 0, take, host + within)]
        zkind = ZERO_ALLOC if host else ZERO
        if zero == 0xFFFFFFFF:
            return [(zkind, 0, take, 0)]
        if not alloc and not zero:
            return [(BACKING, 0, take, 0)]
        sub = self._sub
        out: list[tuple[int, int, int, int]] = []
        pos, end = within, within + take
        while pos < end:
            s = pos // sub
            length = min((s + 1) * sub, end) - pos
            bit = 1 << s
            if alloc & bit:
                out.append((DATA, pos - within, length, host + pos))
            elif zero & bit:
                out.append((zkind, pos - within, length, 0))
            else:
                out.append((BACKING, pos - within, length, 0))
            pos += length
        return out

    # -- reads --------------------------------------------------------------------------------
    def _preadinto(self, buf: memoryview, offset: int) -> None:
        if len(buf) <= SMALL_READ:
            # Small reads (random 4 KiB I/O): map and copy under one lock acquisition; the
            # copy is short, and this halves the locking cost per request.
            within = offset & (self._cs - 1)
            with self._lock:
                if within + len(buf) <= self._cs and not self._ext:
                    # One cluster of a standard L2 table: the common case, without _map.
                    l1i, l2i = divmod(offset >> self._cb, self._l2_entries)
                    tbl = self._l2_read(l1i)
                    if tbl is not None:
                        e = tbl.entries[l2i]
                        host = e & OFFSET_MASK
                        if host and not e & (OFLAG_COMPRESSED | OFLAG_ZERO):
                            self.f.readinto(buf, self._data_host(tbl, l2i, host) + within)
                            return
                self._do_runs(self._map(offset, len(buf)), buf, offset)
            return
        with self._lock:
            runs = self._map(offset, len(buf))
            self._readers += 1
        try:
            self._do_runs(runs, buf, offset)
        finally:
            with self._lock:
                self._readers -= 1

    def _read_locked(self, buf: memoryview, offset: int) -> None:
        self._do_runs(self._map(offset, len(buf)), buf, offset)

    def _do_runs(self, runs: list[Run], buf: memoryview, offset: int) -> None:
        f = self.f
        for kind, goff, length, host in runs:
            dst = buf[goff - offset : goff - offset + length]
            if kind == DATA:
                f.readinto(dst, host)
                self._stats["data_syscalls"] += 1
            elif kind in (ZERO, ZERO_ALLOC):
                _zero_fill(dst)
            elif kind == BACKING:
                self._read_backing(dst, goff)
            else:
                data = self._inflate(host)
                within = goff & (self._cs - 1)
                dst[:] = data[within : within + length]

    def _read_backing(self, dst: memoryview, goff: int) -> None:
        back = self.backing
        if back is None:
            _zero_fill(dst)
            return
        have = max(0, min(len(dst), back.size - goff))
        if have:
            back.preadinto(dst[:have], goff)
        if have < len(dst):
            _zero_fill(dst[have:])

    def _inflate(self, entry: int) -> bytes:
        with self._lock:
            hit = self._zcache.get(entry)
            if hit is not None:
                self._zcache.move_to_end(entry)
                return hit
        host, length = compressed_extent(entry, self._cb)
        if host >= self.f.size or host == 0:
            raise CorruptImage(
                "qcow2 compressed cluster", host, "compressed data lies outside the file"
            )
        data = inflate(self.f.read_upto(length, host), self._cs, self.hdr.compression_type, host)
        with self._lock:
            self._stats["compressed_reads"] += 1
            self._zcache[entry] = data
            if len(self._zcache) > COMPRESSED_CACHE:
                self._zcache.popitem(last=False)
        return data

    # -- extents ------------------------------------------------------------------------------
    def _extents(self, n: int, offset: int) -> Iterator[Extent]:
        step = max(self._cs * self._l2_entries, 1 << 26)
        pending: Extent | None = None
        pos, end = offset, offset + n
        while pos < end:
            chunk = min(step - pos % step, end - pos)
            with self._lock:
                runs = self._map(pos, chunk)
            for run in runs:
                for ext in self._run_extents(run):
                    if pending is not None and pending.flags == ext.flags:
                        pending = Extent(pending.offset, pending.length + ext.length, ext.flags)
                    else:
                        if pending is not None:
                            yield pending
                        pending = ext
            pos += chunk
        if pending is not None:
            yield pending

    def _run_extents(self, run: Run) -> Iterator[Extent]:
        if run.kind in (DATA, COMPRESSED):
            yield Extent(run.offset, run.length, ExtentFlags.DATA)
        elif run.kind == ZERO:
            yield Extent(run.offset, run.length, ExtentFlags.HOLE | ExtentFlags.ZERO)
        elif run.kind == ZERO_ALLOC:  # allocated, reads as zeros (NBD: zero, not a hole)
            yield Extent(run.offset, run.length, ExtentFlags.ZERO)
        else:
            back = self.backing
            have = 0 if back is None else max(0, min(run.length, back.size - run.offset))
            if have and back is not None:
                yield from back.extents(have, run.offset)
            if have < run.length:
                yield Extent(
                    run.offset + have, run.length - have, ExtentFlags.HOLE | ExtentFlags.ZERO
                )

    # -- writes -------------------------------------------------------------------------------
    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        with self._lock:
            cs, cb = self._cs, self._cb
            pos, end, src = offset, offset + len(data), 0
            run_bufs: list[memoryview] = []
            run_host, run_len = -1, 0
            while pos < end:
                within = pos & (cs - 1)
                take = min(cs - within, end - pos)
                host, payload = self._write_target(pos >> cb, within, data[src : src + take])
                if run_bufs and run_host + run_len == host:
                    run_bufs.append(payload)
                    run_len += len(payload)
                else:
                    if run_bufs:
                        self.f.writev(run_bufs, run_host)
                    run_host, run_bufs, run_len = host, [payload], len(payload)
                pos += take
                src += take
            if run_bufs:
                self.f.writev(run_bufs, run_host)
            self._maybe_writeback()

    def _logical(self, gpos: int, n: int) -> bytearray:
        out = bytearray(n)
        self._read_locked(memoryview(out), gpos)
        return out

    def _write_target(self, gcl: int, within: int, chunk: memoryview) -> tuple[int, memoryview]:
        """Prepare cluster ``gcl`` for a write of ``chunk`` at ``within``.

        Returns the host offset and the bytes to write there (the chunk itself, or the chunk
        merged into the cluster's current contents when a new cluster must be filled).
        """
        refs = self._refs
        assert refs is not None
        cs, cb = self._cs, self._cb
        l1i, l2i = divmod(gcl, self._l2_entries)
        tbl = self._l2_write(l1i)
        ents = tbl.entries
        gbase = gcl << cb
        if self._ext:
            return self._write_target_ext(tbl, l2i, gbase, within, chunk)
        e = ents[l2i]
        host = e & OFFSET_MASK
        copied = bool(e & OFLAG_COPIED) and not e & OFLAG_COMPRESSED and self._exclusive(host)
        if not e & OFLAG_COMPRESSED and host and copied and not e & OFLAG_ZERO:
            self._check_in_place(tbl, l2i, host)
            return host + within, chunk
        tbl.dirty = True  # before anything below can touch the cache
        full = within == 0 and len(chunk) == cs
        if full:
            payload = chunk
        else:
            merged = self._logical(gbase, cs)
            merged[within : within + len(chunk)] = chunk
            payload = memoryview(merged)
        if not e & OFLAG_COMPRESSED and host and copied:  # preallocated zero
            self._check_in_place(tbl, l2i, host)
            new = host
        else:
            new = refs.alloc() << cb
            self._drop_entry(e)
        ents[l2i] = new | OFLAG_COPIED
        tbl.dirty = True
        self._stats["clusters_written"] += 1
        return new, payload

    def _write_target_ext(
        self, tbl: L2Table, l2i: int, gbase: int, within: int, chunk: memoryview
    ) -> tuple[int, memoryview]:
        refs = self._refs
        assert refs is not None
        cs, sub = self._cs, self._sub
        ents = tbl.entries
        e, bm = ents[2 * l2i], ents[2 * l2i + 1]
        host = e & OFFSET_MASK
        tbl.dirty = True
        if e & OFLAG_COMPRESSED or (host and not (e & OFLAG_COPIED and self._exclusive(host))):
            merged = self._logical(gbase, cs)
            merged[within : within + len(chunk)] = chunk
            new = refs.alloc() << self._cb
            self._drop_entry(e)
            ents[2 * l2i] = new | OFLAG_COPIED
            ents[2 * l2i + 1] = L2_BITMAP_ALLOC
            return new, memoryview(merged)
        if host:
            self._check_in_place(tbl, l2i, host)
        s0 = within // sub
        s1 = -(-(within + len(chunk)) // sub)
        a0, a1 = s0 * sub, min(s1 * sub, cs)
        bits = ((1 << (s1 - s0)) - 1) << s0
        if a0 == within and a1 == within + len(chunk):
            payload = chunk
        else:
            # Only subclusters not yet allocated need their old contents merged in, but
            # reading the logical range handles every mix in one go. (Before the entry
            # changes: the new host cluster holds nothing yet.)
            merged = self._logical(gbase + a0, a1 - a0)
            merged[within - a0 : within - a0 + len(chunk)] = chunk
            payload = memoryview(merged)
        if not host:
            host = refs.alloc() << self._cb
            ents[2 * l2i] = host | OFLAG_COPIED
            bm &= ~L2_BITMAP_ALLOC  # (already clear in a valid entry; keep the zero bits)
        ents[2 * l2i + 1] = (bm | bits) & ~(bits << 32)
        self._stats["clusters_written"] += 1
        return host + a0, payload

    def _check_in_place(self, tbl: L2Table, l2i: int, host: int) -> None:
        self._data_host(tbl, l2i, host)
        if host >> self._cb in self._meta:
            raise self._bad_entry(tbl, l2i, f"data cluster {host:#x} overlaps metadata")

    def _drop_entry(self, e: int) -> None:
        """Queue the refcount decrement for whatever host space L2 entry ``e`` referenced."""
        refs = self._refs
        assert refs is not None
        if e & OFLAG_COMPRESSED:
            start, length = compressed_host_range(e, self._cb)
            first = start >> self._cb
            last = (start + length - 1) >> self._cb
            refs.free_later(first, last - first + 1)
        else:
            host = e & OFFSET_MASK
            if host:
                refs.free_later(host >> self._cb)

    # -- zeroing and discard ------------------------------------------------------------------
    def _write_zeroes(self, n: int, offset: int, may_unmap: bool) -> None:
        self._zero_range(n, offset, discard=False, keep=not may_unmap)

    def _discard(self, n: int, offset: int) -> None:
        self._zero_range(n, offset, discard=True, keep=False)

    def _zero_range(self, n: int, offset: int, *, discard: bool, keep: bool) -> None:
        """Zero (or discard) a range. ``keep``: allocated clusters stay allocated (zero flag
        or zero subcluster bits with the host cluster kept), as NBD's NO_HOLE asks."""
        with self._lock:
            cs, cb = self._cs, self._cb
            pos, end = offset, offset + n
            while pos < end:
                within = pos & (cs - 1)
                take = min(cs - within, end - pos)
                gcl = pos >> cb
                if take == cs:
                    if not (keep and self._zero_keep(gcl)) and not self._zero_cluster(gcl, discard):
                        self._write_zero_data(pos, take)
                elif self._ext:
                    self._zero_subclusters(gcl, within, take, discard)
                elif not discard:
                    self._write_zero_data(pos, take)
                pos += take
            self._maybe_writeback()

    def _write_zero_data(self, pos: int, n: int) -> None:
        self._pwrite_locked(memoryview(_ZEROS)[:n], pos)

    def _pwrite_locked(self, data: memoryview, offset: int) -> None:
        # Called with the lock held: the RLock lets the public write path re-enter.
        self._pwrite(data, offset, False)

    def _zero_keep(self, gcl: int) -> bool:
        """Zero an exclusively owned, allocated cluster in place through metadata."""
        l1i, l2i = divmod(gcl, self._l2_entries)
        tbl = self._l2_read(l1i)
        if tbl is None:
            return False
        esize = 2 if self._ext else 1
        e = tbl.entries[esize * l2i]
        host = e & OFFSET_MASK
        if not host or e & OFLAG_COMPRESSED or not (e & OFLAG_COPIED and self._exclusive(host)):
            return False
        if self.hdr.version < 3:  # no zero flag in v2: zeros written in place
            self._write_zero_data(gcl << self._cb, self._cs)
            return True
        self._check_in_place(tbl, l2i, host)
        tbl = self._l2_write(l1i)  # (copies a shared table; the entry stays the same)
        if self._ext:
            tbl.entries[2 * l2i + 1] = L2_BITMAP_ZERO_ALL
        else:
            tbl.entries[l2i] = host | OFLAG_COPIED | OFLAG_ZERO
        tbl.dirty = True
        return True

    def _zero_cluster(self, gcl: int, discard: bool) -> bool:
        """Make a whole cluster read as zeros through metadata; False when it cannot."""
        l1i, l2i = divmod(gcl, self._l2_entries)
        has_backing = self.backing is not None
        if not self._l1[l1i] & OFFSET_MASK and not has_backing:
            return True  # unallocated without a backing file already reads as zeros
        if self.hdr.version < 3 and has_backing:
            return discard  # v2 cannot say "zero"; discard leaves the data unchanged
        tbl = self._l2_write(l1i)
        ents = tbl.entries
        if self._ext:
            e = ents[2 * l2i]
            ents[2 * l2i] = 0
            ents[2 * l2i + 1] = L2_BITMAP_ZERO_ALL if has_backing else 0
        else:
            e = ents[l2i]
            ents[l2i] = OFLAG_ZERO if has_backing else 0
        tbl.dirty = True
        self._drop_entry(e)
        return True

    def _zero_subclusters(self, gcl: int, within: int, take: int, discard: bool) -> None:
        sub = self._sub
        s0 = -(-within // sub)
        s1 = (within + take) // sub
        gbase = gcl << self._cb
        if s1 > s0:
            l1i, l2i = divmod(gcl, self._l2_entries)
            if self._l1[l1i] & OFFSET_MASK or self.backing is not None:
                tbl = self._l2_write(l1i)
                ents = tbl.entries
                e = ents[2 * l2i]
                if e & OFLAG_COMPRESSED or (
                    e & OFFSET_MASK and not (e & OFLAG_COPIED and self._exclusive(e & OFFSET_MASK))
                ):
                    # Turn it into a normal cluster first (a full rewrite), then zero bits.
                    self._pwrite_locked(memoryview(self._logical(gbase, self._cs)), gbase)
                bits = ((1 << (s1 - s0)) - 1) << s0
                ents[2 * l2i + 1] = (ents[2 * l2i + 1] & ~bits) | (bits << 32)
                tbl.dirty = True
        if not discard:
            head_end = min(within + take, s0 * sub) if s1 > s0 else within + take
            if head_end > within:
                self._write_zero_data(gbase + within, head_end - within)
            if s1 > s0 and within + take > s1 * sub:
                self._write_zero_data(gbase + s1 * sub, within + take - s1 * sub)

    # -- write-back ---------------------------------------------------------------------------
    def _maybe_writeback(self) -> None:
        cache = self._l2
        if len(self._l1_dirty) > 4096 or (
            len(cache.tables) > cache.capacity // 2 and cache.dirty_count() > cache.capacity // 2
        ):
            self._writeback()

    def _writeback(self) -> None:
        """Write metadata in crash-safe order: refcount increments, L2, L1, then frees."""
        refs = self._refs
        f = self.f
        if refs is None:
            return
        dirty = self._l2.dirty_tables()
        # Refcount increments and the guest data the new entries point at are durable
        # before any L2 entry that references them.
        if refs.write_dirty() or dirty:
            f.sync()
        for tbl in dirty:
            f.write(encode_table(tbl.entries), tbl.offset)
            tbl.dirty = False
        if self._l1_dirty:
            if dirty:
                f.sync()
            self._write_l1()
        f.sync()
        self._l2.trim()
        if self._readers == 0 and refs.apply_frees():
            f.sync()

    def _write_l1(self) -> None:
        idx = sorted(self._l1_dirty)
        self._l1_dirty.clear()
        lo, hi = idx[0], idx[-1] + 1
        chunk = encode_table(self._l1[lo:hi])
        self.f.write(chunk, self.hdr.l1_table_offset + lo * 8)

    def _flush(self) -> None:
        with self._lock:
            self._writeback()

    # -- misc ---------------------------------------------------------------------------------
    def cache(self, n: int, offset: int) -> None:
        """NBD_CMD_CACHE: load the L2 tables covering the range (up to the cache's size)."""
        check_range(self._size, n, offset)
        if not n:
            return
        span = self._l2_entries << self._cb
        first, last = offset // span, (offset + n - 1) // span
        with self._lock:
            for l1i in range(first, min(last + 1, first + self._l2.capacity)):
                self._l2_read(l1i)

    def statistics(self) -> dict[str, object]:
        with self._lock:
            out: dict[str, object] = {
                "metadata_reads": self.f.meta_reads,
                "l2_cache_hits": self._l2.hits,
                "l2_cache_misses": self._l2.misses,
                "l2_cached_tables": len(self._l2.tables),
                **self._stats,
            }
            if self._refs is not None:
                out["clusters_allocated"] = self._refs.allocated
            return out

    def info(self) -> dict[str, object]:
        """What ``qemu-img info`` would say, as a dict (for the CLI's ``info``)."""
        hdr = self.hdr
        return {
            "format": "qcow2",
            "version": hdr.version,
            "virtual_size": hdr.size,
            "cluster_size": self._cs,
            "refcount_bits": 1 << hdr.refcount_order,
            "extended_l2": self._ext,
            "compression_type": "zstd" if hdr.compression_type else "zlib",
            "backing_file": hdr.backing_file,
            "backing_format": hdr.backing_format,
            "lazy_refcounts": bool(hdr.compatible_features & 1),
            "dirty": bool(hdr.incompatible_features & INCOMPAT_DIRTY),
            "corrupt": bool(hdr.incompatible_features & INCOMPAT_CORRUPT),
            "bitmaps": bool(hdr.autoclear_features & AUTOCLEAR_BITMAPS),
            "snapshots": [s._asdict() for s in self.snapshots],
        }

    def _close(self) -> None:
        try:
            if self.backing is not None:
                self.backing.close()
        finally:
            self.f.close()

    def __repr__(self) -> str:
        mode = "ro" if self._readonly else "rw"
        return f"<Qcow2Device {self.path!r} v{self.hdr.version} size={self._size} {mode}>"


def _zero_fill(dst: memoryview) -> None:
    n = len(dst)
    pos = 0
    while pos < n:
        step = min(len(_ZEROS), n - pos)
        dst[pos : pos + step] = _ZEROS[:step]
        pos += step
