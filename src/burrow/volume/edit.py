"""Changing partition tables: create, add, remove, resize, rename, move the GPT backup, repair.

Every operation reads the table fresh, checks the whole request, and only then writes, so a
refused request writes nothing. Tables whose reading was not faithful (one GPT copy damaged,
a cut EBR chain, a hybrid MBR) are refused with ``CorruptImage``/``Unsupported``;
``repair_table`` is the explicit way to rewrite them.

Placement: new partitions start on ``alignment`` (1 MiB by default, as fdisk, sgdisk and parted
do). With no size a partition takes the largest free area (on a fresh disk: all of it). With
no start it takes the first free area that fits. GPT writes always put the backup at the
device's current end, so any write after the image grew also moves the backup.

MBR numbering: primaries keep their slot number (1-4); logical partitions are numbered 5, 6,
... in EBR-chain order, so removing logical 5 renumbers 6 as 5 (as Linux does).
"""

from __future__ import annotations

import secrets
import uuid as _uuid
from collections.abc import Mapping, Sequence
from typing import Any

from burrow.block.device import BlockDevice
from burrow.errors import (
    CorruptImage,
    Exists,
    InvalidArgument,
    NoSpace,
    NotFound,
    ReadOnly,
    Unsupported,
    UsageError,
)
from burrow.volume.gpt import (
    ATTR_LEGACY_BIOS_BOOTABLE,
    DEFAULT_ENTRIES,
    SECTOR_SIZES,
    SIGNATURE,
    GptDisk,
    GptEntry,
    encode_name,
    write_gpt,
)
from burrow.volume.guids import resolve_gpt_type, resolve_mbr_type
from burrow.volume.mbr import (
    GPT_PROTECTIVE,
    MAX_LOGICAL,
    MbrDisk,
    MbrPart,
    ebr_positions,
    write_mbr,
)
from burrow.volume.probe import read_model, read_table
from burrow.volume.table import MBR_EXTENDED_TYPES, Partition, PartitionTable

__all__ = [
    "ALIGNMENT",
    "add_partition",
    "add_partitions",
    "init_table",
    "relocate_backup",
    "remove_partition",
    "rename_partition",
    "repair_table",
    "resize_partition",
]

ALIGNMENT = 1 << 20
_MBR_LIMIT = 2**32 - 1  # last sector an MBR entry can address

Gap = tuple[int, int]  # inclusive sector range


# -- helpers --------------------------------------------------------------------------------


def _open_model(dev: BlockDevice, *, repair: bool = False) -> GptDisk | MbrDisk:
    if dev.readonly:
        raise ReadOnly("the device is open read-only")
    model = read_model(dev)
    if model is None:
        raise UsageError("no partition table on this device (create one first: burrow part init)")
    if isinstance(model, GptDisk):
        if model.hybrid and not repair:
            raise Unsupported(
                "hybrid-mbr", "writing would replace the hybrid MBR with a protective MBR"
            )
        if model.damaged and not repair:
            raise CorruptImage(
                "GPT",
                None,
                "; ".join(model.warnings)
                + "; refusing to write (repair it with 'burrow part fix')",
            )
    elif model.lossy and not repair:
        raise CorruptImage(
            "MBR",
            None,
            "; ".join(model.warnings) + "; refusing to write (rewrite it with 'burrow part fix')",
        )
    return model


def _save(dev: BlockDevice, model: GptDisk | MbrDisk, stale: set[int] | None = None) -> None:
    if isinstance(model, GptDisk):
        write_gpt(dev, model)
    else:
        write_mbr(dev, model, stale_ebrs=stale)


def _reread(dev: BlockDevice, number: int) -> Partition:
    table = read_table(dev)
    assert table is not None
    return table.partition(number)


