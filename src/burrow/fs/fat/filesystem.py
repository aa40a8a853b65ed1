"""``FatFilesystem``: FAT12/16/32 with VFAT long names behind ``vfs.Filesystem``.

Inode numbers (FAT has no inodes): the root is 1; any other file or directory gets the byte
offset of its short directory entry divided by 32 when it is first seen. The number is kept
in a table for as long as the filesystem is open, so it survives renames (the entry moves,
the number does not); a later entry that would derive a number already in use gets one from
a counter starting at 2**40. After a remount, numbers are derived afresh from entry positions.

File data is written at once. Metadata is written back at ``sync``/``close``: directory
slots (each directory remembers its changed byte range), the FAT (changed entry ranges, to
every copy) and FSInfo. The volume is marked dirty (clean bit of FAT entry 1 cleared, FAT16/32) on the first
change and marked clean again on ``close`` if it was clean when opened.
"""

from __future__ import annotations

import math
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from burrow.block.device import BlockDevice
from burrow.errors import (
    CorruptImage,
    Exists,
    InvalidArgument,
    InvalidOperation,
    IsADirectory,
    NoSpace,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    NotSupported,
    ReadOnly,
    error_for_errno,
)
from burrow.fs.fat import names, times
from burrow.fs.fat.dirs import MAX_DIR_BYTES, Directory, Entry
from burrow.fs.fat.ondisk import (
    ATTR_ARCHIVE,
    ATTR_DIRECTORY,
    ATTR_HIDDEN,
    ATTR_READ_ONLY,
    ATTR_SYSTEM,
    ATTR_VOLUME_ID,
    DIRENT_SIZE,
    FSI_LEAD_SIG,
    FSI_STRUC_SIG,
    FSI_TRAIL_SIG,
    FSI_UNKNOWN,
    FSINFO,
    FsInfoFields,
    Geometry,
    parse_geometry,
)
from burrow.fs.fat.table import FatTable
from burrow.fs.vfs import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    XATTR_CREATE,
    DirEntry,
    Filesystem,
    FsInfo,
    Stat,
    StatFS,
)

__all__ = ["ATTRS_XATTR", "FatFilesystem"]

ATTRS_XATTR = "user.fat.attrs"
ENODATA = 61
_SETTABLE_ATTRS = ATTR_READ_ONLY | ATTR_HIDDEN | ATTR_SYSTEM | ATTR_ARCHIVE
_COUNTER_BASE = 1 << 40
_ZERO_CHUNK = 1 << 20


@dataclass(eq=False)
class _Node:
    ino: int
    parent: int  # directory holding the entry (root: itself)
    entry: Entry | None  # None for the root
    clusters: list[int] | None = None  # cached chain
    pins: int = 0
    detached: bool = False  # unlinked while pinned: data kept until the last unpin
    children_loaded: bool = field(default=False)

    @property
    def is_dir(self) -> bool:
        return self.entry is None or self.entry.is_dir


