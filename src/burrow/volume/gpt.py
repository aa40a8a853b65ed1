"""GPT (UEFI GUID Partition Table): primary and backup headers, entry arrays, CRC32s.

Layout (UEFI spec 2.10, section 5.3), in logical blocks (LBAs) of 512 or 4096 bytes:

* LBA 0: a protective MBR (one 0xEE entry covering the disk),
* LBA 1: the primary ``GPT_HEADER``; usually LBA 2 onwards: the partition entry array
  (128 entries of 128 bytes by default),
* the last LBA: the backup header; just before it: the backup entry array.

Both headers carry a CRC32 of themselves (with the CRC field zeroed) and of the entry array.
Reading trusts the primary when both its CRCs hold, else falls back to the backup with a
warning. Writing always rewrites both copies and the protective MBR, with the backup at the
device's current end (so a grown image gets its backup moved on the first write).

The sector size is not recorded in GPT; it is found by looking for ``EFI PART`` at LBA 1 for
512- and then 4096-byte sectors (and at the last LBA when the primary is gone).
"""

from __future__ import annotations

import itertools
import logging
import struct
import uuid
import zlib
from dataclasses import dataclass, field

from burrow.block.device import BlockDevice
from burrow.errors import CorruptImage, InvalidArgument
from burrow.volume.guids import gpt_type_name
from burrow.volume.table import Partition, PartitionTable

__all__ = [
    "GPT_ENTRY",
    "GPT_HEADER",
    "GptDisk",
    "GptEntry",
    "gpt_to_table",
    "read_gpt",
    "write_gpt",
]

log = logging.getLogger(__name__)

SIGNATURE = b"EFI PART"
REVISION = 0x00010000
HEADER_SIZE = 92
SECTOR_SIZES = (512, 4096)
DEFAULT_ENTRIES = 128
DEFAULT_ENTRY_SIZE = 128
MAX_ENTRIES = 16384  # far above any real table; bounds the work done for a hostile header
MAX_ARRAY_BYTES = 4 << 20
NAME_UNITS = 36  # UTF-16 code units in an entry's 72-byte name field
ATTR_LEGACY_BIOS_BOOTABLE = 1 << 2
_ZERO_GUID = bytes(16)

# EFI_PARTITION_TABLE_HEADER (UEFI spec table 5-5).
GPT_HEADER = struct.Struct(
    "<8s"  # Signature
    "I"  # Revision
    "I"  # HeaderSize
    "I"  # HeaderCRC32
    "I"  # Reserved
    "Q"  # MyLBA
    "Q"  # AlternateLBA
    "Q"  # FirstUsableLBA
    "Q"  # LastUsableLBA
    "16s"  # DiskGUID
    "Q"  # PartitionEntryLBA
    "I"  # NumberOfPartitionEntries
    "I"  # SizeOfPartitionEntry
    "I"  # PartitionEntryArrayCRC32
)

# EFI_PARTITION_ENTRY (UEFI spec table 5-6).
GPT_ENTRY = struct.Struct(
    "<16s"  # PartitionTypeGUID
    "16s"  # UniquePartitionGUID
    "Q"  # StartingLBA
    "Q"  # EndingLBA
    "Q"  # Attributes
    "72s"  # PartitionName (UTF-16LE)
)


@dataclass
class GptEntry:
    """One used entry, in LBAs (``last_lba`` inclusive, as on disk)."""

    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    first_lba: int
    last_lba: int
    attributes: int = 0
    name: str = ""


@dataclass
class _Header:
    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: uuid.UUID
    entries_lba: int
    num_entries: int
    entry_size: int


