"""Set (not verify) every ext4 metadata checksum on a buffer about to be written.

Why a separate object: the writer recomputes checksums only when it flushes a dirty block, and
each formula needs the same few filesystem facts (the crc32c seed, which checksum family is on,
the descriptor size). Formulas follow fs/ext4 (``ext4_inode_csum``, ``ext4_extent_block_csum``,
``ext4_dirblock_csum``, ``ext4_dx_csum``, ``ext4_block_bitmap_csum``, ``ext4_group_desc_csum``,
``ext4_superblock_csum``, ``ext4_xattr_block_csum``), built on ``csum.ext4_chksum``.
"""

from __future__ import annotations

import struct

from burrow.fs.ext4 import ondisk as od
from burrow.fs.ext4.csum import crc16, ext4_chksum, inode_csum_seed

__all__ = ["Checksummer"]

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_CSUM_LO = od.EXT4_INODE.offset("l_i_checksum_lo")
_CSUM_HI = od.EXT4_INODE.offset("i_checksum_hi")
_GEN = od.EXT4_INODE.offset("i_generation")
_EXTRA = od.EXT4_INODE.offset("i_extra_isize")
_BG_CSUM = od.EXT4_GROUP_DESC.offset("bg_checksum")
_BB_LO = od.EXT4_GROUP_DESC.offset("bg_block_bitmap_csum_lo")
_IB_LO = od.EXT4_GROUP_DESC.offset("bg_inode_bitmap_csum_lo")
_BB_HI = od.EXT4_GROUP_DESC_64.offset("bg_block_bitmap_csum_hi")
_IB_HI = od.EXT4_GROUP_DESC_64.offset("bg_inode_bitmap_csum_hi")
_SB_CSUM = od.EXT4_SUPER_BLOCK.offset("s_checksum")
_XH_CSUM = od.EXT4_XATTR_HEADER.offset("h_checksum")


class Checksummer:
    """Checksum setters for one filesystem (no-ops for the families that are off)."""

    def __init__(
        self,
        fs_uuid: bytes,
        *,
        metadata_csum: bool,
        gdt_csum: bool,
        desc_size: int,
        csum_seed: int | None = None,
    ) -> None:
        self.uuid = fs_uuid
        self.metadata_csum = metadata_csum
        self.gdt_csum = gdt_csum
        self.desc_size = desc_size
        self.seed = csum_seed if csum_seed is not None else ext4_chksum(0xFFFFFFFF, fs_uuid)

    def inode_seed(self, ino: int, gen: int) -> int:
        return inode_csum_seed(self.seed, ino, gen)

    def set_inode(self, raw: bytearray, ino: int, inode_size: int) -> None:
        if not self.metadata_csum:
            return
        gen = _U32.unpack_from(raw, _GEN)[0]
        has_hi = inode_size > 128 and _U16.unpack_from(raw, _EXTRA)[0] >= 4
        _U16.pack_into(raw, _CSUM_LO, 0)
        if has_hi:
            _U16.pack_into(raw, _CSUM_HI, 0)
        crc = ext4_chksum(self.inode_seed(ino, gen), memoryview(raw)[:inode_size])
        _U16.pack_into(raw, _CSUM_LO, crc & 0xFFFF)
        if has_hi:
            _U16.pack_into(raw, _CSUM_HI, crc >> 16)

    def set_extent_tail(self, block: bytearray, ino: int, gen: int) -> None:
        if not self.metadata_csum:
            return
        eh_max = _U16.unpack_from(block, 4)[0]
        at = 12 + 12 * eh_max
        crc = ext4_chksum(self.inode_seed(ino, gen), memoryview(block)[:at])
        _U32.pack_into(block, at, crc)

    def set_dir_tail(self, block: bytearray, ino: int, gen: int) -> None:
        """Leaf block with an ``ext4_dir_entry_tail`` in its last 12 bytes."""
        if not self.metadata_csum:
            return
        n = len(block) - 12
        crc = ext4_chksum(self.inode_seed(ino, gen), memoryview(block)[:n])
        _U32.pack_into(block, n + 8, crc)

    def set_dx_tail(self, block: bytearray, ino: int, gen: int, count_offset: int) -> None:
        """dx_root/dx_node: crc over the header and used entries, then the dx_tail."""
        if not self.metadata_csum:
            return
        limit, count = struct.unpack_from("<HH", block, count_offset)
        tail = count_offset + limit * 8
        crc = ext4_chksum(self.inode_seed(ino, gen), memoryview(block)[: count_offset + count * 8])
        _U32.pack_into(block, tail + 4, 0)
        crc = ext4_chksum(crc, memoryview(block)[tail : tail + 8])
        _U32.pack_into(block, tail + 4, crc)

    def set_bitmap_csums(
        self, desc: bytearray, block_bitmap: bytes | bytearray, inode_bitmap: bytes | bytearray
    ) -> None:
        if not self.metadata_csum:
            return
        b = ext4_chksum(self.seed, block_bitmap)
        i = ext4_chksum(self.seed, inode_bitmap)
        _U16.pack_into(desc, _BB_LO, b & 0xFFFF)
        _U16.pack_into(desc, _IB_LO, i & 0xFFFF)
        if self.desc_size >= 64:
            _U16.pack_into(desc, _BB_HI, b >> 16)
            _U16.pack_into(desc, _IB_HI, i >> 16)

    def set_block_bitmap_csum(self, desc: bytearray, block_bitmap: bytes | bytearray) -> None:
        if not self.metadata_csum:
            return
        b = ext4_chksum(self.seed, block_bitmap)
        _U16.pack_into(desc, _BB_LO, b & 0xFFFF)
        if self.desc_size >= 64:
            _U16.pack_into(desc, _BB_HI, b >> 16)

    def set_inode_bitmap_csum(self, desc: bytearray, inode_bitmap: bytes | bytearray) -> None:
        if not self.metadata_csum:
            return
        i = ext4_chksum(self.seed, inode_bitmap)
        _U16.pack_into(desc, _IB_LO, i & 0xFFFF)
        if self.desc_size >= 64:
            _U16.pack_into(desc, _IB_HI, i >> 16)

    def set_group_desc(self, desc: bytearray, group: int) -> None:
        if self.metadata_csum:
            _U16.pack_into(desc, _BG_CSUM, 0)
            crc = ext4_chksum(self.seed, _U32.pack(group))
            crc = ext4_chksum(crc, memoryview(desc)[: self.desc_size])
            _U16.pack_into(desc, _BG_CSUM, crc & 0xFFFF)
        elif self.gdt_csum:
            crc = crc16(0xFFFF, self.uuid)
            crc = crc16(crc, _U32.pack(group))
            crc = crc16(crc, memoryview(desc)[:_BG_CSUM])
            if self.desc_size > 32:
                crc = crc16(crc, memoryview(desc)[_BG_CSUM + 2 : self.desc_size])
            _U16.pack_into(desc, _BG_CSUM, crc)

    def set_superblock(self, sb: bytearray) -> None:
        if self.metadata_csum:
            _U32.pack_into(sb, _SB_CSUM, ext4_chksum(0xFFFFFFFF, memoryview(sb)[:_SB_CSUM]))

    def set_xattr_block(self, block: bytearray, blocknr: int) -> None:
        if not self.metadata_csum:
            return
        _U32.pack_into(block, _XH_CSUM, 0)
        crc = ext4_chksum(self.seed, struct.pack("<Q", blocknr))
        crc = ext4_chksum(crc, block)
        _U32.pack_into(block, _XH_CSUM, crc)
