"""MBR (DOS) partition tables: the four primary slots, the extended partition's chain of EBRs
(logical partitions), and the protective MBR in front of a GPT.

On-disk layout (one 512-byte sector; MBRs on 4096-byte-sector disks are not handled):

* bytes 0-439 boot code, 440-443 disk signature, 444-445 usually zero,
* 446-509 four 16-byte partition entries (``MBR_ENTRY``), 510-511 the signature ``55 AA``.

An extended partition (type 0x05, 0x0F or 0x85) holds a linked list of EBRs. Each EBR has the
same layout; its first entry describes one logical partition relative to the EBR itself, its
second entry points to the next EBR relative to the start of the extended partition. Linux
numbers logical partitions 5, 6, ... in chain order; the chain is followed with a visited set
and a length cap, so a loop is reported instead of hanging.

Model objects here are in sectors; ``burrow.volume.table`` converts to bytes.
"""

from __future__ import annotations

import itertools
import logging
import struct
from dataclasses import dataclass, field

from burrow.block.device import BlockDevice
from burrow.errors import CorruptImage
from burrow.volume.guids import mbr_type_name
from burrow.volume.table import MBR_EXTENDED_TYPES, Partition, PartitionTable

__all__ = [
    "MBR_ENTRY",
    "MbrDisk",
    "MbrPart",
    "has_protective_entry",
    "looks_like_mbr",
    "mbr_to_table",
    "pack_protective_mbr",
    "read_mbr",
    "write_mbr",
]

log = logging.getLogger(__name__)

SECTOR = 512
ENTRIES_OFFSET = 446
SIGNATURE_OFFSET = 440
BOOT_SIGNATURE = b"\x55\xaa"
MAX_LOGICAL = 128  # longest EBR chain we follow (Linux allows 256 partitions in all)
GPT_PROTECTIVE = 0xEE

# struct partition_entry: boot_indicator, starting CHS, os_type, ending CHS,
# starting_lba, size_in_lba (UEFI spec, table 5-2).
MBR_ENTRY = struct.Struct("<B3sB3sII")


@dataclass
class MbrPart:
    """One MBR partition in sectors. ``ebr`` is the sector of a logical partition's EBR."""

    type: int
    start: int
    sectors: int
    bootable: bool = False
    ebr: int = 0

    @property
    def last(self) -> int:
        return self.start + self.sectors - 1


@dataclass
class MbrDisk:
    """An MBR as read (or about to be written).

    ``primaries`` always has four slots (``None`` = empty). ``logicals`` is the EBR chain in
    order. ``lossy`` is set when the reading had to skip something a rewrite would lose; the
    writer refuses such tables.
    """

    signature: int
    total_sectors: int
    primaries: list[MbrPart | None] = field(default_factory=lambda: [None] * 4)
    logicals: list[MbrPart] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lossy: bool = False

    @property
    def extended_slot(self) -> int | None:
        """Index (0-3) of the extended partition followed for logicals, or ``None``."""
        for i, part in enumerate(self.primaries):
            if part is not None and part.type in MBR_EXTENDED_TYPES:
                return i
        return None

    def warn(self, message: str, *, lossy: bool = False) -> None:
        self.warnings.append(message)
        log.warning("%s", message)
        self.lossy = self.lossy or lossy


def _entries(sector: bytes) -> list[tuple[int, int, int, int]]:
    """(boot_indicator, os_type, starting_lba, size_in_lba) of the four entries."""
    out = []
    for i in range(4):
        boot, _chs1, os_type, _chs2, lba, size = MBR_ENTRY.unpack_from(
            sector, ENTRIES_OFFSET + 16 * i
        )
        out.append((boot, os_type, lba, size))
    return out


def _is_fs_boot_sector(sector: bytes) -> bool:
    """A FAT/NTFS/exFAT volume boot record also ends in 55 AA; it is not a partition table."""
    if sector[0] not in (0xEB, 0xE9):
        return False
    return (
        sector[3:11] in (b"NTFS    ", b"EXFAT   ")
        or sector[54:57] == b"FAT"
        or sector[82:87] == b"FAT32"
    )


def looks_like_mbr(sector: bytes) -> bool:
    """True when sector 0 is a DOS partition table (signature, sane boot indicators, and not a
    filesystem boot sector)."""
    if len(sector) < SECTOR or sector[510:512] != BOOT_SIGNATURE:
        return False
    if any(boot not in (0x00, 0x80) for boot, _, _, _ in _entries(sector)):
        return False
    return not _is_fs_boot_sector(sector)


def has_entries(sector: bytes) -> bool:
    """True when any of the four entries is in use (a type byte and a size)."""
    return any(t and size for _, t, _, size in _entries(sector))


def has_protective_entry(sector: bytes) -> bool:
    """True when an entry has type 0xEE (a protective or hybrid MBR in front of a GPT)."""
    if len(sector) < SECTOR or sector[510:512] != BOOT_SIGNATURE:
        return False
    return any(t == GPT_PROTECTIVE for _, t, _, _ in _entries(sector))


