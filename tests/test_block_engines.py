"""Conformance of the basic engines (raw, memory, slice) plus raw-file specifics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from blockconformance import SIZE, check_extents, ops_strategy, run_workload
from burrow import block
from burrow.block.device import BlockDevice, ExtentFlags
from burrow.block.memory import MemoryDevice
from burrow.block.raw import RawDevice
from burrow.block.slice import SliceDevice
from burrow.errors import InvalidArgument, ReadOnly


def _raw(tmp: Path) -> BlockDevice:
    p = tmp / f"raw{os.urandom(4).hex()}.img"
    with open(p, "wb") as f:
        f.truncate(SIZE)
    return RawDevice(p, readonly=False)


def _memory(tmp: Path) -> BlockDevice:
    return MemoryDevice(SIZE, page_size=4096)


def _slice(tmp: Path) -> BlockDevice:
    base = MemoryDevice(SIZE + 12345 + 999)
    base.pwrite(b"\xaa" * 12345, 0)
    return SliceDevice(base, 12345, SIZE, owns_base=True)


FACTORIES = {"raw": _raw, "memory": _memory, "slice": _slice}


@pytest.mark.parametrize("engine", sorted(FACTORIES))
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops_strategy())
def test_conformance(engine: str, tmp_path: Path, ops: list[tuple[str, int, int, int]]) -> None:
    with FACTORIES[engine](tmp_path) as dev:
        run_workload(dev, ops)


@pytest.mark.parametrize("engine", sorted(FACTORIES))
def test_bounds_and_readonly(engine: str, tmp_path: Path) -> None:
    dev = FACTORIES[engine](tmp_path)
    with dev:
        with pytest.raises(InvalidArgument):
            dev.pread(10, dev.size - 5)
        with pytest.raises(InvalidArgument):
            dev.pwrite(b"x", -1)
        assert dev.pread(0, dev.size) == b""
    if engine == "raw":
        path = dev.path  # type: ignore[attr-defined]
        with RawDevice(path) as ro:
            assert ro.readonly
            with pytest.raises(ReadOnly):
                ro.pwrite(b"x", 0)


def test_raw_extents_match_seek_data(tmp_path: Path) -> None:
    p = tmp_path / "sparse.img"
    with open(p, "wb") as f:
        f.truncate(16 << 20)
        f.seek(4 << 20)
        f.write(b"x" * 65536)
    with block.open(p) as dev:
        exts = list(dev.extents(dev.size, 0))
        data = [e for e in exts if not e.flags & ExtentFlags.HOLE]
        assert sum(e.length for e in exts) == 16 << 20
        # The filesystem may round data up to its block size, but the written range is data.
        assert any(e.offset <= 4 << 20 and e.offset + e.length >= (4 << 20) + 65536 for e in data)
        assert sum(e.length for e in data) < 4 << 20
        check_extents(dev, dev.pread(dev.size, 0))


def test_raw_discard_punches_hole(tmp_path: Path) -> None:
    p = tmp_path / "d.img"
    p.write_bytes(b"\x55" * (4 << 20))
    with RawDevice(p, readonly=False) as dev:
        dev.discard(1 << 20, 1 << 20)
        assert dev.pread(1 << 20, 1 << 20) == bytes(1 << 20)
    assert os.stat(p).st_blocks * 512 < 4 << 20


def test_open_detects_raw_and_refuses_unknown_format(tmp_path: Path) -> None:
    p = tmp_path / "x.img"
    p.write_bytes(b"hello" + bytes(507))
    assert block.detect_format(p) == "raw"
    with block.open(p) as dev:
        assert dev.pread(5, 0) == b"hello"
    from burrow.errors import UsageError

    with pytest.raises(UsageError):
        block.open(p, format="vmdk")


def test_create_raw_refuses_overwrite(tmp_path: Path) -> None:
    p = tmp_path / "new.img"
    with block.create(p, 1 << 20, format="raw") as dev:
        dev.pwrite(b"abc", 100)
    assert p.stat().st_size == 1 << 20
    with pytest.raises(FileExistsError):
        block.create(p, 1 << 20, format="raw")
