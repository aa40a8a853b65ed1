"""ext4 write: populate a new image from a 10k-file, 300 MB tree (burrow mkfs + populate vs
``mkfs.ext4 -d``, and ``virt-make-fs`` when libguestfs is installed), and write a 1 GiB file
into an image."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from benchmarks.harness import Case
from burrow.block.raw import RawDevice
from burrow.fs.ext4 import open_ext4
from burrow.fs.ext4.mkfs import mkfs
from burrow.fs.ext4.populate import populate

FILES = 10_000
TREE_BYTES = 300 << 20
IMAGE_SIZE = 1 << 30
BIG = 1 << 30
CHUNK = 16 << 20


def _tree(work: Path) -> tuple[Path, int]:
    src = work / "ext4w-src"
    marker = src / ".done"
    if not marker.exists():
        shutil.rmtree(src, ignore_errors=True)
        blob = os.urandom(1 << 20)
        small = (TREE_BYTES - (100 << 20)) // FILES  # ~20 KiB each, plus a few big files
        for i in range(FILES):
            d = src / f"d{i // 250:03d}" / f"s{(i // 25) % 10}"
            if i % 25 == 0:
                d.mkdir(parents=True, exist_ok=True)
            off = (i * 4099) % (len(blob) - small)
            (d / f"file-{i:05d}.dat").write_bytes(blob[off : off + small])
        for k in range(4):
            (src / f"big{k}.bin").write_bytes(blob * 25)
        marker.write_text("")
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    return src, total


def _fresh(path: Path, size: int) -> None:
    if path.exists():
        path.unlink()
    with open(path, "wb") as f:
        f.truncate(size)


def cases(work: Path) -> list[Case]:
    src, total = _tree(work)
    img_b = work / "ext4w-burrow.img"
    img_m = work / "ext4w-mke2fs.img"
    img_v = work / "ext4w-virt.img"

    def burrow_populate() -> float:
        _fresh(img_b, IMAGE_SIZE)
        with RawDevice(img_b, readonly=False) as dev:
            mkfs(dev)
            fs = open_ext4(dev, readonly=False)
            populate(fs, str(src))
            fs.close()
        return total

    def mke2fs_d() -> float:
        _fresh(img_m, IMAGE_SIZE)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(img_m)], check=True)
        return total

    populate_contenders = {"burrow": burrow_populate, "mkfs.ext4 -d": mke2fs_d}
    if shutil.which("virt-make-fs"):

        def virt_make_fs() -> float:
            if img_v.exists():
                img_v.unlink()
            subprocess.run(
                ["virt-make-fs", "--type=ext4", "--size=1G", str(src), str(img_v)],
                check=True,
                capture_output=True,
            )
            return total

        populate_contenders["virt-make-fs"] = virt_make_fs

    img_w = work / "ext4w-big.img"
    data = os.urandom(CHUNK)

    def write_big() -> float:
        _fresh(img_w, BIG + (256 << 20))
        with RawDevice(img_w, readonly=False) as dev:
            mkfs(dev)
            fs = open_ext4(dev, readonly=False)
            ino = fs.create(fs.root_ino, "big", 0o644)
            mv = memoryview(data)
            for off in range(0, BIG, CHUNK):
                fs.write(ino, off, mv)
            fs.close()
        return BIG

    def plain_file_write() -> float:
        # the same bytes into a plain host file, fsynced as burrow's close does: the ceiling
        path = work / "ext4w-plain.bin"
        with open(path, "wb") as f:
            for _ in range(BIG // CHUNK):
                f.write(data)
            os.fsync(f.fileno())
        path.unlink()
        return BIG

    return [
        Case(
            "ext4 write: populate 10k files / 300 MB (mkfs + copy)",
            "bytes",
            populate_contenders,
            target="<= 3x mkfs.ext4 -d",
        ),
        Case(
            "ext4 write: 1 GiB file into a new image",
            "bytes",
            {"burrow": write_big, "plain file + fsync": plain_file_write},
            target=">= 500 MB/s",
        ),
    ]
