"""Find and open the filesystem on a block device by trying each driver's probe.

Why collect failures: when a device looks like ext4 *and* opening it fails, and FAT also
claims it, the user needs both reasons to understand the image, not just the last one. So
every candidate that claimed the device and failed is reported together, in one error.

Drivers are imported lazily (only the ones tried), so ``burrow cat`` of an ext4 image never
imports the FAT driver.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from burrow.block.device import BlockDevice
from burrow.errors import BurrowError, CorruptImage, Unsupported
from burrow.fs.vfs import Filesystem

__all__ = ["DRIVERS", "Driver", "detect_signature", "open_filesystem", "probe_type"]


@dataclass(frozen=True)
class Driver:
    """A filesystem driver: ``module.probe(dev) -> bool`` and ``module.<opener>(dev, *,
    readonly)``."""

    name: str
    module: str
    opener: str

    def load(self) -> tuple[Callable[[BlockDevice], bool], Callable[..., Filesystem]]:
        mod = importlib.import_module(self.module)
        return mod.probe, getattr(mod, self.opener)


DRIVERS: list[Driver] = [
    Driver("ext4", "burrow.fs.ext4", "open_ext4"),
    Driver("vfat", "burrow.fs.fat", "open_fat"),
]

# Signatures of filesystems and containers burrow recognises but cannot open, so `burrow info`
# can name what a partition holds: (name, offset, magic).
_SIGNATURES: list[tuple[str, int, bytes]] = [
    ("crypto_LUKS", 0, b"LUKS\xba\xbe"),
    ("xfs", 0, b"XFSB"),
    ("btrfs", 0x10040, b"_BHRfS_M"),
    ("squashfs", 0, b"hsqs"),
    ("iso9660", 0x8001, b"CD001"),
    ("LVM2_member", 0x218, b"LVM2 001"),
    ("zfs_member", 0x4000, b"\x0c\xb1\xba\x00"),
]
_SWAP_MAGICS = (b"SWAPSPACE2", b"SWAP-SPACE")


def _read(dev: BlockDevice, offset: int, n: int) -> bytes | None:
    if offset + n > dev.size:
        return None
    try:
        return dev.pread(n, offset)
    except BurrowError:
        return None


def detect_signature(dev: BlockDevice) -> str | None:
    """Name of a known-but-unsupported format on ``dev`` (swap, LUKS, xfs...), or ``None``."""
    for name, offset, magic in _SIGNATURES:
        if _read(dev, offset, len(magic)) == magic:
            return name
    for page in (4096, 8192, 16384, 65536):
        if _read(dev, page - 10, 10) in _SWAP_MAGICS:
            return "swap"
    return None


def probe_type(dev: BlockDevice) -> str | None:
    """The name of the first driver whose probe claims ``dev`` (no opening), or a known
    unsupported signature, or ``None``. Never raises on garbage."""
    for drv in DRIVERS:
        try:
            probe, _ = drv.load()
        except ImportError:
            continue
        try:
            if probe(dev):
                return drv.name
        except Exception:
            continue
    return detect_signature(dev)


def open_filesystem(dev: BlockDevice, *, readonly: bool = True, **options: Any) -> Filesystem:
    """Open the filesystem on ``dev`` with the first driver that claims and opens it.

    Raises ``Unsupported`` when no driver recognises the device (naming any known signature
    found, such as ``swap``), or the collected errors of every driver that claimed it and
    failed: one error as is, several combined into one ``CorruptImage``/``Unsupported``.
    """
    failures: list[tuple[str, BurrowError]] = []
    missing: list[str] = []
    for drv in DRIVERS:
        try:
            probe, opener = drv.load()
        except ImportError:
            missing.append(drv.name)
            continue
        try:
            claimed = bool(probe(dev))
        except Exception:
            claimed = False
        if not claimed:
            continue
        try:
            return opener(dev, readonly=readonly, **options)
        except BurrowError as exc:
            failures.append((drv.name, exc))
    if not failures:
        other = detect_signature(dev)
        tried = ", ".join(d.name for d in DRIVERS if d.name not in missing)
        if other is not None:
            raise Unsupported(other, "burrow cannot open this kind of filesystem or container")
        detail = f"no known filesystem signature (tried {tried or 'nothing'})"
        if missing:
            detail += f"; drivers not available: {', '.join(missing)}"
        raise Unsupported("filesystem", detail)
    if len(failures) == 1:
        raise failures[0][1]
    text = "; ".join(f"{name}: {exc}" for name, exc in failures)
    if all(isinstance(exc, Unsupported) for _, exc in failures):
        raise Unsupported("filesystem", text)
    raise CorruptImage("filesystem", None, text)