class FatFilesystem(Filesystem):
    """A FAT volume on a block device. Use :func:`burrow.fs.fat.open_fat`."""

    root_ino = 1

    def __init__(
        self, dev: BlockDevice, *, readonly: bool = True, uid: int = 0, gid: int = 0
    ) -> None:
        if not readonly and dev.readonly:
            raise ReadOnly("device is read-only")
        self.dev = dev
        self.readonly = readonly
        self.uid = uid
        self.gid = gid
        if dev.size < 512:
            raise CorruptImage("FAT boot sector", 0, "device is smaller than one sector")
        boot = dev.pread(512, 0)
        self.geo: Geometry = parse_geometry(boot, dev.size)
        geo = self.geo
        self.fat32 = geo.fat_bits == 32
        self.table = FatTable(dev, geo)
        self._lock = threading.RLock()
        self._nodes: dict[int, _Node] = {}
        self._by_loc: dict[tuple[int, int], int] = {}  # (dir ino, slot) -> ino
        self._dirs: OrderedDict[int, Directory] = OrderedDict()  # LRU order
        self._dir_bytes = 0
        self._depth = 0
        self.dir_cache_count = 4096
        self.dir_cache_bytes = 64 << 20
        self._counter = _COUNTER_BASE
        self._modified = False
        self._closed = False
        self._was_clean = self.table.clean_bit()
        self._fsinfo: FsInfoFields | None = None
        if self.fat32 and geo.fsinfo_sector:
            raw = dev.pread(512, geo.fsinfo_sector * geo.sector_size)
            info = FsInfoFields._make(FSINFO.unpack(raw))
            if (
                info.FSI_LeadSig == FSI_LEAD_SIG
                and info.FSI_StrucSig == FSI_STRUC_SIG
                and info.FSI_TrailSig == FSI_TRAIL_SIG
            ):
                self._fsinfo = info
                if self.table.valid(info.FSI_Nxt_Free):
                    self.table.next_free = info.FSI_Nxt_Free  # a hint only; never trusted
        root_clusters = None
        if self.fat32:
            root_clusters = self.table.chain(
                geo.root_cluster,
                self._dir_limit(),
                what="FAT32 root directory chain",
                must_end=True,
            )
        self._nodes[1] = _Node(1, 1, None, root_clusters)

    # -- helpers --------------------------------------------------------------------------
    @contextmanager
    def _op(self) -> Iterator[None]:
        """Serialise one public operation; trim the directory cache when it starts (never in
        the middle, where Directory objects are in use)."""
        with self._lock:
            self._depth += 1
            try:
                if self._depth == 1:
                    self._trim_dirs()
                yield
            finally:
                self._depth -= 1

    def _trim_dirs(self) -> None:
        """Keep at most ``dir_cache_count`` directories / ``dir_cache_bytes`` bytes cached
        (least recently used go first, after writing their changes back)."""
        if len(self._dirs) <= self.dir_cache_count and self._dir_bytes <= self.dir_cache_bytes:
            return
        for ino in list(self._dirs):
            if len(self._dirs) <= self.dir_cache_count // 2 + 1 and (
                self._dir_bytes <= self.dir_cache_bytes // 2
            ):
                break
            if ino == self.root_ino:
                continue
            d = self._dirs.pop(ino)
            d.flush()
            self._dir_bytes -= len(d.data)

    def _dir_limit(self) -> int:
        return MAX_DIR_BYTES // self.geo.cluster_size + 1

    def _node(self, ino: int) -> _Node:
        node = self._nodes.get(ino)
        if node is None:
            raise NotFound(f"no inode {ino}")
        return node

    def _directory(self, ino: int) -> Directory:
        d = self._dirs.get(ino)
        if d is not None:
            self._dirs.move_to_end(ino)
            return d
        node = self._node(ino)
        if not node.is_dir:
            raise NotADirectory(f"inode {ino} is not a directory")
        if node.entry is None:
            d = Directory(
                self.dev, self.geo, node.clusters if self.fat32 else None,
                is_root=True, fat32=self.fat32,
            )  # fmt: skip
        else:
            if node.entry.cluster == 0:
                raise CorruptImage(
                    "FAT directory entry", None, f"directory {node.entry.name!r} has no cluster"
                )
            d = Directory(self.dev, self.geo, self._clusters(node), is_root=False, fat32=self.fat32)
        # Entries that nodes already hold (the directory was cached before and evicted) stay
        # the same objects, so inode numbers and in-memory state carry over.
        for i, e in enumerate(d.entries):
            held = self._by_loc.get((ino, e.slot))
            holder = self._nodes.get(held) if held is not None else None
            if (
                holder is not None
                and holder.entry is not None
                and holder.entry is not e
                and not holder.detached
                and holder.parent == ino
                and holder.entry.slot == e.slot
            ):
                d.adopt(i, holder.entry)
        self._dirs[ino] = d
        self._dir_bytes += len(d.data)
        return d

    def _clusters(self, node: _Node) -> list[int]:
        if node.clusters is None:
            e = node.entry
            assert e is not None
            if e.is_dir:
                limit = self._dir_limit()
                what = "FAT directory chain"
            else:
                limit = max(1, math.ceil(e.size / self.geo.cluster_size))
                what = "FAT file chain"
            chain = self.table.chain(e.cluster, limit, what=what, must_end=e.is_dir)
            if not e.is_dir and e.size and len(chain) * self.geo.cluster_size < e.size:
                raise CorruptImage(
                    what, None, f"{e.name!r}: chain of {len(chain)} clusters is shorter "
                    f"than its size {e.size}",
                )  # fmt: skip
            if not e.is_dir and e.size == 0:
                chain = []
            node.clusters = chain
        return node.clusters

    def _ino_for(self, dir_ino: int, entry: Entry, d: Directory) -> int:
        loc = (dir_ino, entry.slot)
        ino = self._by_loc.get(loc)
        if ino is not None:
            node = self._nodes.get(ino)
            if node is not None and node.entry is entry:
                return ino
        ino = d.slot_offset(entry.slot) // DIRENT_SIZE
        if ino in self._nodes or ino <= 1:
            ino = self._counter
            self._counter += 1
        self._nodes[ino] = _Node(ino, dir_ino, entry)
        self._by_loc[loc] = ino
        return ino

    def _writable(self) -> None:
        if self.readonly:
            raise ReadOnly("filesystem is read-only")
        if not self._modified:
            self._modified = True
            if self._was_clean:
                self.table.set_clean_bit(False)
                self.table.flush()

    def _entry_node(self, ino: int) -> tuple[_Node, Entry]:
        node = self._node(ino)
        if node.entry is None:
            raise NotPermitted("the root directory of a FAT volume has no directory entry")
        return node, node.entry

    def _save(self, node: _Node) -> None:
        """Write a node's short entry back (no-op for detached nodes)."""
        if node.detached or node.entry is None:
            return
        self._directory(node.parent).update(node.entry)

    def _touch_dir(self, ino: int) -> None:
        node = self._nodes.get(ino)
        if node is None or node.entry is None or node.detached:
            return
        date, tm, _ = times.encode(times.now_ns())
        node.entry.wrt_date, node.entry.wrt_time = date, tm
        self._save(node)

    # -- reading --------------------------------------------------------------------------
    def lookup(self, parent: int, name: str) -> int:
        with self._op():
            node = self._node(parent)
            if name == ".":
                self._directory(parent)
                return parent
            if name == "..":
                self._directory(parent)
                return node.parent
            d = self._directory(parent)
            e = d.lookup(name) or d.lookup(name.rstrip(". ") or name)
            if e is None:
                raise NotFound(path=name)
            return self._ino_for(parent, e, d)

    def getattr(self, ino: int) -> Stat:
        with self._op():
            node = self._node(ino)
            e = node.entry
            cs = self.geo.cluster_size
            if e is None:
                d = self._directory(ino)
                subdirs = sum(1 for x in d.entries if x.is_dir)
                size = len(d.data)
                return Stat(
                    st_ino=1, st_mode=stat.S_IFDIR | 0o755, st_nlink=2 + subdirs,
                    st_uid=self.uid, st_gid=self.gid, st_size=size, st_atime_ns=0,
                    st_mtime_ns=0, st_ctime_ns=0, st_blocks=size // 512, st_blksize=cs,
                )  # fmt: skip
            if e.is_dir:
                d = self._directory(ino)
                nlink = 2 + sum(1 for x in d.entries if x.is_dir)
                size = len(d.data)
                mode = stat.S_IFDIR | 0o755
            else:
                nlink = 0 if node.detached else 1
                size = e.size
                mode = stat.S_IFREG | 0o644
            if e.attr & ATTR_READ_ONLY and not e.is_dir:
                # Windows marks special folders read-only; like vfat without "rodir", a
                # directory's read-only bit is shown only in user.fat.attrs.
                mode &= ~0o222
            mtime = times.decode(e.wrt_date, e.wrt_time)
            birth = times.decode(e.crt_date, e.crt_time, e.crt_tenth) if e.crt_date else mtime
            atime = times.decode(e.acc_date) if e.acc_date else mtime
            used = (
                len(node.clusters) * cs
                if node.clusters is not None
                else (math.ceil(e.size / cs) * cs)
            )
            return Stat(
                st_ino=ino, st_mode=mode, st_nlink=nlink, st_uid=self.uid, st_gid=self.gid,
                st_size=size, st_atime_ns=atime, st_mtime_ns=mtime, st_ctime_ns=mtime,
                st_blocks=(size if e.is_dir else used) // 512, st_blksize=cs,
                st_birthtime_ns=birth,
            )  # fmt: skip

    def readdir(self, ino: int) -> Iterator[DirEntry]:
        with self._op():
            d = self._directory(ino)
            out = [
                DirEntry(
                    e.name, self._ino_for(ino, e, d), stat.S_IFDIR if e.is_dir else stat.S_IFREG
                )
                for e in d
            ]
        return iter(out)

    def read(self, ino: int, offset: int, n: int) -> bytes:
        with self._op():
            node = self._node(ino)
            e = node.entry
            if e is None or e.is_dir:
                raise IsADirectory()
            if offset < 0 or n < 0:
                raise InvalidArgument("negative offset or length")
            end = min(e.size, offset + n)
            if end <= offset:
                return b""
            clusters = self._clusters(node)
            buf = bytearray(end - offset)
            self._io(clusters, offset, memoryview(buf), write=False)
            return bytes(buf)

    def _io(self, clusters: list[int], offset: int, buf: memoryview, *, write: bool) -> None:
        """Read into / write from ``buf`` at file ``offset``: one device call per run."""
        cs = self.geo.cluster_size
        first = offset // cs
        last = (offset + len(buf) - 1) // cs
        pos = 0
        idx = first
        while idx <= last:
            run_start = idx
            idx += _run_length(clusters, idx, last) - 1
            # bytes of this run inside the request
            run_off = max(offset, run_start * cs)
            run_end = min(offset + len(buf), (idx + 1) * cs)
            dev_off = self.geo.cluster_offset(clusters[run_start]) + (run_off - run_start * cs)
            length = run_end - run_off
            if write:
                self.dev.pwrite(buf[pos : pos + length], dev_off)
            else:
                self.dev.preadinto(buf[pos : pos + length], dev_off)
            pos += length
            idx += 1

    def readlink(self, ino: int) -> str:
        with self._op():
            self._node(ino)
            raise InvalidOperation("FAT has no symbolic links")

    def listxattr(self, ino: int) -> list[str]:
        with self._op():
            node = self._node(ino)
            return [] if node.entry is None else [ATTRS_XATTR]

    def getxattr(self, ino: int, name: str) -> bytes:
        with self._op():
            node = self._node(ino)
            if node.entry is None or name != ATTRS_XATTR:
                raise error_for_errno(ENODATA, f"no such attribute: {name}")
            return f"0x{node.entry.attr:02x}".encode()

    def statfs(self) -> StatFS:
        with self._op():
            free = self.table.count_free()
            cs = self.geo.cluster_size
            return StatFS(cs, cs, self.geo.cluster_count, free, free, 0, 0, 255)

    def label(self) -> str:
        """The volume label: the root directory's label entry, else the boot sector's."""
        with self._op():
            d = self._directory(1)
            raw = d.label if d.label is not None else self.geo.label
            text = raw.rstrip(b" \0").decode(names.OEM)
            return "" if text == "NO NAME" and d.label is None else text

    def info(self) -> FsInfo:
        with self._op():
            geo = self.geo
            vid = geo.volume_id
            clean = self.table.clean_bit()
            fsinfo = self._fsinfo
            return FsInfo(
                fstype="vfat",
                label=self.label(),
                uuid=f"{vid >> 16:04X}-{vid & 0xFFFF:04X}",
                features=(f"fat{geo.fat_bits}", "vfat"),
                extra={
                    "fat_bits": geo.fat_bits,
                    "sector_size": geo.sector_size,
                    "cluster_size": geo.cluster_size,
                    "clusters": geo.cluster_count,
                    "reserved_sectors": geo.reserved_sectors,
                    "fats": geo.num_fats,
                    "fat_sectors": geo.fat_sectors,
                    "root_entries": geo.root_entries,
                    "total_sectors": geo.total_sectors,
                    "media": geo.media,
                    "hidden_sectors": geo.hidden_sectors,
                    "volume_id": f"{vid:08x}",
                    "oem_name": geo.oem_name.decode("latin-1").rstrip(),
                    "clean": clean,
                    "fsinfo_free": None if fsinfo is None else fsinfo.FSI_Free_Count,
                    "fsinfo_next": None if fsinfo is None else fsinfo.FSI_Nxt_Free,
                },
            )

    # -- writing: files -----------------------------------------------------------------
    def _new_entry(self, parent: int, name: str, attr: int, cluster: int) -> tuple[int, Entry]:
        d = self._directory(parent)
        name = names.normalize(name)
        if d.lookup(name) is not None:
            raise Exists(path=name)
        short = names.short_form(name)
        now = times.now_ns()
        date, tm, tenth = times.encode(now)
        if short is not None:
            raw, ntres = short
            if raw in d.shorts:
                raise Exists(path=name)  # pragma: no cover - lookup found it already
            lfn: list[bytes] = []
        else:
            raw, ntres = names.make_short(name, d.shorts, d.tail_hints), 0
            lfn = names.build_lfn_entries(name, raw)
        e = Entry(name, raw, attr, ntres, 0, 0, cluster, 0, tenth, tm, date, date, tm, date)
        d.add(e, lfn, self._grow_dir(d))
        self._touch_dir(parent)
        return self._ino_for(parent, e, d), e

    def _grow_dir(self, d: Directory) -> Callable[[], int] | None:
        if d.clusters is None:
            return None

        def grow() -> int:
            assert d.clusters is not None
            (c,) = self.table.allocate(1, after=d.clusters[-1])
            self.table.set(d.clusters[-1], c)
            self.dev.write_zeroes(self.geo.cluster_size, self.geo.cluster_offset(c))
            if any(x is d for x in self._dirs.values()):
                self._dir_bytes += self.geo.cluster_size
            return c

        return grow

    def create(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0) -> int:
        with self._op():
            self._writable()
            attr = ATTR_ARCHIVE | (0 if mode & 0o222 else ATTR_READ_ONLY)
            ino, _ = self._new_entry(parent, name, attr, 0)
            self._nodes[ino].clusters = []
            return ino

    def mkdir(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0) -> int:
        with self._op():
            self._writable()
            d = self._directory(parent)
            checked = names.normalize(name)
            if d.lookup(checked) is not None:
                raise Exists(path=name)
            (c,) = self.table.allocate(1)
            try:
                pnode = self._node(parent)
                parent_cluster = 0 if pnode.entry is None else pnode.entry.cluster
                date, tm, tenth = times.encode(times.now_ns())
                dot = Entry(".", b".          ", ATTR_DIRECTORY, 0, 0, 0, c, 0,
                            tenth, tm, date, date, tm, date)  # fmt: skip
                dotdot = Entry("..", b"..         ", ATTR_DIRECTORY, 0, 1, 1, parent_cluster, 0,
                               tenth, tm, date, date, tm, date)  # fmt: skip
                block = bytearray(self.geo.cluster_size)
                block[0:32] = dot.pack()
                block[32:64] = dotdot.pack()
                self.dev.pwrite(block, self.geo.cluster_offset(c))
                attr = ATTR_DIRECTORY  # read-only is not kept on directories (vfat: no rodir)
                ino, _ = self._new_entry(parent, checked, attr, c)
            except BaseException:
                self.table.free_chain_list([c])
                raise
            self._nodes[ino].clusters = [c]
            return ino

    def _set_length(self, node: _Node, e: Entry, size: int) -> None:
        """Grow (zero-filled) or shrink a file to ``size`` bytes."""
        cs = self.geo.cluster_size
        clusters = self._clusters(node)
        need = math.ceil(size / cs)
        old = e.size
        if need > len(clusters):
            new = self.table.allocate(need - len(clusters), after=clusters[-1] if clusters else 0)
            if clusters:
                self.table.set(clusters[-1], new[0])
            else:
                e.cluster = new[0]
            clusters.extend(new)
        elif need < len(clusters):
            drop = clusters[need:]
            del clusters[need:]
            if clusters:
                self.table.set(clusters[-1], self.table.eoc_write)
            else:
                e.cluster = 0
            self.table.free_chain_list(drop)
        if size > old:
            self._zero(clusters, old, size - old)
        e.size = size

    def _zero(self, clusters: list[int], offset: int, n: int) -> None:
        pos = offset
        end = offset + n
        while pos < end:
            chunk = min(_ZERO_CHUNK, end - pos)
            self._io(clusters, pos, memoryview(bytes(chunk)), write=True)
            pos += chunk

    def write(self, ino: int, offset: int, data: bytes | bytearray | memoryview) -> int:
        with self._op():
            self._writable()
            node = self._node(ino)
            e = node.entry
            if e is None or e.is_dir:
                raise IsADirectory()
            if offset < 0:
                raise InvalidArgument("negative offset")
            mv = memoryview(data).cast("B")
            if offset + len(mv) > 0xFFFFFFFF:
                raise error_for_errno(27, "FAT files are at most 4 GiB - 1")  # EFBIG
            if len(mv) == 0:
                return 0
            end = offset + len(mv)
            short = math.ceil(end / self.geo.cluster_size) - len(self._clusters(node))
            if short > 0 and short > self.table.count_free():
                raise NoSpace("no free clusters left on the FAT volume")  # nothing changed yet
            if offset > e.size:
                self._set_length(node, e, offset)  # FAT has no holes: the gap reads as zeros
            if end > e.size:
                self._grow_raw(node, e, end)
            self._io(self._clusters(node), offset, mv, write=True)
            self._stamp(e, archive=True)
            self._save(node)
            return len(mv)

    def _grow_raw(self, node: _Node, e: Entry, size: int) -> None:
        """Grow to ``size`` without zeroing: the caller overwrites ``[old size, size)``."""
        cs = self.geo.cluster_size
        clusters = self._clusters(node)
        need = math.ceil(size / cs)
        if need > len(clusters):
            new = self.table.allocate(need - len(clusters), after=clusters[-1] if clusters else 0)
            if clusters:
                self.table.set(clusters[-1], new[0])
            else:
                e.cluster = new[0]
            clusters.extend(new)
        e.size = size

    @staticmethod
    def _stamp(e: Entry, *, archive: bool) -> None:
        date, tm, _ = times.encode(times.now_ns())
        e.wrt_date, e.wrt_time = date, tm
        e.acc_date = date
        if archive and not e.is_dir:
            e.attr |= ATTR_ARCHIVE

    def _lookup_entry(self, parent: int, name: str) -> tuple[Directory, Entry]:
        d = self._directory(parent)
        e = d.lookup(name) or d.lookup(name.rstrip(". ") or name)
        if e is None:
            raise NotFound(path=name)
        return d, e

    def _forget(self, parent: int, e: Entry) -> _Node | None:
        ino = self._by_loc.pop((parent, e.slot), None)
        if ino is None:
            return None
        node = self._nodes.get(ino)
        if node is None or node.entry is not e:
            return None
        return node

    def _release(self, node: _Node | None, e: Entry, chain: list[int] | None) -> None:
        """Free a removed entry's clusters, unless a pinned node still needs them."""
        if node is not None and node.pins > 0:
            node.detached = True
            if node.clusters is None:
                node.clusters = chain
            return
        if node is not None:
            self._nodes.pop(node.ino, None)
            gone = self._dirs.pop(node.ino, None)
            if gone is not None:
                self._dir_bytes -= len(gone.data)
        if chain:
            self.table.free_chain_list(chain)

    def _chain_of(self, node: _Node | None, e: Entry) -> list[int]:
        if node is not None:
            return list(self._clusters(node))
        tmp = _Node(0, 0, e)
        return list(self._clusters(tmp))

    def unlink(self, parent: int, name: str) -> None:
        with self._op():
            self._writable()
            d, e = self._lookup_entry(parent, name)
            if e.is_dir:
                raise IsADirectory(path=name)
            node = self._node_if_known(parent, e)
            try:
                chain = self._chain_of(node, e)
            except CorruptImage:
                chain = []  # a damaged chain: drop the name, leave the clusters to fsck
                if node is not None:
                    node.clusters = []
            d.delete(e)
            self._forget(parent, e)
            self._release(node, e, chain)
            self._touch_dir(parent)

    def _node_if_known(self, parent: int, e: Entry) -> _Node | None:
        ino = self._by_loc.get((parent, e.slot))
        if ino is None:
            return None
        node = self._nodes.get(ino)
        return node if node is not None and node.entry is e else None

    def rmdir(self, parent: int, name: str) -> None:
        with self._op():
            self._writable()
            d, e = self._lookup_entry(parent, name)
            if not e.is_dir:
                raise NotADirectory(path=name)
            ino = self._ino_for(parent, e, d)
            sub = self._directory(ino)
            if not sub.is_empty():
                raise NotEmpty(path=name)
            node = self._nodes[ino]
            chain = list(self._clusters(node))
            d.delete(e)
            self._forget(parent, e)
            node.pins = 0  # a directory's clusters are never kept after rmdir
            self._release(node, e, chain)
            self._touch_dir(parent)

    def _is_ancestor(self, anc: int, ino: int) -> bool:
        for _ in range(100_000):
            if ino == anc:
                return True
            node = self._nodes.get(ino)
            if node is None or node.parent == ino:
                return False
            ino = node.parent
        return False  # pragma: no cover

    def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        with self._op():
            self._writable()
            if flags & RENAME_EXCHANGE:
                self._exchange(old_parent, old_name, new_parent, new_name)
                return
            src_dir, e = self._lookup_entry(old_parent, old_name)
            dst_dir = self._directory(new_parent)
            target_name = names.normalize(new_name)
            ino = self._ino_for(old_parent, e, src_dir)
            node = self._nodes[ino]
            if e.is_dir and self._is_ancestor(ino, new_parent):
                raise InvalidOperation("cannot move a directory into its own subtree")
            target = dst_dir.lookup(target_name)
            if target is e:
                if e.name == target_name:
                    return
                target = None  # a case-only rename of the same entry
            if target is not None:
                if flags & RENAME_NOREPLACE:
                    raise Exists(path=new_name)
                if e.is_dir:
                    if not target.is_dir:
                        raise NotADirectory(path=new_name)
                    tino = self._ino_for(new_parent, target, dst_dir)
                    if not self._directory(tino).is_empty():
                        raise NotEmpty(path=new_name)
                elif target.is_dir:
                    raise IsADirectory(path=new_name)
            # Everything that can fail is checked before anything changes: room for the new
            # entry (growing the directory first if need be) and the moved directory's "..".
            units = len(target_name.encode("utf-16-le")) // 2
            slots = 1 if names.short_form(target_name) is not None else 1 + (units + 12) // 13
            dst_dir.ensure_room(slots, self._grow_dir(dst_dir))
            if e.is_dir and old_parent != new_parent and self._directory(ino).dotdot_slot is None:
                raise CorruptImage("FAT directory", None, f"{e.name!r} has no '..' entry")
            # Remove the target first (its name must be free), then the old entry, then add.
            if target is not None:
                tnode = self._node_if_known(new_parent, target)
                tchain = self._chain_of(tnode, target)
                dst_dir.delete(target)
                self._forget(new_parent, target)
                if tnode is not None and target.is_dir:
                    tnode.pins = 0
                self._release(tnode, target, tchain)
            src_dir.delete(e)
            self._by_loc.pop((old_parent, e.slot), None)
            short = names.short_form(target_name)
            if short is not None:
                raw, ntres = short
                lfn: list[bytes] = []
            else:
                raw, ntres = names.make_short(target_name, dst_dir.shorts, dst_dir.tail_hints), 0
                lfn = names.build_lfn_entries(target_name, raw)
            moved = Entry(
                target_name, raw, e.attr, ntres, 0, 0, e.cluster, e.size, e.crt_tenth,
                e.crt_time, e.crt_date, e.acc_date, e.wrt_time, e.wrt_date,
            )  # fmt: skip
            dst_dir.add(moved, lfn, self._grow_dir(dst_dir))
            node.entry = moved
            node.parent = new_parent
            self._by_loc[(new_parent, moved.slot)] = ino
            if e.is_dir and old_parent != new_parent:
                pnode = self._node(new_parent)
                self._directory(ino).set_dotdot(0 if pnode.entry is None else pnode.entry.cluster)
            self._touch_dir(old_parent)
            if new_parent != old_parent:
                self._touch_dir(new_parent)

    _CONTENT = (
        "attr", "cluster", "size", "crt_tenth", "crt_time", "crt_date", "acc_date", "wrt_time",
        "wrt_date",
    )  # fmt: skip

    def _exchange(self, old_parent: int, old_name: str, new_parent: int, new_name: str) -> None:
        """``RENAME_EXCHANGE``: the two names stay where they are and swap what they point
        at (attributes, first cluster, size, times), like the kernel's vfat since 6.0."""
        src_dir, a = self._lookup_entry(old_parent, old_name)
        dst_dir, b = self._lookup_entry(new_parent, new_name)
        if a is b:
            return
        ino_a = self._ino_for(old_parent, a, src_dir)
        ino_b = self._ino_for(new_parent, b, dst_dir)
        node_a, node_b = self._nodes[ino_a], self._nodes[ino_b]
        if (a.is_dir and self._is_ancestor(ino_a, new_parent)) or (
            b.is_dir and self._is_ancestor(ino_b, old_parent)
        ):
            raise InvalidOperation("cannot move a directory into its own subtree")
        moving = old_parent != new_parent
        for node in (node_a, node_b):
            if moving and node.is_dir and self._directory(node.ino).dotdot_slot is None:
                raise CorruptImage("FAT directory", None, "a directory has no '..' entry")
        for field_name in self._CONTENT:
            va, vb = getattr(a, field_name), getattr(b, field_name)
            setattr(a, field_name, vb)
            setattr(b, field_name, va)
        src_dir.update(a)
        dst_dir.update(b)
        node_a.entry, node_a.parent = b, new_parent
        node_b.entry, node_b.parent = a, old_parent
        self._by_loc[(old_parent, a.slot)] = ino_b
        self._by_loc[(new_parent, b.slot)] = ino_a
        if moving:
            for node, parent in ((node_a, new_parent), (node_b, old_parent)):
                if node.is_dir:
                    pnode = self._node(parent)
                    cluster = 0 if pnode.entry is None else pnode.entry.cluster
                    self._directory(node.ino).set_dotdot(cluster)
        self._touch_dir(old_parent)
        if moving:
            self._touch_dir(new_parent)

    def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> Stat:
        with self._op():
            self._writable()
            node = self._node(ino)
            if (uid is not None and uid != self.uid) or (gid is not None and gid != self.gid):
                raise NotPermitted("FAT cannot store file owners")
            e = node.entry
            if e is None:
                if size is not None:
                    raise IsADirectory()
                return self.getattr(ino)  # the root has no entry to store anything in
            if size is not None:
                if e.is_dir:
                    raise IsADirectory()
                if size < 0:
                    raise InvalidArgument("negative size")
                if size > 0xFFFFFFFF:
                    raise error_for_errno(27, "FAT files are at most 4 GiB - 1")
                if size != e.size:
                    self._set_length(node, e, size)
                    self._stamp(e, archive=True)
            if mode is not None and not e.is_dir:
                if mode & 0o222:
                    e.attr &= ~ATTR_READ_ONLY
                else:
                    e.attr |= ATTR_READ_ONLY
            if mtime_ns is not None:
                e.wrt_date, e.wrt_time, _ = times.encode(mtime_ns)
            if atime_ns is not None:
                e.acc_date = times.encode(atime_ns)[0]
            self._save(node)
            return self.getattr(ino)

    def setxattr(self, ino: int, name: str, value: bytes, flags: int = 0) -> None:
        with self._op():
            self._writable()
            node, e = self._entry_node(ino)
            if name != ATTRS_XATTR:
                raise NotSupported(f"FAT stores no extended attribute {name!r}")
            if flags & XATTR_CREATE:
                raise Exists(path=name)
            try:
                new = int(bytes(value).decode("ascii").strip(), 0)
            except (UnicodeDecodeError, ValueError) as exc:
                raise InvalidArgument(f"{ATTRS_XATTR} takes a number like 0x21") from exc
            if new & ~_SETTABLE_ATTRS & 0xFF != e.attr & ~_SETTABLE_ATTRS & 0xFF or new > 0xFF:
                raise InvalidArgument("only the read-only, hidden, system and archive bits change")
            e.attr = new
            self._save(node)

    def removexattr(self, ino: int, name: str) -> None:
        with self._op():
            self._writable()
            raise NotSupported(f"{name} cannot be removed on FAT")

    def mknod(
        self, parent: int, name: str, mode: int, rdev: int = 0, uid: int = 0, gid: int = 0
    ) -> int:
        with self._op():
            if stat.S_ISREG(mode) or stat.S_IFMT(mode) == 0:
                return self.create(parent, name, mode, uid, gid)
            self._writable()
            raise NotPermitted("FAT cannot store device nodes, fifos or sockets")

    def symlink(self, parent: int, name: str, target: str, uid: int = 0, gid: int = 0) -> int:
        with self._op():
            self._writable()
            raise NotPermitted("FAT cannot store symbolic links")

    def link(self, ino: int, new_parent: int, new_name: str) -> None:
        with self._op():
            self._writable()
            raise NotPermitted("FAT cannot store hard links")

    def set_label(self, label: str) -> None:
        """Set the volume label in the boot sector and the root directory's label entry."""
        with self._op():
            self._writable()
            raw = label_bytes(label)
            geo = self.geo
            pos = 71 if self.fat32 else 43  # BS_VolLab
            self.dev.pwrite(raw if label else b"NO NAME    ", pos)
            if self.fat32 and geo.backup_boot_sector:
                self.dev.pwrite(raw if label else b"NO NAME    ",
                                geo.backup_boot_sector * geo.sector_size + pos)  # fmt: skip
            d = self._directory(1)
            if d.label_slot is not None:
                if label:
                    blob = bytearray(d.data[d.label_slot * 32 : d.label_slot * 32 + 32])
                    blob[0:11] = raw
                    d.write_slots(d.label_slot, bytes(blob))
                    d.label = raw
                else:
                    d.data[d.label_slot * 32] = 0xE5
                    d.write_slots(
                        d.label_slot, bytes(d.data[d.label_slot * 32 : d.label_slot * 32 + 32])
                    )
                    d.label_slot, d.label = None, None
            elif label:
                date, tm, _ = times.encode(times.now_ns())
                e = Entry("", raw, ATTR_VOLUME_ID, 0, 0, 0, 0, 0, 0, tm, date, date, tm, date)
                d.add(e, [], self._grow_dir(d))
                d._remove(e)
                d.label_slot, d.label = e.slot, raw

    # -- lifetime -------------------------------------------------------------------------
    def pin(self, ino: int) -> None:
        with self._op():
            node = self._nodes.get(ino)
            if node is not None:
                node.pins += 1

    def unpin(self, ino: int) -> None:
        with self._op():
            node = self._nodes.get(ino)
            if node is None:
                return
            node.pins = max(0, node.pins - 1)
            if node.pins == 0 and node.detached:
                self._nodes.pop(ino, None)
                if node.clusters and not self.readonly:
                    self.table.free_chain_list(node.clusters)

    def sync(self) -> None:
        with self._op():
            if self.readonly or not self._modified:
                return
            self._flush_dirs()
            self.table.flush()
            self._write_fsinfo()
            self.dev.flush()

    def _flush_dirs(self) -> None:
        for d in self._dirs.values():
            d.flush()

    def _write_fsinfo(self) -> None:
        if self._fsinfo is None:
            return
        free = self.table.count_free()
        nxt = self.table.next_free if self.table.valid(self.table.next_free) else FSI_UNKNOWN
        if (free, nxt) == (self._fsinfo.FSI_Free_Count, self._fsinfo.FSI_Nxt_Free):
            return
        self._fsinfo = self._fsinfo._replace(FSI_Free_Count=free, FSI_Nxt_Free=nxt)
        self.dev.pwrite(FSINFO.pack(*self._fsinfo), self.geo.fsinfo_sector * self.geo.sector_size)

    def close(self) -> None:
        with self._op():
            if self._closed:
                return
            try:
                if not self.readonly and self._modified:
                    for node in list(self._nodes.values()):
                        if node.detached and node.clusters:
                            self.table.free_chain_list(node.clusters)
                            node.clusters = []
                    self._flush_dirs()
                    self.table.flush()
                    self._write_fsinfo()
                    if self._was_clean:
                        self.table.set_clean_bit(True)
                        self.table.flush()
                    self.dev.flush()
            finally:
                self._closed = True