def _sectors(size: int, ss: int) -> int:
    if size <= 0:
        raise InvalidArgument(f"partition size must be positive (got {size})")
    return -(-size // ss)


def _start_sector(start: int, ss: int) -> int:
    if start < 0 or start % ss:
        raise InvalidArgument(f"start {start} is not a multiple of the {ss}-byte sector size")
    return start // ss


def _align_up(value: int, align: int) -> int:
    return -(-value // align) * align


def _gaps(used: list[Gap], lo: int, hi: int) -> list[Gap]:
    """Free inclusive ranges of ``[lo, hi]`` not covered by ``used``."""
    out: list[Gap] = []
    pos = lo
    for a, b in sorted(used):
        if a > pos:
            out.append((pos, min(a - 1, hi)))
        pos = max(pos, b + 1)
        if pos > hi:
            break
    if pos <= hi:
        out.append((pos, hi))
    return [(a, b) for a, b in out if a <= b]


def _place(
    gaps: list[Gap], count: int | None, start: int | None, align: int, reserve: int = 0
) -> tuple[int, int, int]:
    """Choose (start, count, gap_start) in ``gaps``, keeping ``reserve`` sectors free at the
    gap's start (room for an EBR). ``NoSpace`` when nothing fits."""
    best: tuple[int, int, int] | None = None
    for g0, g1 in gaps:
        lo = g0 + reserve
        if start is not None:
            if not lo <= start <= g1:
                continue
            s = start
        else:
            s = _align_up(lo, align)
        if s > g1:
            continue
        n = g1 - s + 1 if count is None else count
        if s + n - 1 > g1:
            continue
        if count is not None or start is not None:
            return s, n, g0
        if best is None or n > best[1]:
            best = (s, n, g0)
    if best is None:
        what = "" if count is None else f" of {count} sectors"
        where = "" if start is None else f" at sector {start}"
        raise NoSpace(f"no free space for a partition{what}{where}")
    return best


def _align_sectors(alignment: int, ss: int) -> int:
    if alignment <= 0:
        raise InvalidArgument("alignment must be positive")
    return max(1, alignment // ss)


# -- create ---------------------------------------------------------------------------------


def _wipe_gpt_signatures(dev: BlockDevice) -> None:
    """Zero stale GPT headers (both sector sizes, both ends) so they cannot be found later."""
    for ss in SECTOR_SIZES:
        if dev.size < 2 * ss:
            continue
        for lba in (1, dev.size // ss - 1):
            if dev.pread(8, lba * ss) == SIGNATURE:
                dev.pwrite(bytes(ss), lba * ss)


def init_table(
    dev: BlockDevice,
    kind: str,
    *,
    sector_size: int | None = None,
    entries: int = DEFAULT_ENTRIES,
) -> PartitionTable:
    """Write a new, empty ``"gpt"`` or ``"mbr"`` table on ``dev`` (any old table is lost;
    boot code in sector 0 is kept).

    GPT: ``sector_size`` 512 (default) or 4096, ``entries`` slots of 128 bytes, a fresh
    random disk GUID, both headers and the protective MBR. MBR: 512-byte sectors only, a
    random disk signature. Old GPT headers are wiped so they are not found later.
    """
    if dev.readonly:
        raise ReadOnly("the device is open read-only")
    kind = kind.lower()
    if kind == "gpt":
        ss = 512 if sector_size is None else sector_size
        if ss not in SECTOR_SIZES:
            raise InvalidArgument(f"GPT sector size must be 512 or 4096, not {ss}")
        if not 1 <= entries <= 16384 or entries * 128 > 4 << 20:
            raise InvalidArgument(f"{entries} GPT entries is out of range")
        disk = GptDisk(
            sector_size=ss,
            total_sectors=dev.size // ss,
            disk_guid=_uuid.uuid4(),
            entries=[None] * entries,
        )
        first, last = disk.layout()
        if last < first:
            raise InvalidArgument(f"a {dev.size}-byte device is too small for a GPT")
        _wipe_gpt_signatures(dev)
        write_gpt(dev, disk)
    elif kind in ("mbr", "dos", "msdos"):
        if sector_size not in (None, 512):
            raise Unsupported("mbr-sector-size", "MBR tables are written for 512-byte sectors")
        if dev.size < 2 * 512:
            raise InvalidArgument(f"a {dev.size}-byte device is too small for an MBR")
        _wipe_gpt_signatures(dev)
        signature = secrets.randbits(32) or 1
        write_mbr(dev, MbrDisk(signature=signature, total_sectors=dev.size // 512))
    else:
        raise UsageError(f"unknown partition table kind {kind!r} (use gpt or mbr)")
    table = read_table(dev)
    assert table is not None
    return table


# -- add ------------------------------------------------------------------------------------


def add_partition(
    dev: BlockDevice,
    *,
    size: int | None = None,
    type: str = "linux",
    name: str = "",
    start: int | None = None,
    number: int | None = None,
    logical: bool | None = None,
    bootable: bool = False,
    attributes: int = 0,
    uuid: str | None = None,
    alignment: int = ALIGNMENT,
) -> Partition:
    """Add a partition and return it as read back from the device.

    ``size`` and ``start`` are bytes (``size=None``: the largest free area; ``start=None``:
    the first free area that fits, aligned to ``alignment``). ``type`` is an alias (``esp``,
    ``linux``, ``swap``, ``home``, ``lvm``, ``raid``, ``bios``, ``msdata``...), a GUID
    (GPT), an sgdisk code (``8300``) or an MBR hex byte (``83``). ``name``, ``uuid`` and
    ``attributes`` are GPT-only; ``number`` picks a GPT slot (default: the lowest free).

    MBR: a primary slot is used while one is free; ``logical=True`` puts the partition in the
    extended partition, creating one (type 0x05, spanning the chosen free area) when there is
    none. With all four slots used, new partitions go into the extended partition if there
    is one; otherwise ``NoSpace`` explains the choice.
    """
    model = _open_model(dev)
    if isinstance(model, GptDisk):
        if logical:
            raise UsageError("logical partitions exist only in MBR tables")
        num = _gpt_add(
            model, size, type, name, start, number, bootable, attributes, uuid, alignment
        )
        _save(dev, model)
    else:
        if name:
            raise UsageError("MBR partitions have no names")
        if uuid is not None or attributes:
            raise UsageError("MBR partitions have no unique GUID or attribute bits")
        if number is not None:
            raise UsageError("MBR partition numbers are chosen by position; omit 'number'")
        num = _mbr_add(model, size, type, start, logical, bootable, alignment)
        _save(dev, model)
    return _reread(dev, num)


def _gpt_add(
    disk: GptDisk,
    size: int | None,
    type_spec: str,
    name: str,
    start: int | None,
    number: int | None,
    bootable: bool,
    attributes: int,
    unique: str | None,
    alignment: int,
) -> int:
    ss = disk.sector_size
    type_guid = _uuid.UUID(resolve_gpt_type(type_spec))
    encode_name(name)
    if not 0 <= attributes < 2**64:
        raise InvalidArgument("GPT attributes are a 64-bit field")
    try:
        unique_guid = _uuid.UUID(unique) if unique else _uuid.uuid4()
    except ValueError:
        raise InvalidArgument(f"{unique!r} is not a GUID") from None
    if number is None:
        free = [i for i, e in enumerate(disk.entries) if e is None]
        if not free:
            raise NoSpace(f"all {len(disk.entries)} GPT entries are in use")
        index = free[0]
    else:
        if not 1 <= number <= len(disk.entries):
            raise InvalidArgument(f"GPT partition numbers run from 1 to {len(disk.entries)}")
        if disk.entries[number - 1] is not None:
            raise Exists(f"partition {number} already exists")
        index = number - 1
    first, last = disk.layout()
    used = [(e.first_lba, e.last_lba) for e in disk.entries if e is not None]
    count = None if size is None else _sectors(size, ss)
    s = None if start is None else _start_sector(start, ss)
    s0, n, _ = _place(_gaps(used, first, last), count, s, _align_sectors(alignment, ss))
    if bootable:
        attributes |= ATTR_LEGACY_BIOS_BOOTABLE
    disk.entries[index] = GptEntry(type_guid, unique_guid, s0, s0 + n - 1, attributes, name)
    return index + 1


def _mbr_add(
    disk: MbrDisk,
    size: int | None,
    type_spec: str,
    start: int | None,
    logical: bool | None,
    bootable: bool,
    alignment: int,
) -> int:
    type_byte = resolve_mbr_type(type_spec)
    if type_byte == GPT_PROTECTIVE:
        raise UsageError("type 0xEE is reserved for protective MBRs")
    hi = min(disk.total_sectors - 1, _MBR_LIMIT)
    align = _align_sectors(alignment, 512)
    count = None if size is None else _sectors(size, 512)
    s = None if start is None else _start_sector(start, 512)
    slot = disk.extended_slot
    ext = disk.primaries[slot] if slot is not None else None
    free_slots = [i for i in range(4) if disk.primaries[i] is None]
    if logical is None:
        inside = ext is not None and s is not None and ext.start <= s <= ext.last
        logical = inside or (ext is not None and not free_slots)
        if not logical and ext is not None and type_byte not in MBR_EXTENDED_TYPES:
            # Prefer a primary slot, but fall back to the extended partition when the only
            # free space is inside it.
            try:
                return _mbr_add(disk, size, type_spec, start, False, bootable, alignment)
            except NoSpace:
                logical = True
    if not logical:
        if not free_slots:
            raise NoSpace(
                "all four MBR primary slots are in use and there is no extended partition "
                "(create the fourth partition as logical to get more, or use GPT)"
            )
        if type_byte in MBR_EXTENDED_TYPES and ext is not None:
            raise UsageError("this MBR already has an extended partition")
        used = [(p.start, p.last) for p in disk.primaries if p is not None]
        s0, n, _ = _place(_gaps(used, 1, hi), count, s, align)
        disk.primaries[free_slots[0]] = MbrPart(type_byte, s0, n, bootable)
        return free_slots[0] + 1
    if type_byte in MBR_EXTENDED_TYPES:
        raise UsageError("an extended partition cannot be logical")
    if len(disk.logicals) >= MAX_LOGICAL:
        raise NoSpace(f"at most {MAX_LOGICAL} logical partitions")
    if ext is None:
        if not free_slots:
            raise NoSpace(
                "all four MBR primary slots are in use; no room for an extended partition"
            )
        used = [(p.start, p.last) for p in disk.primaries if p is not None]
        es, ls, n = _place_with_container(_gaps(used, 1, hi), count, s, align)
        disk.primaries[free_slots[0]] = ext = MbrPart(0x05, es, 0)
        ext.sectors = _container_end(used, es, hi) - es + 1
        disk.logicals.append(MbrPart(type_byte, ls, n, bootable, ebr=es))
        return 5
    occupied = [(p.start, p.last) for p in disk.logicals]
    occupied += [(e, e) for e in ebr_positions(disk)] + [(ext.start, ext.start)]
    reserve = 1 if disk.logicals else 0
    s0, n, g0 = _place(_gaps(occupied, ext.start, ext.last), count, s, align, reserve)
    disk.logicals.append(MbrPart(type_byte, s0, n, bootable, ebr=g0 if reserve else ext.start))
    return 4 + len(disk.logicals)


def _place_with_container(
    gaps: list[Gap], count: int | None, start: int | None, align: int
) -> tuple[int, int, int]:
    """(extended start, logical start, logical sectors) for a new extended partition holding
    one logical: the EBR at an aligned sector, the logical one alignment unit later."""
    best: tuple[int, int, int] | None = None
    for g0, g1 in gaps:
        es = _align_up(g0, align)
        if start is not None:
            if not g0 < start <= g1:
                continue
            if es >= start:
                es = g0
            ls = start
        else:
            ls = _align_up(es + 1, align)
        if es > g1 or ls > g1:
            continue
        n = g1 - ls + 1 if count is None else count
        if ls + n - 1 > g1:
            continue
        if count is not None or start is not None:
            return es, ls, n
        if best is None or n > best[2]:
            best = (es, ls, n)
    if best is None:
        raise NoSpace("no free space for an extended partition with a logical partition in it")
    return best


def _container_end(used: list[Gap], es: int, hi: int) -> int:
    """Last sector of the free area that starts at or contains ``es``."""
    return min([a - 1 for a, _ in used if a > es] + [hi])


def add_partitions(dev: BlockDevice, partitions: Sequence[Mapping[str, Any]]) -> list[Partition]:
    """Add several partitions in order (each mapping holds ``add_partition`` keywords) and
    return them as read back.

    Why a batch call: only the whole list shows when an MBR needs logical partitions. When
    the list needs more primary slots than are free and the MBR has no extended partition,
    the partitions from the last free slot on become logical (in one extended partition
    created there), as fdisk proposes; an explicit ``logical`` in a mapping wins. GPT: the
    same as calling ``add_partition`` for each.
    """
    plan = [dict(p) for p in partitions]
    table = read_table(dev)
    if table is not None and table.kind == "mbr":
        primaries = [p for p in table.partitions if p.number <= 4]
        free = 4 - len(primaries)
        has_extended = any(p.is_extended for p in primaries)
        if not has_extended and free > 0 and len(plan) > free:
            for item in plan[free - 1 :]:
                item.setdefault("logical", True)
    return [add_partition(dev, **item) for item in plan]


# -- remove, resize, rename -----------------------------------------------------------------


def remove_partition(dev: BlockDevice, number: int) -> None:
    """Delete partition ``number`` from the table (the data stays on the device).

    MBR: an extended partition must be empty first; removing a logical partition renumbers
    the ones after it (as Linux numbers them by chain position).
    """
    model = _open_model(dev)
    stale: set[int] = set()
    if isinstance(model, GptDisk):
        _gpt_entry(model, number)
        model.entries[number - 1] = None
    else:
        part = _mbr_part(model, number)
        if number <= 4:
            if part.type in MBR_EXTENDED_TYPES and number - 1 == model.extended_slot:
                if model.logicals:
                    raise InvalidArgument(
                        f"extended partition {number} still holds logical partitions "
                        f"5-{4 + len(model.logicals)}; remove them first"
                    )
                stale.add(part.start)
            model.primaries[number - 1] = None
        else:
            stale = set(ebr_positions(model))
            del model.logicals[number - 5]
    _save(dev, model, stale)


def resize_partition(dev: BlockDevice, number: int, size: int | None) -> Partition:
    """Change partition ``number``'s size in bytes, keeping its start; ``None`` grows it to
    the end of the free space after it. Only the table changes: shrink the filesystem
    first, grow it afterwards. An MBR extended partition must keep holding its logicals."""
    model = _open_model(dev)
    if isinstance(model, GptDisk):
        entry = _gpt_entry(model, number)
        _first, last = model.layout()
        others = [e.first_lba for e in model.entries if e is not None and e is not entry]
        limit = min([a - 1 for a in others if a > entry.first_lba] + [last])
        count = limit - entry.first_lba + 1 if size is None else _sectors(size, model.sector_size)
        _check_fit(number, entry.first_lba, count, limit)
        entry.last_lba = entry.first_lba + count - 1
    else:
        part = _mbr_part(model, number)
        hi = min(model.total_sectors - 1, _MBR_LIMIT)
        if number <= 4:
            starts = [p.start for p in model.primaries if p is not None and p is not part]
            limit = min([a - 1 for a in starts if a > part.start] + [hi])
        else:
            slot = model.extended_slot
            assert slot is not None
            ext = model.primaries[slot]
            assert ext is not None
            starts = [p.start for p in model.logicals if p is not part]
            starts += [e for e in ebr_positions(model) if e != part.ebr]
            limit = min([a - 1 for a in starts if a > part.start] + [ext.last])
        count = limit - part.start + 1 if size is None else _sectors(size, 512)
        _check_fit(number, part.start, count, limit)
        if number <= 4 and part.type in MBR_EXTENDED_TYPES and number - 1 == model.extended_slot:
            inner = [p.last for p in model.logicals] + ebr_positions(model)
            if inner and part.start + count - 1 < max(inner):
                raise InvalidArgument(
                    f"extended partition {number} would no longer hold its logical partitions"
                )
        part.sectors = count
    _save(dev, model)
    return _reread(dev, number)


def _check_fit(number: int, first: int, count: int, limit: int) -> None:
    if first + count - 1 > limit:
        raise NoSpace(
            f"partition {number} can grow to at most {limit - first + 1} sectors here "
            f"(asked for {count})"
        )


def rename_partition(dev: BlockDevice, number: int, name: str) -> Partition:
    """Set a GPT partition's name (up to 36 UTF-16 units). MBR has no names: ``Unsupported``."""
    model = _open_model(dev)
    if not isinstance(model, GptDisk):
        raise Unsupported("mbr-partition-name", "MBR partitions have no names")
    entry = _gpt_entry(model, number)
    encode_name(name)
    entry.name = name
    _save(dev, model)
    return _reread(dev, number)


def relocate_backup(dev: BlockDevice) -> bool:
    """Move the backup GPT to the device's (new) last LBA after the device grew, and extend
    the usable area to match. True when something was written; MBR tables: False.

    Every other GPT write does this too; call it on its own after growing an image."""
    model = _open_model(dev)
    if not isinstance(model, GptDisk):
        return False
    if model.backup_lba == model.total_sectors - 1 and model.layout()[1] == model.last_usable:
        return False
    _save(dev, model)
    return True


def repair_table(dev: BlockDevice) -> list[str]:
    """Rewrite the table from what could be read: a damaged GPT copy is rebuilt from the good
    one (a hybrid MBR becomes a protective MBR); an MBR chain is rewritten as read (skipped
    EBRs are dropped). Returns the warnings of the reading that the rewrite resolves."""
    model = _open_model(dev, repair=True)
    fixed = list(model.warnings)
    _save(dev, model)
    return fixed


def _gpt_entry(disk: GptDisk, number: int) -> GptEntry:
    entry = disk.entries[number - 1] if 1 <= number <= len(disk.entries) else None
    if entry is None:
        raise NotFound(f"no partition {number} in this GPT")
    return entry


def _mbr_part(disk: MbrDisk, number: int) -> MbrPart:
    part: MbrPart | None = None
    if 1 <= number <= 4:
        part = disk.primaries[number - 1]
    elif 5 <= number < 5 + len(disk.logicals):
        part = disk.logicals[number - 5]
    if part is None:
        raise NotFound(f"no partition {number} in this MBR")
    return part
