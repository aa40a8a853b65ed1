"""qcow2: sequential and random reads, and writes, side by side with qemu-img.

* Sequential read of a 1 GiB uncompressed qcow2 (page cache): burrow reading everything in
  4 MiB ``preadinto`` calls vs ``qemu-img convert -O raw`` of the same image (output on tmpfs,
  the command users run) and vs ``qemu-img convert`` into qemu's ``null-co`` driver (qemu's
  read side alone). Targets: >= 1 GB/s and >= 0.7x ``qemu-img convert -O raw``.
* Random 4 KiB reads with a warm L2 cache: burrow qcow2 vs burrow raw on the same bytes (the
  ratio is qcow2's mapping overhead); the case asserts no metadata reads in steady state.
* Sequential write of 256 MiB into a new image: burrow vs ``qemu-img convert -O qcow2``.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

from benchmarks.harness import Case
from burrow.block.qcow2 import create_qcow2, open_qcow2
from burrow.block.raw import RawDevice

SIZE = 1 << 30
CHUNK = 4 << 20
WRITE_SIZE = 256 << 20
RANDOM_READS = 20_000


def _scratch() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path("/tmp")


def _images(work: Path) -> tuple[Path, Path]:
    raw = work / "qcow2-seq-1g.raw"
    img = work / "qcow2-seq-1g.qcow2"
    if not raw.exists() or raw.stat().st_size != SIZE:
        block = os.urandom(CHUNK)
        with open(raw, "wb") as f:
            for i in range(SIZE // CHUNK):
                f.write(block[i % 7 :] + block[: i % 7])
        img.unlink(missing_ok=True)
    if not img.exists():
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(img)], check=True)
    return raw, img


def _read_all(path: Path) -> float:
    with open_qcow2(str(path)) as dev:
        buf = bytearray(CHUNK)
        mv = memoryview(buf)
        for off in range(0, dev.size, CHUNK):
            dev.preadinto(mv[: min(CHUNK, dev.size - off)], off)
        return dev.size


def cases(work: Path) -> list[Case]:
    raw, img = _images(work)
    out_raw = _scratch() / f"burrow-bench-{os.getpid()}.raw"
    offsets = [random.Random(1).randrange(0, SIZE // 4096) * 4096 for _ in range(RANDOM_READS)]

    def burrow_seq() -> float:
        return _read_all(img)

    def qemu_convert_raw() -> float:
        subprocess.run(
            ["qemu-img", "convert", "-O", "raw", str(img), str(out_raw)],
            check=True,
            capture_output=True,
        )
        out_raw.unlink()
        return SIZE

    def qemu_convert_null() -> float:
        subprocess.run(
            ["qemu-img", "convert", "-n", "-f", "qcow2", str(img), "--target-image-opts",
             f"driver=null-co,size={SIZE}"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return SIZE

    def random_reads(dev_open: object) -> float:
        with dev_open() as dev:  # type: ignore[operator]
            buf = memoryview(bytearray(4096))
            for off in offsets[:2000]:  # warm the caches
                dev.preadinto(buf, off)
            before = dev.statistics().get("metadata_reads")
            for off in offsets:
                dev.preadinto(buf, off)
            if before is not None:
                after = dev.statistics()["metadata_reads"]
                assert after == before, f"metadata reads in steady state: {before} -> {after}"
        return RANDOM_READS

    def burrow_random_qcow2() -> float:
        return random_reads(lambda: open_qcow2(str(img)))

    def burrow_random_raw() -> float:
        return random_reads(lambda: RawDevice(raw))

    scratch_img = _scratch() / f"burrow-bench-{os.getpid()}.qcow2"
    part = _scratch() / f"burrow-bench-{os.getpid()}-part.raw"

    def write_setup() -> None:
        with open(raw, "rb") as src, open(part, "wb") as dst:
            dst.write(src.read(WRITE_SIZE))

    def write_teardown() -> None:
        part.unlink(missing_ok=True)
        scratch_img.unlink(missing_ok=True)

    def burrow_write() -> float:
        scratch_img.unlink(missing_ok=True)
        data = part.read_bytes()
        mv = memoryview(data)
        with create_qcow2(scratch_img, WRITE_SIZE) as dev:
            for off in range(0, WRITE_SIZE, CHUNK):
                dev.pwrite(mv[off : off + CHUNK], off)
        return WRITE_SIZE

    def qemu_write() -> float:
        scratch_img.unlink(missing_ok=True)
        subprocess.run(
            ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(part), str(scratch_img)],
            check=True,
            capture_output=True,
        )
        return WRITE_SIZE

    return [
        Case(
            "qcow2: sequential read 1 GiB uncompressed (page cache)",
            "bytes",
            {
                "burrow": burrow_seq,
                "qemu-img convert -O raw (tmpfs)": qemu_convert_raw,
                "qemu-img convert -> null-co": qemu_convert_null,
            },
            target=">= 1 GB/s and >= 0.7x qemu-img convert -O raw",
        ),
        Case(
            "qcow2: random 4 KiB reads, warm L2 cache",
            "ops",
            {"burrow": burrow_random_qcow2, "burrow raw (same bytes)": burrow_random_raw},
            target="no metadata reads in steady state",
        ),
        Case(
            "qcow2: sequential write 256 MiB into a new image",
            "bytes",
            {"burrow": burrow_write, "qemu-img convert -O qcow2": qemu_write},
            setup=write_setup,
            teardown=write_teardown,
        ),
    ]