def protective_last_lba(sector: bytes) -> int | None:
    """Last LBA covered by the first 0xEE entry (where a GPT's backup header was when the
    table was written), or ``None``."""
    if not has_protective_entry(sector):
        return None
    for _, os_type, lba, size in _entries(sector):
        if os_type == GPT_PROTECTIVE and size:
            return lba + size - 1
    return None


def is_hybrid(sector: bytes) -> bool:
    """A hybrid MBR: a 0xEE entry plus other non-empty entries."""
    ents = _entries(sector)
    return has_protective_entry(sector) and any(
        t not in (0, GPT_PROTECTIVE) and size for _, t, _, size in ents
    )


def read_mbr(dev: BlockDevice, sector0: bytes) -> MbrDisk:
    """Parse the MBR in ``sector0`` (already read from ``dev``) and follow any EBR chain."""
    total = dev.size // SECTOR
    (signature,) = struct.unpack_from("<I", sector0, SIGNATURE_OFFSET)
    disk = MbrDisk(signature=signature, total_sectors=total)
    for i, (boot, os_type, lba, size) in enumerate(_entries(sector0)):
        if os_type == 0 or size == 0:
            continue
        where = ENTRIES_OFFSET + 16 * i
        if lba == 0:
            raise CorruptImage("MBR partition entry", where, f"partition {i + 1} starts at LBA 0")
        if lba + size > total:
            raise CorruptImage(
                "MBR partition entry",
                where,
                f"partition {i + 1} (sectors {lba}-{lba + size - 1}) ends beyond the device "
                f"({total} sectors)",
            )
        disk.primaries[i] = MbrPart(os_type, lba, size, bootable=boot == 0x80)
    _check_overlaps([(i + 1, p) for i, p in enumerate(disk.primaries) if p], "MBR partition entry")
    ext_slot = disk.extended_slot
    if ext_slot is not None:
        for j, other in enumerate(disk.primaries):
            if j != ext_slot and other is not None and other.type in MBR_EXTENDED_TYPES:
                disk.warn(
                    f"MBR has more than one extended partition; only partition "
                    f"{ext_slot + 1} is followed",
                    lossy=True,
                )
        ext = disk.primaries[ext_slot]
        assert ext is not None
        _read_chain(dev, disk, ext)
    return disk


def _read_chain(dev: BlockDevice, disk: MbrDisk, ext: MbrPart) -> None:
    """Follow the EBR chain of ``ext`` (visited set and ``MAX_LOGICAL`` cap against loops)."""
    ebr = ext.start
    visited: set[int] = set()
    while True:
        offset = ebr * SECTOR
        if ebr in visited:
            raise CorruptImage("MBR extended partition chain", offset, "the EBR chain loops")
        if len(visited) >= MAX_LOGICAL:
            raise CorruptImage(
                "MBR extended partition chain",
                offset,
                f"more than {MAX_LOGICAL} logical partitions",
            )
        if not ext.start <= ebr <= ext.last:
            raise CorruptImage(
                "MBR extended partition chain", offset, "an EBR lies outside the extended partition"
            )
        visited.add(ebr)
        sector = dev.pread(SECTOR, offset)
        if sector[510:512] != BOOT_SIGNATURE:
            if ebr != ext.start or any(sector[ENTRIES_OFFSET:510]):
                disk.warn(f"EBR at sector {ebr} has no 55 AA signature; chain cut", lossy=True)
            return
        data: tuple[int, int, int, int] | None = None
        link: tuple[int, int, int, int] | None = None
        for boot, os_type, lba, size in _entries(sector):
            if os_type == 0 or (size == 0 and os_type not in MBR_EXTENDED_TYPES):
                continue
            if os_type in MBR_EXTENDED_TYPES:
                if link is None:
                    link = (boot, os_type, lba, size)
                    continue
            elif data is None:
                data = (boot, os_type, lba, size)
                continue
            disk.warn(f"EBR at sector {ebr} has extra entries; ignored", lossy=True)
        if data is not None:
            boot, os_type, lba, size = data
            start = ebr + lba
            number = 5 + len(disk.logicals)
            if lba == 0 or start + size > disk.total_sectors:
                raise CorruptImage(
                    "MBR logical partition entry",
                    offset + ENTRIES_OFFSET,
                    f"partition {number} (sectors {start}-{start + size - 1}) does not fit the "
                    f"device ({disk.total_sectors} sectors)",
                )
            part = MbrPart(os_type, start, size, bootable=boot == 0x80, ebr=ebr)
            if part.start <= ext.start or part.last > ext.last:
                disk.warn(
                    f"logical partition {number} lies outside the extended partition", lossy=True
                )
            disk.logicals.append(part)
        elif link is not None or ebr != ext.start:
            disk.warn(f"EBR at sector {ebr} describes no partition", lossy=True)
        if link is None:
            break
        ebr = ext.start + link[2]
    _check_overlaps(
        [(5 + i, p) for i, p in enumerate(disk.logicals)], "MBR logical partition entry"
    )


