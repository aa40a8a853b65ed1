"""Helpers for the FUSE tests: mounting through the CLI, an fsx-style checker, tool runs."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@e",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@e",
}


def burrow(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI (bytecode cached outside the tree, as an installed burrow would)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault(
        "PYTHONPYCACHEPREFIX", os.path.join(tempfile.gettempdir(), f"burrow-pycache-{os.getuid()}")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "burrow", *args], capture_output=True, text=True, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"burrow {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def sh(*cmd: str | os.PathLike[str], env: dict[str, str] | None = None) -> str:
    """Run a tool; fail with its output when it fails."""
    proc = subprocess.run(
        [os.fspath(c) for c in cmd], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def force_unmount(point: Path) -> None:
    if os.path.ismount(point):
        subprocess.run(["fusermount3", "-u", "-z", os.fspath(point)], capture_output=True)


@contextlib.contextmanager
def mounted(source: str | os.PathLike[str], point: Path, *opts: str) -> Iterator[Path]:
    """``burrow mount`` for the block; the test unmounts with :func:`umount` to check the
    commit, this only cleans up after a failure."""
    point.mkdir(exist_ok=True)
    burrow("mount", *opts, os.fspath(source), os.fspath(point))
    try:
        yield point
    finally:
        if os.path.ismount(point):
            burrow("umount", os.fspath(point), check=False)
        force_unmount(point)


def umount(point: Path) -> None:
    burrow("umount", os.fspath(point))
    assert not os.path.ismount(point)


def daemon_pid(point: Path) -> int:
    from burrow.fuse.mount import _state_file

    return int(json.loads(_state_file(os.fspath(point)).read_text())["pid"])


def fsx(path: Path, *, ops: int = 600, seed: int = 1234, span: int = 300_000) -> bytes:
    """fsx-style: random pwrite/pread/truncate on one file, checked against a model after
    every step (contents and size); returns the final contents."""
    rng = random.Random(seed)
    model = bytearray()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for step in range(ops):
            op = rng.random()
            if op < 0.45:
                off = rng.randrange(0, span)
                data = rng.randbytes(rng.randrange(1, span // 15))
                assert os.pwrite(fd, data, off) == len(data)
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off : off + len(data)] = data
            elif op < 0.85:
                off = rng.randrange(0, span + span // 15)
                n = rng.randrange(1, span // 7)
                assert os.pread(fd, n, off) == bytes(model[off : off + n]), f"step {step}"
            elif op < 0.95:
                size = rng.randrange(0, span)
                os.ftruncate(fd, size)
                if size < len(model):
                    del model[size:]
                else:
                    model.extend(bytes(size - len(model)))
            else:
                os.fsync(fd)
            assert os.fstat(fd).st_size == len(model), f"step {step}"
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(model)
    return bytes(model)


def names(root: Path) -> list[str]:
    out = subprocess.run(["find", os.fspath(root)], capture_output=True, text=True, check=True)
    return sorted(line[len(os.fspath(root)) :] for line in out.stdout.splitlines())
