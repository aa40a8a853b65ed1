"""ext2/3/4 reader: mount a small image from bytes and walk and read everything (bounded).

Seeds are made by ``mkfs.ext4 -d`` / ``mkfs.ext2 -d`` (with an htree directory, inline data,
xattrs, symlinks and a block-mapped file). ``REGIONS`` (filled in by ``seeds``) points the
mutator at the metadata: superblock, group descriptors, the used part of the inode table
and the first directory blocks.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from burrow.block.memory import MemoryDevice
from burrow.errors import BurrowError
from burrow.fs.ext4 import open_ext4
from burrow.fs.ext4.filesystem import Ext4Filesystem

REGIONS: list[tuple[int, int]] = []
MAX_ENTRIES = 300
MAX_READ = 1 << 16


def _tree(root: Path) -> Path:
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "e" / "f.txt").write_bytes(b"hello\n")
    (root / "small").write_bytes(b"x" * 40)
    (root / "data.bin").write_bytes(bytes(range(256)) * 40)
    big = root / "many"
    big.mkdir()
    for i in range(120):
        (big / f"name-{i:04d}-{'y' * (i % 30)}").write_bytes(b"%d" % i)
    os.symlink("d/e/f.txt", root / "fast")
    os.symlink("z" * 80, root / "slow")
    os.setxattr(root / "small", "user.k", b"v" * 30)
    return root


def seeds(tmp_path: Path) -> list[bytes]:
    src = _tree(tmp_path / "src")
    out: list[bytes] = []
    for fstype, opts in (
        ("ext4", ["-b", "1024", "-O", "^has_journal,inline_data", "-N", "200"]),
        ("ext2", ["-b", "1024", "-N", "200"]),
        ("ext4", ["-b", "1024", "-O", "^has_journal,^metadata_csum,^extent,^64bit", "-N", "200"]),
    ):
        img = tmp_path / f"seed-{len(out)}.img"
        subprocess.run(
            [f"mkfs.{fstype}", "-q", "-F", *opts, "-d", src, img, "1M"],
            check=True,
            capture_output=True,
        )
        subprocess.run(["e2fsck", "-fyD", img], capture_output=True)
        out.append(img.read_bytes())
    REGIONS[:] = _regions(out[0])
    return out


def _regions(image: bytes) -> list[tuple[int, int]]:
    fs = open_ext4(MemoryDevice(len(image), data=image))
    bs = fs.block_size
    regions = [(1024, 1024), (fs.desc_block(0) * bs, fs.desc_size * fs.group_count)]
    gd = fs.group_desc(0)
    regions.append((gd.inode_table * bs, fs.inode_size * 140))
    for name in ("many", "d"):
        node = fs.inode(fs.lookup(fs.root_ino, name))
        for lblk in range(2):
            p = fs._map_block(node, lblk)
            if p >= 0:
                regions.append((p * bs, bs))
    return regions


def _walk(fs: Ext4Filesystem) -> None:
    stack = [fs.root_ino]
    seen = 0
    while stack and seen < MAX_ENTRIES:
        ino = stack.pop()
        for ent in fs.readdir(ino):
            seen += 1
            if seen >= MAX_ENTRIES:
                break
            st = fs.getattr(ent.ino)
            for name in fs.listxattr(ent.ino):
                fs.getxattr(ent.ino, name)
            if stat.S_ISDIR(st.st_mode):
                fs.lookup(ino, ent.name)
                stack.append(ent.ino)
            elif stat.S_ISREG(st.st_mode):
                fs.read(ent.ino, 0, MAX_READ)
            elif stat.S_ISLNK(st.st_mode):
                fs.readlink(ent.ino)
    fs.statfs()
    fs.info()


def one_input(data: bytes) -> None:
    dev = MemoryDevice(len(data), data=data)
    try:  # checksums on: most damage stops at the first structure that was hit
        _walk(open_ext4(dev))
    except BurrowError:
        pass
    # checksums off: the structural checks behind them get exercised too
    _walk(open_ext4(dev, ignore_checksums=True))
    dev.close()
