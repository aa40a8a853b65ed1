"""burrow: the storage half of an operating-system kernel, as a Python library.

Only light names are imported eagerly; everything else loads on first use so that
``import burrow`` (and ``burrow --help``) stays fast. Public names are re-exported here
explicitly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from burrow._version import __version__
from burrow.errors import (
    BurrowError,
    CorruptImage,
    FilesystemError,
    ProtocolError,
    Unsupported,
)

__all__ = [
    "BurrowError",
    "CorruptImage",
    "Disk",
    "FilesystemError",
    "ProtocolError",
    "Unsupported",
    "__version__",
    "open",
]

if TYPE_CHECKING:  # pragma: no cover
    from burrow.disk import Disk, open

# name -> module that defines it; resolved lazily by __getattr__ (PEP 562).
_LAZY: dict[str, str] = {"open": "burrow.disk", "Disk": "burrow.disk"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'burrow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
