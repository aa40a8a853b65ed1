"""Hypothesis drives the FAT writer against a dict model; fsck.fat -n and mtools judge the end."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from tests.fat_helpers import assert_fats_identical, fs_tree, fsck_clean, mtools_tree

from burrow.block.raw import RawDevice
from burrow.errors import (
    Exists,
    FilesystemError,
    InvalidOperation,
    IsADirectory,
    NotADirectory,
    NotEmpty,
)
from burrow.fs.fat import FatFilesystem, open_fat, times
from burrow.fs.fat.mkfs import mkfs
from burrow.fs.vfs import RENAME_EXCHANGE

pytestmark = pytest.mark.tool("fsck.fat", "mcopy")

NAMES = [
    "a", "B", "readme.txt", "README.TXT", "Long File Name.txt", "long file name.TXT", "dir",
    "Ünïcødé 名前", "x" * 40, "a.b.c", "Makefile", ".hidden", "UPPER", "~tilde~1",
    "m" * 13, "Exactly 26 UTF-16 units..x", "L" * 255,
]  # fmt: skip
SIZES = {12: 2048 * 1024, 16: 20 * 1024 * 1024, 32: 40 * 1024 * 1024}

Model = dict[tuple[str, ...], tuple[str, bytearray | None]]  # folded path -> (name, data)


def _fold(name: str) -> str:
    return name.lower()


class FatMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="fatsm-"))
        self.path = self.tmp / "fat.img"
        self.model: Model = {}
        self.dev: RawDevice | None = None
        self.fs: FatFilesystem | None = None
        self.mtimes: dict[tuple[str, ...], int] = {}  # expected st_mtime_ns where known
        self.tiny_cache = False

    @initialize(bits=st.sampled_from([12, 16, 32]), tiny_cache=st.booleans())
    def make(self, bits: int, tiny_cache: bool) -> None:
        self.tiny_cache = tiny_cache  # evict directories all the time (LRU of 2)
        with open(self.path, "wb") as f:
            f.truncate(SIZES[bits])
        with RawDevice(self.path, readonly=False) as dev:
            mkfs(dev, fat_bits=bits)
        self._open()

    def _open(self) -> None:
        self.dev = RawDevice(self.path, readonly=False)
        self.fs = open_fat(self.dev, readonly=False)
        if self.tiny_cache:
            self.fs.dir_cache_count = 2

    def _close(self) -> None:
        if self.fs is not None:
            self.fs.close()
        if self.dev is not None:
            self.dev.close()
        self.fs = self.dev = None

    def teardown(self) -> None:
        try:
            if self.fs is not None:
                self._close()
                fsck_clean(self.path)
                assert_fats_identical(self.path)
                with RawDevice(self.path) as dev, open_fat(dev) as fs:
                    assert fs_tree(fs) == self._expected()
                assert mtools_tree(self.path, self.tmp / "mt") == self._expected()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- model helpers --------------------------------------------------------------
    def _dirs(self) -> list[tuple[str, ...]]:
        return [(), *sorted(k for k, v in self.model.items() if v[1] is None)]

    def _files(self) -> list[tuple[str, ...]]:
        return sorted(k for k, v in self.model.items() if v[1] is not None)

    def _ino(self, key: tuple[str, ...]) -> int:
        assert self.fs is not None
        ino = self.fs.root_ino
        for part in key:
            ino = self.fs.lookup(ino, part)
        return ino

    def _children(self, key: tuple[str, ...]) -> list[tuple[str, ...]]:
        return [k for k in self.model if len(k) == len(key) + 1 and k[: len(key)] == key]

    def _expected(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {}
        for key, (_, data) in self.model.items():
            shown = "/" + "/".join(self.model[key[: i + 1]][0] for i in range(len(key)))
            out[shown] = None if data is None else bytes(data)
        return out

    # -- rules ----------------------------------------------------------------------
    @rule(data=st.data(), name=st.sampled_from(NAMES), is_dir=st.booleans())
    def create(self, data: st.DataObject, name: str, is_dir: bool) -> None:
        assert self.fs is not None
        parent = data.draw(st.sampled_from(self._dirs()))
        key = (*parent, _fold(name))
        pino = self._ino(parent)
        if key in self.model:
            with pytest.raises(Exists):
                (self.fs.mkdir if is_dir else self.fs.create)(pino, name, 0o755)
            return
        (self.fs.mkdir if is_dir else self.fs.create)(pino, name, 0o755)
        self.model[key] = (name, None if is_dir else bytearray())

    @precondition(lambda self: self._files())
    @rule(
        data=st.data(),
        offset=st.integers(0, 20_000),
        length=st.integers(0, 6_000),
        byte=st.integers(1, 255),
    )
    def write(self, data: st.DataObject, offset: int, length: int, byte: int) -> None:
        assert self.fs is not None
        key = data.draw(st.sampled_from(self._files()))
        buf = self.model[key][1]
        assert buf is not None
        payload = bytes([byte]) * length
        self.fs.write(self._ino(key), offset, payload)
        if length:
            self.mtimes.pop(key, None)
        if length:
            if offset > len(buf):
                buf.extend(bytes(offset - len(buf)))
            buf[offset : offset + length] = payload

    @precondition(lambda self: self._files())
    @rule(data=st.data(), size=st.integers(0, 30_000))
    def truncate(self, data: st.DataObject, size: int) -> None:
        assert self.fs is not None
        key = data.draw(st.sampled_from(self._files()))
        buf = self.model[key][1]
        assert buf is not None
        if size != len(buf):
            self.mtimes.pop(key, None)
        self.fs.setattr(self._ino(key), size=size)
        if size < len(buf):
            del buf[size:]
        else:
            buf.extend(bytes(size - len(buf)))

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        assert self.fs is not None
        key = data.draw(st.sampled_from(sorted(self.model)))
        pino = self._ino(key[:-1])
        name = self.model[key][0]
        if self.model[key][1] is not None:
            self.fs.unlink(pino, name)
        elif self._children(key):
            with pytest.raises(NotEmpty):
                self.fs.rmdir(pino, name)
            return
        else:
            self.fs.rmdir(pino, name)
        del self.model[key]
        self.mtimes.pop(key, None)

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def rename(self, data: st.DataObject, name: str) -> None:
        assert self.fs is not None
        src = data.draw(st.sampled_from(sorted(self.model)))
        dst_parent = data.draw(st.sampled_from(self._dirs()))
        dst = (*dst_parent, _fold(name))
        src_is_dir = self.model[src][1] is None
        sp, dp = self._ino(src[:-1]), self._ino(dst_parent)
        src_name = self.model[src][0]

        def expect(exc: type[FilesystemError]) -> None:
            with pytest.raises(exc):
                self.fs.rename(sp, src_name, dp, name)  # type: ignore[union-attr]

        if src_is_dir and dst[: len(src)] == src and dst != src:
            return expect(InvalidOperation)
        if dst in self.model and dst != src:
            target_is_dir = self.model[dst][1] is None
            if src_is_dir and not target_is_dir:
                return expect(NotADirectory)
            if not src_is_dir and target_is_dir:
                return expect(IsADirectory)
            if target_is_dir and self._children(dst):
                return expect(NotEmpty)
        self.fs.rename(sp, src_name, dp, name)
        if dst == src:
            self.model[src] = (name, self.model[src][1])
            return
        moved = {k: v for k, v in self.model.items() if k[: len(src)] == src}
        moved_times = {k: self.mtimes.pop(k) for k in list(self.mtimes) if k[: len(src)] == src}
        for k in [k for k in self.mtimes if k[: len(dst)] == dst]:
            del self.mtimes[k]
        for k, t in moved_times.items():
            self.mtimes[dst + k[len(src) :]] = t
        for k in list(self.model):
            if k[: len(dst)] == dst:
                del self.model[k]
        for k in moved:
            del self.model[k]
        for k, v in moved.items():
            newkey = dst + k[len(src) :]
            self.model[newkey] = (name, v[1]) if k == src else v

    @precondition(lambda self: len(self.model) > 1)
    @rule(data=st.data())
    def exchange(self, data: st.DataObject) -> None:
        assert self.fs is not None
        keys = sorted(self.model)
        s_key = data.draw(st.sampled_from(keys))
        d_key = data.draw(st.sampled_from(keys))
        sp, dp = self._ino(s_key[:-1]), self._ino(d_key[:-1])
        s_name, d_name = self.model[s_key][0], self.model[d_key][0]
        if s_key == d_key:
            self.fs.rename(sp, s_name, dp, d_name, RENAME_EXCHANGE)
            return
        if d_key[: len(s_key)] == s_key or s_key[: len(d_key)] == d_key:
            with pytest.raises(InvalidOperation):
                self.fs.rename(sp, s_name, dp, d_name, RENAME_EXCHANGE)
            return
        self.fs.rename(sp, s_name, dp, d_name, RENAME_EXCHANGE)

        def swap(table: dict[tuple[str, ...], object], keep_names: bool) -> None:
            under_s = {k: table.pop(k) for k in list(table) if k[: len(s_key)] == s_key}
            under_d = {k: table.pop(k) for k in list(table) if k[: len(d_key)] == d_key}
            for k, v in under_s.items():
                table[d_key + k[len(s_key) :]] = v
            for k, v in under_d.items():
                table[s_key + k[len(d_key) :]] = v
            if keep_names:  # the two top names stay where they were
                sv, dv = table[s_key], table[d_key]
                table[s_key] = (s_name, sv[1])  # type: ignore[index]
                table[d_key] = (d_name, dv[1])  # type: ignore[index]

        swap(self.model, True)  # type: ignore[arg-type]
        swap(self.mtimes, False)  # type: ignore[arg-type]

    @precondition(lambda self: self._files())
    @rule(data=st.data(), when=st.integers(-(10**18), 5 * 10**18))
    def touch(self, data: st.DataObject, when: int) -> None:
        assert self.fs is not None
        key = data.draw(st.sampled_from(self._files()))
        self.fs.setattr(self._ino(key), mtime_ns=when)
        clamped = min(max(when, times.MIN_NS), times.MAX_NS)
        self.mtimes[key] = clamped // 2_000_000_000 * 2_000_000_000

    @rule()
    def remount(self) -> None:
        self._close()
        self._open()

    @invariant()
    def tree_matches(self) -> None:
        if self.fs is not None:
            assert fs_tree(self.fs) == self._expected()
            for key, mtime in self.mtimes.items():
                if key in self.model:
                    assert self.fs.getattr(self._ino(key)).st_mtime_ns == mtime


FatMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("BURROW_FAT_EXAMPLES", "20")),
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_fat_state_machine = FatMachine.TestCase
