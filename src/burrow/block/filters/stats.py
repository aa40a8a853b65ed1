"""``StatsFilter``: counts, bytes and latency per operation, exposed by ``statistics()``.

Counters are updated under a lock so several threads can share one filter. Latencies are
wall-clock seconds measured around the call to the device below (``time.perf_counter``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from burrow.block.device import BlockDevice, Extent
from burrow.block.filters.base import FilterDevice

__all__ = ["OpStats", "StatsFilter"]

OPS = ("read", "write", "flush", "discard", "zero", "extents")


class OpStats:
    __slots__ = ("bytes", "count", "errors", "max_seconds", "total_seconds")

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.errors = 0
        self.total_seconds = 0.0
        self.max_seconds = 0.0

    def as_dict(self) -> dict[str, float | int]:
        mean = self.total_seconds / self.count if self.count else 0.0
        return {
            "count": self.count,
            "bytes": self.bytes,
            "errors": self.errors,
            "total_seconds": self.total_seconds,
            "mean_seconds": mean,
            "max_seconds": self.max_seconds,
        }


class StatsFilter(FilterDevice):
    def __init__(self, base: BlockDevice, *, owns_base: bool = True) -> None:
        super().__init__(base, owns_base=owns_base)
        self._lock = threading.Lock()
        self._ops = {op: OpStats() for op in OPS}

    def _record(self, op: str, nbytes: int, start: float, failed: bool) -> None:
        elapsed = time.perf_counter() - start
        with self._lock:
            st = self._ops[op]
            st.count += 1
            st.bytes += nbytes
            st.errors += failed
            st.total_seconds += elapsed
            st.max_seconds = max(st.max_seconds, elapsed)

    def _timed(
        self, op: str, nbytes: int, fn: Callable[..., object], *args: object, **kw: object
    ) -> None:
        start = time.perf_counter()
        failed = True
        try:
            fn(*args, **kw)
            failed = False
        finally:
            self._record(op, nbytes, start, failed)

    def _preadinto(self, buf: memoryview, offset: int) -> None:
        self._timed("read", len(buf), self.base.preadinto, buf, offset)

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        self._timed("write", len(data), self.base.pwrite, data, offset, fua=fua)

    def _flush(self) -> None:
        self._timed("flush", 0, self.base.flush)

    def _discard(self, n: int, offset: int) -> None:
        self._timed("discard", n, self.base.discard, n, offset)

    def _write_zeroes(self, n: int, offset: int, may_unmap: bool) -> None:
        self._timed("zero", n, self.base.write_zeroes, n, offset, may_unmap=may_unmap)

    def _extents(self, n: int, offset: int) -> Iterator[Extent]:
        start = time.perf_counter()
        failed = True
        try:
            out = list(self.base.extents(n, offset))
            failed = False
        finally:
            self._record("extents", n, start, failed)
        return iter(out)

    def statistics(self) -> dict[str, object]:
        with self._lock:
            ops = {op: st.as_dict() for op, st in self._ops.items()}
        return {"ops": ops, "base": self.base.statistics()}

    def reset(self) -> None:
        with self._lock:
            self._ops = {op: OpStats() for op in OPS}
