"""Filters: what each one adds beyond the shared conformance suite (test_block_engines.py)."""

from __future__ import annotations

import itertools
import random
import threading
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings

from blockconformance import SIZE, ops_strategy, run_workload
from burrow.block.device import BlockDevice
from burrow.block.filters import CacheFilter, FaultFilter, ReadOnlyFilter, StatsFilter
from burrow.block.memory import MemoryDevice
from burrow.errors import InvalidArgument, IOFailure, ReadOnly


def _mem(data: bytes | None = None) -> MemoryDevice:
    return MemoryDevice(SIZE, data=data if data is not None else random.randbytes(SIZE))


def _ops(dev: BlockDevice) -> dict[str, dict[str, float]]:
    stats = dev.statistics()
    assert isinstance(stats, dict)
    return stats["ops"]  # type: ignore[return-value]


WRAPPERS: dict[str, Callable[[BlockDevice], BlockDevice]] = {
    "stats": StatsFilter,
    "cache": lambda d: CacheFilter(d, block_size=4096, capacity_blocks=8),
    "faults": FaultFilter,
}


@pytest.mark.parametrize("order", list(itertools.permutations(sorted(WRAPPERS))))
@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops_strategy())
def test_filters_stack_in_any_order(
    order: tuple[str, ...], ops: list[tuple[str, int, int, int]]
) -> None:
    dev: BlockDevice = _mem()
    for name in order:
        dev = WRAPPERS[name](dev)
    with dev:
        run_workload(dev, ops)


def test_readonly_filter() -> None:
    base = _mem()
    with ReadOnlyFilter(base) as ro:
        assert ro.readonly and not base.readonly
        assert ro.pread(100, 5) == base.pread(100, 5)
        for call in (
            lambda: ro.pwrite(b"x", 0),
            lambda: ro.discard(10, 0),
            lambda: ro.write_zeroes(10, 0),
        ):
            with pytest.raises(ReadOnly):
                call()
        ro.flush()
    assert base.closed  # filters own the device below by default
    keep = _mem()
    ReadOnlyFilter(keep, owns_base=False).close()
    assert not keep.closed


def test_stats_filter_counts_bytes_and_latency() -> None:
    with StatsFilter(_mem()) as st:
        st.pwrite(b"a" * 1000, 0)
        st.pwrite(b"b" * 24, 5000, fua=True)
        st.pread(300, 0)
        st.pread(700, 100)
        st.pread(1, 0)
        st.write_zeroes(4096, 8192)
        st.discard(512, 0)
        st.flush()
        list(st.extents(SIZE, 0))
        ops = _ops(st)
    assert ops["write"]["count"] == 2 and ops["write"]["bytes"] == 1024
    assert ops["read"]["count"] == 3 and ops["read"]["bytes"] == 1001
    assert ops["zero"]["count"] == 1 and ops["zero"]["bytes"] == 4096
    assert ops["discard"]["count"] == 1 and ops["flush"]["count"] >= 1
    assert ops["extents"]["count"] == 1
    assert ops["read"]["total_seconds"] > 0
    assert ops["read"]["max_seconds"] >= ops["read"]["mean_seconds"] > 0


def test_stats_counts_errors_from_below() -> None:
    faults = FaultFilter(_mem())
    faults.add_fault("read", 1000, 10)
    with StatsFilter(faults) as st:
        with pytest.raises(IOFailure):
            st.pread(100, 950)
        st.pread(100, 0)
        ops = _ops(st)
    assert ops["read"]["count"] == 2 and ops["read"]["errors"] == 1


def test_fault_filter_eio_ranges_and_times() -> None:
    data = random.randbytes(SIZE)
    with FaultFilter(_mem(data)) as dev:
        dev.add_fault("read", 4096, 4096, times=2)
        assert dev.pread(4096, 0) == data[:4096]  # outside the range
        for _ in range(2):
            with pytest.raises(IOFailure) as err:
                dev.pread(10, 8190)
            assert err.value.errno == 5
        assert dev.pread(10, 8190) == data[8190:8200]  # spent
        dev.add_fault("flush")
        with pytest.raises(IOFailure):
            dev.flush()
        dev.clear()
        dev.flush()
        with pytest.raises(InvalidArgument):
            dev.add_fault("explode")


