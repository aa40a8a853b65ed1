"""Fuzz the FAT driver: open, walk every directory, read every file, statfs, info.

Seeds are small volumes made by mkfs.fat + mcopy (FAT12 with long names, FAT16, a tiny
FAT32), so mutations land on real boot sectors, FATs and directory entries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from burrow.block.memory import MemoryDevice
from burrow.fs.fat import open_fat, probe

# Boot sector, the start of the first FAT and the first root directory slots of a FAT12 seed.
REGIONS = [(0, 512), (512, 256), (1024, 512), (2048, 1024), (7680, 1024)]
MAX_ENTRIES = 2000


def _make(path: Path, kib: int, src: Path, *fat: str) -> bytes:
    with open(path, "wb") as f:
        f.truncate(kib * 1024)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC"}
    subprocess.run(["mkfs.fat", *fat, path], check=True, capture_output=True, env=env)
    subprocess.run(
        ["mcopy", "-s", "-i", path, *sorted(map(str, src.iterdir())), "::/"],
        check=True,
        capture_output=True,
        env=env,
    )
    return path.read_bytes()


def seeds(tmp_path: Path) -> list[bytes]:
    if shutil.which("mkfs.fat") is None or shutil.which("mcopy") is None:
        import pytest

        pytest.skip("needs mkfs.fat and mcopy")
    src = tmp_path / "src"
    (src / "Sub Dir" / "deeper").mkdir(parents=True)
    (src / "readme.txt").write_text("hello\n")
    (src / "A Long File Name.text").write_bytes(os.urandom(3000))
    (src / "Sub Dir" / "deeper" / "ünïcode.txt").write_text("x\n")
    for i in range(8):
        (src / "Sub Dir" / f"file number {i}").write_bytes(bytes([i]) * 700)
    return [
        _make(tmp_path / "f12.img", 128, src),
        _make(tmp_path / "f16.img", 2300, src, "-F", "16", "-s", "1"),
        _fat32(tmp_path / "f32.img", src),
    ]


def _fat32(path: Path, src: Path) -> bytes:
    """A tiny FAT32 from mkfs.fat (mtools refuses so few clusters; our writer fills it)."""
    from burrow.block.raw import RawDevice
    from burrow.cli.commands.mkfs import copy_tree_in

    with open(path, "wb") as f:
        f.truncate(1024 * 1024)
    subprocess.run(["mkfs.fat", "-F", "32", path], check=True, capture_output=True)
    with RawDevice(path, readonly=False) as dev, open_fat(dev, readonly=False) as fs:
        copy_tree_in(str(src), fs, fs.root_ino)
    return path.read_bytes()


def one_input(data: bytes) -> None:
    dev = MemoryDevice(len(data), data=data)
    probe(dev)
    with open_fat(dev) as fs:
        fs.statfs()
        fs.info()
        todo = [fs.root_ino]
        seen = 0
        while todo and seen < MAX_ENTRIES:
            ino = todo.pop()
            for entry in fs.readdir(ino):
                seen += 1
                st = fs.getattr(entry.ino)
                fs.lookup(ino, entry.name)
                if st.is_dir():
                    if len(todo) < 64:
                        todo.append(entry.ino)
                else:
                    fs.read(entry.ino, 0, min(st.st_size, 1 << 16))
                    fs.listxattr(entry.ino)
    _write_some(data)


def _write_some(data: bytes) -> None:
    """Writes on a damaged volume must fail cleanly too (each step on its own)."""
    from burrow.errors import BurrowError

    dev = MemoryDevice(len(data), data=data)
    try:
        fs = open_fat(dev, readonly=False)
    except BurrowError:
        return
    steps = [
        lambda: fs.write(fs.create(fs.root_ino, "fuzz file.txt", 0o644), 0, b"x" * 5000),
        lambda: fs.mkdir(fs.root_ino, "Fuzz Dir", 0o755),
        lambda: fs.rename(fs.root_ino, "fuzz file.txt", fs.lookup(fs.root_ino, "fuzz dir"), "m"),
        lambda: fs.setattr(fs.lookup(fs.root_ino, "fuzz dir"), mode=0o555),
    ]
    for entry in list(fs.readdir(fs.root_ino))[:4] if _safe(fs) else []:
        steps.append(lambda e=entry: fs.setattr(e.ino, size=100) if not e.is_dir() else None)
        steps.append(
            lambda e=entry: (
                fs.rmdir(fs.root_ino, e.name) if e.is_dir() else fs.unlink(fs.root_ino, e.name)
            )
        )
    for step in steps:
        try:
            step()
        except BurrowError:
            pass
    try:
        fs.close()
    except BurrowError:
        pass


def _safe(fs: object) -> bool:
    from burrow.errors import BurrowError

    try:
        list(fs.readdir(fs.root_ino))  # type: ignore[attr-defined]
    except BurrowError:
        return False
    return True
