"""Support for the focused ext4 harnesses (journal, htree, xattr).

A focused harness mutates one kind of structure only. Its input is the bytes of that
structure (a journal's first blocks, a directory's index and leaf blocks, an inode and its
xattr block); the harness writes them back into a base image made by ``mkfs.ext4``/``debugfs``
and reads the result through the driver. So the fuzzer's mutations all land on the structure
under test while the rest of the filesystem stays valid, and inputs stay a few KiB.

Base images are built once per process (and per variant) with fixed UUIDs, hash seeds and
times so that a stored input (corpus, regression file) means the same thing in every run.
"""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import struct
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from burrow.block.device import BlockDevice
from burrow.errors import BurrowError
from burrow.fs import vfs
from burrow.fs.ext4 import open_ext4
from burrow.fs.ext4.filesystem import Ext4Filesystem

UUID = "4a8d3c7e-1f2b-4c5d-9e6f-0a1b2c3d4e5f"
HASH_SEED = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
FAKE_TIME = "1700000000"
MAX_ENTRIES = 600  # entries listed per directory in one input
MAX_READ = 1 << 14


@dataclass
class Base:
    """A base image and where a harness's input goes in it."""

    image: bytes
    block_size: int
    # byte offsets, in input order, of the chunks an input replaces (each ``chunk`` long)
    slots: list[tuple[int, int]]
    names: list[str] = field(default_factory=list)  # names to look up
    inodes: list[int] = field(default_factory=list)  # inodes of interest

    def seed(self) -> bytes:
        """The input that reproduces the base image unchanged."""
        return b"".join(self.image[off : off + n] for off, n in self.slots)


class PatchedDevice(BlockDevice):
    """Read-only: ``base`` with byte ranges replaced (no copy of the base per input)."""

    def __init__(self, base: bytes, patches: list[tuple[int, bytes]]) -> None:
        self._base = memoryview(base)
        merged: list[tuple[int, bytes]] = []
        for off, data in sorted(patches):  # adjacent chunks (a journal) become one patch
            if merged and merged[-1][0] + len(merged[-1][1]) == off:
                merged[-1] = (merged[-1][0], merged[-1][1] + data)
            else:
                merged.append((off, data))
        self._patches = merged
        self._lo = merged[0][0] if merged else 0
        self._hi = max((o + len(d) for o, d in merged), default=0)
        self._size = len(base)
        self._readonly = True

    def _preadinto(self, buf: memoryview, offset: int) -> None:
        end = offset + len(buf)
        buf[:] = self._base[offset:end]
        if end <= self._lo or offset >= self._hi:
            return
        for poff, data in self._patches:
            pend = poff + len(data)
            if pend <= offset or poff >= end:
                continue
            lo, hi = max(offset, poff), min(end, pend)
            buf[lo - offset : hi - offset] = data[lo - poff : hi - poff]


def apply(base: Base, data: bytes) -> PatchedDevice:
    """The base image with the input's bytes written over the slots, in order."""
    patches: list[tuple[int, bytes]] = []
    pos = 0
    for off, n in base.slots:
        if pos >= len(data):
            break
        patches.append((off, data[pos : pos + n]))
        pos += n
    return PatchedDevice(base.image, patches)


_WORK: Path | None = None
_CACHE: dict[str, Base] = {}


def workdir() -> Path:
    global _WORK
    if _WORK is None:
        parent = "/dev/shm" if os.path.isdir("/dev/shm") else None
        _WORK = Path(tempfile.mkdtemp(prefix="burrow-fuzz-ext4-", dir=parent))
        atexit.register(shutil.rmtree, _WORK, True)
    return _WORK


def need_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        import pytest

        pytest.skip(f"needs {', '.join(missing)}")


def env() -> dict[str, str]:
    return {**os.environ, "E2FSPROGS_FAKE_TIME": FAKE_TIME, "TZ": "UTC", "LC_ALL": "C"}


def mkfs(image: Path, size: str, *opts: str, src: Path | None = None, fstype: str = "ext4") -> None:
    if image.exists():
        image.unlink()
    args = [f"mkfs.{fstype}", "-q", "-F", "-U", UUID, "-E", f"hash_seed={HASH_SEED}", *opts]
    if src is not None:
        args += ["-d", os.fspath(src)]
    subprocess.run([*args, os.fspath(image), size], check=True, capture_output=True, env=env())


def debugfs(image: Path, script: str, *, write: bool = True) -> str:
    argv = ["debugfs", *(["-w"] if write else []), "-f", "-", os.fspath(image)]
    done = subprocess.run(argv, input=script, text=True, check=True, capture_output=True, env=env())
    return done.stdout


def fix_times(root: Path) -> None:
    """Same mtimes every build (mkfs -d copies them into the inodes)."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (1_600_000_000, 1_600_000_000),
                     follow_symlinks=False)  # fmt: skip
    os.utime(root, (1_600_000_000, 1_600_000_000))


def cached(key: str, build: Callable[[Path], Base]) -> Base:
    base = _CACHE.get(key)
    if base is None:
        need_tools("mkfs.ext4", "mkfs.ext2", "mkfs.ext3", "debugfs", "e2fsck")
        where = workdir() / key
        where.mkdir(parents=True, exist_ok=True)
        base = _CACHE[key] = build(where)
    return base


def open_fs(dev: BlockDevice) -> Ext4Filesystem:
    return open_ext4(dev, ignore_checksums=True)


def walk(fs: Ext4Filesystem, limit: int = 200) -> Iterator[int]:
    """Every inode reachable from the root (bounded), after reading what each holds; errors
    of single entries are skipped so one bad entry does not hide the rest."""
    stack = [fs.root_ino]
    seen = 0
    visited: set[int] = set()
    while stack and seen < limit:
        ino = stack.pop()
        if ino in visited:
            continue
        visited.add(ino)
        try:
            entries = list(_bounded(fs.readdir(ino), MAX_ENTRIES))
        except BurrowError:
            continue
        for ent in entries:
            seen += 1
            if seen >= limit:
                break
            try:
                st = fs.getattr(ent.ino)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(ent.ino)
                elif stat.S_ISREG(st.st_mode):
                    fs.read(ent.ino, 0, MAX_READ)
                elif stat.S_ISLNK(st.st_mode):
                    fs.readlink(ent.ino)
                for name in fs.listxattr(ent.ino)[:16]:
                    fs.getxattr(ent.ino, name)
            except BurrowError:
                continue
            yield ent.ino


def _bounded(it: Iterator[vfs.DirEntry], n: int) -> Iterator[vfs.DirEntry]:
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x


def inode_offset(fs: Ext4Filesystem, ino: int) -> int:
    _raw, where = fs.read_raw_inode(ino)
    return where


def block_offsets(fs: Ext4Filesystem, ino: int) -> list[int]:
    """Byte offsets of the logical blocks of ``ino`` (mapped ones only)."""
    node = fs.inode(ino)
    bs = fs.block_size
    out = []
    for lblk in range(-(-node.size // bs)):
        p = fs._map_block(node, lblk)
        if p >= 0:
            out.append(p * bs)
    return out


def u32(data: bytes, off: int) -> int:
    return int(struct.unpack_from("<I", data, off)[0])
