"""Every ext2/3/4 and jbd2 on-disk structure, defined once, with the kernel's field names.

Why one module: the reader (``filesystem.py``) and the writer (``writer.py``, ``mkfs.py``)
must agree byte for byte, so both build on these definitions and nothing else re-declares a
field offset. Names follow ``fs/ext4/ext4.h``, ``fs/ext4/xattr.h`` and
``include/linux/jbd2.h`` (and e2fsprogs' ``ext2_fs.h``) so the spec can be grepped.

Each structure is a :class:`Layout`: a ``struct.Struct`` plus field names and offsets.

* ``LAYOUT.unpack(buf, offset=0) -> Record`` gives a :class:`Record` (a ``dict`` with
  attribute access; array fields such as ``s_hash_seed`` are tuples, ``Ns`` fields are bytes).
* ``LAYOUT.pack(record_or_mapping) -> bytes`` is the exact inverse; missing fields pack as 0.
* ``LAYOUT.new(**fields) -> Record`` makes a zero-filled record to fill in (for writers).
* ``LAYOUT.offset(name)`` is a field's byte offset (for checksums that zero one field).

ext4 structures are little-endian; jbd2 structures are big-endian. Hot paths (the inode
reader) may use ``LAYOUT.struct`` and ``LAYOUT.index(name)`` directly on tuples to avoid
building a dict per object.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ACL_EA_VERSION",
    "DX_COUNTLIMIT",
    "DX_ENTRY",
    "DX_ROOT_INFO",
    "DX_TAIL",
    "EXT2_ACL_VERSION",
    "EXT4_DIR_ENTRY_2",
    "EXT4_DIR_ENTRY_TAIL",
    "EXT4_EXTENT",
    "EXT4_EXTENT_HEADER",
    "EXT4_EXTENT_IDX",
    "EXT4_EXTENT_TAIL",
    "EXT4_GROUP_DESC",
    "EXT4_GROUP_DESC_64",
    "EXT4_INODE",
    "EXT4_SUPER_BLOCK",
    "EXT4_XATTR_ENTRY",
    "EXT4_XATTR_HEADER",
    "EXT4_XATTR_IBODY_HEADER",
    "JOURNAL_BLOCK_TAG",
    "JOURNAL_BLOCK_TAG3",
    "JOURNAL_BLOCK_TAIL",
    "JOURNAL_COMMIT_HEADER",
    "JOURNAL_HEADER",
    "JOURNAL_REVOKE_HEADER",
    "JOURNAL_SUPERBLOCK",
    "Layout",
    "Record",
    "feature_names",
]


class Record(dict[str, Any]):
    """A decoded structure: a dict of field name -> value that also allows ``rec.field``."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self:
            raise AttributeError(f"no field {name!r}")
        self[name] = value


class Layout:
    """A C structure: ``fields`` is a sequence of (name, struct format code) pairs.

    A code with a repeat count (``"17I"``) is an array and decodes to a tuple; ``"16s"`` is a
    byte string. ``endian`` is ``"<"`` (ext4) or ``">"`` (jbd2). Layouts never pad.
    """

    __slots__ = (
        "_bytes",
        "_groups",
        "_index",
        "_offsets",
        "endian",
        "name",
        "names",
        "size",
        "struct",
    )

    def __init__(self, name: str, fields: Sequence[tuple[str, str]], endian: str = "<") -> None:
        self.name = name
        self.endian = endian
        self.names = tuple(n for n, _ in fields)
        fmt = endian
        self._offsets: dict[str, int] = {}
        self._index: dict[str, int] = {}
        # (name, first tuple index, count or 0 for a scalar/bytes)
        self._groups: list[tuple[str, int, int]] = []
        self._bytes: set[str] = set()
        idx = 0
        for fname, code in fields:
            self._offsets[fname] = struct.calcsize(fmt)
            fmt += code
            count_text = code[:-1]
            kind = code[-1]
            count = int(count_text) if count_text else 1
            self._index[fname] = idx
            if kind == "s":
                self._bytes.add(fname)
            if kind == "s" or count == 1:
                self._groups.append((fname, idx, 0))
                idx += 1
            else:
                self._groups.append((fname, idx, count))
                idx += count
        self.struct = struct.Struct(fmt)
        self.size = self.struct.size

    def offset(self, name: str) -> int:
        """Byte offset of field ``name`` from the start of the structure."""
        return self._offsets[name]

    def index(self, name: str) -> int:
        """Position of field ``name``'s (first) value in ``self.struct.unpack`` output."""
        return self._index[name]

    def unpack(self, buf: bytes | bytearray | memoryview, offset: int = 0) -> Record:
        """Decode from ``buf`` at ``offset`` (raises ``struct.error`` if too short: callers
        that parse untrusted data check lengths first)."""
        values = self.struct.unpack_from(buf, offset)
        rec = Record()
        for fname, idx, count in self._groups:
            dict.__setitem__(rec, fname, values[idx] if count == 0 else values[idx : idx + count])
        return rec

    def new(self, **values: Any) -> Record:
        """A zero-filled record (byte fields empty), with ``values`` set."""
        rec = self.unpack(bytes(self.size))
        for k, v in values.items():
            if k not in rec:
                raise KeyError(f"{self.name} has no field {k!r}")
            dict.__setitem__(rec, k, v)
        return rec

    def pack(self, rec: Mapping[str, Any]) -> bytes:
        """Encode; fields missing from ``rec`` are 0 (or zero bytes, or zero arrays)."""
        out: list[Any] = []
        for fname, _idx, count in self._groups:
            v = rec.get(fname)
            if count:
                seq = tuple(v) if v is not None else ()
                out.extend(seq[:count])
                out.extend([0] * (count - len(seq)))
            elif v is None:
                out.append(b"" if self._is_bytes(fname) else 0)
            else:
                out.append(v)
        return self.struct.pack(*out)

    def pack_into(self, buf: bytearray | memoryview, offset: int, rec: Mapping[str, Any]) -> None:
        buf[offset : offset + self.size] = self.pack(rec)

    def _is_bytes(self, fname: str) -> bool:
        return fname in self._bytes

    def __repr__(self) -> str:
        return f"<Layout {self.name} {self.size} bytes>"


