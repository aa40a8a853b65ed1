"""``burrow mount IMAGE[@PART]``: image filesystems through FUSE (the disk API wiring of
burrow.fuse.source). Standard tools write through the mount; after ``burrow umount`` the
image passes e2fsck -fn / fsck.fat -n and a kernel loop mount shows the same tree."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from disk_helpers import MiB, burrow_cli, esp_tree, gpt_disk, os_tree, snapshot

pytestmark = [pytest.mark.fuse, pytest.mark.tool("mkfs.ext4", "mkfs.fat", "mcopy", "sgdisk")]


@contextmanager
def mounted(source: str, point: Path, *extra: str) -> Iterator[Path]:
    point.mkdir(exist_ok=True)
    burrow_cli("mount", *extra, source, str(point))
    try:
        yield point
    finally:
        burrow_cli("umount", str(point), check=False)


def part_file(disk: Path, offset: int, size: int, out: Path) -> Path:
    with open(disk, "rb") as f:
        f.seek(offset)
        out.write_bytes(f.read(size))
    return out


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    return gpt_disk(tmp_path, os_tree(tmp_path / "root"), esp_tree(tmp_path / "esp"))


def test_read_write_ext4_root_commits_at_unmount(disk: Path, tmp_path: Path) -> None:
    src = os_tree(tmp_path / "src")
    before = disk.read_bytes()
    with mounted(str(disk), tmp_path / "mnt") as mnt:
        subprocess.run(["cp", "-a", f"{src}/.", str(mnt / "copy")], check=True)
        subprocess.run(["tar", "-C", str(mnt / "copy"), "-cf", str(tmp_path / "t.tar"), "."],
                       check=True)  # fmt: skip
        (mnt / "etc" / "hostname").write_text("changed\n")
        assert disk.read_bytes() == before  # nothing reaches the image before unmount
    part = part_file(disk, 33 * MiB, 48 * MiB, tmp_path / "root.part")
    proc = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    assert burrow_cli("cat", f"{disk}:/etc/hostname").stdout == b"changed\n"
    if os.geteuid() == 0:
        kmnt = tmp_path / "kernel"
        kmnt.mkdir()
        subprocess.run(["mount", "-o", "ro,loop", str(part), str(kmnt)], check=True)
        try:
            assert snapshot(kmnt / "copy") == snapshot(src)
        finally:
            subprocess.run(["umount", str(kmnt)], check=False)


@pytest.mark.tool("fsck.fat", "mtype")
def test_fat_partition_by_label(disk: Path, tmp_path: Path) -> None:
    with mounted(f"{disk}@EFI", tmp_path / "mnt") as mnt:
        (mnt / "EFI" / "new").mkdir()
        (mnt / "EFI" / "new" / "grub.cfg").write_bytes(b"set timeout=0\n" * 1000)
        assert sorted(os.listdir(mnt)) == ["EFI", "loader.conf"]
    part = part_file(disk, MiB, 32 * MiB, tmp_path / "esp.part")
    subprocess.run(["fsck.fat", "-n", str(part)], check=True, capture_output=True)
    got = subprocess.run(["mtype", "-i", str(part), "::/EFI/new/grub.cfg"], capture_output=True)
    assert got.stdout == b"set timeout=0\n" * 1000


def test_read_only_mount_matches_kernel_and_refuses_writes(disk: Path, tmp_path: Path) -> None:
    before = disk.read_bytes()
    with mounted(str(disk), tmp_path / "mnt", "--ro") as mnt:
        with pytest.raises(OSError) as info:
            (mnt / "new").write_text("x")
        assert info.value.errno == errno.EROFS
        ours = snapshot(mnt)
        if os.geteuid() == 0:
            part = part_file(disk, 33 * MiB, 48 * MiB, tmp_path / "root.part")
            kmnt = tmp_path / "kernel"
            kmnt.mkdir()
            subprocess.run(["mount", "-o", "ro,loop", str(part), str(kmnt)], check=True)
            try:
                assert ours == snapshot(kmnt)
            finally:
                subprocess.run(["umount", str(kmnt)], check=False)
    assert disk.read_bytes() == before


@pytest.mark.root
def test_block_mode_of_a_partition_for_losetup(disk: Path, tmp_path: Path) -> None:
    exposed = tmp_path / "part2"
    exposed.touch()
    burrow_cli("mount", "--block", "--ro", f"{disk}@2", str(exposed))
    try:
        assert exposed.stat().st_size == 48 * MiB
        loopdev = subprocess.run(["losetup", "-f", "--show", "-r", str(exposed)],
                                 capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        kmnt = tmp_path / "kernel"
        kmnt.mkdir()
        try:
            subprocess.run(["mount", "-o", "ro", loopdev, str(kmnt)], check=True)
            try:
                assert (kmnt / "etc" / "hostname").read_text() == "testhost\n"
            finally:
                subprocess.run(["umount", str(kmnt)], check=False)
        finally:
            subprocess.run(["losetup", "-d", loopdev], check=False)
    finally:
        burrow_cli("umount", str(exposed), check=False)
