"""qcow2 refcounts: the refcount table, a cache of refcount blocks, and cluster allocation.

Why it is shaped like this:

* Any ``refcount_order`` from 0 (1-bit) to 6 (64-bit) is decoded into one ``array('Q')`` per
  block, so the allocator searches free clusters with ``array.index`` (C speed) whatever the
  width, and only encoding/decoding knows about bit packing.
* Crash safety follows qemu's ordering rules. Increments (new clusters) are written before any
  L2/L1 entry that points at them; decrements (freed clusters) are queued and applied only
  after the L2/L1 updates that dropped the reference are on disk, and freed clusters are not
  reused before that. A crash therefore leaves at worst leaked clusters, never a cluster
  that is referenced but counted free.
* New refcount blocks and a grown refcount table are written completely before anything
  points at them; the header switch to a new table is one small write.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections import OrderedDict
from itertools import chain

from burrow.block.qcow2.header import MAX_REFTABLE_BYTES, Header
from burrow.block.qcow2.hostfile import HostFile
from burrow.errors import CorruptImage, NoSpace, Unsupported

__all__ = ["Refcounts", "decode_block", "encode_block", "typecode", "zero_block"]

_BIG = sys.byteorder == "big"
_TYPECODES = {3: "B", 4: "H", 5: "I", 6: "Q"}
for _tc in ("H", "I", "Q"):
    assert array(_tc).itemsize in (2, 4, 8)
if array("I").itemsize != 4:  # pragma: no cover - exotic platforms
    _TYPECODES[5] = "L"
REFTABLE_HEADER_FIELDS = struct.Struct(">QI")  # refcount_table_offset, refcount_table_clusters
REFTABLE_HEADER_OFFSET = 48
RESERVED_MASK = 0x1FF  # refcount table entry bits 0-8 are reserved

# For sub-byte refcounts: byte value -> its 8/4/2 refcounts, lowest bits first (qemu's order).
_UNPACK: dict[int, tuple[tuple[int, ...], ...]] = {}
for _order in (0, 1, 2):
    _bits = 1 << _order
    _per = 8 // _bits
    _mask = (1 << _bits) - 1
    _UNPACK[_order] = tuple(
        tuple((b >> (_bits * i)) & _mask for i in range(_per)) for b in range(256)
    )


def typecode(order: int) -> str:
    """The narrowest array type holding a refcount of this order (memory = the block's)."""
    return _TYPECODES.get(order, "B")


def zero_block(order: int, entries: int) -> array[int]:
    tc = typecode(order)
    return array(tc, bytes(array(tc).itemsize * entries))


def decode_block(data: bytes, order: int) -> array[int]:
    """Refcount block bytes -> one integer per cluster, in the narrowest array type."""
    if order >= 3:
        raw = array(_TYPECODES[order], data)
        if not _BIG and order > 3:
            raw.byteswap()
        return raw
    table = _UNPACK[order]
    return array("B", chain.from_iterable(map(table.__getitem__, data)))


def encode_block(values: array[int], order: int) -> bytes:
    """One integer per cluster -> refcount block bytes."""
    if order >= 3:
        raw = array(_TYPECODES[order], values)
        if not _BIG and order > 3:
            raw.byteswap()
        return raw.tobytes()
    bits = 1 << order
    per = 8 // bits
    acc = list(values[0::per])
    for i in range(1, per):
        shift = bits * i
        acc = [a | (b << shift) for a, b in zip(acc, values[i::per], strict=True)]
    return bytes(acc)


class _Block:
    __slots__ = ("dirty", "offset", "values")

    def __init__(self, offset: int, values: array[int], dirty: bool) -> None:
        self.offset = offset
        self.values = values
        self.dirty = dirty


class Refcounts:
    """Refcount table + block cache + allocator for one writable image."""

    CACHE_BYTES = 16 << 20  # decoded refcount blocks kept (at least two blocks)

    def __init__(self, f: HostFile, hdr: Header, meta: set[int]) -> None:
        self.f = f
        self.hdr = hdr
        self.meta = meta  # cluster indexes holding metadata (never handed out, never data)
        self.cb = hdr.cluster_bits
        self.cs = 1 << self.cb
        self.order = hdr.refcount_order
        self.max_value = (1 << (1 << self.order)) - 1
        self.rbb = self.cb + 3 - self.order  # log2(refcounts per block)
        self.rbe = 1 << self.rbb
        self.table_offset = hdr.refcount_table_offset
        self.table_clusters = hdr.refcount_table_clusters
        raw = f.read_meta(self.table_clusters * self.cs, self.table_offset, "qcow2 refcount table")
        table = array("Q", raw)
        if not _BIG:
            table.byteswap()
        self.table = table
        self.blocks: OrderedDict[int, _Block] = OrderedDict()
        decoded = array(typecode(self.order)).itemsize * self.rbe
        self.cache_blocks = max(2, self.CACHE_BYTES // decoded)
        self.pending_free: list[tuple[int, int]] = []  # (first cluster, count)
        self.hint = 0
        self.end = -(-f.size // self.cs)  # first cluster index past the file
        self.allocated = 0
        first = self.table_offset >> self.cb
        for c in range(first, first + self.table_clusters):
            if c in meta:
                raise CorruptImage(
                    "qcow2 refcount table", self.table_offset, "overlaps other metadata"
                )
            meta.add(c)
        for ti, entry in enumerate(table):
            if entry:
                c = self._block_offset(ti, entry) >> self.cb
                if c in meta:
                    raise CorruptImage(
                        "qcow2 refcount table",
                        self.table_offset + ti * 8,
                        f"refcount block {c << self.cb:#x} overlaps other metadata",
                    )
                meta.add(c)

    # -- table and blocks -----------------------------------------------------------------
    def _block_offset(self, ti: int, entry: int) -> int:
        off = entry & ~RESERVED_MASK
        where = self.table_offset + ti * 8
        if off % self.cs:
            raise CorruptImage("qcow2 refcount table", where, f"block offset {off:#x} unaligned")
        if off == 0 or off + self.cs > self.f.size:
            raise CorruptImage(
                "qcow2 refcount table", where, f"block offset {off:#x} is beyond the file"
            )
        return off

    def _block(self, ti: int) -> _Block | None:
        blk = self.blocks.get(ti)
        if blk is not None:
            self.blocks.move_to_end(ti)
            return blk
        if ti >= len(self.table) or not self.table[ti]:
            return None
        off = self._block_offset(ti, self.table[ti])
        data = self.f.read_meta(self.cs, off, "qcow2 refcount block")
        blk = _Block(off, decode_block(data, self.order), False)
        self.blocks[ti] = blk
        self._trim()
        return blk

    def _trim(self) -> None:
        if len(self.blocks) <= self.cache_blocks:
            return
        for ti in list(self.blocks):
            if len(self.blocks) <= self.cache_blocks:
                break
            if not self.blocks[ti].dirty:
                del self.blocks[ti]

    def get(self, cluster: int) -> int:
        blk = self._block(cluster >> self.rbb)
        return 0 if blk is None else blk.values[cluster & (self.rbe - 1)]

    def _add(self, cluster: int, delta: int) -> int:
        blk = self._block(cluster >> self.rbb)
        if blk is None:
            raise CorruptImage(
                "qcow2 refcount table",
                self.table_offset + (cluster >> self.rbb) * 8,
                f"no refcount block covers cluster {cluster}",
            )
        i = cluster & (self.rbe - 1)
        value = blk.values[i] + delta
        if value < 0:
            raise CorruptImage(
                "qcow2 refcount block",
                blk.offset,
                f"refcount of cluster {cluster} would drop below zero",
            )
        if value > self.max_value:
            raise Unsupported("refcount overflow", f"cluster {cluster} at {value}")
        blk.values[i] = value
        blk.dirty = True
        return value

    # -- allocation -----------------------------------------------------------------------
    def alloc(self) -> int:
        """One free cluster (its refcount already 1); returns its cluster index."""
        found = self._find_free()
        if found is None:
            return self.alloc_at_end(1)
        self._add(found, 1)
        self.allocated += 1
        return found

    def _find_free(self) -> int | None:
        idx = self.hint
        end = self.end
        while idx < end:
            ti = idx >> self.rbb
            if ti >= len(self.table):
                return None
            base = ti << self.rbb
            blk = self._block(ti)
            if blk is None:
                idx = base + self.rbe
                continue
            stop = min(self.rbe, end - base)
            try:
                j = blk.values.index(0, idx - base, stop)
            except ValueError:
                idx = base + self.rbe
                continue
            cand = base + j
            if cand in self.meta or cand == 0:
                idx = cand + 1
                continue
            self.hint = cand + 1
            return cand
        self.hint = max(self.hint, end)
        return None

    def alloc_at_end(self, count: int) -> int:
        """``count`` contiguous new clusters at the end of the file (refcounts set to 1)."""
        while True:
            start = self.end
            missing = self._missing_blocks(start, count)
            if missing and missing[-1] >= len(self.table):
                self._grow_table(missing[-1] + 1)
                continue
            break
        for k, ti in enumerate(missing):
            c = start + count + k
            self.blocks[ti] = _Block(c << self.cb, zero_block(self.order, self.rbe), True)
            self.meta.add(c)
        self.end = start + count + len(missing)
        for c in range(start, self.end):
            self._add(c, 1)
        self.allocated += count
        self._write_new_blocks(missing)
        return start

    def _missing_blocks(self, start: int, count: int) -> list[int]:
        """Table indexes that need a new block to cover [start, start+count+blocks)."""
        nb = 0
        while True:
            lo = start >> self.rbb
            hi = (start + count + nb - 1) >> self.rbb
            missing = [
                ti for ti in range(lo, hi + 1) if ti >= len(self.table) or not self.table[ti]
            ]
            if len(missing) == nb:
                return missing
            nb = len(missing)

    def _write_new_blocks(self, tis: list[int]) -> None:
        """Write brand-new blocks, then point the table at them (never at garbage)."""
        if not tis:
            return
        for ti in tis:
            blk = self.blocks[ti]
            self.f.write(encode_block(blk.values, self.order), blk.offset)
            blk.dirty = False
        self.f.sync()
        for ti in tis:
            self.table[ti] = self.blocks[ti].offset
            self.f.write(struct.pack(">Q", self.table[ti]), self.table_offset + ti * 8)

    def _grow_table(self, min_entries: int) -> None:
        """Move the refcount table to a bigger place at the end of the file."""
        old = self.table
        old_n = len(old)
        new_n = max(min_entries, old_n * 2)
        while True:
            tc = -(-new_n * 8 // self.cs)
            if tc * self.cs > MAX_REFTABLE_BYTES:
                raise NoSpace("qcow2 refcount table would exceed qemu's 8 MiB limit")
            start = self.end
            nb = 0
            while True:
                lo = start >> self.rbb
                hi = (start + nb + tc - 1) >> self.rbb
                missing = [ti for ti in range(lo, hi + 1) if ti >= old_n or not old[ti]]
                if len(missing) == nb:
                    break
                nb = len(missing)
            if not missing or missing[-1] < tc * self.cs // 8:
                break
            new_n = missing[-1] + 1
        new_n = tc * self.cs // 8
        table = array("Q", old)
        table.extend(array("Q", bytes(8 * (new_n - old_n))))
        for k, ti in enumerate(missing):
            c = start + k
            self.blocks[ti] = _Block(c << self.cb, zero_block(self.order, self.rbe), True)
            table[ti] = c << self.cb
            self.meta.add(c)
        table_start = start + nb
        for c in range(table_start, table_start + tc):
            self.meta.add(c)
        self.end = table_start + tc
        self.table = table  # so _add finds the new blocks through the table too
        for c in range(start, self.end):
            self._add(c, 1)
        # Everything the new table points at goes to disk first, then the table, then the
        # header switch (one 12-byte write), then the old table is freed.
        self.write_dirty()
        self.f.sync()
        out = array("Q", table)
        if not _BIG:
            out.byteswap()
        self.f.write(out.tobytes(), table_start << self.cb)
        self.f.sync()
        self.f.write(
            REFTABLE_HEADER_FIELDS.pack(table_start << self.cb, tc), REFTABLE_HEADER_OFFSET
        )
        self.f.sync()
        old_first = self.table_offset >> self.cb
        self.pending_free.append((old_first, self.table_clusters))
        self.table_offset = table_start << self.cb
        self.table_clusters = tc
        self.hdr.refcount_table_offset = self.table_offset
        self.hdr.refcount_table_clusters = tc

    # -- freeing and write-back -------------------------------------------------------------
    def free_later(self, cluster: int, count: int = 1) -> None:
        """Queue a decrement; applied by ``apply_frees`` once the references are gone on disk."""
        self.pending_free.append((cluster, count))

    def write_dirty(self) -> bool:
        """Write every dirty block in place; True when anything was written."""
        wrote = False
        for blk in self.blocks.values():
            if blk.dirty:
                self.f.write(encode_block(blk.values, self.order), blk.offset)
                blk.dirty = False
                wrote = True
        self._trim()
        return wrote

    def apply_frees(self) -> bool:
        """Apply queued decrements (caller made the dropped references durable first)."""
        if not self.pending_free:
            return False
        pending, self.pending_free = self.pending_free, []
        for first, count in pending:
            for c in range(first, first + count):
                if self._add(c, -1) == 0:
                    self.meta.discard(c)
                    self.hint = min(self.hint, c)
        return self.write_dirty()
