"""``FaultFilter``: inject failures, for testing what sits above a device.

* ``add_fault(op, offset, length, ...)`` makes matching requests raise ``IOFailure`` (EIO),
  a given number of times or forever; ``kind="short"`` makes a write store only its first
  ``short_bytes`` bytes before failing (a torn write).
* ``crash_after(n)`` simulates power loss after the n-th successful write-type request
  (write, zero, discard): every later write, zero, discard and flush raises ``IOFailure`` and
  is dropped. Reads keep working and see what reached the device below, as a reboot would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

from burrow.block.device import BlockDevice, Extent
from burrow.block.filters.base import FilterDevice
from burrow.errors import InvalidArgument, IOFailure

__all__ = ["Fault", "FaultFilter"]

OPS = ("read", "write", "flush", "discard", "zero", "extents", "any")


@dataclass
class Fault:
    op: str
    offset: int = 0
    length: int | None = None  # None: to the end of the device
    times: int | None = None  # None: every time
    kind: str = "eio"  # "eio" or "short" (writes only)
    short_bytes: int = 0
    hits: int = 0

    def matches(self, op: str, n: int, offset: int) -> bool:
        if self.op not in (op, "any"):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        if op == "flush":
            return True
        end = None if self.length is None else self.offset + self.length
        return offset + max(n, 1) > self.offset and (end is None or offset < end)


class FaultFilter(FilterDevice):
    def __init__(
        self,
        base: BlockDevice,
        *,
        crash_after_writes: int | None = None,
        owns_base: bool = True,
    ) -> None:
        super().__init__(base, owns_base=owns_base)
        self._lock = threading.Lock()
        self.faults: list[Fault] = []
        self.writes_done = 0
        self._crash_after = crash_after_writes
        self.crashed = False
        self.dropped = 0

    # -- configuration ----------------------------------------------------------------------
    def add_fault(
        self,
        op: str,
        offset: int = 0,
        length: int | None = None,
        *,
        times: int | None = None,
        kind: str = "eio",
        short_bytes: int = 0,
    ) -> Fault:
        if op not in OPS or kind not in ("eio", "short"):
            raise InvalidArgument(f"unknown fault {op!r}/{kind!r}")
        fault = Fault(op, offset, length, times, kind, short_bytes)
        with self._lock:
            self.faults.append(fault)
        return fault

    def crash_after(self, n: int) -> None:
        """Drop every write-type request after the next ``n`` successful ones."""
        with self._lock:
            self._crash_after = self.writes_done + n
            self.crashed = self._crash_after <= self.writes_done

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self._crash_after = None
            self.crashed = False

    # -- the checks ---------------------------------------------------------------------------
    def _fault_for(self, op: str, n: int, offset: int) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(op, n, offset):
                    fault.hits += 1
                    return fault
        return None

    def _before_write(self, op: str, n: int, offset: int) -> Fault | None:
        with self._lock:
            if self._crash_after is not None and self.writes_done >= self._crash_after:
                self.crashed = True
                self.dropped += 1
                raise IOFailure(f"injected crash: {op} after write #{self._crash_after} dropped")
        fault = self._fault_for(op, n, offset)
        if fault is not None and fault.kind == "eio":
            raise IOFailure(f"injected EIO on {op} [{offset}, {offset + n})")
        return fault

    def _after_write(self) -> None:
        with self._lock:
            self.writes_done += 1

    # -- hooks ----------------------------------------------------------------------------------
    def _preadinto(self, buf: memoryview, offset: int) -> None:
        if self._fault_for("read", len(buf), offset) is not None:
            raise IOFailure(f"injected EIO on read [{offset}, {offset + len(buf)})")
        self.base.preadinto(buf, offset)

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        fault = self._before_write("write", len(data), offset)
        if fault is not None:  # a short (torn) write: part of the data lands, then EIO
            keep = min(len(data), fault.short_bytes)
            if keep:
                self.base.pwrite(data[:keep], offset)
            raise IOFailure(f"injected short write: {keep} of {len(data)} bytes at {offset}")
        self.base.pwrite(data, offset, fua=fua)
        self._after_write()

    def _flush(self) -> None:
        with self._lock:
            if self._crash_after is not None and self.writes_done >= self._crash_after:
                self.crashed = True
                raise IOFailure("injected crash: flush after the crash point")
        if self._fault_for("flush", 0, 0) is not None:
            raise IOFailure("injected EIO on flush")
        self.base.flush()

    def _discard(self, n: int, offset: int) -> None:
        self._before_write("discard", n, offset)
        self.base.discard(n, offset)
        self._after_write()

    def _write_zeroes(self, n: int, offset: int, may_unmap: bool) -> None:
        self._before_write("zero", n, offset)
        self.base.write_zeroes(n, offset, may_unmap=may_unmap)
        self._after_write()

    def _extents(self, n: int, offset: int) -> Iterator[Extent]:
        if self._fault_for("extents", n, offset) is not None:
            raise IOFailure("injected EIO on extents")
        return self.base.extents(n, offset)

    def statistics(self) -> dict[str, object]:
        return {
            "writes_done": self.writes_done,
            "crashed": self.crashed,
            "dropped": self.dropped,
            "faults_hit": sum(f.hits for f in self.faults),
            "base": self.base.statistics(),
        }
