"""NBD client engine. Not implemented yet: opening an nbd:// URI is refused."""

from __future__ import annotations

from burrow.block.device import BlockDevice
from burrow.errors import Unsupported


def open_nbd_uri(uri: str, *, readonly: bool = True) -> BlockDevice:
    raise Unsupported("nbd-client", "the NBD client engine is not implemented yet")
