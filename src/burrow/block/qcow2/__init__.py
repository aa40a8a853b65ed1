"""qcow2 engine (read and write). Not implemented yet: opening a qcow2 image is refused."""

from __future__ import annotations

from burrow.block.device import BlockDevice
from burrow.errors import Unsupported


def open_qcow2(
    path: str, *, readonly: bool = True, allow_probe_backing: bool = False
) -> BlockDevice:
    raise Unsupported("qcow2", "the qcow2 engine is not implemented yet")


def create_qcow2(
    path: str,
    size: int,
    *,
    cluster_size: int = 65536,
    backing: str | None = None,
    backing_format: str | None = None,
) -> BlockDevice:
    raise Unsupported("qcow2", "the qcow2 engine is not implemented yet")
