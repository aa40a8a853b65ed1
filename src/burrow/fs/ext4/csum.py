"""Checksums used by ext4 and jbd2: crc32c (metadata_csum, jbd2 v2/v3) and crc16 (gdt_csum).

The kernel's ``ext4_chksum(sbi, crc, data, len)`` is ``crc32c_le(crc, data, len)``: the *raw*
CRC register, with no initial or final inversion applied by the function itself. Callers seed
it with ``~0`` and store the register as is. The ``crc32c`` package computes the standard
(inverted-in, inverted-out) CRC-32C, so ``raw(seed, data) == ~crc32c(data, ~seed)``;
:func:`ext4_chksum` does that conversion once here so every caller can copy the kernel's
formulas literally.

``crc16`` is the kernel's ``lib/crc16.c`` (polynomial 0x8005, reflected 0xA001), seeded with
``~0`` by ``ext4_group_desc_csum`` and not inverted at the end.
"""

from __future__ import annotations

from burrow._crc32c import crc32c as _crc

__all__ = ["crc16", "ext4_chksum", "inode_csum_seed", "superblock_csum_seed"]

_MASK = 0xFFFFFFFF


def ext4_chksum(crc: int, data: bytes | bytearray | memoryview) -> int:
    """``crc32c_le(crc, data)`` as the kernel computes it (raw register in and out)."""
    return _crc(data, crc ^ _MASK) ^ _MASK


def superblock_csum_seed(s_uuid: bytes, s_checksum_seed: int, has_csum_seed: bool) -> int:
    """``sbi->s_csum_seed``: ``s_checksum_seed`` with metadata_csum_seed, else crc of the UUID."""
    if has_csum_seed:
        return s_checksum_seed
    return ext4_chksum(_MASK, s_uuid)


def inode_csum_seed(fs_seed: int, ino: int, generation: int) -> int:
    """``ei->i_csum_seed``: the filesystem seed extended with the inode number and generation
    (used by the inode, extent block, directory block and htree checksums)."""
    csum = ext4_chksum(fs_seed, ino.to_bytes(4, "little"))
    return ext4_chksum(csum, generation.to_bytes(4, "little"))


def _make_crc16_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC16 = _make_crc16_table()


def crc16(crc: int, data: bytes | bytearray | memoryview) -> int:
    """The kernel's ``crc16(crc, buffer, len)`` (CRC-16/ARC register update)."""
    table = _CRC16
    for b in bytes(data):
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc & 0xFFFF
