"""Open what ``burrow mount`` serves: a filesystem in an image, a device, or ``memory:``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from burrow.errors import UsageError


@dataclass
class Served:
    ops: Any
    close: Callable[[], None]


def open_source(
    source: str, *, block: bool, readonly: bool, image_format: str | None = None
) -> Served:
    if source == "memory:":
        if block:
            raise UsageError("memory: is a filesystem; --block needs an image")
        from burrow.fs.memfs import MemoryFilesystem
        from burrow.fuse.ops import FilesystemOperations

        fs = MemoryFilesystem(readonly=readonly)
        return Served(FilesystemOperations(fs), fs.close)
    image, _, part = source.partition("@")
    import importlib.util

    if importlib.util.find_spec("burrow.disk") is None:
        if part:
            raise UsageError("partition selection needs the disk API (burrow.disk)")
        if not block:
            raise UsageError("mounting image filesystems needs the disk API (burrow.disk)")
        from burrow import block as blocklayer
        from burrow.fuse.blockfile import BlockFileOperations

        dev = blocklayer.open(image, format=image_format, readonly=readonly)
        return Served(BlockFileOperations(dev), dev.close)
    return _open_with_disk_api(
        image, part or None, block=block, readonly=readonly, image_format=image_format
    )


def _open_with_disk_api(
    image: str, part: str | None, *, block: bool, readonly: bool, image_format: str | None
) -> Served:
    """Open through ``burrow.disk``: writable opens go through an overlay that is committed
    to the image by ``close()`` (run by the mount daemon after unmount); a killed daemon
    leaves the image as it was."""
    from burrow.disk import Disk, open_target

    spec = image + (f"@{part}" if part else "")
    if block:
        from burrow.fuse.blockfile import BlockFileOperations

        disk = Disk(image, writable=not readonly, format=image_format, overlay_file=True)
        try:
            dev = disk.device(disk.select(part)) if part else disk.block
        except BaseException:
            disk.close(commit=False)
            raise
        return Served(BlockFileOperations(dev), disk.close)
    from burrow.fuse.ops import FilesystemOperations

    target = open_target(spec, writable=not readonly, format=image_format)
    return Served(FilesystemOperations(target.fs.fs), target.close)