def label_bytes(label: str) -> bytes:
    """An 11-byte, upper-cased, space-padded label (refusing what mkfs.fat refuses)."""
    if len(label) > 11:
        raise InvalidArgument("a FAT label has at most 11 characters")
    if label.startswith(" "):
        raise InvalidArgument("a FAT label cannot start with a space")
    for ch in label:
        if ord(ch) < 0x20 or ch in '*?.,;:/\\|+=<>[]"':
            raise InvalidArgument(f"character {ch!r} is not allowed in a FAT label")
    try:
        raw = label.upper().encode(names.OEM)
    except UnicodeEncodeError as exc:
        raise InvalidArgument("the label must be in code page 437") from exc
    if len(raw) > 11:
        raise InvalidArgument("a FAT label has at most 11 bytes")
    return raw.ljust(11, b" ")


def _run_length(clusters: list[int], idx: int, last: int) -> int:
    """How many clusters from ``clusters[idx]`` (up to index ``last``) are consecutive on
    disk; found by doubling slice comparisons (C speed), not one Python step per cluster."""
    base = clusters[idx]
    room = last - idx + 1
    done, step = 1, 8
    while step >= 1:
        if done + step <= room and clusters[idx + done : idx + done + step] == list(
            range(base + done, base + done + step)
        ):
            done += step
            step *= 2
        else:
            step //= 2
    return done
