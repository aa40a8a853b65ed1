"""FAT on-disk structures (Microsoft "FAT: General Overview of On-Disk Format", fatgen103).

Every structure is one ``struct.Struct`` whose field names are the spec's (``BPB_BytsPerSec``,
``DIR_FstClusHI``, ``LDIR_Ord``...). :class:`Geometry` turns a boot sector into validated
numbers (where the FATs, the root directory and the data area are) and refuses every value
that would make later arithmetic go outside the device: all later code trusts a Geometry.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from burrow.errors import CorruptImage

__all__ = [
    "ATTR_ARCHIVE",
    "ATTR_DIRECTORY",
    "ATTR_HIDDEN",
    "ATTR_LONG_NAME",
    "ATTR_LONG_NAME_MASK",
    "ATTR_READ_ONLY",
    "ATTR_SYSTEM",
    "ATTR_VOLUME_ID",
    "BPB",
    "BPB_FAT16",
    "BPB_FAT32",
    "DIRENT",
    "FSINFO",
    "LDIR",
    "NTRES_LOWER_BASE",
    "NTRES_LOWER_EXT",
    "DirEntryRaw",
    "Geometry",
    "LfnRaw",
    "parse_geometry",
]

# -- boot sector -------------------------------------------------------------------------
# Common BIOS parameter block, offsets 0..35.
BPB = struct.Struct(
    "<3s8sHBHBHHBHHHII"
)  # BS_jmpBoot BS_OEMName BPB_BytsPerSec BPB_SecPerClus BPB_RsvdSecCnt BPB_NumFATs
#   BPB_RootEntCnt BPB_TotSec16 BPB_Media BPB_FATSz16 BPB_SecPerTrk BPB_NumHeads
#   BPB_HiddSec BPB_TotSec32


class BpbFields(NamedTuple):
    BS_jmpBoot: bytes
    BS_OEMName: bytes
    BPB_BytsPerSec: int
    BPB_SecPerClus: int
    BPB_RsvdSecCnt: int
    BPB_NumFATs: int
    BPB_RootEntCnt: int
    BPB_TotSec16: int
    BPB_Media: int
    BPB_FATSz16: int
    BPB_SecPerTrk: int
    BPB_NumHeads: int
    BPB_HiddSec: int
    BPB_TotSec32: int


# FAT12/16 extended boot record at offset 36.
BPB_FAT16 = struct.Struct("<BBBI11s8s")  # BS_DrvNum BS_Reserved1 BS_BootSig BS_VolID
#                                           BS_VolLab BS_FilSysType


class Bpb16Fields(NamedTuple):
    BS_DrvNum: int
    BS_Reserved1: int
    BS_BootSig: int
    BS_VolID: int
    BS_VolLab: bytes
    BS_FilSysType: bytes


# FAT32 extended BPB at offset 36.
BPB_FAT32 = struct.Struct("<IHHIHH12sBBBI11s8s")


class Bpb32Fields(NamedTuple):
    BPB_FATSz32: int
    BPB_ExtFlags: int
    BPB_FSVer: int
    BPB_RootClus: int
    BPB_FSInfo: int
    BPB_BkBootSec: int
    BPB_Reserved: bytes
    BS_DrvNum: int
    BS_Reserved1: int
    BS_BootSig: int
    BS_VolID: int
    BS_VolLab: bytes
    BS_FilSysType: bytes


BPB_FAT16_OFFSET = 36
BPB_FAT32_OFFSET = 36
SIGNATURE_OFFSET = 510
BOOT_SIGNATURE = b"\x55\xaa"
EXT_BOOT_SIG = 0x29

# -- FSInfo (FAT32) ----------------------------------------------------------------------
FSINFO = struct.Struct("<I480sIII12sI")  # FSI_LeadSig FSI_Reserved1 FSI_StrucSig
#                                          FSI_Free_Count FSI_Nxt_Free FSI_Reserved2 FSI_TrailSig


class FsInfoFields(NamedTuple):
    FSI_LeadSig: int
    FSI_Reserved1: bytes
    FSI_StrucSig: int
    FSI_Free_Count: int
    FSI_Nxt_Free: int
    FSI_Reserved2: bytes
    FSI_TrailSig: int


FSI_LEAD_SIG = 0x41615252
FSI_STRUC_SIG = 0x61417272
FSI_TRAIL_SIG = 0xAA550000
FSI_UNKNOWN = 0xFFFFFFFF

# -- directory entries -------------------------------------------------------------------
DIRENT = struct.Struct("<11sBBBHHHHHHHI")


class DirEntryRaw(NamedTuple):
    DIR_Name: bytes
    DIR_Attr: int
    DIR_NTRes: int
    DIR_CrtTimeTenth: int
    DIR_CrtTime: int
    DIR_CrtDate: int
    DIR_LstAccDate: int
    DIR_FstClusHI: int
    DIR_WrtTime: int
    DIR_WrtDate: int
    DIR_FstClusLO: int
    DIR_FileSize: int


LDIR = struct.Struct("<B10sBBB12sH4s")


class LfnRaw(NamedTuple):
    LDIR_Ord: int
    LDIR_Name1: bytes
    LDIR_Attr: int
    LDIR_Type: int
    LDIR_Chksum: int
    LDIR_Name2: bytes
    LDIR_FstClusLO: int
    LDIR_Name3: bytes


DIRENT_SIZE = 32
ATTR_READ_ONLY = 0x01
ATTR_HIDDEN = 0x02
ATTR_SYSTEM = 0x04
ATTR_VOLUME_ID = 0x08
ATTR_DIRECTORY = 0x10
ATTR_ARCHIVE = 0x20
ATTR_LONG_NAME = ATTR_READ_ONLY | ATTR_HIDDEN | ATTR_SYSTEM | ATTR_VOLUME_ID
ATTR_LONG_NAME_MASK = ATTR_LONG_NAME | ATTR_DIRECTORY | ATTR_ARCHIVE
LAST_LONG_ENTRY = 0x40
NTRES_LOWER_BASE = 0x08  # Windows NT / Linux vfat: 8.3 basename shown in lower case
NTRES_LOWER_EXT = 0x10  # ... extension shown in lower case
DELETED = 0xE5
KANJI_E5 = 0x05  # a real first byte 0xE5 is stored as 0x05

FAT12_MAX_CLUSTERS = 4084  # fewer than 4085 clusters: FAT12 (spec and kernel agree)
FAT16_MAX_CLUSTERS = 65524
FAT32_MAX_CLUSTERS = 0x0FFFFFF5 - 1


@dataclass(frozen=True)
class Geometry:
    """Validated layout numbers, all in bytes unless named otherwise."""

    fat_bits: int  # 12, 16 or 32
    sector_size: int
    sectors_per_cluster: int
    cluster_size: int
    reserved_sectors: int
    num_fats: int
    fat_sectors: int
    root_entries: int  # FAT12/16 fixed root directory slots (0 on FAT32)
    total_sectors: int
    media: int
    hidden_sectors: int
    sectors_per_track: int
    heads: int
    fat_offset: int  # byte offset of FAT #0
    fat_size: int  # bytes per FAT copy
    root_offset: int  # FAT12/16: byte offset of the fixed root directory
    root_size: int  # FAT12/16: its size in bytes
    data_offset: int  # byte offset of cluster 2
    cluster_count: int  # number of data clusters (valid numbers are 2..cluster_count+1)
    root_cluster: int  # FAT32 root directory cluster (0 on FAT12/16)
    fsinfo_sector: int  # FAT32 (0 when absent)
    backup_boot_sector: int  # FAT32 (0 when absent)
    active_fat: int | None  # FAT32 ExtFlags: mirroring disabled, only this FAT is live
    volume_id: int
    label: bytes  # BS_VolLab, 11 bytes
    oem_name: bytes
    ext_flags: int

    @property
    def max_cluster(self) -> int:
        return self.cluster_count + 1

    def cluster_offset(self, cluster: int) -> int:
        return self.data_offset + (cluster - 2) * self.cluster_size


def _bad(detail: str, offset: int = 11) -> CorruptImage:
    return CorruptImage("FAT boot sector", offset, detail)


def parse_geometry(sector: bytes, device_size: int) -> Geometry:
    """Validate a boot sector (at least 512 bytes) against a device of ``device_size`` bytes."""
    if len(sector) < 512:
        raise _bad("boot sector is shorter than 512 bytes", 0)
    b = BpbFields._make(BPB.unpack_from(sector, 0))
    if sector[SIGNATURE_OFFSET : SIGNATURE_OFFSET + 2] != BOOT_SIGNATURE:
        raise _bad("missing 0x55AA signature", SIGNATURE_OFFSET)
    bps = b.BPB_BytsPerSec
    if bps not in (512, 1024, 2048, 4096):
        raise _bad(f"BPB_BytsPerSec {bps} is not 512, 1024, 2048 or 4096", 11)
    spc = b.BPB_SecPerClus
    if spc == 0 or spc & (spc - 1) or spc > 128:
        raise _bad(f"BPB_SecPerClus {spc} is not a power of two up to 128", 13)
    cluster_size = bps * spc
    if cluster_size > 256 * 1024:
        raise _bad(f"cluster size {cluster_size} is larger than 256 KiB", 13)
    if b.BPB_RsvdSecCnt == 0:
        raise _bad("BPB_RsvdSecCnt is 0", 14)
    if not 1 <= b.BPB_NumFATs <= 4:
        raise _bad(f"BPB_NumFATs {b.BPB_NumFATs} is not between 1 and 4", 16)
    if b.BPB_Media != 0xF0 and b.BPB_Media < 0xF8:  # the kernel refuses these too
        raise _bad(f"invalid media byte {b.BPB_Media:#x}", 21)
    total = b.BPB_TotSec16 or b.BPB_TotSec32
    if total == 0:
        raise _bad("total sector count is 0", 19)
    fat32 = b.BPB_FATSz16 == 0
    e32: Bpb32Fields | None = None
    if fat32:
        e32 = Bpb32Fields._make(BPB_FAT32.unpack_from(sector, BPB_FAT32_OFFSET))
        fat_sectors = e32.BPB_FATSz32
        if b.BPB_RootEntCnt != 0:
            raise _bad("FAT32 with a fixed root directory (BPB_RootEntCnt != 0)", 17)
        if e32.BPB_FSVer != 0:
            raise _bad(f"unknown FAT32 version {e32.BPB_FSVer:#x}", 42)
        volume_id, label, ext_flags = e32.BS_VolID, e32.BS_VolLab, e32.BPB_ExtFlags
        if e32.BS_BootSig != EXT_BOOT_SIG:
            volume_id, label = 0, b"NO NAME    "
    else:
        fat_sectors = b.BPB_FATSz16
        e16 = Bpb16Fields._make(BPB_FAT16.unpack_from(sector, BPB_FAT16_OFFSET))
        volume_id, label, ext_flags = e16.BS_VolID, e16.BS_VolLab, 0
        if e16.BS_BootSig != EXT_BOOT_SIG:
            volume_id, label = 0, b"NO NAME    "
    if fat_sectors == 0:
        raise _bad("FAT size is 0", 22)
    root_size = b.BPB_RootEntCnt * 32
    root_sectors = (root_size + bps - 1) // bps
    first_data = b.BPB_RsvdSecCnt + b.BPB_NumFATs * fat_sectors + root_sectors
    if first_data >= total:
        raise _bad(f"metadata ({first_data} sectors) fills the whole volume ({total})", 19)
    cluster_count = (total - first_data) // spc
    if fat32:
        fat_bits = 32
        if cluster_count > FAT32_MAX_CLUSTERS:
            raise _bad(f"{cluster_count} clusters is too many for FAT32", 19)
    elif cluster_count <= FAT12_MAX_CLUSTERS:
        fat_bits = 12
    elif cluster_count <= FAT16_MAX_CLUSTERS:
        fat_bits = 16
    else:
        raise _bad(f"{cluster_count} clusters is too many for FAT16", 19)
    if cluster_count < 1:
        raise _bad("no data clusters", 19)
    # The FAT must hold an entry for every cluster (entries 0 and 1 are reserved).
    needed = ((cluster_count + 2) * fat_bits + 7) // 8
    if fat_sectors * bps < needed:
        # Safe reading: clusters the FAT cannot describe are unusable; the kernel does this too.
        cluster_count = (fat_sectors * bps * 8) // fat_bits - 2
        if cluster_count < 1:
            raise _bad("FAT too small for any cluster", 22)
    fat_offset = b.BPB_RsvdSecCnt * bps
    data_offset = first_data * bps
    # Everything up to the last cluster must be on the device (truncated images refused).
    end = data_offset + cluster_count * cluster_size
    if end > device_size:
        raise CorruptImage(
            "FAT volume",
            device_size,
            f"image truncated: the volume needs {end} bytes, the device has {device_size}",
        )
    root_cluster = fsinfo = backup = 0
    active: int | None = None
    if e32 is not None:
        root_cluster = e32.BPB_RootClus
        if not 2 <= root_cluster <= cluster_count + 1:
            raise _bad(f"BPB_RootClus {root_cluster} is outside the data area", 44)
        fsinfo = e32.BPB_FSInfo if 0 < e32.BPB_FSInfo < b.BPB_RsvdSecCnt else 0
        backup = e32.BPB_BkBootSec if 0 < e32.BPB_BkBootSec < b.BPB_RsvdSecCnt else 0
        if ext_flags & 0x80:
            active = ext_flags & 0x0F
            if active >= b.BPB_NumFATs:
                raise _bad(f"active FAT {active} does not exist", 40)
    return Geometry(
        fat_bits=fat_bits,
        sector_size=bps,
        sectors_per_cluster=spc,
        cluster_size=cluster_size,
        reserved_sectors=b.BPB_RsvdSecCnt,
        num_fats=b.BPB_NumFATs,
        fat_sectors=fat_sectors,
        root_entries=b.BPB_RootEntCnt,
        total_sectors=total,
        media=b.BPB_Media,
        hidden_sectors=b.BPB_HiddSec,
        sectors_per_track=b.BPB_SecPerTrk,
        heads=b.BPB_NumHeads,
        fat_offset=fat_offset,
        fat_size=fat_sectors * bps,
        root_offset=fat_offset + b.BPB_NumFATs * fat_sectors * bps,
        root_size=root_sectors * bps,
        data_offset=data_offset,
        cluster_count=cluster_count,
        root_cluster=root_cluster,
        fsinfo_sector=fsinfo,
        backup_boot_sector=backup,
        active_fat=active,
        volume_id=volume_id,
        label=label,
        oem_name=b.BS_OEMName,
        ext_flags=ext_flags,
    )
