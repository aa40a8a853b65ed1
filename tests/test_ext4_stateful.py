"""Random sequences of write operations on ext4 images against a dict model.

After every step the tree read back through burrow equals the model; at the end the image is
closed, ``e2fsck -fn`` must find nothing, and a fresh read-only open sees the model again.
Images come from ``mkfs.ext4`` (several feature variants) and from our own mkfs.
"""

from __future__ import annotations

import itertools
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from burrow.errors import BurrowError
from burrow.fs import vfs
from burrow.fs.ext4 import writer
from ext4_write_helpers import VARIANTS, dump, fsck, make_image, readable, resolve, writable

pytestmark = pytest.mark.tool("mkfs.ext4", "e2fsck")

NAMES = st.sampled_from(["a", "b", "c", "dd", "long-" + "x" * 60, "é"])
DATA = st.binary(max_size=3000) | st.sampled_from([b"", b"x" * 5000, bytes(range(256)) * 9])
XNAMES = st.sampled_from(["user.a", "user.b", "trusted.t", "security.s", "user." + "n" * 40])
XVALS = st.binary(max_size=200) | st.sampled_from([b"V" * 700])


_LIMITS = ("MAX_DIRTY_INODES", "MAX_CACHED_BLOCKS", "MAX_WINODES", "MAX_WDIRS")