# ---------------------------------------------------------------------------------------
# Superblock (1024 bytes at byte 1024 of the device)
# ---------------------------------------------------------------------------------------
SUPERBLOCK_OFFSET = 1024
EXT4_SUPER_MAGIC = 0xEF53

EXT4_SUPER_BLOCK = Layout(
    "ext4_super_block",
    [
        ("s_inodes_count", "I"),
        ("s_blocks_count_lo", "I"),
        ("s_r_blocks_count_lo", "I"),
        ("s_free_blocks_count_lo", "I"),
        ("s_free_inodes_count", "I"),
        ("s_first_data_block", "I"),
        ("s_log_block_size", "I"),
        ("s_log_cluster_size", "I"),
        ("s_blocks_per_group", "I"),
        ("s_clusters_per_group", "I"),
        ("s_inodes_per_group", "I"),
        ("s_mtime", "I"),
        ("s_wtime", "I"),
        ("s_mnt_count", "H"),
        ("s_max_mnt_count", "h"),
        ("s_magic", "H"),
        ("s_state", "H"),
        ("s_errors", "H"),
        ("s_minor_rev_level", "H"),
        ("s_lastcheck", "I"),
        ("s_checkinterval", "I"),
        ("s_creator_os", "I"),
        ("s_rev_level", "I"),
        ("s_def_resuid", "H"),
        ("s_def_resgid", "H"),
        # EXT4_DYNAMIC_REV superblocks only
        ("s_first_ino", "I"),
        ("s_inode_size", "H"),
        ("s_block_group_nr", "H"),
        ("s_feature_compat", "I"),
        ("s_feature_incompat", "I"),
        ("s_feature_ro_compat", "I"),
        ("s_uuid", "16s"),
        ("s_volume_name", "16s"),
        ("s_last_mounted", "64s"),
        ("s_algorithm_usage_bitmap", "I"),
        ("s_prealloc_blocks", "B"),
        ("s_prealloc_dir_blocks", "B"),
        ("s_reserved_gdt_blocks", "H"),
        ("s_journal_uuid", "16s"),
        ("s_journal_inum", "I"),
        ("s_journal_dev", "I"),
        ("s_last_orphan", "I"),
        ("s_hash_seed", "4I"),
        ("s_def_hash_version", "B"),
        ("s_jnl_backup_type", "B"),
        ("s_desc_size", "H"),
        ("s_default_mount_opts", "I"),
        ("s_first_meta_bg", "I"),
        ("s_mkfs_time", "I"),
        ("s_jnl_blocks", "17I"),
        ("s_blocks_count_hi", "I"),
        ("s_r_blocks_count_hi", "I"),
        ("s_free_blocks_count_hi", "I"),
        ("s_min_extra_isize", "H"),
        ("s_want_extra_isize", "H"),
        ("s_flags", "I"),
        ("s_raid_stride", "H"),
        ("s_mmp_update_interval", "H"),
        ("s_mmp_block", "Q"),
        ("s_raid_stripe_width", "I"),
        ("s_log_groups_per_flex", "B"),
        ("s_checksum_type", "B"),
        ("s_encryption_level", "B"),
        ("s_reserved_pad", "B"),
        ("s_kbytes_written", "Q"),
        ("s_snapshot_inum", "I"),
        ("s_snapshot_id", "I"),
        ("s_snapshot_r_blocks_count", "Q"),
        ("s_snapshot_list", "I"),
        ("s_error_count", "I"),
        ("s_first_error_time", "I"),
        ("s_first_error_ino", "I"),
        ("s_first_error_block", "Q"),
        ("s_first_error_func", "32s"),
        ("s_first_error_line", "I"),
        ("s_last_error_time", "I"),
        ("s_last_error_ino", "I"),
        ("s_last_error_line", "I"),
        ("s_last_error_block", "Q"),
        ("s_last_error_func", "32s"),
        ("s_mount_opts", "64s"),
        ("s_usr_quota_inum", "I"),
        ("s_grp_quota_inum", "I"),
        ("s_overhead_clusters", "I"),
        ("s_backup_bgs", "2I"),
        ("s_encrypt_algos", "4s"),
        ("s_encrypt_pw_salt", "16s"),
        ("s_lpf_ino", "I"),
        ("s_prj_quota_inum", "I"),
        ("s_checksum_seed", "I"),
        ("s_wtime_hi", "B"),
        ("s_mtime_hi", "B"),
        ("s_mkfs_time_hi", "B"),
        ("s_lastcheck_hi", "B"),
        ("s_first_error_time_hi", "B"),
        ("s_last_error_time_hi", "B"),
        ("s_first_error_errcode", "B"),
        ("s_last_error_errcode", "B"),
        ("s_encoding", "H"),
        ("s_encoding_flags", "H"),
        ("s_orphan_file_inum", "I"),
        ("s_reserved", "376s"),  # __le32 s_reserved[94]
        ("s_checksum", "I"),
    ],
)
assert EXT4_SUPER_BLOCK.size == 1024