@dataclass
class GptDisk:
    """A GPT as read (or about to be written). ``entries`` has one slot per array entry.

    ``damaged`` is set when one copy (primary or backup) was unusable; ``hybrid`` when sector
    0 is a hybrid MBR. The writer refuses both unless asked to repair.
    """

    sector_size: int
    total_sectors: int
    disk_guid: uuid.UUID
    entries: list[GptEntry | None]
    entry_size: int = DEFAULT_ENTRY_SIZE
    first_usable: int = 0
    last_usable: int = 0
    backup_lba: int = 0
    warnings: list[str] = field(default_factory=list)
    damaged: bool = False
    hybrid: bool = False

    @property
    def array_sectors(self) -> int:
        return -(-len(self.entries) * self.entry_size // self.sector_size)

    def warn(self, message: str, *, damaged: bool = False) -> None:
        self.warnings.append(message)
        log.warning("%s", message)
        self.damaged = self.damaged or damaged

    def layout(self) -> tuple[int, int]:
        """(first_usable, last_usable) for the current device size with the usual layout:
        primary array at LBA 2, backup array just before the last LBA."""
        first = max(self.first_usable, 2 + self.array_sectors)
        last = self.total_sectors - 2 - self.array_sectors
        return first, last


def _guid(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=raw)


def _header_crc(buf: bytes | bytearray, size: int) -> int:
    return zlib.crc32(bytes(buf[:16]) + b"\0\0\0\0" + bytes(buf[20:size]))


def _find_sector_size(dev: BlockDevice) -> int | None:
    for ss in SECTOR_SIZES:
        if dev.size >= 2 * ss and dev.pread(8, ss) == SIGNATURE:
            return ss
    return None


def _read_copy(
    dev: BlockDevice, ss: int, lba: int, primary: bool
) -> tuple[_Header, list[GptEntry | None], list[str]]:
    """Read and check one header and its entry array; ``CorruptImage`` on any problem."""
    total = dev.size // ss
    what = "primary GPT header" if primary else "backup GPT header"
    offset = lba * ss
    if lba <= 0 or lba >= total:
        raise CorruptImage(what, offset, f"LBA {lba} is outside the device")
    buf = dev.pread(ss, offset)
    (sig, _rev, hsize, hcrc, _res, my_lba, alt_lba, first, last, dguid, elba, count, esize,
     acrc) = GPT_HEADER.unpack_from(buf)  # fmt: skip
    if sig != SIGNATURE:
        raise CorruptImage(what, offset, "no EFI PART signature")
    if not HEADER_SIZE <= hsize <= ss:
        raise CorruptImage(what, offset, f"header size {hsize} out of range")
    if _header_crc(buf, hsize) != hcrc:
        raise CorruptImage(what, offset, "header CRC32 mismatch")
    if my_lba != lba:
        raise CorruptImage(what, offset, f"MyLBA is {my_lba}, expected {lba}")
    if esize < 128 or esize > 4096 or esize & (esize - 1):
        raise CorruptImage(what, offset, f"partition entry size {esize} out of range")
    if count > MAX_ENTRIES or count * esize > MAX_ARRAY_BYTES:
        raise CorruptImage(what, offset, f"{count} partition entries is out of range")
    if last >= total:
        raise CorruptImage(
            what, offset, f"last usable LBA {last} is beyond the device ({total} sectors)"
        )
    if first > last + 1 or first <= 1 or last >= total - 1 or (not primary and last >= lba):
        raise CorruptImage(what, offset, f"usable LBA range {first}-{last} is invalid")
    array_sectors = -(-count * esize // ss)
    if elba < 2 or elba + array_sectors > total:
        raise CorruptImage(what, offset, f"entry array at LBA {elba} lies outside the device")
    if array_sectors and not (elba + array_sectors <= first or elba > last):
        raise CorruptImage(what, offset, "entry array overlaps the usable area")
    if elba <= lba < elba + array_sectors:
        raise CorruptImage(what, offset, "entry array overlaps its header")
    array = dev.pread(count * esize, elba * ss)
    if zlib.crc32(array) != acrc:
        raise CorruptImage("GPT partition entry array", elba * ss, "entry array CRC32 mismatch")
    header = _Header(my_lba, alt_lba, first, last, _guid(dguid), elba, count, esize)
    entries: list[GptEntry | None] = []
    warnings: list[str] = []
    for i in range(count):
        pos = i * esize
        if array[pos : pos + 16] == _ZERO_GUID:
            entries.append(None)
            continue
        tguid, pguid, start, end, attrs, raw_name = GPT_ENTRY.unpack_from(array, pos)
        where = elba * ss + pos
        if start > end:
            raise CorruptImage(
                "GPT partition entry", where, f"partition {i + 1} ends before it starts"
            )
        if end >= total:
            raise CorruptImage(
                "GPT partition entry",
                where,
                f"partition {i + 1} (LBA {start}-{end}) ends beyond the device ({total} sectors)",
            )
        if start < first or end > last:
            warnings.append(
                f"GPT partition {i + 1} (LBA {start}-{end}) lies outside the usable area "
                f"{first}-{last}"
            )
        name = raw_name.decode("utf-16-le", errors="replace").split("\0", 1)[0]
        entries.append(GptEntry(_guid(tguid), _guid(pguid), start, end, attrs, name))
    used = sorted((e.first_lba, e.last_lba, n + 1) for n, e in enumerate(entries) if e)
    for (_a0, a1, na), (b0, _b1, nb) in itertools.pairwise(used):
        if b0 <= a1:
            raise CorruptImage(
                "GPT partition entry array", elba * ss, f"partition {nb} overlaps partition {na}"
            )
    return header, entries, warnings


def read_gpt(
    dev: BlockDevice,
    *,
    hybrid: bool = False,
    protective: bool = True,
    protective_last: int | None = None,
) -> GptDisk:
    """Read the GPT of ``dev``: the primary when it is intact, else the backup (with a
    warning). ``CorruptImage`` when neither copy is usable.

    The backup is looked for at the last LBA and, when the protective MBR's 0xEE entry ends
    elsewhere (``protective_last``: the device grew since the table was written), there too.
    """
    found_ss = _find_sector_size(dev)
    primary_error: CorruptImage | None = None
    chosen: tuple[int, _Header, list[GptEntry | None], list[str]] | None = None
    notes: list[tuple[str, bool]] = []
    if found_ss is not None:
        try:
            hdr, ents, warns = _read_copy(dev, found_ss, 1, True)
            chosen = (found_ss, hdr, ents, warns)
        except CorruptImage as exc:
            primary_error = exc
    if chosen is not None:
        ss, hdr, _ents, _warns = chosen
        total = dev.size // ss
        try:
            _read_copy(dev, ss, hdr.alternate_lba, False)
            if hdr.alternate_lba != total - 1:
                notes.append(
                    (
                        f"backup GPT header is at LBA {hdr.alternate_lba}, not at the end of the "
                        f"device (LBA {total - 1}): the device grew; the next write moves it",
                        False,
                    )
                )
        except CorruptImage as exc:
            notes.append((f"backup GPT is damaged ({exc}); the primary is used", True))
    else:
        candidates = [found_ss] if found_ss is not None else list(SECTOR_SIZES)
        backup_error: CorruptImage | None = None
        for ss in candidates:
            if dev.size < 2 * ss:
                continue
            total = dev.size // ss
            lbas = [total - 1]
            if protective_last is not None and 1 < protective_last < total - 1:
                lbas.append(protective_last)
            for lba in lbas:
                try:
                    hdr, ents, warns = _read_copy(dev, ss, lba, False)
                except CorruptImage as exc:
                    backup_error = backup_error or exc
                    continue
                chosen = (ss, hdr, ents, warns)
                break
            if chosen is None:
                continue
            reason = str(primary_error) if primary_error else "primary GPT header missing"
            notes.append((f"primary GPT is damaged ({reason}); the backup is used", True))
            if chosen[1].my_lba != total - 1:
                notes.append(
                    (
                        f"backup GPT header is at LBA {chosen[1].my_lba}, not at the end of the "
                        f"device (LBA {total - 1}): the device grew; the next write moves it",
                        False,
                    )
                )
            break
        if chosen is None:
            raise (
                primary_error
                or backup_error
                or CorruptImage("GPT header", 512, "protective MBR found but no GPT header")
            )
    ss, hdr, ents, warns = chosen
    disk = GptDisk(
        sector_size=ss,
        total_sectors=dev.size // ss,
        disk_guid=hdr.disk_guid,
        entries=ents,
        entry_size=hdr.entry_size,
        first_usable=hdr.first_usable,
        last_usable=hdr.last_usable,
        backup_lba=hdr.alternate_lba if hdr.my_lba == 1 else hdr.my_lba,
        hybrid=hybrid,
    )
    for text in warns:  # partitions outside the usable area: burrow will not rewrite them
        disk.warn(text, damaged=True)
    for text, damaged in notes:
        disk.warn(text, damaged=damaged)
    if hybrid:
        disk.warn("hybrid MBR found; the GPT is used")
    elif not protective:
        disk.warn("GPT without a protective MBR")
    return disk


def gpt_to_table(disk: GptDisk) -> PartitionTable:
    """The byte-based public view of ``disk``."""
    ss = disk.sector_size
    parts = []
    for i, e in enumerate(disk.entries):
        if e is None:
            continue
        tguid = str(e.type_guid).upper()
        parts.append(
            Partition(
                number=i + 1,
                start=e.first_lba * ss,
                size=(e.last_lba - e.first_lba + 1) * ss,
                type=tguid,
                type_name=gpt_type_name(tguid),
                name=e.name,
                uuid=str(e.unique_guid).upper(),
                attributes=e.attributes,
                bootable=bool(e.attributes & ATTR_LEGACY_BIOS_BOOTABLE),
            )
        )
    return PartitionTable(
        kind="gpt",
        sector_size=ss,
        partitions=parts,
        disk_id=str(disk.disk_guid).upper(),
        warnings=list(disk.warnings),
    )


# -- writing --------------------------------------------------------------------------------


def encode_name(name: str) -> bytes:
    """The 72-byte UTF-16LE name field; ``InvalidArgument`` when the name does not fit."""
    raw = name.encode("utf-16-le", errors="surrogatepass")
    if len(raw) > 2 * NAME_UNITS:
        raise InvalidArgument(f"GPT partition names hold at most {NAME_UNITS} UTF-16 units")
    if "\0" in name:
        raise InvalidArgument("GPT partition names cannot contain NUL")
    return raw.ljust(2 * NAME_UNITS, b"\0")


def _pack_array(disk: GptDisk) -> bytes:
    buf = bytearray(len(disk.entries) * disk.entry_size)
    for i, e in enumerate(disk.entries):
        if e is None:
            continue
        GPT_ENTRY.pack_into(
            buf,
            i * disk.entry_size,
            e.type_guid.bytes_le,
            e.unique_guid.bytes_le,
            e.first_lba,
            e.last_lba,
            e.attributes,
            encode_name(e.name),
        )
    return bytes(buf)


def _pack_header(
    disk: GptDisk, my_lba: int, alt_lba: int, first: int, last: int, elba: int, acrc: int
) -> bytes:
    buf = bytearray(disk.sector_size)
    GPT_HEADER.pack_into(
        buf,
        0,
        SIGNATURE,
        REVISION,
        HEADER_SIZE,
        0,
        0,
        my_lba,
        alt_lba,
        first,
        last,
        disk.disk_guid.bytes_le,
        elba,
        len(disk.entries),
        disk.entry_size,
        acrc,
    )
    struct.pack_into("<I", buf, 16, zlib.crc32(bytes(buf[:HEADER_SIZE])))
    return bytes(buf)


def write_gpt(dev: BlockDevice, disk: GptDisk) -> None:
    """Write both GPT copies and the protective MBR for the device's current size.

    The backup goes to the last LBA (moving it when the device grew); ``disk.first_usable``,
    ``last_usable`` and ``backup_lba`` are updated to what was written.
    """
    from burrow.volume.mbr import pack_protective_mbr

    ss = disk.sector_size
    disk.total_sectors = total = dev.size // ss
    first, last = disk.layout()
    if last < first:
        raise InvalidArgument(f"a {dev.size}-byte device is too small for a GPT")
    for i, e in enumerate(disk.entries):
        if e is not None and (e.first_lba < first or e.last_lba > last):
            raise CorruptImage(
                "GPT partition entry",
                None,
                f"partition {i + 1} (LBA {e.first_lba}-{e.last_lba}) lies outside the usable "
                f"area {first}-{last}; refusing to write",
            )
    array = _pack_array(disk)
    acrc = zlib.crc32(array)
    backup_lba = total - 1
    backup_elba = backup_lba - disk.array_sectors
    dev.pwrite(array, backup_elba * ss)
    dev.pwrite(_pack_header(disk, backup_lba, 1, first, last, backup_elba, acrc), backup_lba * ss)
    dev.pwrite(array, 2 * ss)
    dev.pwrite(_pack_header(disk, 1, backup_lba, first, last, 2, acrc), ss)
    dev.pwrite(pack_protective_mbr(dev, total), 0)
    dev.flush()
    disk.first_usable, disk.last_usable, disk.backup_lba = first, last, backup_lba
