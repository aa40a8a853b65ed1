"""The public, format-neutral view of a partition table: ``PartitionTable`` and ``Partition``.

Why a neutral view: callers (the disk API, ``burrow info``, the FUSE and NBD front ends) only
want "where does partition N start, how big is it, what is it for". The MBR and GPT modules
keep their own, richer on-disk models for writing; this module is what they hand out.

All positions are in **bytes** (not sectors) so callers never need the sector size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from burrow.errors import NotFound

if TYPE_CHECKING:
    from burrow.block.device import BlockDevice
    from burrow.block.slice import SliceDevice

__all__ = ["MBR_EXTENDED_TYPES", "Partition", "PartitionTable"]

# MBR type bytes of extended partitions (containers for logical partitions).
MBR_EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})


@dataclass(frozen=True)
class Partition:
    """One partition, numbered as Linux numbers it.

    ``number``: GPT entry index + 1; MBR primary slot 1-4, logical partitions 5, 6, ... in
    chain order. ``start``/``size`` are bytes. ``type`` is the upper-case type GUID (GPT) or
    ``"0x83"`` (MBR). ``name``/``uuid`` are GPT-only (``""`` on MBR). ``attributes`` is the GPT
    attribute bit field. ``bootable`` is the MBR active flag or GPT attribute bit 2 (legacy
    BIOS bootable).
    """

    number: int
    start: int
    size: int
    type: str
    type_name: str
    name: str = ""
    uuid: str = ""
    attributes: int = 0
    bootable: bool = False

    @property
    def end(self) -> int:
        """First byte after the partition."""
        return self.start + self.size

    @property
    def is_extended(self) -> bool:
        """True for an MBR extended partition: a container, not something to mount."""
        return self.type.startswith("0x") and int(self.type, 16) in MBR_EXTENDED_TYPES

    def open(self, dev: BlockDevice, *, readonly: bool | None = None) -> SliceDevice:
        """This partition as a ``SliceDevice`` of ``dev`` (read-only if ``dev`` is).

        ``readonly=None`` inherits ``dev``'s mode; ``True`` forces read-only.
        """
        from burrow.block.slice import SliceDevice

        return SliceDevice(dev, self.start, self.size, readonly=readonly)

    def to_dict(self) -> dict[str, object]:
        """The JSON shape used by ``burrow part list --json``."""
        return {
            "number": self.number,
            "start": self.start,
            "size": self.size,
            "type": self.type,
            "type_name": self.type_name,
            "name": self.name,
            "uuid": self.uuid,
            "attributes": self.attributes,
            "bootable": self.bootable,
        }


@dataclass
class PartitionTable:
    """A table read from a device.

    ``kind`` is ``"gpt"`` or ``"mbr"``; ``disk_id`` is the GPT disk GUID (upper case) or the
    MBR disk signature as ``"0x1234abcd"``. ``warnings`` lists problems that did not stop the
    reading (for example "primary GPT damaged, backup used"); they are also logged.
    """

    kind: str
    sector_size: int
    partitions: list[Partition]
    disk_id: str
    warnings: list[str] = field(default_factory=list)

    def partition(self, number: int) -> Partition:
        """The partition with Linux number ``number``; ``NotFound`` if there is none."""
        for part in self.partitions:
            if part.number == number:
                return part
        raise NotFound(f"no partition {number} in this {self.kind.upper()} table")

    def to_dict(self) -> dict[str, object]:
        """The JSON shape used by ``burrow part list --json``."""
        return {
            "table": self.kind,
            "sector_size": self.sector_size,
            "partitions": [p.to_dict() for p in self.partitions],
        }
