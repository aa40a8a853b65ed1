"""Secure network shares: the ``burrow serve`` server and the remote-filesystem client.

Belongs here: the asyncio server and client pumps around ``burrow.proto`` (secure channel and
share RPC), key and peers-file handling, the privilege-separated export workers. The client
presents the ordinary ``burrow.fs.vfs`` interface. May import ``burrow.proto``, ``burrow.fs``
and ``burrow.errors``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["connect", "connect_async", "open_url"]


def __getattr__(name: str) -> Any:
    """``burrow.share.connect`` and friends, imported on first use (keeps ``import burrow``
    light: the client pulls in asyncio and the crypto stack)."""
    if name in __all__:
        from burrow.share import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
