"""The ext2/3/4 read driver: ``Ext4Filesystem``, a :class:`burrow.fs.vfs.Filesystem`.

Shape (why it is fast and safe):

* Opening reads the superblock only (plus the journal when it needs recovery). Group
  descriptors, inode table blocks and directory blocks are read on demand through one bounded
  LRU block cache (``_block``); decoded inodes go through a bounded first-in-first-out cache
  (``_inode_cache``: a hit costs one dict lookup, which matters when walking large trees).
* File data is mapped once per inode into a sorted list of runs (``_runs``: logical block,
  length, physical block or -1 for a hole/uninitialised extent) and ``read`` issues one
  ``preadinto`` per run into one preallocated buffer — no loop per block.
* Every on-disk number is checked before use; corruption raises ``CorruptImage`` with the
  structure name and byte offset; features that change how data is read and that are not
  implemented raise ``Unsupported(<e2fsprogs feature name>)``.
* Nothing is ever written: a journal that needs recovery is replayed into an in-memory
  overlay (``burrow.fs.ext4.journal``) that sits between this class and the device.

Threads: reads may come from several threads (the block layer's rule); the caches are plain
(Ordered)dicts whose single operations are atomic under the GIL, and evictions tolerate an
entry another thread already removed.

Subclassing (the write side, ``writer.Ext4WritableFilesystem``): ``self.dev`` is the device
reads go through (the journal overlay when one was replayed, else the caller's device),
``self.base_dev`` the caller's device. Geometry lives in plain attributes (``block_size``,
``group_count``, ...). Caches a writer must keep coherent: ``_block_cache`` (block number ->
bytes; call :meth:`invalidate_block` after writing a block or :meth:`invalidate_all`),
``_inode_cache`` (ino -> :class:`Inode`; :meth:`invalidate_inode`), ``_runs_cache`` (ino ->
mapped runs; also dropped by :meth:`invalidate_inode`) and ``_gd_cache`` (group ->
:class:`GroupDesc`; :meth:`invalidate_group`). Overridable readers: :meth:`read_superblock`,
:meth:`group_desc`, :meth:`inode`, :meth:`read_raw_inode`.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import stat as _stat
import struct
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from burrow._crc32c import crc32c as _crc32c
from burrow.block.device import BlockDevice
from burrow.errors import (
    BurrowError,
    CorruptImage,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotFound,
    Unsupported,
    error_for_errno,
)
from burrow.fs import vfs
from burrow.fs.ext4 import ondisk as od
from burrow.fs.ext4.csum import crc16, ext4_chksum, inode_csum_seed, superblock_csum_seed
from burrow.fs.ext4.dirhash import dirhash

__all__ = ["Ext4Filesystem", "GroupDesc", "Inode"]

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_DIRENT = struct.Struct("<IHBB")
_EXT_HDR = struct.Struct("<HHHHI")
_EXT_ENTRY = struct.Struct("<IHHI")
_EXT_IDX = struct.Struct("<IIHH")
_XATTR_ENTRY = struct.Struct("<BBHIII")
_DX_ENTRY = struct.Struct("<II")
_INO_GEN = struct.Struct("<II")
_S = 0x80000000
_NS = 1_000_000_000
# ext4_inode (160 bytes; shorter inodes are zero-padded) without the fields the reader ignores
# (i_dtime, l_i_version, i_obso_faddr, l_i_reserved, i_version_hi, i_projid)
_INODE_USED = struct.Struct("<HHIIII4xHHII4x60sIII4xHHHHH2xHHIIIII8x")

# incompat features this reader understands
_INCOMPAT_OK = (
    od.INCOMPAT_FILETYPE
    | od.INCOMPAT_RECOVER
    | od.INCOMPAT_META_BG
    | od.INCOMPAT_EXTENTS
    | od.INCOMPAT_64BIT
    | od.INCOMPAT_MMP
    | od.INCOMPAT_FLEX_BG
    | od.INCOMPAT_EA_INODE
    | od.INCOMPAT_CSUM_SEED
    | od.INCOMPAT_LARGEDIR
    | od.INCOMPAT_INLINE_DATA
    | od.INCOMPAT_CASEFOLD
)
MAX_BLOCK_CACHE = 4096  # blocks kept (bounded memory: 4096 * block size)
MAX_INODE_CACHE = 8192
MAX_RUNS = 1 << 20  # mapped runs per file (bounded memory on corrupt block maps)
MAX_CACHED_RUNS = 1 << 21  # runs kept by the per-inode mapping cache, all inodes together
MAX_SYMLINK = 65536
MAX_XATTR_VALUE = 65536  # XATTR_SIZE_MAX: no xattr value the kernel serves is larger
_XATTR_LISTED = {
    od.EXT4_XATTR_INDEX_USER,
    od.EXT4_XATTR_INDEX_POSIX_ACL_ACCESS,
    od.EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT,
    od.EXT4_XATTR_INDEX_TRUSTED,
    od.EXT4_XATTR_INDEX_SECURITY,
}
_PREFIX_TO_INDEX = sorted(
    ((p, i) for i, p in od.XATTR_PREFIXES.items() if i in _XATTR_LISTED),
    key=lambda pi: -len(pi[0]),
)
# EXT4_FITS_IN_INODE thresholds on i_extra_isize
_EXTRA_CSUM_HI = 4
_EXTRA_CTIME = 8
_EXTRA_MTIME = 12
_EXTRA_ATIME = 16
_EXTRA_CRTIME = 24


@dataclass(slots=True)
class GroupDesc:
    """One block group descriptor, with the _lo/_hi halves joined."""

    group: int
    block_bitmap: int
    inode_bitmap: int
    inode_table: int
    free_blocks: int
    free_inodes: int
    used_dirs: int
    flags: int
    itable_unused: int
    checksum: int
    offset: int  # byte offset of the descriptor on the device


class Inode(NamedTuple):
    """A decoded inode (immutable). ``raw`` keeps the on-disk bytes (for in-inode xattrs and
    checksums); times are nanoseconds since the epoch; ``blocks`` is in 512-byte units."""

    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    links: int
    flags: int
    blocks: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    crtime_ns: int | None
    i_block: bytes
    generation: int
    file_acl: int
    extra_isize: int
    raw: bytes


def _decode_time(seconds: int, extra: int | None) -> int:
    """ext4_decode_extra_time: signed 32-bit seconds, plus epoch bits and nanoseconds."""
    if seconds >= 0x80000000:
        seconds -= 1 << 32
    if extra is None:
        return seconds * 1_000_000_000
    seconds += (extra & od.EXT4_EPOCH_MASK) << 32
    return seconds * 1_000_000_000 + (extra >> od.EXT4_EPOCH_BITS)


def _acl_to_xattr(value: bytes, where: int) -> bytes:
    """ext4's compact on-disk POSIX ACL -> the ``posix_acl_xattr`` (version 2) the kernel
    returns from getxattr."""
    if len(value) < 4 or _U32.unpack_from(value, 0)[0] != od.EXT2_ACL_VERSION:
        raise CorruptImage("ext4_acl_header", where, "bad ACL version")
    out = bytearray(_U32.pack(od.ACL_EA_VERSION))
    pos = 4
    while pos < len(value):
        if pos + 4 > len(value):
            raise CorruptImage("ext4_acl_entry", where + pos, "truncated ACL entry")
        tag, perm = struct.unpack_from("<HH", value, pos)
        if tag in (od.ACL_USER, od.ACL_GROUP):
            if pos + 8 > len(value):
                raise CorruptImage("ext4_acl_entry", where + pos, "truncated ACL entry")
            eid = _U32.unpack_from(value, pos + 4)[0]
            pos += 8
        elif tag in (od.ACL_USER_OBJ, od.ACL_GROUP_OBJ, od.ACL_MASK, od.ACL_OTHER):
            eid = od.ACL_UNDEFINED_ID
            pos += 4
        else:
            raise CorruptImage("ext4_acl_entry", where + pos, f"unknown ACL tag {tag:#x}")
        out += struct.pack("<HHI", tag, perm, eid)
    return bytes(out)


def _casefold(name: bytes) -> str | None:
    """The kernel's ``utf8_casefold`` (NFD + full case folding), approximated with Python's
    Unicode tables; None for names that are not valid UTF-8 (the kernel compares those as
    bytes)."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", text).casefold())


def _casefold_match(want: str | None, raw: bytes) -> Callable[[bytes], bool]:
    if want is None:
        return raw.__eq__

    def match(name: bytes) -> bool:
        folded = _casefold(name)
        return name == raw if folded is None else folded == want

    return match