# s_state
EXT4_VALID_FS = 0x0001
EXT4_ERROR_FS = 0x0002
EXT4_ORPHAN_FS = 0x0004
# s_rev_level
EXT4_GOOD_OLD_REV = 0
EXT4_DYNAMIC_REV = 1
EXT4_GOOD_OLD_FIRST_INO = 11
EXT4_GOOD_OLD_INODE_SIZE = 128
# s_flags
EXT2_FLAGS_SIGNED_HASH = 0x0001
EXT2_FLAGS_UNSIGNED_HASH = 0x0002
EXT2_FLAGS_TEST_FILESYS = 0x0004
# s_checksum_type
EXT4_CRC32C_CHKSUM = 1
# s_creator_os
EXT4_OS_LINUX = 0
EXT4_OS_HURD = 1

# --- feature flags (kernel names EXT4_FEATURE_*; e2fsprogs names in FEATURE_NAMES) ------
COMPAT_DIR_PREALLOC = 0x0001
COMPAT_IMAGIC_INODES = 0x0002
COMPAT_HAS_JOURNAL = 0x0004
COMPAT_EXT_ATTR = 0x0008
COMPAT_RESIZE_INODE = 0x0010
COMPAT_DIR_INDEX = 0x0020
COMPAT_LAZY_BG = 0x0040
COMPAT_EXCLUDE_INODE = 0x0080
COMPAT_EXCLUDE_BITMAP = 0x0100
COMPAT_SPARSE_SUPER2 = 0x0200
COMPAT_FAST_COMMIT = 0x0400
COMPAT_STABLE_INODES = 0x0800
COMPAT_ORPHAN_FILE = 0x1000

RO_COMPAT_SPARSE_SUPER = 0x0001
RO_COMPAT_LARGE_FILE = 0x0002
RO_COMPAT_BTREE_DIR = 0x0004
RO_COMPAT_HUGE_FILE = 0x0008
RO_COMPAT_GDT_CSUM = 0x0010
RO_COMPAT_DIR_NLINK = 0x0020
RO_COMPAT_EXTRA_ISIZE = 0x0040
RO_COMPAT_HAS_SNAPSHOT = 0x0080
RO_COMPAT_QUOTA = 0x0100
RO_COMPAT_BIGALLOC = 0x0200
RO_COMPAT_METADATA_CSUM = 0x0400
RO_COMPAT_REPLICA = 0x0800
RO_COMPAT_READONLY = 0x1000
RO_COMPAT_PROJECT = 0x2000
RO_COMPAT_SHARED_BLOCKS = 0x4000
RO_COMPAT_VERITY = 0x8000
RO_COMPAT_ORPHAN_PRESENT = 0x10000

INCOMPAT_COMPRESSION = 0x0001
INCOMPAT_FILETYPE = 0x0002
INCOMPAT_RECOVER = 0x0004
INCOMPAT_JOURNAL_DEV = 0x0008
INCOMPAT_META_BG = 0x0010
INCOMPAT_EXTENTS = 0x0040
INCOMPAT_64BIT = 0x0080
INCOMPAT_MMP = 0x0100
INCOMPAT_FLEX_BG = 0x0200
INCOMPAT_EA_INODE = 0x0400
INCOMPAT_DIRDATA = 0x1000
INCOMPAT_CSUM_SEED = 0x2000
INCOMPAT_LARGEDIR = 0x4000
INCOMPAT_INLINE_DATA = 0x8000
INCOMPAT_ENCRYPT = 0x10000
INCOMPAT_CASEFOLD = 0x20000

