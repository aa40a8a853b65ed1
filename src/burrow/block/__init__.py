"""Block layer: the ``BlockDevice`` interface, its engines and its filters.

Belongs here: anything that presents a fixed-size array of bytes — host files (``raw``),
memory, windows onto other devices (``slice``), copy-on-write (``overlay``), image formats
(``qcow2/``), remote devices (``nbd_client``), and filters that wrap a device (``filters/``).
May import: ``burrow.errors`` and ``burrow.proto`` (for the NBD client). Never a filesystem or
volume module.
"""

from __future__ import annotations

import builtins as _builtins
import os as _os

from burrow.block.device import BlockDevice, Extent, ExtentFlags
from burrow.errors import UsageError

__all__ = ["BlockDevice", "Extent", "ExtentFlags", "create", "detect_format", "open"]

QCOW2_MAGIC = b"QFI\xfb"
FORMATS = ("raw", "qcow2")


def detect_format(path: str | _os.PathLike[str]) -> str:
    """``"qcow2"`` when the file starts with the qcow2 magic, otherwise ``"raw"``."""
    with _builtins.open(path, "rb") as f:
        head = f.read(4)
    return "qcow2" if head == QCOW2_MAGIC else "raw"


def open(
    path: str | _os.PathLike[str],
    *,
    format: str | None = None,
    readonly: bool = True,
    allow_probe_backing: bool = False,
) -> BlockDevice:
    """Open an image or device.

    ``format=None`` detects qcow2 by its magic and treats anything else as raw; an explicit
    ``format="raw"`` is never second-guessed (so a guest cannot make a raw disk look like a
    qcow2 pointing at host files). ``nbd://`` and ``nbd+unix://`` URIs open remote exports.
    qcow2 backing files are followed only when the header names their format, unless
    ``allow_probe_backing`` is set.
    """
    spath = _os.fspath(path)
    if isinstance(spath, str) and spath.startswith(("nbd://", "nbd+unix://", "nbds://")):
        from burrow.block.nbd_client import open_nbd_uri

        return open_nbd_uri(spath, readonly=readonly)
    if format is None:
        format = detect_format(spath)
    if format == "raw":
        from burrow.block.raw import RawDevice

        return RawDevice(spath, readonly=readonly)
    if format == "qcow2":
        from burrow.block.qcow2 import open_qcow2

        return open_qcow2(spath, readonly=readonly, allow_probe_backing=allow_probe_backing)
    raise UsageError(f"unknown image format {format!r} (known: {', '.join(FORMATS)})")


def create(
    path: str | _os.PathLike[str],
    size: int,
    *,
    format: str = "qcow2",
    cluster_size: int = 65536,
    backing: str | None = None,
    backing_format: str | None = None,
) -> BlockDevice:
    """Create a new image of ``size`` bytes and return it open for writing.

    Refuses to overwrite an existing file.
    """
    if size < 0:
        raise UsageError("image size must not be negative")
    if format == "raw":
        if backing is not None:
            raise UsageError("raw images cannot have a backing file")
        from burrow.block.raw import RawDevice

        fd = _os.open(
            _os.fspath(path), _os.O_RDWR | _os.O_CREAT | _os.O_EXCL | _os.O_CLOEXEC, 0o644
        )
        try:
            _os.ftruncate(fd, size)
        finally:
            _os.close(fd)
        return RawDevice(path, readonly=False)
    if format == "qcow2":
        from burrow.block.qcow2 import create_qcow2

        return create_qcow2(
            _os.fspath(path),
            size,
            cluster_size=cluster_size,
            backing=backing,
            backing_format=backing_format,
        )
    raise UsageError(f"unknown image format {format!r} (known: {', '.join(FORMATS)})")