class Ext4Filesystem(vfs.Filesystem):
    """Read-only ext2/ext3/ext4 on any :class:`BlockDevice` (see the module docstring)."""

    root_ino = od.EXT4_ROOT_INO
    readonly = True

    # geometry and features, set by read_superblock()
    sb: od.Record
    sb_raw: bytes
    feature_compat: int
    feature_incompat: int
    feature_ro_compat: int
    block_size: int
    cluster_size: int
    blocks_count: int
    free_blocks_count: int
    r_blocks_count: int
    inodes_count: int
    blocks_per_group: int
    clusters_per_group: int
    inodes_per_group: int
    first_data_block: int
    first_ino: int
    inode_size: int
    desc_size: int
    group_count: int
    device_blocks: int
    descs_per_block: int
    csum_seed: int

    def __init__(self, dev: BlockDevice, *, ignore_checksums: bool = False) -> None:
        self.base_dev = dev
        self.dev: BlockDevice = dev
        self.ignore_checksums = ignore_checksums
        self._block_cache: OrderedDict[int, bytes] = OrderedDict()
        self._inode_cache: OrderedDict[int, Inode] = OrderedDict()
        self._runs_cache: OrderedDict[int, tuple[list[int], list[tuple[int, int, int]]]] = (
            OrderedDict()
        )
        self._gd_cache: dict[int, GroupDesc] = {}
        self._runs_cached = 0  # total runs held by _runs_cache
        # name -> inode maps of big linear (non-htree) directories, read-only opens only: a
        # lookup there is a scan of the whole directory, and path walks over a directory of
        # n entries would cost O(n^2) (mkfs.ext4 -d writes every directory linear).
        self._name_index: OrderedDict[int, dict[bytes, int]] = OrderedDict()
        self._name_indexed = 0  # total names held by _name_index
        self._block_reads = 0  # metadata blocks read from the device (cache misses)
        self._inode_misses = 0
        # batch inode decoding reads inode tables directly: only when read_raw_inode is ours
        self._batch_inodes = type(self).read_raw_inode is Ext4Filesystem.read_raw_inode
        self._direct_inodes = type(self).inode is Ext4Filesystem.inode
        self.journal_replayed = 0  # transactions replayed into memory at open
        self.read_superblock()
        if self.feature_incompat & od.INCOMPAT_RECOVER:
            self._recover()

    # ------------------------------------------------------------------ superblock --------
    def read_superblock(self) -> None:
        """Read, check and decode the primary superblock from ``self.dev`` into attributes."""
        dev = self.dev
        if dev.size < od.SUPERBLOCK_OFFSET + od.EXT4_SUPER_BLOCK.size:
            raise CorruptImage("ext4_super_block", od.SUPERBLOCK_OFFSET, "device too small")
        raw = dev.pread(od.EXT4_SUPER_BLOCK.size, od.SUPERBLOCK_OFFSET)
        sb = od.EXT4_SUPER_BLOCK.unpack(raw)
        where = od.SUPERBLOCK_OFFSET
        if sb.s_magic != od.EXT4_SUPER_MAGIC:
            raise CorruptImage("ext4_super_block", where + 0x38, "bad magic (not ext2/3/4)")
        self.sb = sb
        self.sb_raw = raw
        self.feature_compat = compat = sb.s_feature_compat
        self.feature_incompat = incompat = sb.s_feature_incompat
        self.feature_ro_compat = ro = sb.s_feature_ro_compat
        if sb.s_rev_level == od.EXT4_GOOD_OLD_REV:
            compat = incompat = ro = 0
            self.feature_compat = self.feature_incompat = self.feature_ro_compat = 0
        for bit, name in od.INCOMPAT_NAMES.items():
            if incompat & bit and not bit & _INCOMPAT_OK:
                raise Unsupported(name)
        unknown = incompat & ~sum(od.INCOMPAT_NAMES)
        if unknown:
            raise Unsupported(od.feature_names(0, unknown, 0)[0])
        self.has_csum = bool(ro & od.RO_COMPAT_METADATA_CSUM)
        self.has_gdt_csum = bool(ro & od.RO_COMPAT_GDT_CSUM) and not self.has_csum
        if self.has_csum:
            if sb.s_checksum_type != od.EXT4_CRC32C_CHKSUM:
                raise Unsupported("metadata_csum", f"checksum type {sb.s_checksum_type}")
            if ext4_chksum(0xFFFFFFFF, raw[:0x3FC]) != sb.s_checksum:
                self._csum_error("ext4_super_block", where + 0x3FC)
            self.csum_seed = superblock_csum_seed(
                sb.s_uuid, sb.s_checksum_seed, bool(incompat & od.INCOMPAT_CSUM_SEED)
            )
        else:
            self.csum_seed = 0
        if sb.s_log_block_size > 6:
            raise CorruptImage("ext4_super_block", where + 0x18, "block size above 64 KiB")
        self.block_size = bs = 1024 << sb.s_log_block_size
        self.bigalloc = bool(ro & od.RO_COMPAT_BIGALLOC)
        if self.bigalloc:
            if sb.s_log_cluster_size < sb.s_log_block_size or sb.s_log_cluster_size > 29:
                raise CorruptImage("ext4_super_block", where + 0x1C, "bad cluster size")
            self.cluster_size = 1024 << sb.s_log_cluster_size
        else:
            self.cluster_size = bs
        self.is_64bit = bool(incompat & od.INCOMPAT_64BIT)
        self.blocks_count = sb.s_blocks_count_lo | (
            (sb.s_blocks_count_hi << 32) if self.is_64bit else 0
        )
        self.free_blocks_count = sb.s_free_blocks_count_lo | (
            (sb.s_free_blocks_count_hi << 32) if self.is_64bit else 0
        )
        self.r_blocks_count = sb.s_r_blocks_count_lo | (
            (sb.s_r_blocks_count_hi << 32) if self.is_64bit else 0
        )
        self.inodes_count = sb.s_inodes_count
        self.blocks_per_group = sb.s_blocks_per_group
        self.clusters_per_group = (
            sb.s_clusters_per_group if self.bigalloc else sb.s_blocks_per_group
        )
        self.inodes_per_group = sb.s_inodes_per_group
        self.first_data_block = sb.s_first_data_block
        if sb.s_rev_level == od.EXT4_GOOD_OLD_REV:
            self.inode_size = od.EXT4_GOOD_OLD_INODE_SIZE
            self.first_ino = od.EXT4_GOOD_OLD_FIRST_INO
        else:
            self.inode_size = sb.s_inode_size
            self.first_ino = sb.s_first_ino
        isz = self.inode_size
        if isz < 128 or isz > bs or isz & (isz - 1):
            raise CorruptImage("ext4_super_block", where + 0x58, f"bad inode size {isz}")
        if self.is_64bit:
            self.desc_size = sb.s_desc_size
            if (
                self.desc_size < od.EXT4_MIN_DESC_SIZE_64BIT
                or self.desc_size > od.EXT4_MAX_DESC_SIZE
                or self.desc_size & (self.desc_size - 1)
            ):
                raise CorruptImage("ext4_super_block", where + 0xFE, "bad s_desc_size")
        else:
            self.desc_size = od.EXT4_MIN_DESC_SIZE
        if self.blocks_per_group == 0 or self.inodes_per_group == 0:
            raise CorruptImage("ext4_super_block", where + 0x20, "zero blocks/inodes per group")
        if self.blocks_per_group > 8 * bs * (self.cluster_size // bs) or (
            self.clusters_per_group > 8 * bs
        ):
            raise CorruptImage("ext4_super_block", where + 0x20, "too many blocks per group")
        if self.inodes_per_group > 8 * bs:
            raise CorruptImage("ext4_super_block", where + 0x28, "too many inodes per group")
        if self.first_data_block >= self.blocks_count or self.blocks_count == 0:
            raise CorruptImage("ext4_super_block", where + 0x14, "bad s_first_data_block")
        if self.first_data_block not in (0, 1 if bs == 1024 and not self.bigalloc else 0):
            raise CorruptImage("ext4_super_block", where + 0x14, "bad s_first_data_block")
        self.group_count = -(-(self.blocks_count - self.first_data_block) // self.blocks_per_group)
        if self.inodes_count > self.group_count * self.inodes_per_group:
            raise CorruptImage("ext4_super_block", where, "s_inodes_count exceeds the groups")
        self.device_blocks = dev.size // bs
        self.descs_per_block = bs // self.desc_size
        self.has_extents = bool(incompat & od.INCOMPAT_EXTENTS)
        self.has_filetype = bool(incompat & od.INCOMPAT_FILETYPE)
        self.has_dir_index = bool(compat & od.COMPAT_DIR_INDEX)
        self.has_inline = bool(incompat & od.INCOMPAT_INLINE_DATA)
        self.has_meta_bg = bool(incompat & od.INCOMPAT_META_BG)
        self.has_huge_file = bool(ro & od.RO_COMPAT_HUGE_FILE)
        self.has_largedir = bool(incompat & od.INCOMPAT_LARGEDIR)
        self.has_casefold = bool(incompat & od.INCOMPAT_CASEFOLD)
        self.hash_seed: tuple[int, ...] = tuple(sb.s_hash_seed)
        self.hash_unsigned = 3 if sb.s_flags & od.EXT2_FLAGS_UNSIGNED_HASH else 0
        self.dirent_tail = 12 if self.has_csum else 0

    def _csum_error(self, structure: str, offset: int | None, detail: str = "") -> None:
        if not self.ignore_checksums:
            raise CorruptImage(structure, offset, detail or "checksum mismatch")

    # ------------------------------------------------------------------ journal -----------
    def _recover(self) -> None:
        """Replay the journal into an in-memory overlay, then re-read the superblock."""
        from burrow.fs.ext4.journal import replay

        if not self.feature_compat & od.COMPAT_HAS_JOURNAL:
            raise CorruptImage("ext4_super_block", od.SUPERBLOCK_OFFSET + 0x60,
                               "needs_recovery without a journal")  # fmt: skip
        if self.sb.s_journal_inum == 0:
            raise Unsupported("journal_dev", "external journal needs recovery")
        overlay, count = replay(self)
        self.dev = overlay
        self.journal_replayed = count
        self.invalidate_all()
        self.read_superblock()
        # the recovered image as the kernel leaves it: recovery flag cleared
        self.feature_incompat &= ~od.INCOMPAT_RECOVER

    # ------------------------------------------------------------------ blocks ------------
    def invalidate_all(self) -> None:
        """Drop every cache (after the device below changed)."""
        self._block_cache.clear()
        self._inode_cache.clear()
        self._runs_cache.clear()
        self._runs_cached = 0
        self._gd_cache.clear()
        self._name_index.clear()
        self._name_indexed = 0

    def invalidate_block(self, blk: int) -> None:
        self._block_cache.pop(blk, None)

    def invalidate_inode(self, ino: int) -> None:
        self._inode_cache.pop(ino, None)
        dropped = self._runs_cache.pop(ino, None)
        if dropped is not None:
            self._runs_cached -= len(dropped[1])

    def invalidate_group(self, group: int) -> None:
        self._gd_cache.pop(group, None)

    def _check_block(self, blk: int, structure: str, where: int | None) -> None:
        if blk < self.first_data_block or blk >= self.blocks_count or blk >= self.device_blocks:
            raise CorruptImage(structure, where, f"block {blk} outside the filesystem")

    def _block(self, blk: int, structure: str = "block", where: int | None = None) -> bytes:
        """One filesystem block through the LRU cache (for metadata; bounds-checked)."""
        cache = self._block_cache
        data = cache.get(blk)
        if data is not None:
            with contextlib.suppress(KeyError):  # another thread may have evicted it
                cache.move_to_end(blk)
            return data
        if blk < 0 or blk >= self.blocks_count or blk >= self.device_blocks:
            raise CorruptImage(structure, where, f"block {blk} outside the filesystem")
        bs = self.block_size
        data = self.dev.pread(bs, blk * bs)
        self._block_reads += 1
        cache[blk] = data
        if len(cache) > MAX_BLOCK_CACHE:
            with contextlib.suppress(KeyError):
                cache.popitem(last=False)
        return data

    # ------------------------------------------------------------------ groups ------------
    def group_has_super(self, group: int) -> bool:
        """``ext4_bg_has_super``: does ``group`` hold a superblock backup?"""
        if group == 0:
            return True
        if self.feature_compat & od.COMPAT_SPARSE_SUPER2:
            return group in tuple(self.sb.s_backup_bgs)
        if group <= 1 or not self.feature_ro_compat & od.RO_COMPAT_SPARSE_SUPER:
            return True
        if not group & 1:
            return False
        for base in (3, 5, 7):
            n = base
            while n < group:
                n *= base
            if n == group:
                return True
        return False

    def group_first_block(self, group: int) -> int:
        return group * self.blocks_per_group + self.first_data_block

    def desc_block(self, desc_block_nr: int) -> int:
        """``descriptor_loc``: where descriptor block ``desc_block_nr`` lives."""
        logical_sb = 1 if self.block_size == 1024 else 0
        if not self.has_meta_bg or desc_block_nr < self.sb.s_first_meta_bg:
            return logical_sb + desc_block_nr + 1
        bg = self.descs_per_block * desc_block_nr
        has_super = 1 if self.group_has_super(bg) else 0
        if self.block_size == 1024 and desc_block_nr == 0 and self.first_data_block == 0:
            has_super += 1
        return has_super + self.group_first_block(bg)

    def group_desc(self, group: int) -> GroupDesc:
        """The descriptor of ``group`` (cached; checksum-verified)."""
        gd = self._gd_cache.get(group)
        if gd is not None:
            return gd
        if group < 0 or group >= self.group_count:
            raise CorruptImage("ext4_group_desc", None, f"group {group} out of range")
        nr, idx = divmod(group, self.descs_per_block)
        blk = self.desc_block(nr)
        where = blk * self.block_size + idx * self.desc_size
        data = self._block(blk, "ext4_group_desc", where)
        raw = data[idx * self.desc_size : (idx + 1) * self.desc_size]
        if self.is_64bit:
            d = od.EXT4_GROUP_DESC_64.unpack(raw)
            hi = True
        else:
            d = od.EXT4_GROUP_DESC.unpack(raw)
            hi = False
        if self.has_csum or self.has_gdt_csum:
            self._verify_gd(group, raw, d.bg_checksum, where)
        gd = GroupDesc(
            group=group,
            block_bitmap=d.bg_block_bitmap_lo | ((d.bg_block_bitmap_hi << 32) if hi else 0),
            inode_bitmap=d.bg_inode_bitmap_lo | ((d.bg_inode_bitmap_hi << 32) if hi else 0),
            inode_table=d.bg_inode_table_lo | ((d.bg_inode_table_hi << 32) if hi else 0),
            free_blocks=d.bg_free_blocks_count_lo
            | ((d.bg_free_blocks_count_hi << 16) if hi else 0),
            free_inodes=d.bg_free_inodes_count_lo
            | ((d.bg_free_inodes_count_hi << 16) if hi else 0),
            used_dirs=d.bg_used_dirs_count_lo | ((d.bg_used_dirs_count_hi << 16) if hi else 0),
            flags=d.bg_flags,
            itable_unused=d.bg_itable_unused_lo | ((d.bg_itable_unused_hi << 16) if hi else 0),
            checksum=d.bg_checksum,
            offset=where,
        )
        self._gd_cache[group] = gd
        return gd

    def group_desc_csum(self, group: int, raw: bytes) -> int:
        """``ext4_group_desc_csum`` over a descriptor's bytes (its bg_checksum is skipped)."""
        le_group = group.to_bytes(4, "little")
        if self.has_csum:
            c = ext4_chksum(self.csum_seed, le_group)
            c = ext4_chksum(c, raw[:0x1E])
            c = ext4_chksum(c, b"\0\0")
            if self.desc_size > 0x20:
                c = ext4_chksum(c, raw[0x20 : self.desc_size])
            return c & 0xFFFF
        c = crc16(0xFFFF, self.sb.s_uuid)
        c = crc16(c, le_group)
        c = crc16(c, raw[:0x1E])
        if self.is_64bit and self.desc_size > 0x20:
            c = crc16(c, raw[0x20 : self.desc_size])
        return c

    def _verify_gd(self, group: int, raw: bytes, stored: int, where: int) -> None:
        if self.group_desc_csum(group, raw) != stored:
            self._csum_error("ext4_group_desc", where + 0x1E, f"group {group} checksum")

    # ------------------------------------------------------------------ inodes ------------
    def _check_ino(self, ino: int) -> None:
        if ino < 1 or ino > self.inodes_count:
            raise NotFound(f"no inode {ino}")

    def read_raw_inode(self, ino: int) -> tuple[bytes, int]:
        """The on-disk bytes of inode ``ino`` and their byte offset (zeros for an inode in an
        INODE_UNINIT group)."""
        if ino < 1 or ino > self.inodes_count:
            raise NotFound(f"no inode {ino}")
        group, index = divmod(ino - 1, self.inodes_per_group)
        gd = self._gd_cache.get(group) or self.group_desc(group)
        isz = self.inode_size
        if gd.flags & od.EXT4_BG_INODE_UNINIT and (self.has_csum or self.has_gdt_csum):
            return bytes(isz), -1
        bidx, slot = divmod(index, self.block_size // isz)
        tb = gd.inode_table + bidx
        off = slot * isz
        data = self._block_cache.get(tb)
        if data is None:
            if gd.inode_table < self.first_data_block or tb >= self.blocks_count:
                raise CorruptImage("ext4_group_desc", gd.offset + 8, "inode table outside fs")
            data = self._block(tb, "inode table", tb * self.block_size + off)
        return data[off : off + isz], tb * self.block_size + off

    def inode(self, ino: int) -> Inode:
        """Inode ``ino``, decoded and checksum-verified (cached; the oldest entry is evicted
        first: a hit does not reorder, which keeps the hot path to one dict lookup).

        After the first 64 misses (a tree walk rather than a few lookups), a miss decodes every
        in-use inode of the same inode-table block at once (walks stat neighbours next); a neighbour that fails to decode is simply not cached, so its
        error surfaces only when it is asked for. Subclasses that override
        :meth:`read_raw_inode` get one-at-a-time decoding through it instead."""
        cache = self._inode_cache
        node = cache.get(ino)
        if node is not None:
            return node
        self._inode_misses += 1
        if self._batch_inodes and self._inode_misses > 64:  # a walk, not a few lookups
            self._decode_inode_block(ino)
            node = cache.get(ino)
            if node is not None:
                return node
        raw, where = self.read_raw_inode(ino)
        node = self._decode_inode(ino, raw, where)
        if len(cache) >= MAX_INODE_CACHE:
            with contextlib.suppress(KeyError):  # O(1), unlike a plain dict's next(iter())
                cache.popitem(last=False)
        cache[ino] = node
        return node

    def _decode_inode_block(self, ino: int) -> None:
        """Decode and cache the in-use inodes of the inode-table block holding ``ino``."""
        if ino < 1 or ino > self.inodes_count:
            return
        group, index = divmod(ino - 1, self.inodes_per_group)
        gd = self._gd_cache.get(group) or self.group_desc(group)
        if gd.flags & od.EXT4_BG_INODE_UNINIT and (self.has_csum or self.has_gdt_csum):
            return
        isz = self.inode_size
        bs = self.block_size
        per_block = bs // isz
        bidx = index // per_block
        tb = gd.inode_table + bidx
        data = self._block_cache.get(tb)
        if data is None:
            if gd.inode_table < self.first_data_block or tb >= self.blocks_count:
                return  # read_raw_inode reports it
            try:
                data = self._block(tb, "inode table", tb * bs)
            except CorruptImage:
                return
        first = group * self.inodes_per_group + bidx * per_block + 1
        last = min(first + per_block, (group + 1) * self.inodes_per_group + 1)
        last = min(last, self.inodes_count + 1)
        cache = self._inode_cache
        decode = self._decode_inode
        base = tb * bs
        for k in range(last - first):
            off = k * isz
            i = first + k
            if i != ino and (i in cache or not data[off + 0x1A : off + 0x1C].strip(b"\0")):
                continue  # cached already, or i_links_count 0: not in use
            try:
                node = decode(i, data[off : off + isz], base + off)
            except CorruptImage:
                continue
            if len(cache) >= MAX_INODE_CACHE:
                with contextlib.suppress(KeyError):
                    cache.popitem(last=False)
            cache[i] = node

    def _decode_inode(self, ino: int, raw: bytes, where: int) -> Inode:
        isz = self.inode_size
        if isz >= 160:
            v = _INODE_USED.unpack_from(raw, 0)
        else:
            v = _INODE_USED.unpack_from(raw + bytes(160 - isz), 0)
        (mode, uid, size_lo, atime, ctime, mtime, gid, links, blocks_lo, flags, i_block,
         generation, acl_lo, size_hi, blocks_hi, acl_hi, uid_hi, gid_hi, csum_lo, extra_isize,
         csum_hi, ctime_x, mtime_x, atime_x, crtime, crtime_x) = v  # fmt: skip
        if isz == 128:
            extra_isize = 0
        elif extra_isize + 128 > isz or extra_isize & 3:
            raise CorruptImage("ext4_inode", where + 0x80, f"inode {ino}: bad i_extra_isize")
        if self.has_csum and where >= 0 and (mode or links or flags):
            # ext4_inode_csum, inlined (see inode_csum): one crc pass over a zeroed copy
            head = _INO_GEN.pack(ino, generation)
            if isz > 128 and extra_isize >= _EXTRA_CSUM_HI:
                c = (
                    _crc32c(
                        b"".join(
                            (head, raw[:0x7C], b"\0\0", raw[0x7E:0x82], b"\0\0", raw[0x84:isz])
                        ),
                        self.csum_seed ^ 0xFFFFFFFF,
                    )
                    ^ 0xFFFFFFFF
                )
                ok = c == csum_lo | (csum_hi << 16)
            else:
                c = (
                    _crc32c(
                        b"".join((head, raw[:0x7C], b"\0\0", raw[0x7E:isz])),
                        self.csum_seed ^ 0xFFFFFFFF,
                    )
                    ^ 0xFFFFFFFF
                )
                ok = (c & 0xFFFF) == csum_lo
            if not ok:
                self._csum_error("ext4_inode", where + 0x7C, f"inode {ino} checksum")
        regular = mode & 0o170000 == 0o100000
        size = size_lo | (size_hi << 32) if regular or self.has_largedir else size_lo
        if self.has_huge_file:
            blocks = blocks_lo | (blocks_hi << 32)
            if flags & od.EXT4_HUGE_FILE_FL:
                blocks *= self.block_size // 512
        else:
            blocks = blocks_lo
        # ext4_decode_extra_time: signed 32-bit seconds + epoch bits, nanoseconds
        if extra_isize >= _EXTRA_CRTIME:
            ctime_ns = ((ctime ^ _S) - _S + ((ctime_x & 3) << 32)) * _NS + (ctime_x >> 2)
            mtime_ns = ((mtime ^ _S) - _S + ((mtime_x & 3) << 32)) * _NS + (mtime_x >> 2)
            atime_ns = ((atime ^ _S) - _S + ((atime_x & 3) << 32)) * _NS + (atime_x >> 2)
            crtime_ns: int | None = ((crtime ^ _S) - _S + ((crtime_x & 3) << 32)) * _NS + (
                crtime_x >> 2
            )
        else:
            ctime_ns = _decode_time(ctime, ctime_x if extra_isize >= _EXTRA_CTIME else None)
            mtime_ns = _decode_time(mtime, mtime_x if extra_isize >= _EXTRA_MTIME else None)
            atime_ns = _decode_time(atime, atime_x if extra_isize >= _EXTRA_ATIME else None)
            crtime_ns = None
        return Inode(
            ino, mode, uid | (uid_hi << 16), gid | (gid_hi << 16), size, links, flags, blocks,
            atime_ns, mtime_ns, ctime_ns, crtime_ns, i_block, generation,
            acl_lo | ((acl_hi << 32) if self.is_64bit else 0), extra_isize, raw,
        )  # fmt: skip

    def inode_csum(self, ino: int, raw: bytes, generation: int, extra_isize: int) -> int:
        """``ext4_inode_csum`` (full 32 bits) over ``raw`` with both checksum fields zeroed
        (one crc pass: the seed's inode number and generation are just the first 8 bytes)."""
        isz = self.inode_size
        head = _INO_GEN.pack(ino, generation)
        if isz > 128 and extra_isize >= _EXTRA_CSUM_HI:
            data = b"".join((head, raw[:0x7C], b"\0\0", raw[0x7E:0x82], b"\0\0", raw[0x84:isz]))
        else:
            data = b"".join((head, raw[:0x7C], b"\0\0", raw[0x7E:isz]))
        return ext4_chksum(self.csum_seed, data)

    def _verify_inode(
        self, ino: int, raw: bytes, gen: int, lo: int, hi: int, extra: int, where: int
    ) -> None:
        c = self.inode_csum(ino, raw, gen, extra)
        if extra >= _EXTRA_CSUM_HI and self.inode_size > 128:
            ok = c == (lo | (hi << 16))
        else:
            ok = (c & 0xFFFF) == lo
        if not ok:
            self._csum_error("ext4_inode", where + 0x7C, f"inode {ino} checksum")

    def _inode_seed(self, node: Inode) -> int:
        return inode_csum_seed(self.csum_seed, node.ino, node.generation)

    # ------------------------------------------------------------------ block mapping -----
    def _runs(self, node: Inode) -> tuple[list[int], list[tuple[int, int, int]]]:
        """Sorted runs (logical block, count, physical block or -1 for zeros) of a file,
        plus their start list for bisect. Cached per inode."""
        cached = self._runs_cache.get(node.ino)
        if cached is not None:
            with contextlib.suppress(KeyError):
                self._runs_cache.move_to_end(node.ino)
            return cached
        if node.flags & od.EXT4_EXTENTS_FL:
            runs = self._extent_runs(node)
        elif node.flags & od.EXT4_INLINE_DATA_FL:
            runs = []
        else:
            runs = self._blockmap_runs(node)
        result = ([r[0] for r in runs], runs)
        cache = self._runs_cache
        cache[node.ino] = result
        self._runs_cached += len(runs)
        while len(cache) > 1 and (len(cache) > 256 or self._runs_cached > MAX_CACHED_RUNS):
            try:
                _ino, (_s, old) = cache.popitem(last=False)
            except KeyError:
                break
            self._runs_cached -= len(old)
        return result

    def _extent_runs(self, node: Inode) -> list[tuple[int, int, int]]:
        runs: list[tuple[int, int, int]] = []
        visited: set[int] = set()
        seed = self._inode_seed(node) if self.has_csum else 0
        self._walk_extents(node, node.i_block, -1, None, runs, visited, seed, 0, 0, 1 << 32)
        return runs

    def _walk_extents(
        self,
        node: Inode,
        data: bytes,
        blk: int,
        depth_expected: int | None,
        runs: list[tuple[int, int, int]],
        visited: set[int],
        seed: int,
        level: int,
        lo: int,
        hi: int,
    ) -> None:
        where = blk * self.block_size if blk >= 0 else None
        if len(data) < 12:
            raise CorruptImage("ext4_extent_header", where, "too short")
        magic, entries, emax, depth, _gen = _EXT_HDR.unpack_from(data, 0)
        if magic != od.EXT4_EXT_MAGIC:
            raise CorruptImage("ext4_extent_header", where, f"inode {node.ino}: bad magic")
        room = (len(data) - 12) // 12
        if emax > room or entries > emax or emax == 0:
            raise CorruptImage("ext4_extent_header", where, f"inode {node.ino}: bad counts")
        if depth > od.EXT4_MAX_EXTENT_DEPTH or (
            depth_expected is not None and depth != depth_expected
        ):
            raise CorruptImage("ext4_extent_header", where, f"inode {node.ino}: bad depth")
        if blk >= 0 and self.has_csum:
            tail = 12 + 12 * emax
            if (
                tail + 4 <= len(data)
                and ext4_chksum(seed, data[:tail]) != _U32.unpack_from(data, tail)[0]
            ):
                self._csum_error("ext4_extent_tail", where, f"inode {node.ino}")
        prev = lo - 1
        if depth == 0:
            for i in range(entries):
                lblk, length, start_hi, start_lo = _EXT_ENTRY.unpack_from(data, 12 + 12 * i)
                uninit = length > od.EXT_INIT_MAX_LEN
                if uninit:
                    length -= od.EXT_INIT_MAX_LEN
                if length == 0 or lblk <= prev or lblk < lo or lblk + length > hi:
                    raise CorruptImage(
                        "ext4_extent", where, f"inode {node.ino}: overlapping or empty extent"
                    )
                pblk = start_lo | (start_hi << 32)
                if not uninit:
                    self._check_run(pblk, length, node.ino, where)
                prev = lblk + length - 1
                if runs and runs[-1][0] + runs[-1][1] > lblk:
                    raise CorruptImage("ext4_extent", where, f"inode {node.ino}: overlap")
                if len(runs) >= MAX_RUNS:
                    raise CorruptImage("ext4_extent", where, "too many extents")
                runs.append((lblk, length, -1 if uninit else pblk))
            return
        idx = [_EXT_IDX.unpack_from(data, 12 + 12 * i) for i in range(entries)]
        for i, (lblk, leaf_lo, leaf_hi, _unused) in enumerate(idx):
            if (lblk <= prev and i) or lblk < lo:
                raise CorruptImage("ext4_extent_idx", where, f"inode {node.ino}: unsorted index")
            prev = lblk
            child_hi = idx[i + 1][0] if i + 1 < len(idx) else hi
            leaf = leaf_lo | (leaf_hi << 32)
            if leaf in visited:
                raise CorruptImage("ext4_extent_idx", where, f"inode {node.ino}: loop")
            visited.add(leaf)
            self._check_block(leaf, "ext4_extent_idx", where)
            child = self._block(leaf, "ext4_extent_header", leaf * self.block_size)
            self._walk_extents(
                node, child, leaf, depth - 1, runs, visited, seed, level + 1, lblk, child_hi
            )

    def _check_run(self, pblk: int, count: int, ino: int, where: int | None) -> None:
        if pblk < self.first_data_block or pblk + count > min(
            self.blocks_count, self.device_blocks
        ):
            raise CorruptImage("ext4_extent", where, f"inode {ino}: blocks outside the fs")

    def _blockmap_runs(self, node: Inode) -> list[tuple[int, int, int]]:
        """Classic direct/indirect/double/triple indirect maps, coalesced into runs."""
        bs = self.block_size
        per = bs // 4
        nblocks = -(-node.size // bs)
        ptrs = struct.unpack_from("<15I", node.i_block, 0)
        runs: list[tuple[int, int, int]] = []
        cur = [0, 0, 0]  # logical start, count, physical start of the open run
        limit = self.blocks_count

        def add(lblk: int, pblk: int) -> None:
            if pblk >= limit or pblk < self.first_data_block or pblk >= self.device_blocks:
                raise CorruptImage("ext4_inode", None, f"inode {node.ino}: block outside fs")
            if cur[1] and cur[0] + cur[1] == lblk and cur[2] + cur[1] == pblk:
                cur[1] += 1
                return
            if cur[1]:
                if len(runs) >= MAX_RUNS:
                    raise CorruptImage("ext4_inode", None, "too many blocks")
                runs.append((cur[0], cur[1], cur[2]))
            cur[0], cur[1], cur[2] = lblk, 1, pblk

        for i in range(min(12, nblocks)):
            if ptrs[i]:
                add(i, ptrs[i])
        visited: set[int] = set()

        def walk(blk: int, level: int, base: int) -> None:
            if blk in visited:
                raise CorruptImage("ext4_inode", blk * bs, f"inode {node.ino}: indirect loop")
            visited.add(blk)
            data = self._block(blk, "indirect block", blk * bs)
            vals = struct.unpack(f"<{per}I", data)
            span = per**level
            for j, p in enumerate(vals):
                lb = base + j * span
                if lb >= nblocks:
                    break
                if not p:
                    continue
                if level == 0:
                    add(lb, p)
                else:
                    walk(p, level - 1, lb)

        base = 12
        for level, p in enumerate(ptrs[12:15]):
            if base >= nblocks:
                break
            if p:
                walk(p, level, base)
            base += per ** (level + 1)
        if cur[1]:
            runs.append((cur[0], cur[1], cur[2]))
        return runs

    def _map_block(self, node: Inode, lblk: int) -> int:
        """Physical block of logical ``lblk`` (-1: hole or uninitialised)."""
        starts, runs = self._runs(node)
        i = bisect.bisect_right(starts, lblk) - 1
        if i >= 0:
            s, c, p = runs[i]
            if lblk < s + c:
                return -1 if p < 0 else p + lblk - s
        return -1

    # ------------------------------------------------------------------ data --------------
    def _inline_data(self, node: Inode) -> bytes:
        extra = self._xattr_value(node, od.EXT4_XATTR_INDEX_SYSTEM, b"data", missing_ok=True)
        return node.i_block + (extra or b"")

    def readinto(self, ino: int, offset: int, buf: bytearray | memoryview) -> int:
        """Fill ``buf`` from ``offset``; returns the bytes filled (short only at EOF)."""
        node = self.inode(ino)
        if _stat.S_ISDIR(node.mode):
            raise IsADirectory(f"inode {ino} is a directory")
        mv = memoryview(buf).cast("B")
        if _stat.S_ISLNK(node.mode):  # a fast symlink's i_block is text, not a block map
            data = self._readlink_bytes(node)[offset : offset + len(mv)] if offset >= 0 else b""
            mv[: len(data)] = data
            return len(data)
        return self._readinto(node, offset, mv)

    def _readinto(self, node: Inode, offset: int, mv: memoryview) -> int:
        size = node.size
        if offset >= size or not len(mv):
            return 0
        n = min(len(mv), size - offset)
        mv = mv[:n]
        if node.flags & od.EXT4_INLINE_DATA_FL:
            data = self._inline_data(node)[offset : offset + n]
            mv[: len(data)] = data
            mv[len(data) :] = bytes(n - len(data))
            return n
        bs = self.block_size
        starts, runs = self._runs(node)
        first = offset // bs
        last = (offset + n - 1) // bs
        i = max(0, bisect.bisect_right(starts, first) - 1)
        pos = offset  # file position already filled up to
        end = offset + n
        dev = self.dev
        nruns = len(runs)
        while i < nruns and pos < end:
            s, c, p = runs[i]
            if s > last:
                break
            rs, re = s * bs, (s + c) * bs
            if re <= pos:
                i += 1
                continue
            if rs > pos:  # hole before this run
                hole_end = min(rs, end)
                mv[pos - offset : hole_end - offset] = bytes(hole_end - pos)
                pos = hole_end
                if pos >= end:
                    break
            take = min(re, end) - pos
            if p < 0:
                mv[pos - offset : pos - offset + take] = bytes(take)
            else:
                dev.preadinto(mv[pos - offset : pos - offset + take], p * bs + (pos - rs))
            pos += take
            i += 1
        if pos < end:
            mv[pos - offset :] = bytes(end - pos)
        return n

    def read(self, ino: int, offset: int, n: int) -> bytes:
        node = self.inode(ino)
        if _stat.S_ISDIR(node.mode):
            raise IsADirectory(f"inode {ino} is a directory")
        if offset < 0 or n < 0:
            from burrow.errors import InvalidArgument

            raise InvalidArgument("negative offset or length")
        if _stat.S_ISLNK(node.mode):  # a fast symlink's i_block is text, not a block map
            return self._readlink_bytes(node)[offset : offset + n]
        n = max(0, min(n, node.size - offset))
        if n == 0:
            return b""
        buf = bytearray(n)
        got = self._readinto(node, offset, memoryview(buf))
        return bytes(buf) if got == n else bytes(buf[:got])

    def _file_bytes(self, node: Inode, limit: int) -> bytes:
        """Whole contents of a (small) inode: directories, symlinks, xattr inodes."""
        if node.size > limit:
            raise CorruptImage("ext4_inode", None, f"inode {node.ino}: size {node.size} too big")
        buf = bytearray(node.size)
        self._readinto(node, 0, memoryview(buf))
        return bytes(buf)

    # ------------------------------------------------------------------ stat --------------
    def getattr(self, ino: int) -> vfs.Stat:
        # the cache directly when inode() is ours (a subclass's inode() may know better)
        n = (self._direct_inodes and self._inode_cache.get(ino)) or self.inode(ino)
        mode = n.mode
        rdev = 0
        fmt = mode & 0o170000
        if fmt in (0o020000, 0o060000):  # character or block device
            old, new = struct.unpack_from("<II", n.i_block, 0)
            if old:
                rdev = os.makedev((old >> 8) & 0xFF, old & 0xFF)
            else:
                rdev = os.makedev((new & 0xFFF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xFFF00))
        blocks = n.blocks
        if n.flags & od.EXT4_INLINE_DATA_FL and fmt == 0o100000:
            # as ext4_file_getattr: report the inline bytes so tools do not see a sparse file
            blocks += (n.size + 511) >> 9
        # positional: the field order of vfs.Stat (st_ino ... st_birthtime_ns)
        return vfs.Stat(
            ino, mode, n.links, n.uid, n.gid, n.size, n.atime_ns, n.mtime_ns, n.ctime_ns,
            rdev, blocks, self.block_size, n.crtime_ns,
        )  # fmt: skip

    def readlink(self, ino: int) -> str:
        n = self.inode(ino)
        if not _stat.S_ISLNK(n.mode):
            from burrow.errors import InvalidArgument

            raise InvalidArgument(f"inode {ino} is not a symlink")
        return vfs.decode_name(self._readlink_bytes(n))

    def _readlink_bytes(self, n: Inode) -> bytes:
        if n.size > MAX_SYMLINK:
            raise CorruptImage("ext4_inode", None, f"inode {n.ino}: symlink too long")
        if n.flags & od.EXT4_INLINE_DATA_FL:
            return self._inline_data(n)[: n.size]
        # ext4_inode_is_fast_symlink: no blocks besides an xattr block
        ea_blocks = (self.cluster_size >> 9) if n.file_acl else 0
        if n.blocks - ea_blocks == 0:
            if n.size >= od.EXT4_N_BLOCKS * 4:
                raise CorruptImage("ext4_inode", None, f"inode {n.ino}: fast symlink too long")
            return n.i_block[: n.size]
        return self._file_bytes(n, MAX_SYMLINK)

    # ------------------------------------------------------------------ directories -------
    def _dir_node(self, ino: int) -> Inode:
        n = self.inode(ino)
        if not _stat.S_ISDIR(n.mode):
            raise NotADirectory(f"inode {ino} is not a directory")
        if n.flags & od.EXT4_ENCRYPT_FL:
            raise Unsupported("encrypt", f"directory inode {ino} is encrypted")
        return n

    def _dir_block(self, node: Inode, lblk: int) -> tuple[bytes, int]:
        bs = self.block_size
        if lblk < 0 or lblk * bs >= node.size:
            raise CorruptImage("dx_entry", None, f"dir {node.ino}: block {lblk} past the end")
        p = self._map_block(node, lblk)
        if p < 0:
            return bytes(bs), -1
        return self._block(p, "ext4_dir_entry_2", p * bs), p

    def _parse_dirents(
        self, data: bytes, start: int, end: int, where: int, dir_ino: int
    ) -> list[tuple[bytes, int, int]]:
        """(name, inode, file_type) for each live record in ``data[start:end]``."""
        out: list[tuple[bytes, int, int]] = []
        append = out.append
        pos = start
        filetype = self.has_filetype
        big = self.block_size >= 65536
        icount = self.inodes_count
        unpack = _DIRENT.unpack_from
        while pos < end:
            if pos + 8 > end:
                raise CorruptImage("ext4_dir_entry_2", where + pos, f"dir {dir_ino}: truncated")
            ino, rec_len, name_len, ftype = unpack(data, pos)
            if big:
                rec_len = od.rec_len_from_disk(rec_len, self.block_size)
            if not filetype:
                name_len |= ftype << 8
                ftype = 0
            if rec_len < 8 or rec_len & 3 or pos + rec_len > end or name_len + 8 > rec_len:
                raise CorruptImage(
                    "ext4_dir_entry_2", where + pos, f"dir {dir_ino}: bad rec_len/name_len"
                )
            if ino:
                if ino > icount:
                    raise CorruptImage(
                        "ext4_dir_entry_2", where + pos, f"dir {dir_ino}: inode {ino} too big"
                    )
                append((data[pos + 8 : pos + 8 + name_len], ino, ftype))
            pos += rec_len
        return out

    def _leaf_end(self, data: bytes, blk: int, node: Inode) -> int:
        """End of the records in a leaf block; verifies the ext4_dir_entry_tail checksum."""
        bs = self.block_size
        if self.has_csum:
            t = bs - 12
            zero1, rl, z2, ft, csum = struct.unpack_from("<IHBBI", data, t)
            if zero1 == 0 and rl == 12 and z2 == 0 and ft == od.EXT4_FT_DIR_CSUM:
                if blk >= 0 and ext4_chksum(self._inode_seed(node), data[:t]) != csum:
                    self._csum_error("ext4_dir_entry_tail", blk * bs + t, f"dir {node.ino}")
                return t
        return bs

    def _iter_dir(self, node: Inode) -> Iterator[tuple[bytes, int, int]]:
        for chunk in self._dir_chunks(node):
            yield from chunk

    def _dir_chunks(self, node: Inode) -> Iterator[list[tuple[bytes, int, int]]]:
        """Live entries (without "." and "..") one directory block at a time."""
        if node.flags & od.EXT4_INLINE_DATA_FL:
            yield self._inline_dir(node)
            return
        bs = self.block_size
        nblocks = node.size // bs
        if node.size % bs:
            raise CorruptImage("ext4_inode", None, f"dir {node.ino}: size not a block multiple")
        indexed = bool(node.flags & od.EXT4_INDEX_FL) and self.has_dir_index
        _starts, runs = self._runs(node)
        for s, c, p in runs:
            for k in range(c):
                lblk = s + k
                if lblk >= nblocks:
                    return
                if p < 0:
                    continue
                blk = p + k
                data = self._block(blk, "ext4_dir_entry_2", blk * bs)
                if indexed and self._is_dx_block(data, lblk):
                    continue
                end = self._leaf_end(data, blk, node)
                ents = self._parse_dirents(data, 0, end, blk * bs, node.ino)
                if lblk == 0 and ents and ents[0][0] == b".":
                    ents = [e for e in ents if e[0] not in (b".", b"..")]
                yield ents

    def _is_dx_block(self, data: bytes, lblk: int) -> bool:
        if lblk == 0:
            return True
        ino, rec_len, name_len, _ft = _DIRENT.unpack_from(data, 0)
        full = od.rec_len_from_disk(rec_len, self.block_size) == self.block_size
        return bool(ino == 0 and name_len == 0 and full)

    def _inline_dir(self, node: Inode) -> list[tuple[bytes, int, int]]:
        data = self._inline_data(node)[: max(node.size, 60)]
        # first 4 bytes: the parent ("..") inode; then records in i_block, then in the xattr
        out = self._parse_dirents(data, 4, 60, -1, node.ino)
        if len(data) > 60:
            out += self._parse_dirents(data, 60, len(data), -1, node.ino)
        return out

    def readdir(self, ino: int) -> Iterator[vfs.DirEntry]:
        node = self._dir_node(ino)
        ft_mode = od.FT_TO_MODE
        entry = vfs.DirEntry
        for chunk in self._dir_chunks(node):
            for name, child, ft in chunk:
                yield entry(name.decode("utf-8", "surrogateescape"), child, ft_mode.get(ft, 0))

    def lookup(self, parent: int, name: str) -> int:
        node = self._dir_node(parent)
        raw = vfs.encode_name(name)
        if name == ".":
            return parent
        if name == "..":
            return self._parent_of(node)
        if len(raw) > od.EXT4_NAME_LEN:
            raise NameTooLong(f"name longer than {od.EXT4_NAME_LEN} bytes", path=name)
        if not raw or b"/" in raw or b"\0" in raw:
            raise NotFound(name)
        indexed = (
            node.flags & od.EXT4_INDEX_FL
            and self.has_dir_index
            and not node.flags & od.EXT4_INLINE_DATA_FL
        )
        if node.flags & od.EXT4_CASEFOLD_FL and self.has_casefold:
            # the index hashes the folded name; a miss falls back to a scan in case Python's
            # Unicode tables fold some character differently from the kernel's
            want = _casefold(raw)
            match = _casefold_match(want, raw)
            if indexed:
                hashed = want.encode("utf-8") if want is not None else raw
                found = self._dx_lookup(node, raw, hashed, match)
                if found is not None:
                    return found
            for n, ino, _ft in self._iter_dir(node):
                if match(n):
                    return ino
            raise NotFound(name)
        if indexed:
            found = self._dx_lookup(node, raw)
        else:
            names = self._linear_index(node)
            if names is not None:
                found = names.get(raw)
            else:
                found = None
                for n, ino, _ft in self._iter_dir(node):
                    if n == raw:
                        found = ino
                        break
        if found is None:
            raise NotFound(name)
        return found

    _NAME_INDEX_MIN_BLOCKS = 4  # smaller directories are scanned: cheaper than a map
    _NAME_INDEX_MAX_NAMES = 1 << 19  # bound on names held over all cached directories

    def _linear_index(self, node: Inode) -> dict[bytes, int] | None:
        """The cached name map of a big linear directory, or ``None`` (scan it instead).

        Only on read-only opens (nothing can change a directory underneath the map), only for
        directories of several blocks, and never for a damaged one: a directory with a bad
        block is scanned, so lookups of names before the damage keep working."""
        if not self.readonly or node.size < self._NAME_INDEX_MIN_BLOCKS * self.block_size:
            return None
        index = self._name_index
        names = index.get(node.ino)
        if names is not None:
            index.move_to_end(node.ino)
            return names
        names = {}
        try:
            for n, ino, _ft in self._iter_dir(node):
                names.setdefault(n, ino)  # the first of duplicate names wins, as a scan
        except BurrowError:
            return None
        if len(names) > self._NAME_INDEX_MAX_NAMES:
            return None
        index[node.ino] = names
        self._name_indexed += len(names)
        while self._name_indexed > self._NAME_INDEX_MAX_NAMES and len(index) > 1:
            _ino, dropped = index.popitem(last=False)
            self._name_indexed -= len(dropped)
        return names

    def _parent_of(self, node: Inode) -> int:
        if node.flags & od.EXT4_INLINE_DATA_FL:
            return int(_U32.unpack_from(node.i_block, 0)[0])
        data, blk = self._dir_block(node, 0)
        where = blk * self.block_size
        _i, rec_len, _nl, _ft = _DIRENT.unpack_from(data, 0)
        if rec_len < 12 or rec_len + 10 > len(data):
            raise CorruptImage("ext4_dir_entry_2", where, f"dir {node.ino}: bad '.' entry")
        ino, _rl, name_len, _ft = _DIRENT.unpack_from(data, rec_len)
        if name_len != 2 or data[rec_len + 8 : rec_len + 10] != b"..":
            raise CorruptImage("ext4_dir_entry_2", where, f"dir {node.ino}: no '..' entry")
        if ino > self.inodes_count:
            raise CorruptImage("ext4_dir_entry_2", where, f"dir {node.ino}: bad '..' inode")
        return int(ino)

    # htree -------------------------------------------------------------------------------
    def _dx_entries(
        self, data: bytes, off: int, blk: int, node: Inode, is_root: bool
    ) -> list[tuple[int, int]]:
        """(hash, block) pairs of a dx_root/dx_node whose dx_countlimit is at ``off``;
        verifies the dx_tail checksum."""
        bs = self.block_size
        where = blk * bs
        limit, count = struct.unpack_from("<HH", data, off)
        tail = 8 if self.has_csum else 0
        max_limit = (bs - off - tail) // 8
        if limit != max_limit or count == 0 or count > limit:
            raise CorruptImage("dx_countlimit", where + off, f"dir {node.ino}: bad count/limit")
        if self.has_csum:
            t = off + limit * 8
            size = off + count * 8
            c = ext4_chksum(self._inode_seed(node), data[:size])
            c = ext4_chksum(c, data[t : t + 4])
            c = ext4_chksum(c, b"\0\0\0\0")
            if c != _U32.unpack_from(data, t + 4)[0]:
                self._csum_error("dx_tail", where + t, f"dir {node.ino}")
        out = [(0, _U32.unpack_from(data, off + 4)[0])]
        for i in range(1, count):
            out.append(_DX_ENTRY.unpack_from(data, off + 8 * i))
        for i in range(2, len(out)):
            if out[i][0] < out[i - 1][0]:
                raise CorruptImage("dx_entry", where + off, f"dir {node.ino}: unsorted hashes")
        return out

    def _dx_lookup(
        self,
        node: Inode,
        raw: bytes,
        hashed: bytes | None = None,
        match: Callable[[bytes], bool] | None = None,
    ) -> int | None:
        """Find ``raw`` through the htree index (``hashed``: the bytes to hash, ``match``: the
        name comparison; both differ from ``raw`` in casefolded directories)."""
        bs = self.block_size
        root, rblk = self._dir_block(node, 0)
        where = rblk * bs
        info = od.DX_ROOT_INFO.unpack(root, od.DX_ROOT_INFO_OFFSET)
        if info.reserved_zero or info.info_length != 8:
            raise CorruptImage("dx_root_info", where + 24, f"dir {node.ino}: bad root info")
        levels_max = od.EXT4_HTREE_LEVEL if self.has_largedir else od.EXT4_HTREE_LEVEL_COMPAT
        if info.indirect_levels >= levels_max:
            raise CorruptImage("dx_root_info", where + 24, f"dir {node.ino}: too deep")
        if info.unused_flags & 1:
            raise Unsupported("dx_root_info.unused_flags", "large_dir hashed with extra flags")
        version = info.hash_version
        if version <= od.DX_HASH_TEA:
            version += self.hash_unsigned
        h, _minor = dirhash(raw if hashed is None else hashed, version, self.hash_seed)
        same = raw.__eq__ if match is None else match
        # descend, remembering the path for the collision walk
        path: list[tuple[list[tuple[int, int]], int]] = []
        entries = self._dx_entries(root, 24 + 8, rblk, node, True)
        visited: set[int] = set()
        for level in range(info.indirect_levels + 1):
            idx = bisect.bisect_right([e[0] for e in entries], h, 1) - 1
            path.append((entries, idx))
            if level == info.indirect_levels:
                break
            child = entries[idx][1]
            if child in visited:
                raise CorruptImage("dx_entry", where, f"dir {node.ino}: loop")
            visited.add(child)
            data, cblk = self._dir_block(node, child)
            entries = self._dx_entries(data, 8, cblk, node, False)
        seen_leaves = 0
        while True:
            entries, idx = path[-1]
            lblk = entries[idx][1]
            seen_leaves += 1
            if seen_leaves > node.size // bs + 1:
                raise CorruptImage("dx_entry", where, f"dir {node.ino}: leaf loop")
            data, blk = self._dir_block(node, lblk)
            end = self._leaf_end(data, blk, node)
            for n, ino, _ft in self._parse_dirents(data, 0, end, blk * bs, node.ino):
                if same(n):
                    return ino
            # ext4_htree_next_block: continue while the next leaf may hold this hash
            nxt = self._dx_next(node, path)
            if nxt is None or (nxt & ~1) != h:
                return None

    def _dx_next(self, node: Inode, path: list[tuple[list[tuple[int, int]], int]]) -> int | None:
        """Advance ``path`` to the next leaf; returns its starting hash (None at the end)."""
        depth = len(path) - 1
        while depth >= 0:
            entries, idx = path[depth]
            if idx + 1 < len(entries):
                path[depth] = (entries, idx + 1)
                break
            depth -= 1
        if depth < 0:
            return None
        start_hash = path[depth][0][path[depth][1]][0]
        for d in range(depth + 1, len(path)):
            entries, idx = path[d - 1]
            data, cblk = self._dir_block(node, entries[idx][1])
            child = self._dx_entries(data, 8, cblk, node, False)
            path[d] = (child, 0)
        return start_hash

    # ------------------------------------------------------------------ xattrs ------------
    def _xattr_entries(
        self, node: Inode
    ) -> Iterator[tuple[int, bytes, bytes | None, int, int, int]]:
        """(name_index, name, inline value or None, value_inum, value_size, where) of every
        xattr, in-inode ones first."""
        isz = self.inode_size
        raw = node.raw
        start = 128 + node.extra_isize
        if (
            node.extra_isize
            and start + 4 <= isz
            and _U32.unpack_from(raw, start)[0] == od.EXT4_XATTR_MAGIC
        ):
            first = start + 4
            yield from self._parse_xattrs(raw, first, isz, first, -1, node)
        if node.file_acl:
            blk = node.file_acl
            bs = self.block_size
            self._check_block(blk, "ext4_xattr_header", None)
            data = self._block(blk, "ext4_xattr_header", blk * bs)
            h = od.EXT4_XATTR_HEADER.unpack(data)
            if h.h_magic != od.EXT4_XATTR_MAGIC or h.h_blocks != 1:
                raise CorruptImage("ext4_xattr_header", blk * bs, f"inode {node.ino}: bad header")
            if self.has_csum:
                c = ext4_chksum(self.csum_seed, blk.to_bytes(8, "little"))
                c = ext4_chksum(c, data[:16])
                c = ext4_chksum(c, b"\0\0\0\0")
                c = ext4_chksum(c, data[20:])
                if c != h.h_checksum:
                    self._csum_error("ext4_xattr_header", blk * bs + 16, f"block {blk}")
            yield from self._parse_xattrs(data, 32, bs, 0, blk * bs, node)

    def _parse_xattrs(
        self, buf: bytes, first: int, end: int, value_base: int, where: int, node: Inode
    ) -> Iterator[tuple[int, bytes, bytes | None, int, int, int]]:
        pos = first
        ea_inode = bool(self.feature_incompat & od.INCOMPAT_EA_INODE)
        count = 0
        while pos + 4 <= end and _U32.unpack_from(buf, pos)[0] != 0:
            if pos + 16 > end:
                raise CorruptImage("ext4_xattr_entry", where + pos, "entry past the end")
            name_len, index, voff, vinum, vsize, _hash = _XATTR_ENTRY.unpack_from(buf, pos)
            name_end = pos + 16 + name_len
            if name_end > end:
                raise CorruptImage("ext4_xattr_entry", where + pos, "name past the end")
            name = buf[pos + 16 : name_end]
            value: bytes | None = None
            if vinum:
                if not ea_inode:
                    raise CorruptImage("ext4_xattr_entry", where + pos, "e_value_inum set")
            else:
                vstart = value_base + voff
                if vsize > end or vstart + vsize > end or (vsize and vstart < first):
                    raise CorruptImage("ext4_xattr_entry", where + pos, "value outside")
                value = buf[vstart : vstart + vsize]
            yield index, name, value, vinum, vsize, where + pos
            pos = (name_end + 3) & ~3
            count += 1
            if count > 65536:
                raise CorruptImage("ext4_xattr_entry", where + pos, "too many entries")

    def _ea_inode_value(self, vinum: int, vsize: int, owner: int, where: int) -> bytes:
        if vsize > MAX_XATTR_VALUE:
            raise CorruptImage("ext4_xattr_entry", where, "ea_inode value too large")
        ea = self.inode(vinum)
        if not ea.flags & od.EXT4_EA_INODE_FL or ea.size != vsize:
            raise CorruptImage("ext4_xattr_entry", where, f"inode {owner}: bad ea_inode")
        if vinum == owner:
            raise CorruptImage("ext4_xattr_entry", where, "xattr inode refers to itself")
        return self._file_bytes(ea, MAX_XATTR_VALUE)

    def _xattr_value(
        self, node: Inode, index: int, name: bytes, *, missing_ok: bool = False
    ) -> bytes | None:
        for idx, n, value, vinum, vsize, where in self._xattr_entries(node):
            if idx == index and n == name:
                if value is None:
                    value = self._ea_inode_value(vinum, vsize, node.ino, where)
                if index in (
                    od.EXT4_XATTR_INDEX_POSIX_ACL_ACCESS,
                    od.EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT,
                ):
                    value = _acl_to_xattr(value, where)
                return value
        if missing_ok:
            return None
        raise error_for_errno(61, f"no such attribute: {name!r}")

    def listxattr(self, ino: int) -> list[str]:
        node = self.inode(ino)
        out: list[str] = []
        for idx, name, _v, _i, _s, _w in self._xattr_entries(node):
            if idx in _XATTR_LISTED:
                out.append(od.XATTR_PREFIXES[idx] + vfs.decode_name(name))
        return out

    def getxattr(self, ino: int, name: str) -> bytes:
        node = self.inode(ino)
        for prefix, index in _PREFIX_TO_INDEX:
            if name.startswith(prefix):
                rest = name[len(prefix) :]
                if index in (2, 3) and rest:
                    continue
                value = self._xattr_value(node, index, vfs.encode_name(rest), missing_ok=True)
                if value is not None:
                    return value
                break
        raise error_for_errno(61, f"no such attribute: {name}")

    # ------------------------------------------------------------------ fs-wide -----------
    def statfs(self) -> vfs.StatFS:
        """The figures the kernel's ``ext4_statfs`` reports: ``f_blocks`` without the
        metadata overhead, free counts summed over the group descriptors, ``f_bavail`` less
        the reserved blocks and (with extents) the kernel's 2%/4096-cluster reserve."""
        bs = self.block_size
        ratio = self.cluster_size // bs
        free_clusters = free_inodes = 0
        for g in range(self.group_count):
            gd = self.group_desc(g)
            free_clusters += gd.free_blocks
            free_inodes += gd.free_inodes
        bfree = free_clusters * ratio
        resv = 0
        if self.has_extents:
            resv = min((self.blocks_count // ratio) // 50, 4096) * ratio
        reserved = self.r_blocks_count + resv
        return vfs.StatFS(
            f_bsize=bs,
            f_frsize=bs,
            f_blocks=max(0, self.blocks_count - self.overhead_clusters() * ratio),
            f_bfree=bfree,
            f_bavail=bfree - reserved if bfree >= reserved else 0,
            f_files=self.inodes_count,
            f_ffree=free_inodes,
            f_namemax=od.EXT4_NAME_LEN,
        )

    def overhead_clusters(self) -> int:
        """Clusters taken by metadata, as ``ext4_calculate_overhead`` counts them: blocks
        before s_first_data_block, each group's superblock backup, descriptor and reserved
        GDT blocks, bitmaps and inode table, and the internal journal. With bigalloc the
        superblock's ``s_overhead_clusters`` is used when set (as the kernel does)."""
        sb = self.sb
        ratio = self.cluster_size // self.block_size
        if self.bigalloc and 0 < sb.s_overhead_clusters <= self.blocks_count:
            return int(sb.s_overhead_clusters)
        itb = -(-self.inodes_per_group * self.inode_size // self.block_size)
        gdb_count = -(-self.group_count // self.descs_per_block)
        dpb = self.descs_per_block
        total = self.first_data_block // ratio
        for g in range(self.group_count):
            has_super = 1 if self.group_has_super(g) else 0
            metagroup = g // dpb
            if not self.has_meta_bg or metagroup < sb.s_first_meta_bg:
                nometa = sb.s_first_meta_bg if self.has_meta_bg else gdb_count
                gdb = nometa if has_super else 0
            else:
                first = metagroup * dpb
                gdb = 1 if g in (first, first + 1, first + dpb - 1) else 0
            reserved_gdt = sb.s_reserved_gdt_blocks if has_super else 0
            total += has_super + gdb + reserved_gdt + itb + 2
        if self.feature_compat & od.COMPAT_HAS_JOURNAL and sb.s_journal_inum:
            try:
                journal = self.inode(sb.s_journal_inum)
            except CorruptImage:
                journal = None
            if journal is not None:
                total += -(-(journal.size // self.block_size) // ratio)
        return int(total)

    def fstype(self) -> str:
        if self.feature_incompat & ~(
            od.INCOMPAT_FILETYPE | od.INCOMPAT_RECOVER | od.INCOMPAT_META_BG
        ) or (
            self.feature_ro_compat
            & ~(od.RO_COMPAT_SPARSE_SUPER | od.RO_COMPAT_LARGE_FILE | od.RO_COMPAT_BTREE_DIR)
        ):
            return "ext4"
        if self.feature_compat & od.COMPAT_HAS_JOURNAL:
            return "ext3"
        return "ext2"

    def info(self) -> vfs.FsInfo:
        import uuid as _uuid

        sb = self.sb
        label = sb.s_volume_name.split(b"\0", 1)[0].decode("utf-8", "replace")
        states = []
        if sb.s_state & od.EXT4_VALID_FS:
            states.append("clean")
        if sb.s_state & od.EXT4_ERROR_FS:
            states.append("errors")
        if sb.s_state & od.EXT4_ORPHAN_FS:
            states.append("orphans")
        extra: dict[str, Any] = {
            "block_size": self.block_size,
            "cluster_size": self.cluster_size,
            "inode_size": self.inode_size,
            "blocks_count": self.blocks_count,
            "inodes_count": self.inodes_count,
            "free_blocks": self.free_blocks_count,
            "free_inodes": sb.s_free_inodes_count,
            "group_count": self.group_count,
            "state": " ".join(states) or "not clean",
            "last_mount_time": sb.s_mtime | (sb.s_mtime_hi << 32),
            "last_write_time": sb.s_wtime | (sb.s_wtime_hi << 32),
            "mkfs_time": sb.s_mkfs_time | (sb.s_mkfs_time_hi << 32),
            "last_mounted": sb.s_last_mounted.split(b"\0", 1)[0].decode("utf-8", "replace"),
            "journal_replayed_transactions": self.journal_replayed,
        }
        return vfs.FsInfo(
            fstype=self.fstype(),
            label=label,
            uuid=str(_uuid.UUID(bytes=bytes(sb.s_uuid))),
            features=tuple(
                od.feature_names(self.feature_compat, self.feature_incompat, self.feature_ro_compat)
            ),
            extra=extra,
        )

    def statistics(self) -> dict[str, object]:
        """Cache occupancy and metadata reads, for monitoring and tests."""
        return {
            "metadata_block_reads": self._block_reads,
            "block_cache": len(self._block_cache),
            "inode_cache": len(self._inode_cache),
            "mapped_files": len(self._runs_cache),
            "mapped_runs": self._runs_cached,
            "journal_replayed_transactions": self.journal_replayed,
        }

    def close(self) -> None:
        self.invalidate_all()
