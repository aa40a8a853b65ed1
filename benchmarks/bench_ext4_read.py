"""ext4 read side: open + small read, 1 GiB sequential read, walk + stat of 50k files.

Peers: ``debugfs -R "dump ..."`` / ``cat``, ``find -ls`` on a kernel loop mount (root only),
and dissect.extfs when it is installed (``pip install --target benchmarks/work/peers
dissect.extfs``; the runner looks there, nothing is added to burrow's dependencies).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import Case
from burrow.block.raw import RawDevice
from burrow.fs.ext4 import open_ext4

SIZE = 1 << 30
CHUNK = 16 << 20
FILES = 50_000


def _mkfs(image: Path, src: Path, size: str, *opts: str) -> None:
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", *opts, "-d", os.fspath(src), os.fspath(image), size],
        check=True,
        capture_output=True,
    )


def _big_image(work: Path) -> Path:
    image = work / "ext4-1g.img"
    if image.exists():
        return image
    src = work / "ext4-1g-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "small.txt").write_bytes(b"x" * 100)
    block = os.urandom(CHUNK)
    with open(src / "big.bin", "wb") as f:
        for _ in range(SIZE // CHUNK):
            f.write(block)
    _mkfs(image, src, "1200M", "-b", "4096")
    shutil.rmtree(src)
    return image


def _tree_image(work: Path) -> Path:
    image = work / "ext4-50k.img"
    if image.exists():
        return image
    src = work / "ext4-50k-src"
    if src.exists():
        shutil.rmtree(src)
    for d in range(250):
        sub = src / f"dir{d:03d}" / "sub"
        sub.mkdir(parents=True)
        for i in range(FILES // 250):
            (sub if i % 2 else sub.parent).joinpath(f"file-{i:04d}").write_bytes(b"%d" % i)
    _mkfs(image, src, "400M", "-b", "4096", "-N", "120000")
    subprocess.run(["e2fsck", "-fyD", os.fspath(image)], capture_output=True)
    shutil.rmtree(src)
    return image


def _dissect(work: Path) -> Any:
    peers = work / "peers"
    if peers.exists() and str(peers) not in sys.path:
        sys.path.append(str(peers))
    try:
        from dissect.extfs import ExtFS  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return ExtFS


def _can_mount() -> bool:
    return os.geteuid() == 0 and Path("/dev/loop-control").exists()


def cases(work: Path) -> list[Case]:
    big = _big_image(work)
    tree = _tree_image(work)
    extfs = _dissect(work)
    out: list[Case] = []

    # -- open + read a 100-byte file ----------------------------------------------------
    def b_small() -> float:
        with RawDevice(big) as dev:
            fs = open_ext4(dev)
            ino = fs.lookup(fs.root_ino, "small.txt")
            assert len(fs.read(ino, 0, 4096)) == 100
        return 1

    small: dict[str, Callable[[], float]] = {"burrow": b_small}
    if extfs is not None:

        def d_small() -> float:
            with open(big, "rb") as fh:
                assert len(extfs(fh).get("/small.txt").open().read()) == 100
            return 1

        small["dissect.extfs"] = d_small

    def debugfs_cat() -> float:
        subprocess.run(["debugfs", "-R", "cat /small.txt", big], check=True, capture_output=True)
        return 1

    small["debugfs cat (process)"] = debugfs_cat
    out.append(Case("ext4: open + read a 100-byte file", "s", small, target="<= 1 ms"))

    # -- sequential read ------------------------------------------------------------------
    def b_seq() -> float:
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        total = 0
        with RawDevice(big) as dev:
            fs = open_ext4(dev)
            ino = fs.lookup(fs.root_ino, "big.bin")
            while n := fs.readinto(ino, total, mv):
                total += n
        assert total == SIZE
        return total

    seq: dict[str, Callable[[], float]] = {"burrow": b_seq}
    if extfs is not None:

        def d_seq() -> float:
            total = 0
            with open(big, "rb") as fh:
                f = extfs(fh).get("/big.bin").open()
                while chunk := f.read(CHUNK):
                    total += len(chunk)
            return total

        seq["dissect.extfs"] = d_seq

    def debugfs_dump() -> float:
        subprocess.run(
            ["debugfs", "-R", "dump /big.bin /dev/null", big], check=True, capture_output=True
        )
        return SIZE

    seq["debugfs dump"] = debugfs_dump
    out.append(Case("ext4: sequential read of a 1 GiB file", "bytes", seq, target=">= 1.5 GB/s"))

    # -- walk + stat ------------------------------------------------------------------------
    def b_walk() -> float:
        count = 0
        with RawDevice(tree) as dev:
            fs = open_ext4(dev)
            stack = [fs.root_ino]
            while stack:
                ino = stack.pop()
                for ent in fs.readdir(ino):
                    st = fs.getattr(ent.ino)
                    count += 1
                    if st.is_dir():
                        stack.append(ent.ino)
        return count

    walk: dict[str, Callable[[], float]] = {"burrow": b_walk}
    mnt_holder: list[Path] = []
    if extfs is not None:

        def d_walk() -> float:
            count = 0
            with open(tree, "rb") as fh:
                fs = extfs(fh)
                stack = [fs.get("/")]
                while stack:
                    node = stack.pop()
                    for name, child in node.listdir().items():
                        if name in (".", ".."):
                            continue
                        # what a stat needs: the inode's mode, size, times
                        _ = (child.inode.i_mode, child.size, child.mtime_ns, child.ctime_ns)
                        count += 1
                        if child.filetype == stat.S_IFDIR:
                            stack.append(child)
            return count

        walk["dissect.extfs"] = d_walk

    setup = teardown = None
    if _can_mount():

        def setup() -> None:
            mnt = Path(tempfile.mkdtemp(prefix="burrow-bench-"))
            subprocess.run(["mount", "-o", "ro,loop", tree, mnt], check=True)
            mnt_holder.append(mnt)

        def teardown() -> None:
            for mnt in mnt_holder:
                subprocess.run(["umount", mnt], check=False)
                with contextlib.suppress(OSError):
                    mnt.rmdir()
            mnt_holder.clear()

        def find_ls() -> float:
            proc = subprocess.run(
                ["find", mnt_holder[0], "-mindepth", "1", "-ls"], check=True, capture_output=True
            )
            return proc.stdout.count(b"\n")

        walk["find -ls (kernel loop mount)"] = find_ls
    out.append(
        Case(
            "ext4: walk + stat of a 50k-file tree",
            "ops",
            walk,
            target="within 2x of find -ls",
            setup=setup,
            teardown=teardown,
        )
    )
    return out