class Ext4Machine(RuleBasedStateMachine):
    variant = "ours-ext4"
    tiny_memory = False  # flush and forget state between operations all the time

    def __init__(self) -> None:
        super().__init__()
        self.saved = {k: getattr(writer, k) for k in _LIMITS}
        if self.tiny_memory:
            for k, v in zip(_LIMITS, (3, 6, 2, 1), strict=True):
                setattr(writer, k, v)
        self.tmp = Path(tempfile.mkdtemp(prefix="burrow-ext4-sm-"))
        self.img = make_image(self.tmp / "fs.img", self.variant, 24 << 20)
        self.cm = writable(self.img)
        self.fs: vfs.Filesystem = self.cm.__enter__()
        self.paths: dict[str, int] = {"": 0}  # path -> object id ("" is the root)
        self.objs: dict[int, dict[str, Any]] = {0: {"type": "dir", "xattrs": {}}}
        self.ids = itertools.count(1)

    # -- model helpers ---------------------------------------------------------------------
    def _dirs(self) -> list[str]:
        return sorted(p for p, i in self.paths.items() if self.objs[i]["type"] == "dir")

    def _files(self) -> list[str]:
        return sorted(p for p, i in self.paths.items() if self.objs[i]["type"] == "file")

    def _nonroot(self) -> list[str]:
        return sorted(p for p in self.paths if p)

    def _children(self, d: str) -> list[str]:
        pre = d + "/"
        return [p for p in self.paths if p.startswith(pre) and "/" not in p[len(pre) :]]

    def _ino(self, path: str) -> int:
        return resolve(self.fs, path)

    def _expected(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        counts: dict[int, int] = {}
        for i in self.paths.values():
            counts[i] = counts.get(i, 0) + 1
        for p, i in self.paths.items():
            if not p:
                continue
            o = self.objs[i]
            if o["type"] == "dir":
                out[p] = ("dir", o.get("mode", 0o755), dict(sorted(o["xattrs"].items())))
            elif o["type"] == "node":
                out[p] = ("node", o["mode"], o["rdev"])
            elif o["type"] == "file":
                out[p] = ("file", o.get("mode", 0o644), bytes(o["data"]),
                          dict(sorted(o["xattrs"].items())), counts[i])  # fmt: skip
            else:
                out[p] = ("link", o["target"])
        return out

    def _split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rpartition("/")
        return head, tail

    # -- rules -----------------------------------------------------------------------------
    @initialize()
    def start(self) -> None:
        pass

    @rule(d=st.data(), name=NAMES, data=DATA)
    def create(self, d: st.DataObject, name: str, data: bytes) -> None:
        parent = d.draw(st.sampled_from(self._dirs()))
        path = f"{parent}/{name}"
        if path in self.paths:
            with pytest.raises(BurrowError):
                self.fs.create(self._ino(parent), name, 0o644)
            return
        ino = self.fs.create(self._ino(parent), name, 0o644)
        if data:
            self.fs.write(ino, 0, data)
        oid = next(self.ids)
        self.paths[path] = oid
        self.objs[oid] = {"type": "file", "data": bytearray(data), "xattrs": {}}

    @rule(d=st.data(), name=NAMES)
    def mkdir(self, d: st.DataObject, name: str) -> None:
        parent = d.draw(st.sampled_from(self._dirs()))
        path = f"{parent}/{name}"
        if path in self.paths:
            with pytest.raises(BurrowError):
                self.fs.mkdir(self._ino(parent), name, 0o755)
            return
        self.fs.mkdir(self._ino(parent), name, 0o755)
        oid = next(self.ids)
        self.paths[path] = oid
        self.objs[oid] = {"type": "dir", "xattrs": {}}

    @rule(d=st.data(), name=NAMES, tgt=st.sampled_from(["t", "../x", "y" * 59, "z" * 300]))
    def symlink(self, d: st.DataObject, name: str, tgt: str) -> None:
        parent = d.draw(st.sampled_from(self._dirs()))
        path = f"{parent}/{name}"
        if path in self.paths:
            return
        self.fs.symlink(self._ino(parent), name, tgt)
        oid = next(self.ids)
        self.paths[path] = oid
        self.objs[oid] = {"type": "link", "target": tgt, "xattrs": {}}

    @rule(d=st.data(), name=NAMES, kind=st.sampled_from(["fifo", "chr", "blk", "sock"]))
    def mknod(self, d: st.DataObject, name: str, kind: str) -> None:
        parent = d.draw(st.sampled_from(self._dirs()))
        path = f"{parent}/{name}"
        fmt = {"fifo": stat.S_IFIFO, "chr": stat.S_IFCHR, "blk": stat.S_IFBLK,
               "sock": stat.S_IFSOCK}[kind]  # fmt: skip
        rdev = os.makedev(300, 70000) if kind == "blk" else os.makedev(1, 3) if kind == "chr" else 0
        if path in self.paths:
            with pytest.raises(BurrowError):
                self.fs.mknod(self._ino(parent), name, fmt | 0o640, rdev)
            return
        self.fs.mknod(self._ino(parent), name, fmt | 0o640, rdev)
        oid = next(self.ids)
        self.paths[path] = oid
        self.objs[oid] = {"type": "node", "mode": fmt | 0o640, "rdev": rdev, "xattrs": {}}

    @precondition(lambda self: self._nonroot())
    @rule(d=st.data(), mode=st.sampled_from([0o600, 0o755, 0o4711, 0o1777, 0o000]))
    def chmod(self, d: st.DataObject, mode: int) -> None:
        cands = [p for p in self._nonroot() if self.objs[self.paths[p]]["type"] in ("file", "dir")]
        if not cands:
            return
        path = d.draw(st.sampled_from(cands))
        self.fs.setattr(self._ino(path), mode=mode, mtime_ns=1_234_567_891_000_000_001)
        self.objs[self.paths[path]]["mode"] = mode

    @precondition(lambda self: self._files())
    @rule(
        d=st.data(),
        offset=st.integers(0, 70000) | st.sampled_from([300_000, 2_900_000, 1 << 24]),
        data=DATA,
    )
    def write(self, d: st.DataObject, offset: int, data: bytes) -> None:
        path = d.draw(st.sampled_from(self._files()))
        self.fs.write(self._ino(path), offset, data)
        buf = self.objs[self.paths[path]]["data"]
        if data:
            if len(buf) < offset:
                buf.extend(bytes(offset - len(buf)))
            buf[offset : offset + len(data)] = data

    @precondition(lambda self: self._files())
    @rule(d=st.data(), size=st.integers(0, 90000))
    def truncate(self, d: st.DataObject, size: int) -> None:
        path = d.draw(st.sampled_from(self._files()))
        self.fs.setattr(self._ino(path), size=size)
        buf = self.objs[self.paths[path]]["data"]
        if size < len(buf):
            del buf[size:]
        else:
            buf.extend(bytes(size - len(buf)))

    @precondition(lambda self: any(self.objs[self.paths[p]]["type"] != "dir" for p in self.paths))
    @rule(d=st.data())
    def unlink(self, d: st.DataObject) -> None:
        cands = [p for p in self._nonroot() if self.objs[self.paths[p]]["type"] != "dir"]
        path = d.draw(st.sampled_from(cands))
        parent, name = self._split(path)
        self.fs.unlink(self._ino(parent), name)
        del self.paths[path]

    @precondition(lambda self: len(self._dirs()) > 1)
    @rule(d=st.data())
    def rmdir(self, d: st.DataObject) -> None:
        path = d.draw(st.sampled_from([p for p in self._dirs() if p]))
        parent, name = self._split(path)
        if self._children(path):
            with pytest.raises(BurrowError):
                self.fs.rmdir(self._ino(parent), name)
            return
        self.fs.rmdir(self._ino(parent), name)
        del self.paths[path]

    @precondition(lambda self: self._files())
    @rule(d=st.data(), name=NAMES)
    def link(self, d: st.DataObject, name: str) -> None:
        src = d.draw(st.sampled_from(self._files()))
        parent = d.draw(st.sampled_from(self._dirs()))
        path = f"{parent}/{name}"
        if path in self.paths:
            with pytest.raises(BurrowError):
                self.fs.link(self._ino(src), self._ino(parent), name)
            return
        self.fs.link(self._ino(src), self._ino(parent), name)
        self.paths[path] = self.paths[src]

    @precondition(lambda self: self._nonroot())
    @rule(d=st.data(), name=NAMES, flags=st.sampled_from([0, 0, vfs.RENAME_NOREPLACE,
                                                          vfs.RENAME_EXCHANGE]))  # fmt: skip
    def rename(self, d: st.DataObject, name: str, flags: int) -> None:
        src = d.draw(st.sampled_from(self._nonroot()))
        dst_dir = d.draw(st.sampled_from(self._dirs()))
        dst = f"{dst_dir}/{name}"
        sp, sn = self._split(src)
        args = (self._ino(sp), sn, self._ino(dst_dir), name, flags)
        ok = self._rename_ok(src, dst, flags)
        if not ok:
            with pytest.raises(BurrowError):
                self.fs.rename(*args)
            return
        self.fs.rename(*args)
        if src == dst or (dst in self.paths and self.paths[dst] == self.paths[src]):
            return
        if flags & vfs.RENAME_EXCHANGE:
            a = {p: i for p, i in self.paths.items() if p == src or p.startswith(src + "/")}
            b = {p: i for p, i in self.paths.items() if p == dst or p.startswith(dst + "/")}
            for p in list(a) + list(b):
                del self.paths[p]
            for p, i in a.items():
                self.paths[dst + p[len(src) :]] = i
            for p, i in b.items():
                self.paths[src + p[len(dst) :]] = i
            return
        if dst in self.paths:
            del self.paths[dst]
        moved = {p: i for p, i in self.paths.items() if p == src or p.startswith(src + "/")}
        for p in moved:
            del self.paths[p]
        for p, i in moved.items():
            self.paths[dst + p[len(src) :]] = i

    def _rename_ok(self, src: str, dst: str, flags: int) -> bool:
        s_dir = self.objs[self.paths[src]]["type"] == "dir"
        exists = dst in self.paths
        if flags & vfs.RENAME_EXCHANGE:
            if not exists:
                return False
            if src == dst:
                return True
            return not (dst.startswith(src + "/") or src.startswith(dst + "/"))
        if src == dst:
            return not (flags & vfs.RENAME_NOREPLACE)
        if s_dir and dst.startswith(src + "/"):
            return False
        if not exists:
            return True
        if flags & vfs.RENAME_NOREPLACE:
            return False
        if self.paths[dst] == self.paths[src]:
            return True
        d_dir = self.objs[self.paths[dst]]["type"] == "dir"
        if s_dir != d_dir:
            return False
        return not (d_dir and self._children(dst))

    @precondition(lambda self: self._nonroot())
    @rule(d=st.data(), name=XNAMES, value=XVALS)
    def setxattr(self, d: st.DataObject, name: str, value: bytes) -> None:
        cands = [p for p in self._nonroot() if self.objs[self.paths[p]]["type"] != "link"]
        if not cands:
            return
        path = d.draw(st.sampled_from(cands))
        o = self.objs[self.paths[path]]
        try:
            self.fs.setxattr(self._ino(path), name, value)
        except BurrowError:
            # only acceptable when the attributes cannot fit in the inode plus one block
            total = sum(len(k) + len(v) + 24 for k, v in {**o["xattrs"], name: value}.items())
            assert total > 900
            return
        o["xattrs"][name] = value

    @precondition(lambda self: self._nonroot())
    @rule(d=st.data())
    def removexattr(self, d: st.DataObject) -> None:
        cands = [p for p in self._nonroot() if self.objs[self.paths[p]]["xattrs"]]
        if not cands:
            return
        path = d.draw(st.sampled_from(cands))
        o = self.objs[self.paths[path]]
        name = d.draw(st.sampled_from(sorted(o["xattrs"])))
        self.fs.removexattr(self._ino(path), name)
        del o["xattrs"][name]

    @rule(d=st.data(), n=st.integers(20, 160))
    def many(self, d: st.DataObject, n: int) -> None:
        """Enough entries to split directory blocks and build/grow an htree."""
        parent = d.draw(st.sampled_from(self._dirs()))
        pino = self._ino(parent)
        base = next(self.ids)
        for k in range(n):
            name = f"f{base}-{k:04d}-" + "q" * (k % 40)
            self.fs.create(pino, name, 0o644)
            oid = next(self.ids)
            self.paths[f"{parent}/{name}"] = oid
            self.objs[oid] = {"type": "file", "data": bytearray(), "xattrs": {}}

    @rule()
    def reopen(self) -> None:
        self.cm.__exit__(None, None, None)
        fsck(self.img)
        self.cm = writable(self.img)
        self.fs = self.cm.__enter__()

    @invariant()
    def matches_model(self) -> None:
        assert dump(self.fs) == self._expected()

    def teardown(self) -> None:
        try:
            self.cm.__exit__(None, None, None)
            fsck(self.img)
            with readable(self.img) as fs:
                assert dump(fs) == self._expected()
        finally:
            for k, v in self.saved.items():
                setattr(writer, k, v)
            self.img.unlink(missing_ok=True)
            self.tmp.rmdir()


def _machine(variant: str, examples: int, steps: int, tiny: bool = False) -> Any:
    cls = type(f"M_{variant}", (Ext4Machine,), {"variant": variant, "tiny_memory": tiny})
    cls.TestCase.settings = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    return cls.TestCase


TestOursExt4 = _machine("ours-ext4", 6, 25)
TestToolExt4 = _machine("tool-ext4", 6, 25)
TestOursExt3 = _machine("ours-ext3", 4, 20)
TestToolExt2 = _machine("tool-ext2", 3, 20)
TestToolNoCsum = _machine("tool-nocsum", 3, 20)
TestOurs4k = _machine("ours-ext4-4k", 3, 20)
TestToolInline = _machine("tool-inline", 3, 20)
TestOurs128 = _machine("ours-128", 3, 20)
TestTinyMemory = _machine("tool-ext4", 4, 25, tiny=True)
TestTinyMemoryExt3 = _machine("ours-ext3", 3, 20, tiny=True)

assert set(VARIANTS) >= {"ours-ext4", "tool-ext4"}


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BURROW_SOAK"), reason="soak: make soak (BURROW_SOAK=1)")
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_soak(variant: str) -> None:
    """Longer runs of every variant (``make soak``)."""
    tc = _machine(variant, 30, 60)
    tc("runTest").runTest()
    _machine(variant, 15, 60, tiny=True)("runTest").runTest()
