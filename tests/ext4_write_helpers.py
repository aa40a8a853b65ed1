"""Helpers for the ext4 write tests: images from mkfs.ext4 and from our mkfs, e2fsck as the
oracle, and a reader that dumps a whole tree for comparison with a model."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from burrow.block.raw import RawDevice
from burrow.fs import vfs
from burrow.fs.ext4 import open_ext4
from burrow.fs.ext4.mkfs import mkfs

# name -> (maker, fstype/mkfs options)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "tool-ext4": ("tool", {"fstype": "ext4", "options": []}),
    "tool-ext4-4k": ("tool", {"fstype": "ext4", "options": ["-b", "4096"]}),
    "tool-nocsum": ("tool", {"fstype": "ext4", "options": ["-O", "^metadata_csum"]}),
    "tool-ext2": ("tool", {"fstype": "ext2", "options": []}),
    "tool-ext3": ("tool", {"fstype": "ext3", "options": []}),
    "tool-inline": ("tool", {"fstype": "ext4", "options": ["-O", "inline_data"]}),
    "ours-ext4": ("ours", {"fstype": "ext4"}),
    "ours-ext4-4k": ("ours", {"fstype": "ext4", "block_size": 4096}),
    "ours-nocsum": ("ours", {"fstype": "ext4", "features": "^metadata_csum,uninit_bg"}),
    "ours-ext2": ("ours", {"fstype": "ext2"}),
    "ours-ext3": ("ours", {"fstype": "ext3"}),
    "ours-inline": ("ours", {"fstype": "ext4", "features": "inline_data"}),
    "ours-128": ("ours", {"fstype": "ext4", "inode_size": 128}),
    "tool-ext3-128": ("tool", {"fstype": "ext3", "options": ["-I", "128"]}),
}


def make_image(path: Path, variant: str, size: int = 32 << 20) -> Path:
    kind, opts = VARIANTS[variant]
    with open(path, "wb") as f:
        f.truncate(size)
    if kind == "tool":
        tool = f"mkfs.{opts['fstype']}"
        proc = subprocess.run(
            [tool, "-q", "-F", *opts["options"], str(path)], capture_output=True, text=True
        )
        if proc.returncode:
            pytest.fail(proc.stderr)
    else:
        dev = RawDevice(path, readonly=False)
        try:
            mkfs(dev, **opts)
        finally:
            dev.close()
    return path


def fsck(path: Path) -> str:
    """Run ``e2fsck -fn``; fail the test with its report unless the image is clean."""
    proc = subprocess.run(["e2fsck", "-fn", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"e2fsck -fn found problems ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@contextlib.contextmanager
def writable(path: Path) -> Iterator[vfs.Filesystem]:
    dev = RawDevice(path, readonly=False)
    fs = open_ext4(dev, readonly=False)
    try:
        yield fs
    finally:
        fs.close()
        dev.close()


@contextlib.contextmanager
def readable(path: Path) -> Iterator[vfs.Filesystem]:
    dev = RawDevice(path)
    fs = open_ext4(dev)
    try:
        yield fs
    finally:
        fs.close()
        dev.close()


def resolve(fs: vfs.Filesystem, path: str) -> int:
    ino = fs.root_ino
    for part in [p for p in path.split("/") if p]:
        ino = fs.lookup(ino, part)
    return ino


def dump(fs: vfs.Filesystem, ino: int | None = None, prefix: str = "") -> dict[str, Any]:
    """path -> ("dir", mode, xattrs) | ("file", mode, data, xattrs, nlink) | ("link", target)
    | ("node", mode, rdev); lost+found left out."""
    out: dict[str, Any] = {}
    ino = fs.root_ino if ino is None else ino
    for e in fs.readdir(ino):
        if not prefix and e.name == "lost+found":
            continue
        p = f"{prefix}/{e.name}"
        st = fs.getattr(e.ino)
        xs = {n: fs.getxattr(e.ino, n) for n in sorted(fs.listxattr(e.ino))}
        if stat.S_ISDIR(st.st_mode):
            out[p] = ("dir", stat.S_IMODE(st.st_mode), xs)
            out.update(dump(fs, e.ino, p))
        elif stat.S_ISREG(st.st_mode):
            out[p] = ("file", stat.S_IMODE(st.st_mode), fs.read(e.ino, 0, st.st_size), xs,
                      st.st_nlink)  # fmt: skip
        elif stat.S_ISLNK(st.st_mode):
            out[p] = ("link", fs.readlink(e.ino))
        else:
            out[p] = ("node", st.st_mode, st.st_rdev)
    return out


def host_dump(root: Path) -> dict[str, Any]:
    """The same shape as :func:`dump`, from a host directory (a kernel mount)."""
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        base = "" if rel == "." else "/" + rel
        if base == "" and "lost+found" in dirnames:
            dirnames.remove("lost+found")
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            p = f"{base}/{name}"
            if stat.S_ISLNK(st.st_mode):
                out[p] = ("link", os.readlink(full))
                continue
            xs = {
                n: os.getxattr(full, n, follow_symlinks=False) for n in sorted(os.listxattr(full))
            }
            if stat.S_ISDIR(st.st_mode):
                out[p] = ("dir", stat.S_IMODE(st.st_mode), xs)
            elif stat.S_ISREG(st.st_mode):
                out[p] = ("file", stat.S_IMODE(st.st_mode), Path(full).read_bytes(), xs,
                          st.st_nlink)  # fmt: skip
            else:
                out[p] = ("node", st.st_mode, st.st_rdev)
    return out