COMPAT_NAMES: dict[int, str] = {
    COMPAT_DIR_PREALLOC: "dir_prealloc",
    COMPAT_IMAGIC_INODES: "imagic_inodes",
    COMPAT_HAS_JOURNAL: "has_journal",
    COMPAT_EXT_ATTR: "ext_attr",
    COMPAT_RESIZE_INODE: "resize_inode",
    COMPAT_DIR_INDEX: "dir_index",
    COMPAT_LAZY_BG: "lazy_bg",
    COMPAT_EXCLUDE_INODE: "exclude_inode",
    COMPAT_EXCLUDE_BITMAP: "snapshot_bitmap",
    COMPAT_SPARSE_SUPER2: "sparse_super2",
    COMPAT_FAST_COMMIT: "fast_commit",
    COMPAT_STABLE_INODES: "stable_inodes",
    COMPAT_ORPHAN_FILE: "orphan_file",
}
RO_COMPAT_NAMES: dict[int, str] = {
    RO_COMPAT_SPARSE_SUPER: "sparse_super",
    RO_COMPAT_LARGE_FILE: "large_file",
    RO_COMPAT_BTREE_DIR: "btree_dir",
    RO_COMPAT_HUGE_FILE: "huge_file",
    RO_COMPAT_GDT_CSUM: "uninit_bg",
    RO_COMPAT_DIR_NLINK: "dir_nlink",
    RO_COMPAT_EXTRA_ISIZE: "extra_isize",
    RO_COMPAT_HAS_SNAPSHOT: "snapshot",
    RO_COMPAT_QUOTA: "quota",
    RO_COMPAT_BIGALLOC: "bigalloc",
    RO_COMPAT_METADATA_CSUM: "metadata_csum",
    RO_COMPAT_REPLICA: "replica",
    RO_COMPAT_READONLY: "read-only",
    RO_COMPAT_PROJECT: "project",
    RO_COMPAT_SHARED_BLOCKS: "shared_blocks",
    RO_COMPAT_VERITY: "verity",
    RO_COMPAT_ORPHAN_PRESENT: "orphan_present",
}
INCOMPAT_NAMES: dict[int, str] = {
    INCOMPAT_COMPRESSION: "compression",
    INCOMPAT_FILETYPE: "filetype",
    INCOMPAT_RECOVER: "needs_recovery",
    INCOMPAT_JOURNAL_DEV: "journal_dev",
    INCOMPAT_META_BG: "meta_bg",
    INCOMPAT_EXTENTS: "extent",
    INCOMPAT_64BIT: "64bit",
    INCOMPAT_MMP: "mmp",
    INCOMPAT_FLEX_BG: "flex_bg",
    INCOMPAT_EA_INODE: "ea_inode",
    INCOMPAT_DIRDATA: "dirdata",
    INCOMPAT_CSUM_SEED: "metadata_csum_seed",
    INCOMPAT_LARGEDIR: "large_dir",
    INCOMPAT_INLINE_DATA: "inline_data",
    INCOMPAT_ENCRYPT: "encrypt",
    INCOMPAT_CASEFOLD: "casefold",
}


def _names(bits: int, table: Mapping[int, str], prefix: str) -> list[str]:
    out = [name for flag, name in table.items() if bits & flag]
    unknown = bits & ~sum(table)
    bit = 1
    while unknown >= bit:
        if unknown & bit:
            out.append(f"{prefix}{bit.bit_length() - 1}")
        bit <<= 1
    return out


def feature_names(compat: int, incompat: int, ro_compat: int) -> list[str]:
    """e2fsprogs-style feature names (``dumpe2fs`` order: compat, incompat, ro_compat);
    unknown bits appear as ``FEATURE_C12``/``FEATURE_I12``/``FEATURE_R12``."""
    return (
        _names(compat, COMPAT_NAMES, "FEATURE_C")
        + _names(incompat, INCOMPAT_NAMES, "FEATURE_I")
        + _names(ro_compat, RO_COMPAT_NAMES, "FEATURE_R")
    )


