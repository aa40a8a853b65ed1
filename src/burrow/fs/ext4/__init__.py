"""ext2/ext3/ext4: a pure-Python driver (read side here; the write side lives in ``writer``).

Belongs here: on-disk definitions (``ondisk``), checksums (``csum``), the directory hash
(``dirhash``), the journal replay (``journal``), the read driver (``filesystem``) and the
write side (``writer``, ``mkfs``, ``alloc``). See ``docs/formats/ext4.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from burrow.block.device import BlockDevice
from burrow.errors import Unsupported

if TYPE_CHECKING:
    from burrow.fs.ext4.filesystem import Ext4Filesystem

__all__ = ["open_ext4", "probe"]

_MAGIC_OFFSET = 1024 + 0x38


def probe(dev: BlockDevice) -> bool:
    """True when ``dev`` carries an ext2/3/4 superblock magic. Never raises on garbage."""
    try:
        if dev.size < 2048:
            return False
        return dev.pread(2, _MAGIC_OFFSET) == b"\x53\xef"
    except Exception:
        return False


def open_ext4(
    dev: BlockDevice, *, readonly: bool = True, ignore_checksums: bool = False
) -> Ext4Filesystem:
    """Open an ext2/3/4 filesystem on ``dev``.

    Read-only (the default) never writes to ``dev``: a journal that needs recovery is replayed
    into memory. ``readonly=False`` hands over to the write side (``burrow.fs.ext4.writer``).
    ``ignore_checksums`` reads on past metadata_csum/gdt_csum mismatches instead of raising
    ``CorruptImage``.
    """
    if not readonly:
        try:
            from burrow.fs.ext4 import writer  # type: ignore[attr-defined,unused-ignore]
        except ImportError:
            raise Unsupported("ext4 write", "the ext4 write side is not available") from None
        fs: Ext4Filesystem = writer.Ext4WritableFilesystem(dev, ignore_checksums=ignore_checksums)
        return fs
    from burrow.fs.ext4.filesystem import Ext4Filesystem

    return Ext4Filesystem(dev, ignore_checksums=ignore_checksums)
