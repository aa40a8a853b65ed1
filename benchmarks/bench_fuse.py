"""FUSE mounts: cold sequential read of a 1 GiB file and ``find -ls`` of a 10k-file tree
through ``burrow mount --ro`` against ``fuse2fs -o ro,fakeroot`` (e2fsprogs' C FUSE driver)
on the same images, in the same run.

"Cold": before every run the kernel's caches are dropped (``echo 3 >
/proc/sys/vm/drop_caches``: the image's pages, the mount's pages, dentries and inodes, so the
FUSE daemon is asked again). The drop is part of the timed call for every contender alike.
Without permission to drop caches the runs are warm and the case name says so.

Kernel caches are dropped; the daemons' own caches (burrow's inode and directory caches,
fuse2fs's block cache) live on between runs of the first two cases. The third case starts a
fresh daemon before every run (its start-up time counts: about 0.4 s of Python for burrow,
milliseconds for fuse2fs), so nothing at all is cached.

A third contender of the read case shows burrow with the kernel's default 128 KiB readahead (what a non-root
mount gets; the daemon raises its mount's readahead to 1 MiB when it may).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.harness import Case

SIZE = 1 << 30
CHUNK = 1 << 20
FILES = 10_000


def _can_drop() -> bool:
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


def _drop() -> None:
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def _big_image(work: Path) -> Path:
    image = work / "fuse-1g.img"
    if image.exists():
        return image
    src = work / "fuse-1g-src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    block = os.urandom(16 << 20)
    with open(src / "big.bin", "wb") as f:
        for _ in range(SIZE // len(block)):
            f.write(block)
    tmp = image.with_suffix(".tmp")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, tmp, "1200M"], check=True,
                   capture_output=True)  # fmt: skip
    tmp.replace(image)
    shutil.rmtree(src)
    return image


def _tree_image(work: Path) -> Path:
    image = work / "fuse-10k.img"
    if image.exists():
        return image
    src = work / "fuse-10k-src"
    shutil.rmtree(src, ignore_errors=True)
    for d in range(100):
        sub = src / f"dir{d:03d}"
        sub.mkdir(parents=True)
        for i in range(FILES // 100):
            (sub / f"file-{i:04d}.txt").write_bytes(b"%d\n" % i)
    tmp = image.with_suffix(".tmp")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-N", "20000", "-d", src, tmp, "128M"],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(["e2fsck", "-fyD", tmp], capture_output=True)  # index the directories
    tmp.replace(image)
    shutil.rmtree(src)
    return image


def _burrow(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "burrow", *args], check=True, capture_output=True)


def _bdi(mnt: Path) -> str:
    real = os.path.realpath(mnt)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == real:
            return fields[2]
    raise RuntimeError(f"{mnt} is not mounted")


class _Mounts:
    """The three mounts of one image, made in setup and removed in teardown."""

    def __init__(self, image: Path) -> None:
        self.image = image
        self.points: dict[str, Path] = {}

    def setup(self) -> None:
        base = Path(tempfile.mkdtemp(prefix="burrow-bench-fuse-"))
        for who in ("burrow", "burrow-ra128", "fuse2fs"):
            (base / who).mkdir()
            self.points[who] = base / who
        _burrow("mount", "--ro", os.fspath(self.image), os.fspath(self.points["burrow"]))
        _burrow("mount", "--ro", os.fspath(self.image), os.fspath(self.points["burrow-ra128"]))
        os.listdir(self.points["burrow-ra128"])  # the daemon sets 1 MiB at its first request
        bdi = _bdi(self.points["burrow-ra128"])
        with contextlib.suppress(OSError):
            Path(f"/sys/class/bdi/{bdi}/read_ahead_kb").write_text("128\n")
        subprocess.run(["fuse2fs", "-o", "ro,fakeroot", self.image, self.points["fuse2fs"]],
                       check=True, capture_output=True)  # fmt: skip
        time.sleep(0.2)

    def remount(self, who: str) -> None:
        """A fresh daemon: nothing cached in the FUSE server either."""
        point = self.points[who]
        if who.startswith("burrow"):
            _burrow("umount", os.fspath(point))
            _burrow("mount", "--ro", os.fspath(self.image), os.fspath(point))
        else:
            subprocess.run(["fusermount3", "-u", point], check=True, capture_output=True)
            subprocess.run(["fuse2fs", "-o", "ro,fakeroot", self.image, point], check=True,
                           capture_output=True)  # fmt: skip

    def teardown(self) -> None:
        for who, point in self.points.items():
            if who.startswith("burrow"):
                subprocess.run([sys.executable, "-m", "burrow", "umount", point],
                               capture_output=True)  # fmt: skip
            else:
                subprocess.run(["fusermount3", "-u", point], capture_output=True)
            with contextlib.suppress(OSError):
                point.rmdir()
        with contextlib.suppress(OSError):
            next(iter(self.points.values())).parent.rmdir()


def cases(work: Path) -> list[Case]:
    if shutil.which("fuse2fs") is None or not Path("/dev/fuse").exists():
        return []
    cold = _can_drop()
    tag = "cold" if cold else "warm (drop_caches not permitted)"
    out: list[Case] = []

    big = _Mounts(_big_image(work))

    def reader(who: str) -> Callable[[], float]:
        def run() -> float:
            _drop()
            buf = bytearray(CHUNK)
            total = 0
            with open(big.points[who] / "big.bin", "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    total += n
            assert total == SIZE
            return total

        return run

    out.append(
        Case(
            f"fuse: {tag} sequential read of a 1 GiB file (ro mount)",
            "bytes",
            {
                "burrow": reader("burrow"),
                "fuse2fs -o ro,fakeroot": reader("fuse2fs"),
                "burrow, 128 KiB readahead": reader("burrow-ra128"),
            },
            target=">= 0.8x fuse2fs",
            setup=big.setup,
            teardown=big.teardown,
        )
    )

    tree = _Mounts(_tree_image(work))

    def finder(who: str, fresh: bool = False) -> Callable[[], float]:
        def run() -> float:
            if fresh:
                tree.remount(who)
            _drop()
            proc = subprocess.run(["find", tree.points[who], "-ls"], capture_output=True,
                                  check=True)  # fmt: skip
            lines = proc.stdout.count(b"\n")
            assert lines >= FILES, lines
            return lines

        return run

    out.append(
        Case(
            f"fuse: {tag} find -ls of a 10k-file tree (ro mount)",
            "ops",
            {"burrow": finder("burrow"), "fuse2fs -o ro,fakeroot": finder("fuse2fs")},
            target=">= 0.8x fuse2fs",
            setup=tree.setup,
            teardown=tree.teardown,
        )
    )
    out.append(
        Case(
            f"fuse: {tag} find -ls of a 10k-file tree, fresh daemon per run (mount time included)",
            "ops",
            {
                "burrow": finder("burrow", fresh=True),
                "fuse2fs -o ro,fakeroot": finder("fuse2fs", fresh=True),
            },
            target="info: includes umount + mount (two Python start-ups for burrow)",
            setup=tree.setup,
            teardown=tree.teardown,
        )
    )
    return out