# ---------------------------------------------------------------------------------------
# Block group descriptors
# ---------------------------------------------------------------------------------------
_GD32 = [
    ("bg_block_bitmap_lo", "I"),
    ("bg_inode_bitmap_lo", "I"),
    ("bg_inode_table_lo", "I"),
    ("bg_free_blocks_count_lo", "H"),
    ("bg_free_inodes_count_lo", "H"),
    ("bg_used_dirs_count_lo", "H"),
    ("bg_flags", "H"),
    ("bg_exclude_bitmap_lo", "I"),
    ("bg_block_bitmap_csum_lo", "H"),
    ("bg_inode_bitmap_csum_lo", "H"),
    ("bg_itable_unused_lo", "H"),
    ("bg_checksum", "H"),
]
EXT4_GROUP_DESC = Layout("ext4_group_desc", _GD32)
EXT4_GROUP_DESC_64 = Layout(
    "ext4_group_desc",
    [
        *_GD32,
        ("bg_block_bitmap_hi", "I"),
        ("bg_inode_bitmap_hi", "I"),
        ("bg_inode_table_hi", "I"),
        ("bg_free_blocks_count_hi", "H"),
        ("bg_free_inodes_count_hi", "H"),
        ("bg_used_dirs_count_hi", "H"),
        ("bg_itable_unused_hi", "H"),
        ("bg_exclude_bitmap_hi", "I"),
        ("bg_block_bitmap_csum_hi", "H"),
        ("bg_inode_bitmap_csum_hi", "H"),
        ("bg_reserved", "I"),
    ],
)
assert EXT4_GROUP_DESC.size == 32 and EXT4_GROUP_DESC_64.size == 64
EXT4_MIN_DESC_SIZE = 32
EXT4_MIN_DESC_SIZE_64BIT = 64
EXT4_MAX_DESC_SIZE = 1024
# bg_flags
EXT4_BG_INODE_UNINIT = 0x0001
EXT4_BG_BLOCK_UNINIT = 0x0002
EXT4_BG_INODE_ZEROED = 0x0004

# ---------------------------------------------------------------------------------------
# Inode (s_inode_size bytes; the first 128 are the "good old" inode, then the extra fields)
# ---------------------------------------------------------------------------------------
EXT4_INODE = Layout(
    "ext4_inode",
    [
        ("i_mode", "H"),
        ("i_uid", "H"),
        ("i_size_lo", "I"),
        ("i_atime", "I"),
        ("i_ctime", "I"),
        ("i_mtime", "I"),
        ("i_dtime", "I"),
        ("i_gid", "H"),
        ("i_links_count", "H"),
        ("i_blocks_lo", "I"),
        ("i_flags", "I"),
        ("l_i_version", "I"),  # osd1
        ("i_block", "60s"),  # __le32 i_block[EXT4_N_BLOCKS=15]
        ("i_generation", "I"),
        ("i_file_acl_lo", "I"),
        ("i_size_high", "I"),
        ("i_obso_faddr", "I"),
        ("l_i_blocks_high", "H"),  # osd2 (linux2)
        ("l_i_file_acl_high", "H"),
        ("l_i_uid_high", "H"),
        ("l_i_gid_high", "H"),
        ("l_i_checksum_lo", "H"),
        ("l_i_reserved", "H"),
        # extra fields: present when i_extra_isize covers them
        ("i_extra_isize", "H"),
        ("i_checksum_hi", "H"),
        ("i_ctime_extra", "I"),
        ("i_mtime_extra", "I"),
        ("i_atime_extra", "I"),
        ("i_crtime", "I"),
        ("i_crtime_extra", "I"),
        ("i_version_hi", "I"),
        ("i_projid", "I"),
    ],
)
assert EXT4_INODE.size == 160 and EXT4_INODE.offset("i_extra_isize") == 128
EXT4_N_BLOCKS = 15
EXT4_NDIR_BLOCKS = 12
EXT4_IND_BLOCK = 12
EXT4_DIND_BLOCK = 13
EXT4_TIND_BLOCK = 14
EXT4_ROOT_INO = 2
EXT4_RESIZE_INO = 7
EXT4_JOURNAL_INO = 8
EXT4_EPOCH_BITS = 2
EXT4_EPOCH_MASK = (1 << EXT4_EPOCH_BITS) - 1
EXT4_NSEC_MASK = ~EXT4_EPOCH_MASK & 0xFFFFFFFF

# i_flags
EXT4_SECRM_FL = 0x00000001
EXT4_UNRM_FL = 0x00000002
EXT4_COMPR_FL = 0x00000004
EXT4_SYNC_FL = 0x00000008
EXT4_IMMUTABLE_FL = 0x00000010
EXT4_APPEND_FL = 0x00000020
EXT4_NODUMP_FL = 0x00000040
EXT4_NOATIME_FL = 0x00000080
EXT4_DIRTY_FL = 0x00000100
EXT4_COMPRBLK_FL = 0x00000200
EXT4_NOCOMPR_FL = 0x00000400
EXT4_ENCRYPT_FL = 0x00000800
EXT4_INDEX_FL = 0x00001000
EXT4_IMAGIC_FL = 0x00002000
EXT4_JOURNAL_DATA_FL = 0x00004000
EXT4_NOTAIL_FL = 0x00008000
EXT4_DIRSYNC_FL = 0x00010000
EXT4_TOPDIR_FL = 0x00020000
EXT4_HUGE_FILE_FL = 0x00040000
EXT4_EXTENTS_FL = 0x00080000
EXT4_VERITY_FL = 0x00100000
EXT4_EA_INODE_FL = 0x00200000
EXT4_DAX_FL = 0x02000000
EXT4_INLINE_DATA_FL = 0x10000000
EXT4_PROJINHERIT_FL = 0x20000000
EXT4_CASEFOLD_FL = 0x40000000

