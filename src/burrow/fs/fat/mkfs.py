"""Make a FAT12/16/32 volume on any writable ``BlockDevice`` (a file, an image, a partition).

Geometry is chosen the way ``mkfs.fat`` (dosfstools 4.2) chooses it, so that ``fsck.fat -v``
and ``minfo`` show the same numbers for the same size:

* 512-byte sectors; two FATs; media 0xF8 (standard floppy sizes get their floppy media byte,
  cluster size and root size: 360K, 720K, 1200K, 1440K, 2880K).
* FAT32 is chosen automatically from 512 MiB up; FAT32 cluster size follows Microsoft's table
  (<= 260 MiB: 512 B, <= 8 GiB: 4 KiB, <= 16 GiB: 8 KiB, <= 32 GiB: 16 KiB, else 32 KiB).
  FAT12/16 start at 4 sectors per cluster and double until the cluster count fits.
  Without ``fat_bits``, FAT16 is used when it gives more clusters than FAT12.
* Reserved sectors: 1 (FAT12/16) or 32 (FAT32), rounded up to a cluster, like every
  structure on volumes above 4 MiB (mkfs.fat's alignment); 512 root entries (FAT12/16);
  FAT32: FSInfo in sector 1, backup boot sector in 6 (and backup FSInfo in 7).
* CHS fields (heads, sectors per track) from the SD card / LBA-assist rules; hidden sectors
  are the caller's partition offset in sectors.
"""

from __future__ import annotations

import os
import time

from burrow.block.device import BlockDevice
from burrow.errors import InvalidArgument, ReadOnly, UsageError
from burrow.fs.fat import times
from burrow.fs.fat.filesystem import label_bytes
from burrow.fs.fat.ondisk import (
    ATTR_VOLUME_ID,
    BOOT_SIGNATURE,
    BPB,
    BPB_FAT16,
    BPB_FAT32,
    DIRENT,
    EXT_BOOT_SIG,
    FSI_LEAD_SIG,
    FSI_STRUC_SIG,
    FSI_TRAIL_SIG,
    FSINFO,
)

__all__ = ["FatLayout", "mkfs", "plan"]

SECTOR = 512
MAX_CLUST_12 = 4084
MIN_CLUST_16 = 4087
MAX_CLUST_16 = 65524
MIN_CLUST_32 = 65525
MAX_CLUST_32 = 268435446
NO_NAME = b"NO NAME    "
_FLOPPIES = {  # size in KiB -> (sectors per track, heads, media, cluster sectors, root entries)
    360: (9, 2, 0xFD, 2, 112),
    720: (9, 2, 0xF9, 2, 112),
    1200: (15, 2, 0xF9, 1, 224),
    1440: (18, 2, 0xF0, 1, 224),
    2880: (36, 2, 0xF0, 2, 224),
}
# A boot program that says so and halts, like mkfs.fat's dummy boot code.
_MESSAGE = b"This is not a bootable disk.\r\n\0"


