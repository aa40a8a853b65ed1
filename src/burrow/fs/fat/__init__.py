"""FAT12/16/32 with VFAT long names: read, write and mkfs on any ``BlockDevice``.

``open_fat(dev, readonly=True)`` returns a :class:`FatFilesystem` (a ``vfs.Filesystem``);
``probe(dev)`` is a cheap check that never raises; ``mkfs.mkfs`` makes a new volume. See
``docs/formats/fat.md`` for what is supported, inode numbering, times and attributes.
"""

from __future__ import annotations

from burrow.block.device import BlockDevice
from burrow.errors import BurrowError
from burrow.fs.fat.filesystem import ATTRS_XATTR, FatFilesystem
from burrow.fs.fat.ondisk import parse_geometry

__all__ = ["ATTRS_XATTR", "FatFilesystem", "open_fat", "probe"]


def open_fat(dev: BlockDevice, *, readonly: bool = True) -> FatFilesystem:
    """Open the FAT volume on ``dev`` (``CorruptImage`` if it is not a valid one)."""
    return FatFilesystem(dev, readonly=readonly)


def probe(dev: BlockDevice) -> bool:
    """True when ``dev`` starts with a plausible FAT boot sector. Never raises on garbage."""
    try:
        if dev.size < 512:
            return False
        boot = dev.pread(512, 0)
        if boot[0] not in (0xEB, 0xE9) and b"FAT" not in boot[54:62] + boot[82:90]:
            return False
        parse_geometry(boot, dev.size)
    except BurrowError:
        return False
    return True
