"""Make an ext2/ext3/ext4 filesystem in pure Python, the way ``mke2fs`` does.

Why a layout pass first: every placement decision (group sizes, where each group's bitmaps and
inode table live, the journal, the first directories) is made on plain integers before a single
byte is written, so the whole result can be checked for fit (and refused with ``NoSpace``)
without leaving a half-made filesystem behind.

Defaults follow ``/etc/mke2fs.conf`` of e2fsprogs 1.47: ext4 gets ``has_journal, extent,
huge_file, flex_bg (16 groups), metadata_csum, 64bit, dir_nlink, extra_isize`` on top of the
base ``sparse_super, large_file, filetype, dir_index, ext_attr``; block size and inode ratio come
from the size class (``floppy`` < 3 MiB, ``small`` < 512 MiB, default above), inodes are 256
bytes with 32 extra bytes, and the journal has the size of ``ext2fs_default_journal_size``.

Deliberate difference: no ``resize_inode`` (no reserved GDT blocks for online growth); online
resize of an ext4 with ``meta_bg``/``64bit`` does not need it. Asking for it is accepted and
ignored (documented in docs/formats/ext4-write.md).
"""

from __future__ import annotations

import bisect
import os
import struct
import time
import uuid as _uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from burrow.block.device import BlockDevice
from burrow.errors import InvalidArgument, NoSpace, Unsupported
from burrow.fs.ext4 import ondisk as od
from burrow.fs.ext4.write_csum import Checksummer

__all__ = ["FEATURE_NAMES", "Layout", "compute_layout", "default_journal_blocks", "mkfs"]

# Feature name -> (field, bit). Field 0 compat, 1 incompat, 2 ro_compat.
FEATURE_NAMES: dict[str, tuple[int, int]] = {
    "dir_prealloc": (0, 0x1),
    "has_journal": (0, 0x4),
    "ext_attr": (0, 0x8),
    "resize_inode": (0, 0x10),
    "dir_index": (0, 0x20),
    "sparse_super2": (0, 0x200),
    "filetype": (1, 0x2),
    "meta_bg": (1, 0x10),
    "extent": (1, 0x40),
    "extents": (1, 0x40),
    "64bit": (1, 0x80),
    "mmp": (1, 0x100),
    "flex_bg": (1, 0x200),
    "ea_inode": (1, 0x400),
    "csum_seed": (1, 0x2000),
    "large_dir": (1, 0x4000),
    "inline_data": (1, 0x8000),
    "encrypt": (1, 0x10000),
    "casefold": (1, 0x20000),
    "sparse_super": (2, 0x1),
    "large_file": (2, 0x2),
    "huge_file": (2, 0x8),
    "uninit_bg": (2, 0x10),
    "gdt_csum": (2, 0x10),
    "dir_nlink": (2, 0x20),
    "extra_isize": (2, 0x40),
    "quota": (2, 0x100),
    "bigalloc": (2, 0x200),
    "metadata_csum": (2, 0x400),
    "project": (2, 0x2000),
    "verity": (2, 0x8000),
}
# Features this writer can build. Others are refused with Unsupported(name).
_BUILDABLE = {
    "has_journal",
    "ext_attr",
    "resize_inode",
    "dir_index",
    "filetype",
    "extent",
    "extents",
    "64bit",
    "flex_bg",
    "inline_data",
    "large_dir",
    "sparse_super",
    "large_file",
    "huge_file",
    "uninit_bg",
    "gdt_csum",
    "dir_nlink",
    "extra_isize",
    "metadata_csum",
    "csum_seed",
}
_BASE = ["sparse_super", "large_file", "filetype", "dir_index", "ext_attr"]
_BY_TYPE = {
    "ext2": [],
    "ext3": ["has_journal"],
    "ext4": [
        "has_journal",
        "extent",
        "huge_file",
        "flex_bg",
        "metadata_csum",
        "64bit",
        "dir_nlink",
        "extra_isize",
    ],
}
LOG_GROUPS_PER_FLEX = 4
ROOT_INO = 2
JOURNAL_INO = 8
LPF_INO = 11
FIRST_INO = 11


def default_journal_blocks(num_blocks: int) -> int:
    """``ext2fs_default_journal_size``: journal blocks for a filesystem of ``num_blocks``
    (0: too small for a journal)."""
    if num_blocks < 2048:
        return 0
    for limit, size in (
        (32768, 1024),
        (256 * 1024, 4096),
        (512 * 1024, 8192),
        (4096 * 1024, 16384),
        (8192 * 1024, 32768),
        (16384 * 1024, 65536),
        (32768 * 1024, 131072),
    ):
        if num_blocks < limit:
            return size
    return 262144