class FatLayout:
    """The numbers ``mkfs`` writes (also used by tests to compare with mkfs.fat)."""

    def __init__(self, **kw: int) -> None:
        self.fat_bits = kw["fat_bits"]
        self.total_sectors = kw["total_sectors"]
        self.sectors_per_cluster = kw["sectors_per_cluster"]
        self.reserved_sectors = kw["reserved_sectors"]
        self.fat_sectors = kw["fat_sectors"]
        self.root_entries = kw["root_entries"]
        self.cluster_count = kw["cluster_count"]
        self.media = kw["media"]
        self.sectors_per_track = kw["sectors_per_track"]
        self.heads = kw["heads"]
        self.num_fats = kw["num_fats"]

    def __repr__(self) -> str:
        return f"FatLayout({vars(self)})"


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def plan(size: int, fat_bits: int | None = None) -> FatLayout:
    """Choose the geometry mkfs.fat would choose for a ``size``-byte target."""
    if fat_bits not in (None, 12, 16, 32):
        raise UsageError(f"FAT type must be 12, 16 or 32, not {fat_bits}")
    total = size // SECTOR
    if total <= 524288:
        heads = 2 if total <= 32768 else 4 if total <= 65536 else 8 if total <= 262144 else 16
        spt = 16 if total <= 4096 else 32
    else:
        heads = (
            16 if total <= 16 * 63 * 1024 else 32 if total <= 32 * 63 * 1024
            else 64 if total <= 64 * 63 * 1024 else 128 if total <= 128 * 63 * 1024 else 255
        )  # fmt: skip
        spt = 63
    media, cluster, root_entries = 0xF8, 4, 512
    floppy = _FLOPPIES.get(size // 1024)
    if floppy is not None:
        spt, heads, media, cluster, root_entries = floppy
    size_fat = fat_bits or 0
    by_user = fat_bits is not None
    if not size_fat and size >= 512 * 1024 * 1024:
        size_fat = 32
    if size_fat == 32:
        cluster = (
            64 if total > 32 * 1024 * 1024 * 2 else 32 if total > 16 * 1024 * 1024 * 2
            else 16 if total > 8 * 1024 * 1024 * 2 else 8 if total > 260 * 1024 * 2 else 1
        )  # fmt: skip
    reserved = 32 if size_fat == 32 else 1
    nfats = 2
    # mkfs.fat works in 1 KiB blocks and aligns the sector count to whole tracks.
    num_sectors = (size // 1024) * 2
    num_sectors = min(num_sectors, 0xFFFFFFFF)
    num_sectors = num_sectors // spt * spt
    align = num_sectors > 8192

    def align_object(sectors: int, clust: int) -> int:
        return (sectors + clust - 1) & ~(clust - 1) if align else sectors

    if size_fat == 32:
        root_entries = 0
    root_sectors = _cdiv(root_entries * 32, SECTOR)
    clust12 = clust16 = clust32 = 0
    fatlength12 = fatlength16 = fatlength32 = 0
    while cluster and cluster <= 128:
        fatdata32 = num_sectors - align_object(reserved, cluster)
        fatdata1216 = fatdata32 - align_object(root_sectors, cluster)
        clust12 = 2 * (fatdata1216 * SECTOR + nfats * 3) // (2 * cluster * SECTOR + nfats * 3)
        fatlength12 = align_object(_cdiv(((clust12 + 2) * 3 + 1) >> 1, SECTOR), cluster)
        clust12 = (fatdata1216 - nfats * fatlength12) // cluster
        maxclust12 = min((fatlength12 * 2 * SECTOR) // 3, MAX_CLUST_12)
        if clust12 > maxclust12:
            clust12 = 0
        clust16 = (fatdata1216 * SECTOR + nfats * 4) // (cluster * SECTOR + nfats * 2)
        fatlength16 = align_object(_cdiv((clust16 + 2) * 2, SECTOR), cluster)
        clust16 = (fatdata1216 - nfats * fatlength16) // cluster
        maxclust16 = min((fatlength16 * SECTOR) // 2, MAX_CLUST_16)
        if clust16 > maxclust16:
            clust16 = 0
        if clust16 and clust16 < MIN_CLUST_16:
            clust16 = 0
        clust32 = (fatdata32 * SECTOR + nfats * 8) // (cluster * SECTOR + nfats * 4)
        fatlength32 = align_object(_cdiv((clust32 + 2) * 4, SECTOR), cluster)
        clust32 = (fatdata32 - nfats * fatlength32) // cluster
        maxclust32 = min((fatlength32 * SECTOR) // 4, MAX_CLUST_32)
        if clust32 > maxclust32:
            clust32 = 0
        if clust32 and clust32 < MIN_CLUST_32 and not (by_user and size_fat == 32):
            clust32 = 0
        if (
            (clust12 > 0 and size_fat in (0, 12))
            or (clust16 > 0 and size_fat in (0, 16))
            or (clust32 > 0 and size_fat == 32)
        ):
            break
        cluster <<= 1
    if not size_fat:
        size_fat = 16 if clust16 > clust12 else 12
    count, fat_len = {
        12: (clust12, fatlength12),
        16: (clust16, fatlength16),
        32: (clust32, fatlength32),
    }[size_fat]
    if count <= 0 or cluster > 128:
        raise UsageError(f"{size} bytes is too small or too large for a FAT{size_fat} filesystem")
    reserved = align_object(reserved, cluster)
    if align and size_fat != 32:
        root_entries = align_object(root_sectors, cluster) * (SECTOR >> 5)
    start_data = reserved + nfats * fat_len + _cdiv(root_entries * 32, SECTOR)
    if num_sectors // 2 < _cdiv(start_data, 2) + 32:
        raise UsageError(f"{size} bytes is too small for a FAT filesystem")
    return FatLayout(
        fat_bits=size_fat, total_sectors=num_sectors, sectors_per_cluster=cluster,
        reserved_sectors=reserved, fat_sectors=fat_len, root_entries=root_entries,
        cluster_count=count, media=media, sectors_per_track=spt, heads=heads, num_fats=nfats,
    )  # fmt: skip


def _boot_sector(lay: FatLayout, volume_id: int, label: bytes, hidden: int) -> bytes:
    fat32 = lay.fat_bits == 32
    boot = bytearray(SECTOR)
    code_at = 0x5A if fat32 else 0x3E
    total16 = lay.total_sectors if lay.total_sectors < 65536 else 0
    total32 = 0 if total16 else lay.total_sectors
    BPB.pack_into(
        boot, 0, bytes([0xEB, code_at - 2, 0x90]), b"burrowfs", SECTOR,
        lay.sectors_per_cluster, lay.reserved_sectors, lay.num_fats, lay.root_entries,
        total16, lay.media, 0 if fat32 else lay.fat_sectors, lay.sectors_per_track, lay.heads,
        hidden, total32,
    )  # fmt: skip
    drive = 0x80 if lay.media == 0xF8 else 0x00
    if fat32:
        BPB_FAT32.pack_into(
            boot, 36, lay.fat_sectors, 0, 0, 2, 1, 6, bytes(12), drive, 0, EXT_BOOT_SIG,
            volume_id, label, b"FAT32   ",
        )  # fmt: skip
    else:
        kind = b"FAT12   " if lay.fat_bits == 12 else b"FAT16   "
        BPB_FAT16.pack_into(boot, 36, drive, 0, EXT_BOOT_SIG, volume_id, label, kind)
    # Boot code: print the message with INT 10h teletype, wait for a key, reboot via INT 19h.
    msg_addr = 0x7C00 + code_at + 32
    prog = bytes(
        [0x0E, 0x1F, 0xBE, msg_addr & 0xFF, msg_addr >> 8,  # push cs; pop ds; mov si, msg
         0xAC, 0x22, 0xC0, 0x74, 0x0B,  # lodsb; and al, al; jz key
         0x56, 0xB4, 0x0E, 0xBB, 0x07, 0x00, 0xCD, 0x10, 0x5E, 0xEB, 0xF0,  # teletype; loop
         0x32, 0xE4, 0xCD, 0x16, 0xCD, 0x19, 0xEB, 0xFE]  # key: int 16h; int 19h; hang
    )  # fmt: skip
    boot[code_at : code_at + len(prog)] = prog
    boot[code_at + 32 : code_at + 32 + len(_MESSAGE)] = _MESSAGE
    boot[510:512] = BOOT_SIGNATURE
    return bytes(boot)


def mkfs(
    dev: BlockDevice,
    *,
    fat_bits: int | None = None,
    label: str = "",
    volume_id: int | None = None,
    hidden_sectors: int = 0,
    now_ns: int | None = None,
) -> None:
    """Write a new, empty FAT volume over the whole of ``dev``.

    ``hidden_sectors`` is the volume's start in 512-byte sectors when ``dev`` is a partition
    (mkfs.fat sets it from the partition offset). ``volume_id`` defaults to a random number.
    """
    if dev.readonly:
        raise ReadOnly("device is read-only")
    lay = plan(dev.size, fat_bits)
    raw_label = label_bytes(label) if label else NO_NAME
    if volume_id is None:
        volume_id = int.from_bytes(os.urandom(4), "little")
    if not 0 <= volume_id <= 0xFFFFFFFF:
        raise InvalidArgument("volume id must fit in 32 bits")
    if not 0 <= hidden_sectors <= 0xFFFFFFFF:
        raise InvalidArgument("hidden sector count must fit in 32 bits")
    fat32 = lay.fat_bits == 32
    boot = _boot_sector(lay, volume_id, raw_label, hidden_sectors)
    cs = lay.sectors_per_cluster * SECTOR
    # 1. Reserved area (zeroed), boot sector, FSInfo and backups.
    dev.write_zeroes(lay.reserved_sectors * SECTOR, 0)
    dev.pwrite(boot, 0)
    if fat32:
        fsinfo = FSINFO.pack(
            FSI_LEAD_SIG, bytes(480), FSI_STRUC_SIG, lay.cluster_count - 1, 2, bytes(12),
            FSI_TRAIL_SIG,
        )  # fmt: skip
        dev.pwrite(fsinfo, 1 * SECTOR)
        dev.pwrite(boot, 6 * SECTOR)
        dev.pwrite(fsinfo, 7 * SECTOR)
    # 2. FATs: entry 0 = media byte + ones, entry 1 = end-of-chain with the clean bit,
    #    FAT32 entry 2 = end-of-chain (the root directory).
    fat_bytes = lay.fat_sectors * SECTOR
    if lay.fat_bits == 12:
        head = bytes([lay.media, 0xFF, 0xFF])
    elif lay.fat_bits == 16:
        head = bytes([lay.media, 0xFF, 0xFF, 0xFF])
    else:
        head = bytes([lay.media, 0xFF, 0xFF, 0x0F, 0xFF, 0xFF, 0xFF, 0x0F, 0xFF, 0xFF, 0xFF, 0x0F])
    for copy in range(lay.num_fats):
        base = lay.reserved_sectors * SECTOR + copy * fat_bytes
        dev.write_zeroes(fat_bytes, base)
        dev.pwrite(head, base)
    # 3. Root directory (fixed area, or cluster 2), with the label entry.
    data_start = (
        lay.reserved_sectors + lay.num_fats * lay.fat_sectors + _cdiv(lay.root_entries * 32, SECTOR)
    ) * SECTOR
    if fat32:
        root_off, root_len = data_start, cs
    else:
        root_off = (lay.reserved_sectors + lay.num_fats * lay.fat_sectors) * SECTOR
        root_len = data_start - root_off
    dev.write_zeroes(root_len, root_off)
    if label:
        stamp = time.time_ns() if now_ns is None else now_ns
        date, tm, _ = times.encode(stamp)
        dev.pwrite(DIRENT.pack(raw_label, ATTR_VOLUME_ID, 0, 0, tm, date, date, 0, tm, date, 0, 0),
                   root_off)  # fmt: skip
    dev.flush()
