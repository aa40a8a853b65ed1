"""Fuzz the disk layer end to end: partition table -> filesystem probing and selection ->
``inspect`` -> path walk and reads through ``PathFS`` — on a small GPT disk made by sgdisk,
mkfs.fat + mcopy and mkfs.ext4 -d, so mutations land on real tables and superblocks.

Anything but a BurrowError from these layers together (selection, the root heuristics,
fstab matching, symlink resolution, copy loops) is a bug.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from burrow.block.memory import MemoryDevice
from burrow.disk import Disk
from burrow.errors import BurrowError
from burrow.inspect import inspect_disk

MiB = 1 << 20
SIZE = 5 * MiB
# protective MBR, GPT header and entries, the FAT boot sector + FAT, the ext2 superblock + GDT
REGIONS = [(0, 512), (512, 512), (1024, 1024), (MiB, 2048), (2 * MiB, 4096)]
MAX_FILES = 200


def seeds(tmp_path: Path) -> list[bytes]:
    for tool in ("sgdisk", "mkfs.fat", "mcopy", "mkfs.ext4"):
        if shutil.which(tool) is None:
            import pytest

            pytest.skip(f"needs {tool}")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text('NAME="Fuzz"\nID=fuzz\n')
    (tree / "etc" / "fstab").write_text("LABEL=root / ext2 defaults 0 1\nLABEL=EFI /boot vfat\n")
    (tree / "etc" / "hostname").write_text("fuzz\n")
    os.symlink("../etc/hostname", tree / "etc" / "link")
    (tree / "data").write_bytes(os.urandom(5000))
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(SIZE)

    def run(*cmd: str | os.PathLike[str]) -> None:
        subprocess.run([os.fspath(c) for c in cmd], check=True, capture_output=True,
                       env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})  # fmt: skip

    run("sgdisk", "-n1:2048:+1M", "-t1:ef00", "-c1:ESP", "-n2:0:+2M", "-t2:8300", "-c2:root", disk)
    esp, root = tmp_path / "esp", tmp_path / "root"
    with open(esp, "wb") as f:
        f.truncate(MiB)
    run("mkfs.fat", "-n", "EFI", esp)
    run("mcopy", "-i", esp, tree / "etc" / "os-release", "::/OS.TXT")
    run("mkfs.ext4", "-q", "-F", "-t", "ext2", "-b", "1024", "-L", "root", "-d", tree, root, "2M")
    with open(disk, "r+b") as f:
        f.seek(MiB)
        f.write(esp.read_bytes())
        f.seek(2 * MiB)
        f.write(root.read_bytes())
    return [disk.read_bytes()]


def one_input(data: bytes) -> None:
    dev = MemoryDevice(max(len(data), 512), data=bytes(data).ljust(512, b"\0"))
    with Disk.from_device(dev, name="fuzz") as disk:
        disk.filesystems()
        inspect_disk(disk)
        for sel in (None, 1, 2, "EFI", "root"):
            try:
                fs = disk.mount(sel)
            except BurrowError:
                continue
            n = 0
            for dirpath, _dirs, files in fs.walk("/", followlinks=True):
                for name in files:
                    n += 1
                    if n > MAX_FILES:
                        return
                    path = dirpath.rstrip("/") + "/" + name
                    try:
                        if fs.is_symlink(path):
                            fs.readlink(path)
                        fs.read_bytes(path)[:1]
                    except BurrowError:
                        continue
