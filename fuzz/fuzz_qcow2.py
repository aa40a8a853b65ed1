"""Fuzz the qcow2 engine: header, extensions, L1/L2, refcounts, compressed clusters.

Each input is written to a private temporary file and opened read-only (a bounded read and an
extent walk), then a copy is opened for writing (a few writes, a zero, a discard, a flush),
so the allocator and the refcount code see hostile tables too. Only ``BurrowError`` may
escape.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from burrow.block.qcow2 import Qcow2Device

# Header fields and the tables that follow it in small images made by qemu-img.
REGIONS = [(0, 112), (112, 400), (512, 64), (1024, 64), (1536, 64), (2048, 64), (4096, 64)]

_DIR: str | None = None


def _workdir() -> str:
    global _DIR
    if _DIR is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        _DIR = tempfile.mkdtemp(prefix="burrow-fuzz-qcow2-", dir=base)
        atexit.register(shutil.rmtree, _DIR, True)
    return _DIR


def _qemu(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def _io(img: Path, *cmds: str) -> None:
    argv = ["qemu-io"]
    for c in cmds:
        argv += ["-c", c]
    subprocess.run([*argv, str(img)], check=True, capture_output=True)


def seeds(tmp_path: Path) -> list[bytes]:
    """Small images from qemu-img in several variants (empty list when qemu is missing)."""
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        from burrow.block.qcow2 import create_qcow2

        p = tmp_path / "own.qcow2"
        with create_qcow2(p, 1 << 20, cluster_size=512) as dev:
            dev.pwrite(b"\xab" * 3000, 1000)
        return [p.read_bytes()]
    out: list[bytes] = []
    variants = [
        ["-o", "cluster_size=512"],
        ["-o", "cluster_size=512,compat=0.10"],
        ["-o", "cluster_size=512,refcount_bits=1"],
        ["-o", "cluster_size=1024,refcount_bits=64"],
        ["-o", "cluster_size=16384,extended_l2=on"],
    ]
    for i, opts in enumerate(variants):
        p = tmp_path / f"seed{i}.qcow2"
        _qemu("create", "-q", "-f", "qcow2", *opts, str(p), "1M")
        _io(p, "write -P 0xab 0 3000", "write -P 0xcd 300000 9000", "write -z 600000 4096")
        out.append(p.read_bytes())
    snap = tmp_path / "snap.qcow2"
    _qemu("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", str(snap), "1M")
    _io(snap, "write -P 0x11 0 9000")
    _qemu("snapshot", "-c", "s1", str(snap))
    _io(snap, "write -P 0x22 4096 9000")
    out.append(snap.read_bytes())
    dirty = tmp_path / "dirty.qcow2"  # lazy refcounts + SIGKILL: stale refcounts to rebuild
    _qemu("create", "-q", "-f", "qcow2", "-o", "cluster_size=512,lazy_refcounts=on",
          str(dirty), "1M")  # fmt: skip
    subprocess.run(
        ["qemu-io", "-c", "write -P 0x33 0 20000", "-c", "sigraise 9", str(dirty)],
        capture_output=True,
    )
    out.append(dirty.read_bytes())
    raw = tmp_path / "plain.raw"
    raw.write_bytes(os.urandom(4096) + bytes(4096) + b"\x11" * 8192)
    for ctype in ("zlib", "zstd"):
        p = tmp_path / f"c-{ctype}.qcow2"
        _qemu(
            "convert", "-q", "-c", "-O", "qcow2", "-o",
            f"cluster_size=512,compression_type={ctype}", str(raw), str(p),
        )  # fmt: skip
        out.append(p.read_bytes())
    return out


def one_input(data: bytes) -> None:
    work = _workdir()
    path = os.path.join(work, "fuzz.qcow2")
    with open(path, "wb") as f:
        f.write(data)
    with Qcow2Device(path, readonly=True) as dev:
        n = min(dev.size, 1 << 20)
        dev.pread(n, 0)
        if dev.size > n:
            dev.pread(min(4096, dev.size - n), dev.size - min(4096, dev.size - n))
        for _ in dev.extents(min(dev.size, 4 << 20), 0):
            pass
        dev.statistics()
    with Qcow2Device(path, readonly=False) as dev:
        size = dev.size
        if size:
            dev.pwrite(b"\x5a" * min(size, 5000), 0)
            dev.pwrite(b"\xa5" * min(size, 700), max(0, size // 2 - 300))
            dev.write_zeroes(min(size, 8192), max(0, size - 8192))
            dev.discard(min(size, 65536), 0)
            dev.flush()
            dev.pread(min(size, 65536), 0)
