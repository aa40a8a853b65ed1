"""The Linux vfat driver as an oracle (root, loop mounts, a kernel with vfat)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fat_helpers import fs_tree, fsck_clean, host_tree

from burrow.block.raw import RawDevice
from burrow.fs.fat import open_fat
from burrow.fs.fat.mkfs import mkfs

pytestmark = [pytest.mark.root, pytest.mark.tool("mount", "umount", "fsck.fat")]


def _kernel_has_vfat() -> bool:
    subprocess.run(["modprobe", "vfat"], capture_output=True, check=False)
    try:
        return "vfat" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    if not _kernel_has_vfat():
        pytest.skip("this kernel has no vfat driver")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    yield mnt
    subprocess.run(["umount", mnt], capture_output=True, check=False)


def _mount(img: Path, mnt: Path, *opts: str) -> None:
    options = ",".join(("loop", "tz=UTC", "utf8", *opts))
    subprocess.run(["mount", "-t", "vfat", "-o", options, img, mnt], check=True)


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_kernel_reads_what_we_wrote(tmp_path: Path, mountpoint: Path, bits: int) -> None:
    img = tmp_path / "ours.img"
    with open(img, "wb") as f:
        f.truncate({12: 4 << 20, 16: 20 << 20, 32: 40 << 20}[bits])
    with RawDevice(img, readonly=False) as dev:
        mkfs(dev, fat_bits=bits, label="KERNEL")
        with open_fat(dev, readonly=False) as fs:
            d = fs.mkdir(fs.root_ino, "Mixed Case Dir", 0o755)
            for i in range(40):
                ino = fs.create(d, f"long file name {i:02d} ünï.txt", 0o644)
                fs.write(ino, 0, os.urandom(i * 333))
            emoji = fs.create(fs.root_ino, "outside the BMP \U0001f600.txt", 0o644)
            fs.write(emoji, 0, b"surrogate pair in UTF-16\n")
            ino = fs.create(fs.root_ino, "readme.txt", 0o644)
            fs.write(ino, 0, b"hello\n")
            fs.setattr(ino, mtime_ns=1_600_000_000 * 10**9)
            expected = fs_tree(fs)
    fsck_clean(img)
    _mount(img, mountpoint, "ro")
    assert host_tree(mountpoint) == expected
    assert (mountpoint / "readme.txt").stat().st_mtime_ns == 1_600_000_000 * 10**9
    assert (mountpoint / "README.TXT").exists()  # case-insensitive in the kernel too


@pytest.mark.tool("mkfs.fat")
def test_we_read_what_the_kernel_wrote(tmp_path: Path, mountpoint: Path) -> None:
    img = tmp_path / "kernel.img"
    with open(img, "wb") as f:
        f.truncate(40 << 20)
    subprocess.run(["mkfs.fat", "-F", "32", img], check=True, capture_output=True)
    _mount(img, mountpoint)
    try:
        (mountpoint / "Deep" / "Tree" / "Of Dirs").mkdir(parents=True)
        for i in range(200):
            (mountpoint / "Deep" / f"kernel long name {i:03d}.bin").write_bytes(bytes([i]) * i)
        (mountpoint / "Deep" / "Tree" / "Of Dirs" / "名前.txt").write_text("unicode\n")
        expected = host_tree(mountpoint)
    finally:
        subprocess.run(["umount", mountpoint], check=True)
    with RawDevice(img) as dev, open_fat(dev) as fs:
        assert fs_tree(fs) == expected