# ---------------------------------------------------------------------------------------
# Extent tree (in i_block, 60 bytes, or in whole blocks with an ext4_extent_tail)
# ---------------------------------------------------------------------------------------
EXT4_EXT_MAGIC = 0xF30A
EXT4_EXTENT_HEADER = Layout(
    "ext4_extent_header",
    [("eh_magic", "H"), ("eh_entries", "H"), ("eh_max", "H"), ("eh_depth", "H"),
     ("eh_generation", "I")],
)  # fmt: skip
EXT4_EXTENT = Layout(
    "ext4_extent",
    [("ee_block", "I"), ("ee_len", "H"), ("ee_start_hi", "H"), ("ee_start_lo", "I")],
)
EXT4_EXTENT_IDX = Layout(
    "ext4_extent_idx",
    [("ei_block", "I"), ("ei_leaf_lo", "I"), ("ei_leaf_hi", "H"), ("ei_unused", "H")],
)
EXT4_EXTENT_TAIL = Layout("ext4_extent_tail", [("et_checksum", "I")])
EXT_INIT_MAX_LEN = 1 << 15  # ee_len > this: uninitialized extent of ee_len - 32768 blocks
EXT_UNWRITTEN_MAX_LEN = EXT_INIT_MAX_LEN - 1
EXT4_MAX_EXTENT_DEPTH = 5

# ---------------------------------------------------------------------------------------
# Directories
# ---------------------------------------------------------------------------------------
EXT4_NAME_LEN = 255
EXT4_DIR_ENTRY_2 = Layout(
    "ext4_dir_entry_2",
    [("inode", "I"), ("rec_len", "H"), ("name_len", "B"), ("file_type", "B")],
)  # followed by name[name_len], padded to 4 bytes
EXT4_DIR_ENTRY = Layout(  # without the filetype feature: 16-bit name_len
    "ext4_dir_entry", [("inode", "I"), ("rec_len", "H"), ("name_len", "H")]
)
EXT4_DIR_ENTRY_TAIL = Layout(
    "ext4_dir_entry_tail",
    [
        ("det_reserved_zero1", "I"),  # 0, looks like an unused dirent
        ("det_rec_len", "H"),  # 12
        ("det_reserved_zero2", "B"),  # name_len 0
        ("det_reserved_ft", "B"),  # 0xDE
        ("det_checksum", "I"),
    ],
)
EXT4_FT_DIR_CSUM = 0xDE
# file_type values
EXT4_FT_UNKNOWN = 0
EXT4_FT_REG_FILE = 1
EXT4_FT_DIR = 2
EXT4_FT_CHRDEV = 3
EXT4_FT_BLKDEV = 4
EXT4_FT_FIFO = 5
EXT4_FT_SOCK = 6
EXT4_FT_SYMLINK = 7
EXT4_FT_MAX = 8
FT_TO_MODE = {1: 0o100000, 2: 0o040000, 3: 0o020000, 4: 0o060000, 5: 0o010000,
              6: 0o140000, 7: 0o120000}  # fmt: skip
MODE_TO_FT = {v: k for k, v in FT_TO_MODE.items()}


def rec_len_from_disk(dlen: int, blocksize: int) -> int:
    """``ext4_rec_len_from_disk``: 65536-byte blocks store rec_len 65536 as 0 or 65535."""
    if blocksize < 65536:
        return dlen
    if dlen in {65535, 0}:
        return blocksize
    return (dlen & 65532) | ((dlen & 3) << 16)


def rec_len_to_disk(length: int, blocksize: int) -> int:
    """``ext4_rec_len_to_disk``, the inverse of :func:`rec_len_from_disk`."""
    if blocksize < 65536:
        return length
    if length == blocksize:
        return 65535 if blocksize == 65536 else 0
    return (length & 65532) | ((length >> 16) & 3)