def parse_features(fstype: str, features: str | Sequence[str] | None) -> list[str]:
    """The feature list for ``fstype`` after applying ``features`` (``"^name"`` removes)."""
    if fstype not in _BY_TYPE:
        raise InvalidArgument(f"unknown filesystem type {fstype!r} (ext2, ext3 or ext4)")
    names = list(_BASE) + list(_BY_TYPE[fstype])
    extra: list[str] = []
    if isinstance(features, str):
        extra = [f.strip() for f in features.split(",") if f.strip()]
    elif features:
        extra = [f.strip() for f in features if f.strip()]
    for item in extra:
        neg = item.startswith("^")
        name = item[1:] if neg else item
        if name == "extents":
            name = "extent"
        if name == "gdt_csum":
            name = "uninit_bg"
        if name not in FEATURE_NAMES:
            raise InvalidArgument(f"unknown ext4 feature {name!r}")
        if neg:
            names = [n for n in names if n != name]
        elif name not in names:
            if name not in _BUILDABLE:
                raise Unsupported(name, "mkfs cannot create this feature")
            names.append(name)
    if "metadata_csum" in names and "uninit_bg" in names:
        names.remove("uninit_bg")
    if "resize_inode" in names:
        names.remove("resize_inode")  # documented: never built
    if "64bit" in names and "extent" not in names:
        names.remove("64bit")  # as mke2fs: 64bit needs extents
    if "inline_data" in names and "ext_attr" not in names:
        raise InvalidArgument("inline_data needs ext_attr")
    return names


def _feature_words(names: Iterable[str]) -> tuple[int, int, int]:
    words = [0, 0, 0]
    for n in names:
        idx, bit = FEATURE_NAMES[n]
        words[idx] |= bit
    return words[0], words[1], words[2]


def _is_power_of(n: int, base: int) -> bool:
    while n > 1 and n % base == 0:
        n //= base
    return n == 1


def group_has_super(group: int, sparse: bool) -> bool:
    """True when ``group`` holds a superblock copy (all groups without sparse_super)."""
    if not sparse or group <= 1:
        return True
    if group % 2 == 0:
        return False
    return _is_power_of(group, 3) or _is_power_of(group, 5) or _is_power_of(group, 7)