def _check_overlaps(parts: list[tuple[int, MbrPart]], structure: str) -> None:
    ordered = sorted(parts, key=lambda item: item[1].start)
    for (na, a), (nb, b) in itertools.pairwise(ordered):
        if b.start <= a.last:
            raise CorruptImage(structure, None, f"partition {nb} overlaps partition {na}")


def mbr_to_table(disk: MbrDisk) -> PartitionTable:
    """The byte-based public view of ``disk``."""
    parts: list[Partition] = []

    def make(number: int, p: MbrPart) -> Partition:
        return Partition(
            number=number,
            start=p.start * SECTOR,
            size=p.sectors * SECTOR,
            type=f"0x{p.type:02x}",
            type_name=mbr_type_name(p.type),
            bootable=p.bootable,
        )

    for i, p in enumerate(disk.primaries):
        if p is not None:
            parts.append(make(i + 1, p))
    for i, p in enumerate(disk.logicals):
        parts.append(make(5 + i, p))
    return PartitionTable(
        kind="mbr",
        sector_size=SECTOR,
        partitions=parts,
        disk_id=f"0x{disk.signature:08x}",
        warnings=list(disk.warnings),
    )


# -- writing --------------------------------------------------------------------------------


def _chs(lba: int) -> bytes:
    """CHS address of ``lba`` for the usual 255-head, 63-sector geometry (1023/254/63 when it
    does not fit, as every modern tool writes)."""
    if lba >= 1024 * 255 * 63:
        return b"\xfe\xff\xff"
    cyl, rest = divmod(lba, 255 * 63)
    head, sec = divmod(rest, 63)
    return bytes([head, ((cyl >> 2) & 0xC0) | (sec + 1), cyl & 0xFF])


def _pack_entry(buf: bytearray, index: int, boot: bool, os_type: int, lba: int, size: int) -> None:
    first = _chs(lba)
    last = _chs(lba + size - 1) if size else b"\0\0\0"
    MBR_ENTRY.pack_into(
        buf, ENTRIES_OFFSET + 16 * index, 0x80 if boot else 0, first, os_type, last, lba, size
    )


def _sector0(dev: BlockDevice, signature: int) -> bytearray:
    """Sector 0 with its boot code kept, the signature set and the table cleared."""
    buf = bytearray(dev.pread(SECTOR, 0))
    struct.pack_into("<I", buf, SIGNATURE_OFFSET, signature)
    buf[ENTRIES_OFFSET:510] = bytes(64)
    buf[510:512] = BOOT_SIGNATURE
    return buf


def pack_protective_mbr(dev: BlockDevice, total_sectors: int) -> bytes:
    """A protective MBR for a GPT of ``total_sectors`` (in the GPT's sector size): one 0xEE
    entry from LBA 1 covering the disk (capped at 2^32-1), boot code kept."""
    buf = _sector0(dev, struct.unpack_from("<I", dev.pread(SECTOR, 0), SIGNATURE_OFFSET)[0])
    size = min(total_sectors - 1, 0xFFFFFFFF)
    MBR_ENTRY.pack_into(
        buf, ENTRIES_OFFSET, 0, b"\x00\x02\x00", GPT_PROTECTIVE, _chs(size), 1, size
    )
    return bytes(buf)


def ebr_positions(disk: MbrDisk) -> list[int]:
    """Where each logical's EBR goes: the first always at the extended partition's start."""
    slot = disk.extended_slot
    if slot is None:
        return []
    ext = disk.primaries[slot]
    assert ext is not None
    return [ext.start if i == 0 else p.ebr for i, p in enumerate(disk.logicals)]


def write_mbr(dev: BlockDevice, disk: MbrDisk, *, stale_ebrs: set[int] | None = None) -> None:
    """Write sector 0 and the whole EBR chain of ``disk``; zero EBR sectors no longer used."""
    buf = _sector0(dev, disk.signature)
    for i, p in enumerate(disk.primaries):
        if p is not None:
            _pack_entry(buf, i, p.bootable, p.type, p.start, p.sectors)
    slot = disk.extended_slot
    positions = ebr_positions(disk)
    if slot is not None:
        ext = disk.primaries[slot]
        assert ext is not None
        if not disk.logicals:
            ebr = bytearray(SECTOR)
            ebr[510:512] = BOOT_SIGNATURE
            dev.pwrite(ebr, ext.start * SECTOR)
        for i, (p, pos) in enumerate(zip(disk.logicals, positions, strict=True)):
            p.ebr = pos
            ebr = bytearray(SECTOR)
            _pack_entry(ebr, 0, p.bootable, p.type, p.start - pos, p.sectors)
            if i + 1 < len(disk.logicals):
                nxt, nxt_pos = disk.logicals[i + 1], positions[i + 1]
                _pack_entry(ebr, 1, False, 0x05, nxt_pos - ext.start, nxt.last - nxt_pos + 1)
            ebr[510:512] = BOOT_SIGNATURE
            dev.pwrite(ebr, pos * SECTOR)
    for stale in sorted((stale_ebrs or set()) - set(positions)):
        if 0 < stale < disk.total_sectors:
            dev.pwrite(bytes(SECTOR), stale * SECTOR)
    dev.pwrite(buf, 0)
    dev.flush()
