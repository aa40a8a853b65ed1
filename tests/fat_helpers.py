"""Helpers for the FAT tests: the oracles (fsck.fat, mtools) and tree comparison."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from burrow.fs.vfs import Filesystem

ENV = {**os.environ, "TZ": "UTC", "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"}


def tool(*cmd: str | os.PathLike[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [os.fspath(c) for c in cmd], capture_output=True, text=True, env=ENV, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def fsck_clean(image: Path, offset: int = 0) -> str:
    """``fsck.fat -n`` must exit 0 and report nothing to fix."""
    target = image
    if offset:
        target = image.with_suffix(".part")
        with open(image, "rb") as f:
            f.seek(offset)
            target.write_bytes(f.read())
    proc = tool("fsck.fat", "-n", "-v", target, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"fsck.fat -n found problems:\n{out}"
    for bad in ("Free cluster summary wrong", "Dirty bit", "Orphan", "lost", "Unused"):
        assert bad not in out, f"fsck.fat -n reports {bad!r}:\n{out}"
    return out


def fs_tree(fs: Filesystem, ino: int | None = None, prefix: str = "") -> dict[str, bytes | None]:
    """{path: contents or None for directories} as our driver reads it."""
    out: dict[str, bytes | None] = {}
    for de in fs.readdir(fs.root_ino if ino is None else ino):
        path = f"{prefix}/{de.name}"
        st = fs.getattr(de.ino)
        if st.is_dir():
            out[path] = None
            out.update(fs_tree(fs, de.ino, path))
        else:
            out[path] = fs.read(de.ino, 0, st.st_size + 1)
            assert len(out[path] or b"") == st.st_size
    return out


def host_tree(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = "/" + os.path.relpath(dirpath, root) if dirpath != os.fspath(root) else ""
        for d in dirnames:
            out[f"{rel}/{d}"] = None
        for f in filenames:
            out[f"{rel}/{f}"] = Path(dirpath, f).read_bytes()
    return out


def mtools_tree(image: Path, work: Path) -> dict[str, bytes | None]:
    """What mtools sees: ``mcopy -s -i IMAGE ::/* OUT`` then the host tree of OUT."""
    out = work / "mcopy-out"
    out.mkdir(parents=True, exist_ok=False)
    tool("mcopy", "-s", "-n", "-i", image, "::", out)
    return host_tree(out)


def assert_fats_identical(image: Path, offset: int = 0) -> None:
    """Every FAT copy must hold the same bytes (burrow keeps them in sync)."""
    import struct

    with open(image, "rb") as f:
        f.seek(offset)
        boot = f.read(512)
        reserved, nfats = struct.unpack_from("<HB", boot, 14)
        sector = struct.unpack_from("<H", boot, 11)[0]
        fatsz = struct.unpack_from("<H", boot, 22)[0] or struct.unpack_from("<I", boot, 36)[0]
        copies = []
        for i in range(nfats):
            f.seek(offset + (reserved + i * fatsz) * sector)
            copies.append(f.read(fatsz * sector))
    assert all(c == copies[0] for c in copies), "the FAT copies differ"
