"""ext2/3/4 writer: open a damaged image for writing and change it (bounded).

Every write operation loads and re-encodes on-disk structures (extent trees, block maps,
directory leaves and htree indexes, xattr areas, bitmaps, descriptors), so damage anywhere in
them must surface as a ``BurrowError`` (``CorruptImage``, ``NoSpace``...), never as an
``IndexError``/``struct.error``/``MemoryError`` or a hang. Seeds come from ``mkfs.ext4 -d``
and ``mkfs.ext3 -d``; ``REGIONS`` aims the mutator at the superblock, descriptors, the used
inode table and the first directory blocks.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from burrow.block.memory import MemoryDevice
from burrow.errors import BurrowError
from burrow.fs import vfs
from burrow.fs.ext4 import open_ext4

REGIONS: list[tuple[int, int]] = []


def _tree(root: Path) -> Path:
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "f.txt").write_bytes(b"hello\n")
    (root / "data.bin").write_bytes(bytes(range(256)) * 60)
    many = root / "many"
    many.mkdir()
    for i in range(100):
        (many / f"name-{i:04d}-{'y' * (i % 30)}").write_bytes(b"")
    os.symlink("z" * 80, root / "slow")
    os.setxattr(root / "data.bin", "user.k", b"v" * 40)
    return root


def seeds(tmp_path: Path) -> list[bytes]:
    src = _tree(tmp_path / "src")
    out: list[bytes] = []
    for fstype, opts in (
        ("ext4", ["-b", "1024", "-O", "^has_journal", "-N", "160"]),
        ("ext3", ["-b", "1024", "-O", "^has_journal", "-N", "160"]),
        ("ext4", ["-b", "1024", "-O", "^has_journal,inline_data,^metadata_csum", "-N", "160"]),
    ):
        img = tmp_path / f"seed-{len(out)}.img"
        subprocess.run(
            [f"mkfs.{fstype}", "-q", "-F", *opts, "-d", src, img, "1M"],
            check=True,
            capture_output=True,
        )
        out.append(img.read_bytes())
    REGIONS[:] = [(1024, 1024), (2048, 1024), (5 * 1024, 48 * 1024)]
    return out


def _ops(fs: vfs.Filesystem) -> list[Callable[[], object]]:
    r = fs.root_ino

    def many() -> int:
        return fs.lookup(r, "many")

    def first_in_many() -> str:
        for e in fs.readdir(many()):
            return e.name
        return "none"

    return [
        lambda: fs.write(fs.create(r, "new", 0o644), 100, b"n" * 3000),
        lambda: fs.write(fs.lookup(r, "data.bin"), 9000, b"x" * 9000),
        lambda: fs.setattr(fs.lookup(r, "data.bin"), size=1500),
        lambda: fs.unlink(many(), first_in_many()),
        lambda: [fs.create(many(), f"added-{k}", 0o644) for k in range(30)],
        lambda: fs.rename(r, "d", many(), "moved-d"),
        lambda: fs.setxattr(fs.lookup(r, "data.bin"), "user.q", b"q" * 200),
        lambda: fs.removexattr(fs.lookup(r, "data.bin"), "user.k"),
        lambda: fs.mkdir(r, "nd", 0o755),
        lambda: fs.unlink(r, "slow"),
        fs.close,
    ]


def one_input(data: bytes) -> None:
    dev = MemoryDevice(len(data), data=data)
    try:
        fs = open_ext4(dev, readonly=False, ignore_checksums=True)
    except BurrowError:
        return
    for op in _ops(fs):
        try:
            op()
        except BurrowError:
            pass
    dev.close()