# htree (dir_index): block 0 of an indexed directory is a dx_root
DX_ROOT_INFO = Layout(
    "dx_root_info",
    [("reserved_zero", "I"), ("hash_version", "B"), ("info_length", "B"),
     ("indirect_levels", "B"), ("unused_flags", "B")],
)  # fmt: skip  # at byte 24 of dx_root, after the fake "." (12) and ".." (12) entries
DX_ROOT_INFO_OFFSET = 24
DX_COUNTLIMIT = Layout("dx_countlimit", [("limit", "H"), ("count", "H")])
DX_ENTRY = Layout("dx_entry", [("hash", "I"), ("block", "I")])
DX_TAIL = Layout("dx_tail", [("dt_reserved", "I"), ("dt_checksum", "I")])
DX_NODE_HEADER = 8  # dx_node: a fake empty dirent (inode 0, rec_len = blocksize)
DX_HASH_LEGACY = 0
DX_HASH_HALF_MD4 = 1
DX_HASH_TEA = 2
DX_HASH_LEGACY_UNSIGNED = 3
DX_HASH_HALF_MD4_UNSIGNED = 4
DX_HASH_TEA_UNSIGNED = 5
DX_HASH_SIPHASH = 6
EXT4_HTREE_LEVEL_COMPAT = 2
EXT4_HTREE_LEVEL = 3  # with large_dir

# Inline data: the first 60 bytes in i_block, the rest in the "system.data" xattr.
EXT4_MIN_INLINE_DATA_SIZE = 60
EXT4_INLINE_DOTDOT_SIZE = 4  # inline directories start with the parent's inode number

# ---------------------------------------------------------------------------------------
# Extended attributes
# ---------------------------------------------------------------------------------------
EXT4_XATTR_MAGIC = 0xEA020000
EXT4_XATTR_HEADER = Layout(
    "ext4_xattr_header",
    [("h_magic", "I"), ("h_refcount", "I"), ("h_blocks", "I"), ("h_hash", "I"),
     ("h_checksum", "I"), ("h_reserved", "3I")],
)  # fmt: skip
EXT4_XATTR_IBODY_HEADER = Layout("ext4_xattr_ibody_header", [("h_magic", "I")])
EXT4_XATTR_ENTRY = Layout(
    "ext4_xattr_entry",
    [("e_name_len", "B"), ("e_name_index", "B"), ("e_value_offs", "H"),
     ("e_value_inum", "I"), ("e_value_size", "I"), ("e_hash", "I")],
)  # fmt: skip  # followed by e_name[e_name_len]; entries padded to EXT4_XATTR_PAD
EXT4_XATTR_PAD = 4
EXT4_XATTR_INDEX_USER = 1
EXT4_XATTR_INDEX_POSIX_ACL_ACCESS = 2
EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT = 3
EXT4_XATTR_INDEX_TRUSTED = 4
EXT4_XATTR_INDEX_LUSTRE = 5
EXT4_XATTR_INDEX_SECURITY = 6
EXT4_XATTR_INDEX_SYSTEM = 7
EXT4_XATTR_INDEX_RICHACL = 8
EXT4_XATTR_INDEX_ENCRYPTION = 9
XATTR_PREFIXES: dict[int, str] = {
    0: "",
    EXT4_XATTR_INDEX_USER: "user.",
    EXT4_XATTR_INDEX_POSIX_ACL_ACCESS: "system.posix_acl_access",
    EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT: "system.posix_acl_default",
    EXT4_XATTR_INDEX_TRUSTED: "trusted.",
    EXT4_XATTR_INDEX_SECURITY: "security.",
    EXT4_XATTR_INDEX_SYSTEM: "system.",
    EXT4_XATTR_INDEX_RICHACL: "system.richacl",
}

# POSIX ACLs: ext4 stores a compact form; the xattr API shows posix_acl_xattr (version 2)
EXT2_ACL_VERSION = 0x0001
ACL_EA_VERSION = 0x0002
EXT4_ACL_HEADER = Layout("ext4_acl_header", [("a_version", "I")])
EXT4_ACL_ENTRY = Layout("ext4_acl_entry", [("e_tag", "H"), ("e_perm", "H"), ("e_id", "I")])
EXT4_ACL_ENTRY_SHORT = Layout("ext4_acl_entry_short", [("e_tag", "H"), ("e_perm", "H")])
POSIX_ACL_XATTR_HEADER = Layout("posix_acl_xattr_header", [("a_version", "I")])
POSIX_ACL_XATTR_ENTRY = Layout(
    "posix_acl_xattr_entry", [("e_tag", "H"), ("e_perm", "H"), ("e_id", "I")]
)
ACL_USER_OBJ = 0x01
ACL_USER = 0x02
ACL_GROUP_OBJ = 0x04
ACL_GROUP = 0x08
ACL_MASK = 0x10
ACL_OTHER = 0x20
ACL_UNDEFINED_ID = 0xFFFFFFFF

