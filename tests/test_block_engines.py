"""Conformance of the basic engines (raw, memory, slice) plus raw-file specifics."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from blockconformance import SIZE, check_extents, ops_strategy, run_workload
from burrow import block
from burrow.block.device import BlockDevice, ExtentFlags
from burrow.block.filters import CacheFilter, FaultFilter, ReadOnlyFilter, StatsFilter
from burrow.block.memory import MemoryDevice
from burrow.block.overlay import OverlayDevice
from burrow.block.qcow2 import create_qcow2
from burrow.block.raw import RawDevice
from burrow.block.slice import SliceDevice
from burrow.errors import InvalidArgument, ReadOnly
from qcow2_helpers import fast_tmp_dir


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Overrides pytest's tmp_path with a tmpfs directory (see qcow2_helpers.fast_tmp_dir)."""
    yield from fast_tmp_dir()


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


def _raw_with_data(tmp: Path) -> Path:
    p = tmp / f"base{os.urandom(4).hex()}.img"
    data = bytearray(os.urandom(SIZE))
    data[SIZE // 3 : SIZE // 2] = bytes(SIZE // 2 - SIZE // 3)
    p.write_bytes(bytes(data))
    return p


def _qcow2(tmp: Path) -> BlockDevice:
    return create_qcow2(tmp / f"q{os.urandom(4).hex()}.qcow2", SIZE, cluster_size=4096)


def _qcow2_backed(tmp: Path) -> BlockDevice:
    base = _raw_with_data(tmp)
    return create_qcow2(
        tmp / f"q{os.urandom(4).hex()}.qcow2", SIZE, cluster_size=65536, backing=base.name
    )


def _overlay_memory(tmp: Path) -> BlockDevice:
    return OverlayDevice(MemoryDevice(SIZE, data=os.urandom(SIZE)), owns_base=True)


def _overlay_side(tmp: Path) -> BlockDevice:
    base = RawDevice(_raw_with_data(tmp))  # read-only base: the overlay takes every write
    return OverlayDevice(base, side_path=tmp / f"side{os.urandom(4).hex()}", owns_base=True)


def _overlay_qcow2(tmp: Path) -> BlockDevice:
    base = _qcow2_backed(tmp)
    base.pwrite(b"\x99" * 100_000, 200_000)
    return OverlayDevice(base, chunk_size=512, owns_base=True)


def _stats(tmp: Path) -> BlockDevice:
    return StatsFilter(_raw(tmp))


def _faults(tmp: Path) -> BlockDevice:
    dev = FaultFilter(MemoryDevice(SIZE))
    dev.add_fault("read", 0, 1, times=0)  # a rule that never fires must not disturb anything
    return dev


def _cache(tmp: Path) -> BlockDevice:
    return CacheFilter(_raw(tmp), block_size=4096, capacity_blocks=16)


def _readonly_under_overlay(tmp: Path) -> BlockDevice:
    return OverlayDevice(ReadOnlyFilter(RawDevice(_raw_with_data(tmp))), owns_base=True)


def _stack_filters_qcow2(tmp: Path) -> BlockDevice:
    return CacheFilter(StatsFilter(FaultFilter(_qcow2(tmp))), block_size=8192, capacity_blocks=8)


def _stack_overlay_cache(tmp: Path) -> BlockDevice:
    inner = CacheFilter(ReadOnlyFilter(RawDevice(_raw_with_data(tmp))), capacity_blocks=4)
    return StatsFilter(OverlayDevice(inner, owns_base=True))


def _stack_slice_of_qcow2(tmp: Path) -> BlockDevice:
    q = create_qcow2(tmp / f"s{os.urandom(4).hex()}.qcow2", SIZE + (1 << 20), cluster_size=512)
    return FaultFilter(SliceDevice(StatsFilter(q), 12345 * 8, SIZE, owns_base=True))


FACTORIES = {
    "raw": _raw,
    "memory": _memory,
    "slice": _slice,
    "qcow2": _qcow2,
    "qcow2-backed": _qcow2_backed,
    "overlay-memory": _overlay_memory,
    "overlay-side-file": _overlay_side,
    "overlay-over-qcow2": _overlay_qcow2,
    "filter-stats": _stats,
    "filter-faults": _faults,
    "filter-cache": _cache,
    "filter-readonly-under-overlay": _readonly_under_overlay,
    "stack-cache-stats-faults-qcow2": _stack_filters_qcow2,
    "stack-stats-overlay-cache-readonly": _stack_overlay_cache,
    "stack-faults-slice-stats-qcow2": _stack_slice_of_qcow2,
}


@pytest.mark.parametrize("engine", sorted(FACTORIES))
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
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
