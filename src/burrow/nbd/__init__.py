"""NBD front end: the asyncio server that exports ``BlockDevice`` objects over NBD.

Belongs here: the I/O pump around ``burrow.proto.nbd``, export configuration, TLS set-up and
the adapter that serves a user's plain Python class. May import ``burrow.block``,
``burrow.proto`` and ``burrow.errors``.

``await burrow.nbd.serve(device, socket=PATH)`` serves until cancelled;
``burrow.nbd.start_server`` returns the running :class:`NBDServer`. Names are loaded lazily
so ``import burrow.nbd`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from burrow.nbd.backend import PlainDevice, make_backend
    from burrow.nbd.server import Export, NBDServer, serve, start_server

__all__ = ["Export", "NBDServer", "PlainDevice", "make_backend", "serve", "start_server"]

_WHERE = {
    "Export": "burrow.nbd.server",
    "NBDServer": "burrow.nbd.server",
    "serve": "burrow.nbd.server",
    "start_server": "burrow.nbd.server",
    "PlainDevice": "burrow.nbd.backend",
    "make_backend": "burrow.nbd.backend",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'burrow.nbd' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