# ---------------------------------------------------------------------------------------
# jbd2 journal (big-endian)
# ---------------------------------------------------------------------------------------
JBD2_MAGIC_NUMBER = 0xC03B3998
JBD2_DESCRIPTOR_BLOCK = 1
JBD2_COMMIT_BLOCK = 2
JBD2_SUPERBLOCK_V1 = 3
JBD2_SUPERBLOCK_V2 = 4
JBD2_REVOKE_BLOCK = 5
JBD2_FC_BLOCK = 6

JOURNAL_HEADER = Layout(
    "journal_header_t", [("h_magic", "I"), ("h_blocktype", "I"), ("h_sequence", "I")], ">"
)
JOURNAL_SUPERBLOCK = Layout(
    "journal_superblock_t",
    [
        ("h_magic", "I"),
        ("h_blocktype", "I"),
        ("h_sequence", "I"),
        ("s_blocksize", "I"),
        ("s_maxlen", "I"),
        ("s_first", "I"),
        ("s_sequence", "I"),
        ("s_start", "I"),
        ("s_errno", "i"),
        ("s_feature_compat", "I"),
        ("s_feature_incompat", "I"),
        ("s_feature_ro_compat", "I"),
        ("s_uuid", "16s"),
        ("s_nr_users", "I"),
        ("s_dynsuper", "I"),
        ("s_max_transaction", "I"),
        ("s_max_trans_data", "I"),
        ("s_checksum_type", "B"),
        ("s_padding2", "3s"),
        ("s_num_fc_blks", "I"),
        ("s_head", "I"),
        ("s_padding", "160s"),  # __u32 s_padding[40]
        ("s_checksum", "I"),
        ("s_users", "768s"),  # __u8 s_users[16*48]
    ],
    ">",
)
assert JOURNAL_SUPERBLOCK.size == 1024 and JOURNAL_SUPERBLOCK.offset("s_checksum") == 0xFC

JBD2_FEATURE_COMPAT_CHECKSUM = 0x1
JBD2_FEATURE_INCOMPAT_REVOKE = 0x1
JBD2_FEATURE_INCOMPAT_64BIT = 0x2
JBD2_FEATURE_INCOMPAT_ASYNC_COMMIT = 0x4
JBD2_FEATURE_INCOMPAT_CSUM_V2 = 0x8
JBD2_FEATURE_INCOMPAT_CSUM_V3 = 0x10
JBD2_FEATURE_INCOMPAT_FAST_COMMIT = 0x20
JBD2_KNOWN_INCOMPAT = 0x3F
JBD2_CRC32_CHKSUM = 1
JBD2_MD5_CHKSUM = 2
JBD2_SHA1_CHKSUM = 3
JBD2_CRC32C_CHKSUM = 4

# block tags in descriptor blocks
JOURNAL_BLOCK_TAG3 = Layout(
    "journal_block_tag3_t",
    [("t_blocknr", "I"), ("t_flags", "I"), ("t_blocknr_high", "I"), ("t_checksum", "I")],
    ">",
)  # csum_v3: always 16 bytes
JOURNAL_BLOCK_TAG = Layout(
    "journal_block_tag_t",
    [("t_blocknr", "I"), ("t_checksum", "H"), ("t_flags", "H"), ("t_blocknr_high", "I")],
    ">",
)  # 12 bytes with 64bit; 8 without; csum_v2 adds 2 (t_checksum)
JBD2_FLAG_ESCAPE = 1
JBD2_FLAG_SAME_UUID = 2
JBD2_FLAG_DELETED = 4
JBD2_FLAG_LAST_TAG = 8
JOURNAL_BLOCK_TAIL = Layout("jbd2_journal_block_tail", [("t_checksum", "I")], ">")
JOURNAL_COMMIT_HEADER = Layout(
    "commit_header",
    [
        ("h_magic", "I"),
        ("h_blocktype", "I"),
        ("h_sequence", "I"),
        ("h_chksum_type", "B"),
        ("h_chksum_size", "B"),
        ("h_padding", "2s"),
        ("h_chksum", "8I"),
        ("h_commit_sec", "Q"),
        ("h_commit_nsec", "I"),
    ],
    ">",
)
JOURNAL_REVOKE_HEADER = Layout(
    "jbd2_journal_revoke_header_t",
    [("h_magic", "I"), ("h_blocktype", "I"), ("h_sequence", "I"), ("r_count", "I")],
    ">",
)


def journal_tag_bytes(incompat: int) -> int:
    """Size of one block tag in a descriptor block (``journal_tag_bytes`` in jbd2)."""
    if incompat & JBD2_FEATURE_INCOMPAT_CSUM_V3:
        return JOURNAL_BLOCK_TAG3.size
    size = JOURNAL_BLOCK_TAG.size
    if incompat & JBD2_FEATURE_INCOMPAT_CSUM_V2:
        size += 2
    if incompat & JBD2_FEATURE_INCOMPAT_64BIT:
        return size
    return size - 4
