"""Block layer: sequential read of a raw image through ``raw`` and ``slice`` vs ``cat``/``dd``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from benchmarks.harness import Case
from burrow.block.device import BlockDevice
from burrow.block.filters import ReadOnlyFilter, StatsFilter
from burrow.block.overlay import OverlayDevice
from burrow.block.raw import RawDevice
from burrow.block.slice import SliceDevice

SIZE = 1 << 30
CHUNK = 4 << 20


def _image(work: Path) -> Path:
    path = work / "seq-1g.raw"
    if not path.exists() or path.stat().st_size != SIZE:
        block = os.urandom(CHUNK)
        with open(path, "wb") as f:
            for _ in range(SIZE // CHUNK):
                f.write(block)
    return path


def _read_all(dev: BlockDevice) -> float:
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    for off in range(0, dev.size, CHUNK):
        dev.preadinto(mv[: min(CHUNK, dev.size - off)], off)
    return dev.size


def cases(work: Path) -> list[Case]:
    path = _image(work)

    def raw() -> float:
        with RawDevice(path) as dev:
            return _read_all(dev)

    def sliced() -> float:
        with RawDevice(path) as dev:
            return _read_all(SliceDevice(dev, 1 << 20, SIZE - (1 << 20)))

    def overlay() -> float:
        with RawDevice(path) as dev, OverlayDevice(dev) as ov:
            ov.pwrite(b"x" * 4096, 0)  # a dirty overlay: every read maps its chunks
            return _read_all(ov)

    def filters() -> float:
        with StatsFilter(ReadOnlyFilter(RawDevice(path))) as dev:
            return _read_all(dev)

    def dd() -> float:
        subprocess.run(
            ["dd", f"if={path}", "of=/dev/null", "bs=4M"], check=True, capture_output=True
        )
        return SIZE

    return [
        Case(
            "block: sequential read 1 GiB raw (page cache)",
            "bytes",
            {"burrow": raw, "dd bs=4M": dd},
            target=">= 2 GB/s",
        ),
        Case(
            "block: sequential read 1 GiB through slice",
            "bytes",
            {"burrow": sliced, "dd bs=4M": dd},
            target=">= 2 GB/s",
        ),
        Case(
            "block: sequential read 1 GiB through an overlay (4 KiB chunks)",
            "bytes",
            {"burrow": overlay, "dd bs=4M": dd},
        ),
        Case(
            "block: sequential read 1 GiB through stats+readonly filters",
            "bytes",
            {"burrow": filters, "dd bs=4M": dd},
        ),
    ]
