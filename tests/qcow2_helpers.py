"""Helpers for the qcow2 tests: qemu-img/qemu-io wrappers and oracle checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from images import qemu_img, run


def qemu_io(img: Path, *cmds: str, fmt: str = "qcow2") -> str:
    argv: list[str | os.PathLike[str]] = ["qemu-io", "-f", fmt]
    for c in cmds:
        argv += ["-c", c]
    proc = run([*argv, img])
    # qemu-io exits 0 even when a pattern check fails; it prints "Pattern verification failed".
    assert "verification failed" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "error" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    return proc.stdout


def check_clean(img: Path) -> dict[str, object]:
    """``qemu-img check`` must report no corruption and no leaks."""
    proc = subprocess.run(
        ["qemu-img", "check", "--output=json", str(img)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.fail(f"qemu-img check {img} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    report: dict[str, object] = json.loads(proc.stdout)
    assert not report.get("corruptions"), report
    assert not report.get("leaks"), report
    assert not report.get("check-errors"), report
    return report


def compare_with(img: Path, model: bytes | bytearray, tmp: Path) -> None:
    """``qemu-img compare`` of the image with a raw file holding ``model``."""
    raw = tmp / f"model-{os.urandom(4).hex()}.raw"
    raw.write_bytes(model)
    try:
        proc = subprocess.run(
            ["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(img), str(raw)],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        raw.unlink()


def info(img: Path) -> dict[str, object]:
    out: dict[str, object] = json.loads(qemu_img("info", "--output=json", img).stdout)
    return out


def pattern(seed: int, n: int) -> bytes:
    return bytes((seed + i * 13) & 0xFF for i in range(min(n, 253))) * (n // 253 + 1)


def fast_tmp_dir() -> Iterator[Path]:
    """A scratch directory on tmpfs when there is one.

    The engines fsync on every flush, as they must; on a real disk that makes the
    hypothesis workloads wait on the disk for most of their run time, while durability of
    throw-away test files is not what these tests check (crash behaviour is tested by
    stopping writes, not by power loss).
    """
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="burrow-test-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
