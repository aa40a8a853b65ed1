"""Partition tables: read a GPT and write a four-partition GPT, burrow vs sfdisk/sgdisk/parted.

The peers are command-line tools, so burrow is measured both as a library call ("burrow") and
as the ``burrow part`` command (which pays Python's start-up, as a user would).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.harness import Case
from burrow.block.raw import RawDevice
from burrow.volume import add_partition, init_table, read_table

SIZE = 1 << 30
MiB = 1 << 20
SFDISK_SCRIPT = (
    'label: gpt\nsize=512M, type=U, name="esp"\nsize=64M, type=S, name="swap"\n'
    'size=128M, type=L, name="home"\ntype=L, name="root"\n'
)


def _blank(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(0)
        f.truncate(SIZE)
    return path


def _run(*cmd: str | Path, stdin: str | None = None) -> None:
    subprocess.run([str(c) for c in cmd], input=stdin, text=True, check=True, capture_output=True)


def cases(work: Path) -> list[Case]:
    listed = _blank(work / "part-list.img")
    _run("sfdisk", "-q", listed, stdin=SFDISK_SCRIPT)
    target = work / "part-write.img"

    def api_read() -> float:
        with RawDevice(listed) as dev:
            table = read_table(dev)
        assert table is not None and len(table.partitions) == 4
        return 1

    def cli_read() -> float:
        _run(sys.executable, "-m", "burrow", "part", "list", listed, "--json")
        return 1

    def api_write() -> float:
        with RawDevice(_blank(target), readonly=False) as dev:
            init_table(dev, "gpt")
            add_partition(dev, size=512 * MiB, type="esp", name="esp")
            add_partition(dev, size=64 * MiB, type="swap", name="swap")
            add_partition(dev, size=128 * MiB, type="linux", name="home")
            add_partition(dev, type="linux", name="root")
        return 1

    def sfdisk_write() -> float:
        _run("sfdisk", "-q", _blank(target), stdin=SFDISK_SCRIPT)
        return 1

    def parted_write() -> float:
        _run(
            "parted", "-s", _blank(target), "mklabel", "gpt",
            "mkpart", "esp", "1MiB", "513MiB", "mkpart", "swap", "513MiB", "577MiB",
            "mkpart", "home", "577MiB", "705MiB", "mkpart", "root", "705MiB", "100%",
        )  # fmt: skip
        return 1

    return [
        Case(
            "part: read a 4-partition GPT",
            "s",
            {
                "burrow": api_read,
                "burrow part list --json": cli_read,
                "sfdisk -J": lambda: _run("sfdisk", "-J", listed) or 1,
                "sgdisk -p": lambda: _run("sgdisk", "-p", listed) or 1,
                "parted print": lambda: _run("parted", "-m", "-s", listed, "print") or 1,
            },
        ),
        Case(
            "part: write a 4-partition GPT",
            "s",
            {"burrow": api_write, "sfdisk": sfdisk_write, "parted": parted_write},
        ),
    ]
