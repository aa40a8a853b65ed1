"""Deciding what table a device holds: GPT, MBR or none, and reading it.

Order of decisions (as the Linux kernel and libblkid do):

1. A 0xEE entry in sector 0, or ``EFI PART`` at LBA 1 (512- or 4096-byte sectors) unless
   sector 0 is a DOS table with entries and no 0xEE (then the GPT is stale: MBR) -> GPT.
   A hybrid MBR (0xEE plus other entries) still means GPT: GPT wins when it is valid.
   A damaged primary falls back to the backup header at the last LBA.
   When neither GPT copy is usable but sector 0 is a hybrid MBR, the MBR is read instead
   (with a warning; writes are refused).
2. Otherwise a DOS signature with sane boot flags, which is not a FAT/NTFS/exFAT boot sector
   -> MBR.
3. Otherwise no table (``None``): a bare filesystem or an empty disk.
"""

from __future__ import annotations

from burrow.block.device import BlockDevice
from burrow.errors import CorruptImage
from burrow.volume.gpt import SECTOR_SIZES, SIGNATURE, GptDisk, gpt_to_table, read_gpt
from burrow.volume.mbr import (
    MbrDisk,
    has_entries,
    has_protective_entry,
    is_hybrid,
    looks_like_mbr,
    mbr_to_table,
    protective_last_lba,
    read_mbr,
)
from burrow.volume.table import PartitionTable

__all__ = ["read_model", "read_table"]


def read_model(dev: BlockDevice) -> GptDisk | MbrDisk | None:
    """The format-specific model of the table on ``dev`` (what the writer edits)."""
    if dev.size < 512:
        return None
    sector0 = dev.pread(512, 0)
    protective = has_protective_entry(sector0)
    gpt_signature = any(dev.size >= 2 * ss and dev.pread(8, ss) == SIGNATURE for ss in SECTOR_SIZES)
    if gpt_signature and not protective and looks_like_mbr(sector0) and has_entries(sector0):
        # A DOS table without a 0xEE entry over an old GPT header: Linux and libblkid use
        # the MBR and ignore the GPT, and so do we.
        mbr = read_mbr(dev, sector0)
        mbr.warn("a GPT header without a protective MBR is ignored; the MBR is used")
        return mbr
    if protective or gpt_signature:
        hybrid = is_hybrid(sector0)
        try:
            return read_gpt(
                dev,
                hybrid=hybrid,
                protective=protective,
                protective_last=protective_last_lba(sector0),
            )
        except CorruptImage as exc:
            if not (hybrid and looks_like_mbr(sector0)):
                raise
            # A hybrid MBR whose GPT is gone: its MBR half is the safe reading left.
            mbr = read_mbr(dev, sector0)
            mbr.warn(f"hybrid MBR used because its GPT is unusable ({exc})", lossy=True)
            return mbr
    if looks_like_mbr(sector0):
        return read_mbr(dev, sector0)
    return None


def read_table(dev: BlockDevice) -> PartitionTable | None:
    """Read the partition table of ``dev``: a ``PartitionTable``, or ``None`` when the device
    has neither an MBR nor a GPT. Never writes. Problems that still allow a safe reading (a
    damaged primary GPT, a grown device) are listed in ``PartitionTable.warnings`` and logged;
    anything else raises ``CorruptImage``."""
    model = read_model(dev)
    if model is None:
        return None
    if isinstance(model, GptDisk):
        return gpt_to_table(model)
    return mbr_to_table(model)
