"""Opening a qcow2 image's backing file: the rules that keep a guest from reaching host files.

* The name is resolved relative to the image's directory (as qemu does); protocol names
  (``json:``, ``nbd:``, ``http://``...) are refused.
* The format comes from the header's backing-format extension; without one the file is
  probed only when the caller passed ``allow_probe_backing`` (otherwise a raw disk written
  by a guest could claim to be a qcow2 pointing anywhere).
* Only regular files and block devices; chains at most ``MAX_BACKING_DEPTH`` deep; loops
  detected by the (device, inode) of every image in the chain. Always read-only.
"""

from __future__ import annotations

import os
import re
import stat

from burrow.block.device import BlockDevice
from burrow.block.qcow2.header import Header
from burrow.errors import BurrowError, CorruptImage, NotFound, Unsupported, error_for_errno

__all__ = ["MAX_BACKING_DEPTH", "open_backing"]

MAX_BACKING_DEPTH = 16
_PROTOCOL = re.compile(
    r"^(json:|[A-Za-z][A-Za-z0-9+.-]*://|"
    r"(nbd|ssh|rbd|iscsi|gluster|http|https|ftp|ftps|vvfat|null-co|blkdebug|blkverify)[:+])"
)


def open_backing(
    image_path: str,
    hdr: Header,
    *,
    allow_probe: bool,
    visited: frozenset[tuple[int, int]],
    depth: int,
) -> BlockDevice:
    """Open the backing file named by ``hdr`` for the image at ``image_path``."""
    name = hdr.backing_file
    assert name is not None
    if _PROTOCOL.match(name):
        raise Unsupported("backing file protocol", f"{name!r} is not a local file")
    if depth > MAX_BACKING_DEPTH:
        raise CorruptImage("qcow2 backing chain", None, f"deeper than {MAX_BACKING_DEPTH} images")
    bpath = name if os.path.isabs(name) else os.path.join(os.path.dirname(image_path), name)
    try:
        return _open_file(bpath, hdr.backing_format, allow_probe, visited, depth)
    except BurrowError:
        raise
    except FileNotFoundError:
        raise NotFound(f"backing file {bpath!r} of {image_path!r} not found", path=bpath) from None
    except OSError as exc:
        raise error_for_errno(exc.errno or 5, f"backing file {bpath!r}: {exc}") from None


def _open_file(
    bpath: str,
    fmt: str | None,
    allow_probe: bool,
    visited: frozenset[tuple[int, int]],
    depth: int,
) -> BlockDevice:
    st = os.stat(bpath)
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISBLK(st.st_mode):
        raise Unsupported("backing file type", f"{bpath!r} is not a regular file or disk")
    if (st.st_dev, st.st_ino) in visited:
        raise CorruptImage("qcow2 backing chain", None, f"loop: {bpath!r} is its own backing")
    if fmt is None:
        if not allow_probe:
            raise Unsupported(
                "backing file without backing format",
                f"{bpath!r}: the header does not name its format (pass allow_probe_backing)",
            )
        from burrow.block import detect_format

        fmt = detect_format(bpath)
    if fmt == "raw":
        from burrow.block.raw import RawDevice

        return RawDevice(bpath, readonly=True)
    if fmt == "qcow2":
        from burrow.block.qcow2.device import Qcow2Device

        return Qcow2Device(
            bpath, readonly=True, allow_probe_backing=allow_probe, _visited=visited, _depth=depth
        )
    raise Unsupported(f"backing format {fmt}", f"backing file {bpath!r}")
