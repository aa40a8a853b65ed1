"""crc32c (Castagnoli) from the ``crc32c`` package's C extension, loaded without its package.

Why: ``import crc32c`` runs the package's ``__init__``, which imports ``importlib.metadata``
(and with it email, zipfile, csv...) only to set ``__version__``: 30-60 ms of start-up on
every ``burrow cat`` of an ext4 image with metadata_csum. Loading the extension module
directly gives the same function without that cost; if the layout of the package ever
changes, we fall back to the normal import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["crc32c"]


def _load() -> Callable[..., int]:
    import importlib.machinery
    import importlib.util
    import os
    import sys

    try:
        spec = importlib.util.find_spec("crc32c")
        locations = list(spec.submodule_search_locations or []) if spec else []
        for folder in locations:
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                path = os.path.join(folder, "_crc32c" + suffix)
                if os.path.exists(path):
                    name = "crc32c._crc32c"
                    module = sys.modules.get(name)
                    if module is None:
                        loader = importlib.machinery.ExtensionFileLoader(name, path)
                        ext_spec = importlib.util.spec_from_file_location(name, path, loader=loader)
                        if ext_spec is None:
                            break
                        module = importlib.util.module_from_spec(ext_spec)
                        loader.exec_module(module)
                    fn: Any = module.crc32c
                    return fn  # type: ignore[no-any-return]
    except (ImportError, OSError, AttributeError):
        pass
    from crc32c import crc32c as fallback

    return fallback


crc32c: Callable[..., int] = _load()