def test_fault_filter_short_write_is_torn() -> None:
    base = _mem(bytes(SIZE))
    with FaultFilter(base, owns_base=False) as dev:
        dev.add_fault("write", 0, None, times=1, kind="short", short_bytes=100)
        with pytest.raises(IOFailure):
            dev.pwrite(b"\xff" * 1000, 0)
        assert base.pread(1000, 0) == b"\xff" * 100 + bytes(900)
        dev.pwrite(b"\xff" * 1000, 0)
        assert base.pread(1000, 0) == b"\xff" * 1000


def test_fault_filter_crash_after_n_writes() -> None:
    base = _mem(bytes(SIZE))
    dev = FaultFilter(base, owns_base=False)
    dev.pwrite(b"0", 0)
    dev.crash_after(3)
    for i in range(1, 4):
        dev.pwrite(bytes([i]), i)
    for i in range(4, 8):
        with pytest.raises(IOFailure):
            dev.pwrite(bytes([i]), i)
    with pytest.raises(IOFailure):
        dev.write_zeroes(10, 0)
    with pytest.raises(IOFailure):
        dev.flush()
    assert dev.crashed and dev.dropped == 5
    assert base.pread(8, 0) == b"0\x01\x02\x03\x00\x00\x00\x00"
    assert dev.pread(8, 0) == base.pread(8, 0)  # reads still work after the "crash"


def test_cache_filter_hits_and_invalidation() -> None:
    data = random.randbytes(SIZE)
    below = StatsFilter(_mem(data))
    with CacheFilter(below, block_size=4096, capacity_blocks=64) as cache:
        assert cache.pread(10_000, 1000) == data[1000:11000]
        reads_before = _ops(below)["read"]["count"]
        for _ in range(5):
            assert cache.pread(9_000, 1500) == data[1500:10500]
        assert _ops(below)["read"]["count"] == reads_before  # all hits
        cache.pwrite(b"\x01" * 10, 5000)
        assert cache.pread(20, 4995) == data[4995:5000] + b"\x01" * 10 + data[5010:5015]
        assert _ops(below)["read"]["count"] == reads_before + 1
        cache.write_zeroes(4096, 8192)
        assert cache.pread(4096, 8192) == bytes(4096)
        stats = cache.statistics()
        assert stats["hits"] > 0 and stats["misses"] > 0
        # NBD_CMD_CACHE prefetches: the next read of that range costs no read below.
        cache.cache(65536, 200_000)
        reads_before = _ops(below)["read"]["count"]
        assert cache.pread(65536, 200_000) == data[200_000:265_536]
        assert _ops(below)["read"]["count"] == reads_before
        assert cache.can_cache
        # Capacity is respected.
        for off in range(0, SIZE, 4096):
            cache.pread(1, off)
        assert cache.statistics()["cached_blocks"] == 64


def test_cache_filter_threads_never_serve_stale_data() -> None:
    base = _mem(bytes(SIZE))
    cache = CacheFilter(base, block_size=4096, capacity_blocks=32)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        # The writer only ever increases the byte, so a reader that sees it go backwards
        # was served a stale block.
        prev = 0
        try:
            while not stop.is_set():
                got = cache.pread(1, 0)[0]
                assert got >= prev, (got, prev)
                prev = got
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(1, 256):
        cache.pwrite(bytes([i]), 0)
        assert cache.pread(1, 0)[0] == i
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    cache.close()


def test_filters_run_the_shared_conformance_workload() -> None:
    rng = random.Random(11)
    ops = [
        (
            rng.choice(["write", "read", "zero", "discard", "flush"]),
            rng.randrange(SIZE),
            rng.randrange(1, 70000),
            rng.randrange(256),
        )
        for _ in range(200)
    ]
    for wrap in WRAPPERS.values():
        with wrap(_mem()) as dev:
            run_workload(dev, ops)
