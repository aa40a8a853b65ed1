"""FAT: populate an image (burrow mkfs+copy vs mkfs.fat+mcopy) and read it back (vs mcopy)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from benchmarks.harness import Case
from burrow.block.raw import RawDevice
from burrow.cli.commands.mkfs import copy_tree_in
from burrow.fs.fat import open_fat
from burrow.fs.fat.mkfs import mkfs
from burrow.fs.vfs import Filesystem

IMAGE_SIZE = 256 << 20
SMALL_FILES = 2000
BIG = 64 << 20
CHUNK = 4 << 20
ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}


def _tree(work: Path) -> tuple[Path, int]:
    src = work / "fat-src"
    marker = src / ".done"
    if not marker.exists():
        shutil.rmtree(src, ignore_errors=True)
        for d in range(20):
            sub = src / f"directory number {d:02d}"
            sub.mkdir(parents=True)
            for i in range(SMALL_FILES // 20):
                (sub / f"small file with a long name {i:03d}.txt").write_bytes(os.urandom(4096))
        (src / "big.bin").write_bytes(os.urandom(BIG))
        marker.write_text("")
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    return src, total


def _fresh(path: Path) -> None:
    if path.exists():
        path.unlink()
    with open(path, "wb") as f:
        f.truncate(IMAGE_SIZE)


def _read_all(fs: Filesystem, ino: int) -> int:
    total = 0
    for entry in fs.readdir(ino):
        st = fs.getattr(entry.ino)
        if st.is_dir():
            total += _read_all(fs, entry.ino)
            continue
        pos = 0
        while pos < st.st_size:
            pos += len(fs.read(entry.ino, pos, CHUNK))
        total += pos
    return total


def cases(work: Path) -> list[Case]:
    src, total = _tree(work)
    ours, ref = work / "fat-ours.img", work / "fat-ref.img"
    entries = [str(p) for p in sorted(src.iterdir()) if p.name != ".done"]

    def burrow_populate() -> float:
        _fresh(ours)
        with RawDevice(ours, readonly=False) as dev:
            mkfs(dev, fat_bits=32)
            with open_fat(dev, readonly=False) as fs:
                copy_tree_in(str(src), fs, fs.root_ino)
        return total

    def mtools_populate() -> float:
        _fresh(ref)
        subprocess.run(["mkfs.fat", "-F", "32", ref], check=True, capture_output=True, env=ENV)
        subprocess.run(
            ["mcopy", "-s", "-i", ref, *entries, "::/"], check=True, capture_output=True, env=ENV
        )
        return total

    def burrow_read() -> float:
        if not ref.exists():
            mtools_populate()
        with RawDevice(ref) as dev, open_fat(dev) as fs:
            return _read_all(fs, fs.root_ino)

    def mtools_read() -> float:
        out = work / "fat-mcopy-out"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        subprocess.run(
            ["mcopy", "-s", "-n", "-i", ref, "::", out], check=True, capture_output=True, env=ENV
        )
        return total

    def burrow_big() -> float:
        with RawDevice(ref) as dev, open_fat(dev) as fs:
            ino = fs.lookup(fs.root_ino, "big.bin")
            pos = 0
            while pos < BIG:
                pos += len(fs.read(ino, pos, CHUNK))
            return pos

    def mtools_big() -> float:
        subprocess.run(
            ["mcopy", "-n", "-i", ref, "::/big.bin", os.devnull],
            check=True, capture_output=True, env=ENV,
        )  # fmt: skip
        return BIG

    return [
        Case(
            "fat: populate FAT32 (2000 x 4 KiB + 64 MiB)",
            "bytes",
            {"burrow": burrow_populate, "mkfs.fat + mcopy -s": mtools_populate},
            target="within 2x of mtools",
        ),
        Case(
            "fat: read whole tree (2000 x 4 KiB + 64 MiB)",
            "bytes",
            {"burrow": burrow_read, "mcopy -s (to disk)": mtools_read},
            target="within 2x of mtools",
        ),
        Case(
            "fat: sequential read 64 MiB file",
            "bytes",
            {"burrow": burrow_big, "mcopy": mtools_big},
            target=">= mtools",
        ),
    ]
