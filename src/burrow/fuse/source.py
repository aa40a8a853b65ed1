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
) -> Served:  # pragma: no cover - wired once burrow.disk lands
    raise UsageError("not wired yet")
