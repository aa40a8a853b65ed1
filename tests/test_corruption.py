"""Corruption test: flip bytes in the metadata of real images, then walk and read everything.

Images come from the real tools (mkfs.ext4/ext2/ext3, mkfs.fat + mcopy, sgdisk, qemu-img).
Each mutated copy goes through the public API (``burrow.open(...).mount()`` and the path
layer) the way a user would explore an unknown image. The rules checked for every copy:

* only ``BurrowError`` subclasses escape (never IndexError, struct.error, RecursionError...);
* the walk ends within a time bound (SIGALRM) and a memory bound (tracemalloc peak);
* the image file is never modified (hash before and after), because read-only is the default.

More rounds: ``BURROW_CORRUPTION_ROUNDS=5000 pytest tests/test_corruption.py``.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import stat
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

import burrow
from burrow.errors import BurrowError
from images import make_ext4, make_fat, make_tree, qemu_img, run

ROUNDS = int(os.environ.get("BURROW_CORRUPTION_ROUNDS", "25"))
WALK_SECONDS = 10  # generous: a CI machine is slow and shared; a hang is far longer
MEMORY_LIMIT = 256 << 20  # peak Python allocations during one walk
MAX_ENTRIES = 3000  # a corrupt tree can be a loop: the test walks at most this many entries
READ_LIMIT = 1 << 20  # bytes read per file


def _walk_and_read(path: Path) -> int:
    """Explore the image like a user would; returns how many entries were visited."""
    seen = 0
    with burrow.open(path) as disk:
        fs = disk.mount()
        for dirpath, dirnames, filenames in fs.walk("/"):
            for name in dirnames + filenames:
                seen += 1
                if seen > MAX_ENTRIES:
                    return seen
                full = dirpath.rstrip("/") + "/" + name
                try:
                    st = fs.lstat(full)
                    if stat.S_ISREG(st.st_mode):
                        with fs.open(full, "rb") as f:
                            f.read(READ_LIMIT)
                    elif stat.S_ISLNK(st.st_mode):
                        fs.readlink(full)
                    for attr in fs.listxattr(full)[:20]:
                        fs.getxattr(full, attr)
                except BurrowError:
                    continue
    return seen


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("corruption-seeds")
    tree = make_tree(base / "tree")
    (tree / "many").mkdir()
    for i in range(150):  # enough entries for an htree / several directory clusters
        (tree / "many" / f"file-with-a-long-name-{i:04d}.txt").write_text(f"{i}\n")
    (tree / "sparse.bin").unlink(missing_ok=True)
    images: dict[str, Path] = {}
    images["ext4"] = make_ext4(base / "ext4.img", tree, size="8M")
    images["ext2"] = make_ext4(base / "ext2.img", tree, size="8M", fstype="ext2")
    images["ext4-inline"] = make_ext4(
        base / "inline.img", tree, size="8M", options=["-O", "inline_data,^has_journal"]
    )
    images["fat16"] = make_fat(base / "fat16.img", tree, size_kib=16384, fat_bits=16)
    images["fat12"] = make_fat(base / "fat12.img", tree, size_kib=2880, fat_bits=12)
    qcow = base / "ext4.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", images["ext4"], qcow)
    images["qcow2"] = qcow
    gpt = base / "gpt.img"
    with open(gpt, "wb") as f:
        f.truncate(12 << 20)
    run(["sgdisk", "-o", "-n", "1:2048:+9M", "-t", "1:8300", "-c", "1:root", gpt])
    with open(gpt, "r+b") as f, open(images["ext4"], "rb") as src:
        f.seek(2048 * 512)
        f.write(src.read())
    images["gpt"] = gpt
    return images


def _regions(kind: str, size: int) -> list[tuple[int, int]]:
    """Where the metadata lives in these small images (most mutations land there)."""
    if kind == "gpt":
        return [(0, 34 * 512), (size - 33 * 512, 33 * 512), (2048 * 512, 300 * 1024)]
    if kind == "qcow2":
        return [(0, 64 * 1024)]
    return [(0, 300 * 1024)]


def _mutations(data: bytes, kind: str, rng: random.Random) -> Iterator[bytes]:
    regions = _regions(kind, len(data))
    for _ in range(ROUNDS):
        buf = bytearray(data)
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.85:
                start, length = rng.choice(regions)
                pos = min(len(buf) - 1, start + rng.randrange(length))
            else:
                pos = rng.randrange(len(buf))
            if rng.random() < 0.6:
                buf[pos] ^= 1 << rng.randrange(8)
            else:
                buf[pos] = rng.choice([0, 0xFF, 0x80, 1, rng.randrange(256)])
        if rng.random() < 0.05:
            del buf[rng.randrange(len(buf)) :]
        yield bytes(buf)


@pytest.fixture
def alarm() -> Iterator[None]:
    def _timeout(signum: int, frame: object) -> None:
        raise TimeoutError(f"a walk took more than {WALK_SECONDS}s: a hang")

    old = signal.signal(signal.SIGALRM, _timeout)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.tool("mkfs.ext4", "mkfs.fat", "mcopy", "qemu-img", "sgdisk")
@pytest.mark.parametrize("kind", ["ext4", "ext2", "ext4-inline", "fat16", "fat12", "qcow2", "gpt"])
def test_corrupt_images_fail_cleanly(
    kind: str, seeds: dict[str, Path], tmp_path: Path, alarm: None
) -> None:
    original = seeds[kind].read_bytes()
    # The pristine image must read completely.
    assert _walk_and_read(seeds[kind]) > 10
    rng = random.Random(f"corrupt-{kind}")
    target = tmp_path / ("image.qcow2" if kind == "qcow2" else "image.img")
    outcomes = {"ok": 0, "refused": 0}
    for data in _mutations(original, kind, rng):
        target.write_bytes(data)
        before = hashlib.sha256(data).hexdigest()
        tracemalloc.start()
        signal.alarm(WALK_SECONDS)
        try:
            _walk_and_read(target)
            outcomes["ok"] += 1
        except BurrowError:
            outcomes["refused"] += 1
        finally:
            signal.alarm(0)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert peak < MEMORY_LIMIT, f"walk of a corrupt {kind} image peaked at {peak} bytes"
        after = hashlib.sha256(target.read_bytes()).hexdigest()
        assert after == before, f"reading a corrupt {kind} image modified it"
    assert sum(outcomes.values()) == ROUNDS