class _FreeList:
    """Sorted free extents for placing metadata (a plain first-fit allocator with a goal)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        if end > start:
            i = bisect.bisect_left(self.starts, start)
            self.starts.insert(i, start)
            self.ends.insert(i, end)

    def alloc(self, n: int, goal: int) -> int:
        """First run of ``n`` free blocks at or after ``goal`` (wrapping to the start)."""
        i = max(0, bisect.bisect_right(self.starts, goal) - 1)
        for j in list(range(i, len(self.starts))) + list(range(0, i)):
            s, e = self.starts[j], self.ends[j]
            lo = max(s, goal) if j >= i else s
            if e - lo >= n:
                self._take(j, lo, lo + n)
                return lo
        raise NoSpace(f"no run of {n} free blocks for filesystem metadata")

    def alloc_pieces(self, n: int, goal: int) -> list[tuple[int, int]]:
        """``n`` blocks in as few runs as possible, from ``goal`` on (for the journal)."""
        try:
            return [(self.alloc(n, goal), n)]
        except NoSpace:
            pass
        if sum(self.ends[j] - self.starts[j] for j in range(len(self.starts))) < n:
            raise NoSpace("filesystem too small for its journal") from None
        out: list[tuple[int, int]] = []
        while n:
            j = max(range(len(self.starts)), key=lambda k: self.ends[k] - self.starts[k])
            take = min(n, self.ends[j] - self.starts[j])
            s = self.starts[j]
            self._take(j, s, s + take)
            out.append((s, take))
            n -= take
        return sorted(out)

    def _take(self, j: int, lo: int, hi: int) -> None:
        s, e = self.starts[j], self.ends[j]
        del self.starts[j], self.ends[j]
        self.add(hi, e)
        self.add(s, lo)


@dataclass
class GroupMeta:
    block_bitmap: int
    inode_bitmap: int
    inode_table: int


@dataclass
class Layout:
    """Every number mkfs decides before writing."""

    block_size: int
    blocks_count: int
    first_data_block: int
    blocks_per_group: int
    inodes_per_group: int
    inode_size: int
    groups: int
    desc_size: int
    gdt_blocks: int
    itable_blocks: int
    features: list[str]
    compat: int
    incompat: int
    ro_compat: int
    r_blocks: int
    journal_blocks: int
    flex_size: int
    meta: list[GroupMeta] = field(default_factory=list)
    journal_runs: list[tuple[int, int]] = field(default_factory=list)
    journal_index_blocks: list[int] = field(default_factory=list)
    root_block: int = 0
    lpf_blocks: list[int] = field(default_factory=list)
    lpf_index_blocks: list[int] = field(default_factory=list)
    used: list[tuple[int, int]] = field(default_factory=list)  # (start, length), sorted

    @property
    def sparse(self) -> bool:
        return "sparse_super" in self.features

    def group_start(self, g: int) -> int:
        return self.first_data_block + g * self.blocks_per_group

    def group_blocks(self, g: int) -> int:
        return min(self.blocks_per_group, self.blocks_count - self.group_start(g))

    def super_blocks(self, g: int) -> int:
        """Blocks at the start of group ``g`` taken by a superblock and GDT copy."""
        return 1 + self.gdt_blocks if group_has_super(g, self.sparse) else 0


def _size_class(size: int) -> tuple[int, int]:
    """(block size, inode ratio) of mke2fs's size types."""
    mib = 1 << 20
    if size < 3 * mib:
        return 1024, 8192
    if size < 512 * mib:
        return 1024, 4096
    return 4096, 16384


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def compute_layout(
    size: int,
    *,
    fstype: str = "ext4",
    block_size: int | None = None,
    inode_size: int | None = None,
    inode_ratio: int | None = None,
    features: str | Sequence[str] | None = None,
    journal_blocks: int | None = None,
    reserved_percent: float = 5.0,
    inodes_count: int | None = None,
) -> Layout:
    """Decide the geometry and the placement of all metadata for a device of ``size`` bytes."""
    names = parse_features(fstype, features)
    bs_default, ratio_default = _size_class(size)
    bs = block_size or bs_default
    if bs not in (1024, 2048, 4096, 8192, 16384, 32768, 65536):
        raise InvalidArgument(f"bad block size {bs}")
    ratio = inode_ratio or (ratio_default if block_size is None else max(ratio_default, bs))
    isz = inode_size or 256
    if isz < 128 or isz > bs or isz & (isz - 1):
        raise InvalidArgument(f"bad inode size {isz}")
    if isz == 128 and "extra_isize" in names:
        names.remove("extra_isize")
    if isz == 128 and "inline_data" in names:
        raise InvalidArgument("inline_data needs inodes larger than 128 bytes")
    blocks = size // bs
    if blocks < 64:
        raise NoSpace(f"device of {size} bytes is too small for an ext filesystem")
    if blocks >= 1 << 32 and "64bit" not in names:
        if "extent" not in names:
            raise InvalidArgument("more than 2^32 blocks needs 64bit, which needs extents")
        names.append("64bit")
    if blocks >= 1 << 48:
        raise InvalidArgument("device too large")
    fdb = 1 if bs == 1024 else 0
    bpg = 8 * bs
    desc_size = 64 if "64bit" in names else 32
    compat, incompat, ro_compat = _feature_words(names)

    for _ in range(3):  # trimming the last group can change the group count once
        groups = _ceil(blocks - fdb, bpg)
        total_inodes = inodes_count or max(blocks * bs // ratio, FIRST_INO + 1)
        ipg = _ceil(total_inodes, groups)
        per_block = bs // isz
        unit = per_block * 8 // _gcd(per_block, 8)
        ipg = max(_ceil(ipg, unit) * unit, unit)
        ipg = min(ipg, 8 * bs, ((1 << 32) - 1) // groups // unit * unit)
        itb = ipg * isz // bs
        gdt_blocks = _ceil(groups * desc_size, bs)
        last = (blocks - fdb) - (groups - 1) * bpg
        overhead = 1 + gdt_blocks if group_has_super(groups - 1, "sparse_super" in names) else 0
        if "flex_bg" not in names:
            overhead += 2 + itb
        if groups > 1 and last < overhead + 50:
            blocks = fdb + (groups - 1) * bpg
            continue
        break
    if groups * ipg <= FIRST_INO:
        raise NoSpace("device too small for the reserved inodes")

    jblocks = 0
    if "has_journal" in names:
        jblocks = default_journal_blocks(blocks) if journal_blocks is None else journal_blocks
        if jblocks == 0:
            names.remove("has_journal")
            compat &= ~0x4
        elif jblocks < 1024:
            raise InvalidArgument("a journal needs at least 1024 blocks")
    flex = 1 << LOG_GROUPS_PER_FLEX if "flex_bg" in names else 1
    lay = Layout(
        block_size=bs,
        blocks_count=blocks,
        first_data_block=fdb,
        blocks_per_group=bpg,
        inodes_per_group=ipg,
        inode_size=isz,
        groups=groups,
        desc_size=desc_size,
        gdt_blocks=gdt_blocks,
        itable_blocks=itb,
        features=names,
        compat=compat,
        incompat=incompat,
        ro_compat=ro_compat,
        r_blocks=int(blocks * reserved_percent / 100),
        journal_blocks=jblocks,
        flex_size=flex,
    )
    _place(lay)
    return lay


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _place(lay: Layout) -> None:
    free = _FreeList()
    used: list[tuple[int, int]] = []
    for g in range(lay.groups):
        s = lay.group_start(g)
        sb = lay.super_blocks(g)
        if sb:
            used.append((s, sb))
        free.add(s + sb, s + lay.group_blocks(g))
    if lay.first_data_block:
        pass  # block 0 of a 1 KiB filesystem belongs to no group and is never allocated
    metas: list[GroupMeta] = []
    if lay.flex_size > 1:
        for f0 in range(0, lay.groups, lay.flex_size):
            n = min(lay.flex_size, lay.groups - f0)
            goal = lay.group_start(f0)
            bb = free.alloc(n, goal)
            ib = free.alloc(n, bb + n)
            tables = [free.alloc(lay.itable_blocks, ib + n) for _ in range(n)]
            used += [(bb, n), (ib, n)] + [(t, lay.itable_blocks) for t in tables]
            metas += [GroupMeta(bb + i, ib + i, tables[i]) for i in range(n)]
    else:
        for g in range(lay.groups):
            goal = lay.group_start(g) + lay.super_blocks(g)
            bb = free.alloc(1, goal)
            ib = free.alloc(1, goal)
            it = free.alloc(lay.itable_blocks, goal)
            if min(bb, ib, it) < lay.group_start(g) or max(bb, ib, it + lay.itable_blocks) > (
                lay.group_start(g) + lay.group_blocks(g)
            ):
                raise NoSpace("block group too small for its own metadata")
            used += [(bb, 1), (ib, 1), (it, lay.itable_blocks)]
            metas.append(GroupMeta(bb, ib, it))
    lay.meta = metas
    # Root directory and lost+found go right after group 0's metadata, as mke2fs puts them.
    lay.root_block = free.alloc(1, 0)
    used.append((lay.root_block, 1))
    n_lpf = min(12, max(2, 16384 // lay.block_size))
    lay.lpf_blocks = [free.alloc(1, 0) for _ in range(n_lpf)]
    used += [(b, 1) for b in lay.lpf_blocks]
    if lay.journal_blocks:
        mid = _ceil(lay.groups, 2) if lay.groups > 1 else 0
        if lay.flex_size > 1:
            mid &= ~(lay.flex_size - 1)
        goal = lay.group_start(min(mid, lay.groups - 1))
        runs = free.alloc_pieces(lay.journal_blocks, goal)
        lay.journal_runs = runs
        used += runs
        nidx = _map_index_blocks(lay, lay.journal_blocks, runs)
        lay.journal_index_blocks = [free.alloc(1, runs[0][0]) for _ in range(nidx)]
        used += [(b, 1) for b in lay.journal_index_blocks]
    used.sort()
    lay.used = used
    total_used = sum(n for _, n in used)
    if total_used + lay.first_data_block > lay.blocks_count:
        raise NoSpace("device too small for the filesystem metadata")


def _map_index_blocks(lay: Layout, nblocks: int, runs: list[tuple[int, int]]) -> int:
    """How many extra blocks the journal's block map or extent tree needs."""
    if "extent" in lay.features:
        from burrow.fs.ext4.write_extent import index_blocks_needed, split_runs

        return index_blocks_needed(len(split_runs(runs)), lay.block_size)
    from burrow.fs.ext4.write_blockmap import blockmap_meta_count
    from burrow.fs.ext4.write_extent import Ext

    del runs
    return blockmap_meta_count([Ext(0, 1, nblocks)], lay.block_size)


# ------------------------------------------------------------------------------------------
# Writing


def _set_bits(bitmap: bytearray, start: int, end: int) -> None:
    """Set bits [start, end) in a little-endian bitmap, whole bytes by slice."""
    if end <= start:
        return
    first_full = (start + 7) // 8
    last_full = end // 8
    if first_full <= last_full:
        for b in range(start, min(end, first_full * 8)):
            bitmap[b >> 3] |= 1 << (b & 7)
        bitmap[first_full:last_full] = b"\xff" * (last_full - first_full)
        for b in range(max(last_full * 8, first_full * 8), end):
            bitmap[b >> 3] |= 1 << (b & 7)
    else:
        for b in range(start, end):
            bitmap[b >> 3] |= 1 << (b & 7)


def _time_fields(now_ns: int) -> tuple[int, int]:
    """(32-bit seconds, extra word with epoch bits and nanoseconds) as ext4 stores times:
    seconds = signed 32-bit low word + (epoch << 32)."""
    sec, nsec = divmod(now_ns, 1_000_000_000)
    lo = sec & 0xFFFFFFFF
    signed_lo = lo - (1 << 32) if lo & 0x80000000 else lo
    epoch = ((sec - signed_lo) >> 32) & 3
    return lo, (nsec << 2) | epoch


def mkfs(
    dev: BlockDevice,
    *,
    fstype: str = "ext4",
    label: str = "",
    uuid: str | _uuid.UUID | None = None,
    block_size: int | None = None,
    inode_size: int | None = None,
    features: str | Sequence[str] | None = None,
    inode_ratio: int | None = None,
    journal_blocks: int | None = None,
    reserved_percent: float = 5.0,
    now_ns: int | None = None,
    hash_seed: str | _uuid.UUID | None = None,
) -> None:
    """Write a new, empty ext2/3/4 filesystem over the whole of ``dev``.

    The result has a root directory and ``lost+found`` and passes ``e2fsck -fn``. Nothing is
    written when the device is too small or the options are invalid.
    """
    if dev.readonly:
        from burrow.errors import ReadOnly

        raise ReadOnly("device is read-only")
    lay = compute_layout(
        dev.size,
        fstype=fstype,
        block_size=block_size,
        inode_size=inode_size,
        inode_ratio=inode_ratio,
        features=features,
        journal_blocks=journal_blocks,
        reserved_percent=reserved_percent,
    )
    raw_label = label.encode("utf-8")
    if len(raw_label) > 16:
        raise InvalidArgument("an ext4 label is at most 16 bytes")
    fs_uuid = _uuid.UUID(str(uuid)) if uuid is not None else _uuid.uuid4()
    seed_uuid = _uuid.UUID(str(hash_seed)) if hash_seed is not None else _uuid.uuid4()
    now = time.time_ns() if now_ns is None else now_ns
    _Builder(dev, lay, fs_uuid.bytes, seed_uuid.bytes, raw_label, now).build()


class _Builder:
    """Assembles the blocks of a new filesystem from a :class:`Layout`."""

    def __init__(
        self, dev: BlockDevice, lay: Layout, fs_uuid: bytes, seed: bytes, label: bytes, now: int
    ) -> None:
        self.dev = dev
        self.lay = lay
        self.uuid = fs_uuid
        self.seed = seed
        self.label = label
        self.now = now
        self.bs = lay.block_size
        self.csum = Checksummer(
            fs_uuid,
            metadata_csum="metadata_csum" in lay.features,
            gdt_csum="uninit_bg" in lay.features,
            desc_size=lay.desc_size,
        )
        self.used_inodes = [1 + i for i in range(FIRST_INO)]  # 1..11

    def wblock(self, blk: int, data: bytes | bytearray) -> None:
        self.dev.pwrite(data, blk * self.bs)

    def build(self) -> None:
        lay, bs = self.lay, self.bs
        # 1. zero the inode tables (ITABLE_ZEROED) and bitmaps; punch holes where possible.
        for m in lay.meta:
            self._zero(m.inode_table, lay.itable_blocks)
        if lay.journal_blocks:
            for s, n in lay.journal_runs:
                self._zero(s, n)
        # 2. inodes
        inodes: dict[int, bytearray] = {}
        inodes[1] = self._inode(0, 0, [])
        inodes[ROOT_INO] = self._dir_inode(0o40755, [lay.root_block], 3, [])
        inodes[LPF_INO] = self._dir_inode(0o40700, lay.lpf_blocks, 2, [])
        self._write_dir_blocks(ROOT_INO, ROOT_INO, [lay.root_block], [("lost+found", LPF_INO)])
        self._write_dir_blocks(LPF_INO, ROOT_INO, lay.lpf_blocks, [])
        jblocks_words: bytes = b""
        if lay.journal_blocks:
            jino = self._journal_inode()
            inodes[JOURNAL_INO] = jino
            jblocks_words = bytes(jino[0x28:0x64])
            self._write_journal_sb()
        for ino, raw in inodes.items():
            self.csum.set_inode(raw, ino, lay.inode_size)
            g, idx = divmod(ino - 1, lay.inodes_per_group)
            self.dev.pwrite(raw, lay.meta[g].inode_table * bs + idx * lay.inode_size)
        # 3. bitmaps and descriptors
        descs, free_blocks, free_inodes = self._bitmaps_and_descs()
        gdt = bytearray(lay.gdt_blocks * bs)
        for g, d in enumerate(descs):
            gdt[g * lay.desc_size : (g + 1) * lay.desc_size] = d
        # 4. superblocks
        for g in range(lay.groups):
            if not group_has_super(g, lay.sparse):
                continue
            sb = self._superblock(g, free_blocks, free_inodes, jblocks_words)
            start = lay.group_start(g)
            if g == 0:
                self.dev.pwrite(sb, 1024)
            else:
                self.dev.pwrite(sb, start * bs)
            self.dev.pwrite(gdt, (start + 1) * bs)
        self.dev.flush()

    def _zero(self, start: int, n: int) -> None:
        off, length = start * self.bs, n * self.bs
        if self.dev.can_extents and all(not e.is_data for e in self.dev.extents(length, off)):
            return
        self.dev.write_zeroes(length, off, may_unmap=True)

    # -- inodes --------------------------------------------------------------------------
    def _inode(self, mode: int, links: int, blocks: list[int], size: int = 0) -> bytearray:
        lay = self.lay
        t, extra = _time_fields(self.now)
        rec = od.EXT4_INODE.new(
            i_mode=mode,
            i_links_count=links,
            i_size_lo=size & 0xFFFFFFFF,
            i_size_high=size >> 32,
            i_atime=t,
            i_ctime=t,
            i_mtime=t,
            i_crtime=t,
            i_atime_extra=extra,
            i_ctime_extra=extra,
            i_mtime_extra=extra,
            i_crtime_extra=extra,
            i_extra_isize=32 if lay.inode_size > 128 else 0,
        )
        packed = od.EXT4_INODE.pack(rec)
        raw = bytearray(lay.inode_size)
        n = min(len(packed), lay.inode_size)
        raw[:n] = packed[:n]
        return raw

    def _dir_inode(self, mode: int, blocks: list[int], links: int, _x: list[int]) -> bytearray:
        raw = self._inode(mode, links, blocks, size=len(blocks) * self.bs)
        self._map_blocks(raw, ino=0, runs=_runs_of(blocks), nblocks=len(blocks), meta_blocks=[])
        return raw

    def _map_blocks(
        self,
        raw: bytearray,
        *,
        ino: int,
        runs: list[tuple[int, int]],
        nblocks: int,
        meta_blocks: list[int],
    ) -> None:
        """Fill i_block (extents or a block map), writing any index blocks."""
        lay = self.lay
        off = od.EXT4_INODE.offset("i_block")
        blocks: list[tuple[int, bytearray]]
        if "extent" in lay.features:
            from burrow.fs.ext4.write_extent import build_tree, split_runs

            def tail(data: bytearray) -> None:
                self.csum.set_extent_tail(data, ino, 0)

            root, blocks = build_tree(split_runs(runs), meta_blocks, self.bs, tail)
            raw[off : off + 60] = root
            fo = od.EXT4_INODE.offset("i_flags")
            struct.pack_into("<I", raw, fo, od.EXT4_EXTENTS_FL)
        else:
            from burrow.fs.ext4.write_blockmap import build_blockmap
            from burrow.fs.ext4.write_extent import split_runs

            iblock, blocks = build_blockmap(split_runs(runs), meta_blocks, self.bs)
            raw[off : off + 60] = iblock
        for blk, data in blocks:
            self.wblock(blk, data)
        sectors = (nblocks + len(meta_blocks)) * (self.bs // 512)
        struct.pack_into("<I", raw, od.EXT4_INODE.offset("i_blocks_lo"), sectors & 0xFFFFFFFF)
        struct.pack_into("<H", raw, od.EXT4_INODE.offset("l_i_blocks_high"), sectors >> 32)

    def _journal_inode(self) -> bytearray:
        lay = self.lay
        size = lay.journal_blocks * self.bs
        raw = self._inode(0o100600, 1, [], size=size)
        self._map_blocks(
            raw,
            ino=JOURNAL_INO,
            runs=lay.journal_runs,
            nblocks=lay.journal_blocks,
            meta_blocks=lay.journal_index_blocks,
        )
        return raw

    def _write_journal_sb(self) -> None:
        lay = self.lay
        rec = od.JOURNAL_SUPERBLOCK.new(
            h_magic=od.JBD2_MAGIC_NUMBER,
            h_blocktype=od.JBD2_SUPERBLOCK_V2,
            s_blocksize=self.bs,
            s_maxlen=lay.journal_blocks,
            s_first=1,
            s_sequence=1,
            s_uuid=self.uuid,
            s_nr_users=1,
        )
        jsb = od.JOURNAL_SUPERBLOCK.pack(rec)
        self.wblock(lay.journal_runs[0][0], jsb + bytes(self.bs - len(jsb)))

    def _write_dir_blocks(
        self, ino: int, parent: int, blocks: list[int], entries: list[tuple[str, int]]
    ) -> None:
        from burrow.fs.ext4.write_dir import empty_dir_block, fresh_dir_first_block

        tail = "metadata_csum" in self.lay.features
        ft = "filetype" in self.lay.features
        first = fresh_dir_first_block(
            self.bs, ino, parent, [(n.encode(), i, 2) for n, i in entries], tail=tail, ftype=ft
        )
        for i, b in enumerate(blocks):
            data = first if i == 0 else empty_dir_block(self.bs, tail=tail)
            if tail:
                self.csum.set_dir_tail(data, ino, 0)
            self.wblock(b, data)

    # -- bitmaps and group descriptors ---------------------------------------------------
    def _bitmaps_and_descs(self) -> tuple[list[bytes], int, int]:
        lay, bs = self.lay, self.bs
        csum_on = self.csum.metadata_csum or self.csum.gdt_csum
        used_by_group: dict[int, list[tuple[int, int]]] = {}
        for s, n in lay.used:
            e = s + n
            while s < e:
                g = (s - lay.first_data_block) // lay.blocks_per_group
                gend = lay.group_start(g) + lay.blocks_per_group
                cut = min(e, gend)
                used_by_group.setdefault(g, []).append((s, cut))
                s = cut
        descs: list[bytes] = []
        total_free_b = total_free_i = 0
        ipg = lay.inodes_per_group
        for g in range(lay.groups):
            gs = lay.group_start(g)
            nblk = lay.group_blocks(g)
            bitmap = bytearray(bs)
            nused = 0
            for s, e in used_by_group.get(g, []):
                _set_bits(bitmap, s - gs, e - gs)
                nused += e - s
            _set_bits(bitmap, nblk, bs * 8)  # padding past the end of the last group
            free_b = nblk - nused
            ibitmap = bytearray(bs)
            used_i = [i for i in self.used_inodes if (i - 1) // ipg == g]
            for i in used_i:
                k = (i - 1) % ipg
                ibitmap[k >> 3] |= 1 << (k & 7)
            _set_bits(ibitmap, ipg, bs * 8)
            free_i = ipg - len(used_i)
            flags = 0
            itable_unused = 0
            if csum_on:
                flags |= od.EXT4_BG_INODE_ZEROED
                hi = max(((i - 1) % ipg) + 1 for i in used_i) if used_i else 0
                itable_unused = ipg - hi
                if not used_i:
                    flags |= od.EXT4_BG_INODE_UNINIT
                only_super = all(
                    s == gs and e - s == lay.super_blocks(g) for s, e in used_by_group.get(g, [])
                )
                if g != 0 and g != lay.groups - 1 and only_super:
                    flags |= od.EXT4_BG_BLOCK_UNINIT
            m = lay.meta[g]
            self.wblock(m.block_bitmap, bitmap)
            self.wblock(m.inode_bitmap, ibitmap)
            dirs = 2 if g == 0 else 0
            d = bytearray(
                pack_group_desc(
                    lay.desc_size,
                    block_bitmap=m.block_bitmap,
                    inode_bitmap=m.inode_bitmap,
                    inode_table=m.inode_table,
                    free_blocks=free_b,
                    free_inodes=free_i,
                    used_dirs=dirs,
                    flags=flags,
                    itable_unused=itable_unused,
                )
            )
            self.csum.set_bitmap_csums(d, bitmap[: lay.blocks_per_group // 8], ibitmap[: ipg // 8])
            self.csum.set_group_desc(d, g)
            descs.append(bytes(d))
            total_free_b += free_b
            total_free_i += free_i
        return descs, total_free_b, total_free_i

    def _superblock(self, g: int, free_b: int, free_i: int, jblocks: bytes) -> bytes:
        lay = self.lay
        t, _ = _time_fields(self.now)
        has = lay.features.__contains__
        rec = od.EXT4_SUPER_BLOCK.new(
            s_inodes_count=lay.inodes_per_group * lay.groups,
            s_blocks_count_lo=lay.blocks_count & 0xFFFFFFFF,
            s_blocks_count_hi=lay.blocks_count >> 32,
            s_r_blocks_count_lo=lay.r_blocks & 0xFFFFFFFF,
            s_r_blocks_count_hi=lay.r_blocks >> 32,
            s_free_blocks_count_lo=free_b & 0xFFFFFFFF,
            s_free_blocks_count_hi=free_b >> 32,
            s_free_inodes_count=free_i,
            s_first_data_block=lay.first_data_block,
            s_log_block_size=lay.block_size.bit_length() - 11,
            s_log_cluster_size=lay.block_size.bit_length() - 11,
            s_blocks_per_group=lay.blocks_per_group,
            s_clusters_per_group=lay.blocks_per_group,
            s_inodes_per_group=lay.inodes_per_group,
            s_wtime=t,
            s_max_mnt_count=-1,
            s_magic=od.EXT4_SUPER_MAGIC,
            s_state=od.EXT4_VALID_FS,
            s_errors=1,
            s_lastcheck=t,
            s_rev_level=od.EXT4_DYNAMIC_REV,
            s_first_ino=FIRST_INO,
            s_inode_size=lay.inode_size,
            s_block_group_nr=g,
            s_feature_compat=lay.compat,
            s_feature_incompat=lay.incompat,
            s_feature_ro_compat=lay.ro_compat,
            s_uuid=self.uuid,
            s_volume_name=self.label,
            s_hash_seed=struct.unpack("<4I", self.seed),
            s_def_hash_version=od.DX_HASH_HALF_MD4,
            s_jnl_backup_type=1 if lay.journal_blocks else 0,
            s_journal_inum=JOURNAL_INO if lay.journal_blocks else 0,
            s_desc_size=lay.desc_size if has("64bit") else 0,
            s_default_mount_opts=0x000C,  # user_xattr, acl
            s_mkfs_time=t,
            s_jnl_blocks=_jnl_backup(jblocks, lay.journal_blocks * lay.block_size),
            s_min_extra_isize=32 if lay.inode_size > 128 else 0,
            s_want_extra_isize=32 if lay.inode_size > 128 else 0,
            s_flags=od.EXT2_FLAGS_SIGNED_HASH,
            s_log_groups_per_flex=LOG_GROUPS_PER_FLEX if lay.flex_size > 1 else 0,
            s_checksum_type=od.EXT4_CRC32C_CHKSUM if has("metadata_csum") else 0,
        )
        raw = bytearray(od.EXT4_SUPER_BLOCK.pack(rec))
        self.csum.set_superblock(raw)
        return bytes(raw)


def _jnl_backup(iblock: bytes, size: int) -> tuple[int, ...]:
    """``s_jnl_blocks``: the journal inode's i_block, then i_size_high and i_size."""
    if not iblock:
        return ()
    return (*struct.unpack("<15I", iblock), size >> 32, size & 0xFFFFFFFF)


def pack_group_desc(
    desc_size: int,
    *,
    block_bitmap: int,
    inode_bitmap: int,
    inode_table: int,
    free_blocks: int,
    free_inodes: int,
    used_dirs: int,
    flags: int,
    itable_unused: int,
) -> bytes:
    """One group descriptor (32 or ``desc_size`` bytes), checksums left 0."""
    m32 = 0xFFFFFFFF
    m16 = 0xFFFF
    vals = dict(
        bg_block_bitmap_lo=block_bitmap & m32,
        bg_inode_bitmap_lo=inode_bitmap & m32,
        bg_inode_table_lo=inode_table & m32,
        bg_free_blocks_count_lo=free_blocks & m16,
        bg_free_inodes_count_lo=free_inodes & m16,
        bg_used_dirs_count_lo=used_dirs & m16,
        bg_flags=flags,
        bg_itable_unused_lo=itable_unused & m16,
    )
    if desc_size < 64:
        return od.EXT4_GROUP_DESC.pack(vals)
    vals.update(
        bg_block_bitmap_hi=block_bitmap >> 32,
        bg_inode_bitmap_hi=inode_bitmap >> 32,
        bg_inode_table_hi=inode_table >> 32,
        bg_free_blocks_count_hi=free_blocks >> 16,
        bg_free_inodes_count_hi=free_inodes >> 16,
        bg_used_dirs_count_hi=used_dirs >> 16,
        bg_itable_unused_hi=itable_unused >> 16,
    )
    return od.EXT4_GROUP_DESC_64.pack(vals) + bytes(desc_size - 64)


def _runs_of(blocks: list[int]) -> list[tuple[int, int]]:
    """Consecutive block numbers -> (start, length) runs."""
    runs: list[tuple[int, int]] = []
    for b in blocks:
        if runs and runs[-1][0] + runs[-1][1] == b:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((b, 1))
    return runs


def random_uuid() -> str:
    return str(_uuid.UUID(bytes=os.urandom(16), version=4))
