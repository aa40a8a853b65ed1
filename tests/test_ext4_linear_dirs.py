"""Lookups in big linear (non-htree) directories, as ``mkfs.ext4 -d`` writes every directory.

A lookup in a linear directory is a scan; a path walk over such a directory (``ls -l``,
``tar-out``: one lookup per entry) must not rescan it per entry. Read-only opens keep a
bounded name map per big directory; damaged directories fall back to scanning.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from burrow.block.memory import MemoryDevice
from burrow.block.raw import RawDevice
from burrow.errors import NotFound
from burrow.fs.ext4 import open_ext4
from burrow.fs.ext4.filesystem import Ext4Filesystem
from images import make_ext4

N = 3000


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("lineardir")
    big = base / "tree" / "big"
    big.mkdir(parents=True)
    for i in range(N):
        (big / f"file-{i:05d}").write_bytes(str(i).encode())
    return make_ext4(base / "lin.img", base / "tree", size="32M", options=["-O", "^dir_index"])


@pytest.mark.tool("mkfs.ext4", "debugfs")
def test_every_lookup_answers_and_scans_once(image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scans = 0
    real = Ext4Filesystem._iter_dir

    def counting(self: Ext4Filesystem, node: object) -> object:
        nonlocal scans
        scans += 1
        return real(self, node)  # type: ignore[arg-type]

    monkeypatch.setattr(Ext4Filesystem, "_iter_dir", counting)
    with RawDevice(image) as dev:
        fs = open_ext4(dev)
        big = fs.lookup(fs.root_ino, "big")
        listing = {e.name: e.ino for e in fs.readdir(big)}
        assert len(listing) == N
        for name, ino in listing.items():
            assert fs.lookup(big, name) == ino
        with pytest.raises(NotFound):
            fs.lookup(big, "file-99999")
        assert scans <= 3, f"{scans} scans of the directory for {N} lookups"
    # the oracle: debugfs agrees on a sample of inode numbers
    for i in (0, N // 2, N - 1):
        out = subprocess.run(
            ["debugfs", "-R", f"stat /big/file-{i:05d}", str(image)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"Inode: {listing[f'file-{i:05d}']} " in out


@pytest.mark.tool("mkfs.ext4")
def test_damaged_block_falls_back_to_scanning(image: Path) -> None:
    data = bytearray(image.read_bytes())
    with RawDevice(image) as dev:
        fs = open_ext4(dev)
        big = fs.lookup(fs.root_ino, "big")
        names = [e.name for e in fs.readdir(big)]
        node = fs.inode(big)
        _starts, runs = fs._runs(node)
        first_phys = runs[0][2]
        last_phys = runs[-1][2] + runs[-1][1] - 1
        bs = fs.block_size
    # break a record in the directory's last block: names in earlier blocks still resolve
    data[last_phys * bs + 4 : last_phys * bs + 6] = b"\x00\x00"  # rec_len 0
    fs = open_ext4(MemoryDevice(len(data), data=bytes(data)), ignore_checksums=True)
    big = fs.lookup(fs.root_ino, "big")
    assert first_phys != last_phys
    assert fs.lookup(big, names[0]) > 0
