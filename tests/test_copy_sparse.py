"""Copies keep holes at 4 KiB granularity, like ``cp --sparse=auto``: zeros are not written.

Oracles: the kernel's block counts (``st_blocks``) on the host, ``debugfs`` on the image.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from burrow.fs.copy import HOLE_BLOCK, data_runs
from images import make_ext4


def test_data_runs() -> None:
    z = bytes(HOLE_BLOCK)
    d = b"x" * HOLE_BLOCK
    assert data_runs(b"") == []
    assert data_runs(z * 256) == []
    assert data_runs(d + z + z + d) == [(0, HOLE_BLOCK), (3 * HOLE_BLOCK, 4 * HOLE_BLOCK)]
    assert data_runs(z + b"\0" * 10 + b"y") == [(HOLE_BLOCK, HOLE_BLOCK + 11)]
    # a zero run that is not block-aligned stays data
    assert data_runs(b"a" + z + b"a") == [(0, HOLE_BLOCK + 2)]
    assert data_runs(memoryview(d + z)[HOLE_BLOCK:]) == []


def _sparse_source(path: Path) -> bytes:
    with open(path, "wb") as f:
        f.truncate(8 << 20)
        f.seek(3 << 20)
        f.write(os.urandom(8192))
        f.seek((5 << 20) + 100)
        f.write(b"tail")
    return path.read_bytes()


@pytest.mark.tool("mkfs.ext4", "debugfs")
def test_cp_in_and_out_keep_small_holes(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    image = make_ext4(tmp_path / "img", tmp_path / "empty", size="32M")
    src = tmp_path / "sparse.bin"
    content = _sparse_source(src)
    assert os.stat(src).st_blocks * 512 <= 64 << 10
    burrow = [sys.executable, "-m", "burrow"]
    subprocess.run([*burrow, "cp", str(src), f"{image}:/sparse.bin"], check=True)
    stat_out = subprocess.run(
        ["debugfs", "-R", "stat /sparse.bin", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    blockcount = int(re.search(r"Blockcount: (\d+)", stat_out).group(1))  # type: ignore[union-attr]
    assert blockcount * 512 <= 64 << 10, stat_out  # 12 KiB of data (+ maybe an extent block)
    out = tmp_path / "out.bin"
    subprocess.run([*burrow, "cp", f"{image}:/sparse.bin", str(out)], check=True)
    assert out.read_bytes() == content
    assert os.stat(out).st_blocks * 512 <= 64 << 10
    subprocess.run(["e2fsck", "-fn", str(image)], check=True, capture_output=True)


@pytest.mark.tool("mkfs.ext4", "debugfs", "tar")
def test_tar_in_keeps_holes(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    image = make_ext4(tmp_path / "img", tmp_path / "empty", size="32M")
    tree = tmp_path / "tree"
    tree.mkdir()
    content = _sparse_source(tree / "sparse.bin")
    tarball = tmp_path / "t.tar"
    subprocess.run(["tar", "-C", str(tree), "-cf", str(tarball), "."], check=True)
    with open(tarball, "rb") as stdin:
        subprocess.run(
            [sys.executable, "-m", "burrow", "tar-in", f"{image}:/"], stdin=stdin, check=True
        )
    stat_out = subprocess.run(
        ["debugfs", "-R", "stat /sparse.bin", str(image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    blockcount = int(re.search(r"Blockcount: (\d+)", stat_out).group(1))  # type: ignore[union-attr]
    assert blockcount * 512 <= 64 << 10, stat_out
    assert re.search(r"Size: (\d+)", stat_out).group(1) == str(len(content))  # type: ignore[union-attr]
    dumped = tmp_path / "dumped"
    subprocess.run(["debugfs", "-R", f"dump /sparse.bin {dumped}", str(image)], check=True)
    assert dumped.read_bytes() == content
    subprocess.run(["e2fsck", "-fn", str(image)], check=True, capture_output=True)
