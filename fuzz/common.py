"""Shared helpers for harnesses: discovery, the exception rule, byte mutation."""

from __future__ import annotations

import importlib
import pkgutil
import random
from pathlib import Path
from types import ModuleType

from burrow.errors import BurrowError

FUZZ_DIR = Path(__file__).resolve().parent


def harness_names() -> list[str]:
    return sorted(
        m.name.removeprefix("fuzz_")
        for m in pkgutil.iter_modules([str(FUZZ_DIR)])
        if m.name.startswith("fuzz_")
    )


def load(name: str) -> ModuleType:
    return importlib.import_module(f"fuzz.fuzz_{name}")


def checked(module: ModuleType, data: bytes) -> None:
    """Run one input; anything other than a BurrowError is a bug and propagates."""
    try:
        module.one_input(data)
    except BurrowError:
        pass


def mutate(seed: bytes, rng: random.Random, regions: list[tuple[int, int]] | None = None) -> bytes:
    """Flip, overwrite or truncate a few bytes, preferring the given (offset, length) regions."""
    buf = bytearray(seed)
    if not buf:
        return bytes(rng.randbytes(rng.randint(0, 64)))
    for _ in range(rng.randint(1, 8)):
        if regions:
            start, length = rng.choice(regions)
            pos = min(len(buf) - 1, start + rng.randrange(max(1, length)))
        else:
            pos = rng.randrange(len(buf))
        choice = rng.random()
        if choice < 0.5:
            buf[pos] ^= 1 << rng.randrange(8)
        elif choice < 0.85:
            buf[pos] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif choice < 0.95:
            width = rng.choice([2, 4, 8])
            value = rng.choice([0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, rng.getrandbits(64)])
            buf[pos : pos + width] = value.to_bytes(8, "little")[:width]
        else:
            del buf[rng.randrange(len(buf)) :]
            if not buf:
                break
    return bytes(buf)
