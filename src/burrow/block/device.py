"""The ``BlockDevice`` interface every engine, filter, partition and export is built on.

Shape: modelled on ``os.pread``/``os.pwrite`` argument order (``n`` before ``offset``) and on
nbdkit's plugin callbacks, so an NBD request maps onto one method call.

Engines subclass :class:`BlockDevice` and implement the underscore hooks (``_preadinto``,
``_pwrite``, ...). The public methods do the checking once, here: bounds, read-only, FUA
emulation (write then flush), zero emulation (write zero buffers), so engines stay small and
every engine refuses bad requests the same way.

Thread-safety rule (every engine and filter must keep it):

* ``pread``/``preadinto``/``extents`` may be called concurrently from several threads.
  Engines use positional I/O (no shared file position) and guard any mutable metadata cache.
* Writes (``pwrite``, ``discard``, ``write_zeroes``, ``flush``) may also come from several
  threads; an engine that keeps mutable metadata (qcow2, overlay) serialises them with its own
  lock. Reads concurrent with a write to the same range see old or new data per sector, never
  anything else.
* ``close`` must not race with other calls.

Flush/FUA semantics follow the kernel's ``writeback_cache_control.rst``: after ``flush()``
returns, every write that completed before the call is durable; a write with ``fua=True`` is
durable when it returns. Filters and slices pass ``flush`` through to the device below.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from types import TracebackType
from typing import NamedTuple, Self

from burrow.errors import InvalidArgument, ReadOnly, Unsupported

__all__ = ["BlockDevice", "Extent", "ExtentFlags", "check_range"]

# Largest single zero buffer written by the write_zeroes emulation (bounded memory).
ZERO_CHUNK = 1 << 20
_ZEROS = bytes(ZERO_CHUNK)


class ExtentFlags(enum.IntFlag):
    """Allocation state of a run, with the same bits as NBD's ``base:allocation`` context."""

    DATA = 0
    HOLE = 1  # not allocated in this layer (reads come from below or as zeros)
    ZERO = 2  # reads as zeros


class Extent(NamedTuple):
    """A run of bytes with one allocation state. ``offset`` and ``length`` are in bytes."""

    offset: int
    length: int
    flags: ExtentFlags

    @property
    def is_data(self) -> bool:
        return not (self.flags & ExtentFlags.ZERO)


def check_range(size: int, n: int, offset: int) -> None:
    """Raise ``InvalidArgument`` unless ``[offset, offset+n)`` lies inside ``[0, size)``."""
    if n < 0 or offset < 0:
        raise InvalidArgument(f"negative length or offset (n={n}, offset={offset})")
    if offset + n > size:
        raise InvalidArgument(
            f"request [{offset}, {offset + n}) is beyond the end of the device ({size} bytes)"
        )


class BlockDevice:
    """A fixed-size array of bytes with optional write, flush, discard, zero and extent support.

    Subclasses set ``_size`` (and optionally ``_block_size``/``_readonly``) and implement
    ``_preadinto``; writable engines implement ``_pwrite`` and may implement ``_flush``,
    ``_discard``, ``_write_zeroes`` and ``_extents`` and set the matching ``can_*`` flags.
    """

    # Capability flags. Defaults describe what the base class provides by emulation.
    can_flush: bool = True  # flush is always callable (a no-op when there is nothing to do)
    can_fua: bool = False  # native FUA; when False, fua=True is emulated by a flush
    can_discard: bool = False  # True when discard really frees space
    can_write_zeroes: bool = False  # True when zeroing is efficient (not emulated by writes)
    can_extents: bool = False  # True when extents() reports real holes
    can_multi_conn: bool = False  # True when several connections see each other's writes
    can_cache: bool = False  # True when cache() prefetches

    _size: int = 0
    _block_size: int = 512
    _readonly: bool = True
    _closed: bool = False

    # -- properties -----------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Size in bytes."""
        return self._size

    @property
    def block_size(self) -> int:
        """Preferred (minimum efficient) I/O granularity in bytes; requests need not align."""
        return self._block_size

    @property
    def readonly(self) -> bool:
        return self._readonly

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reads -----------------------------------------------------------------------------
    def pread(self, n: int, offset: int) -> bytes:
        """Read exactly ``n`` bytes at ``offset``."""
        check_range(self._size, n, offset)
        if n == 0:
            return b""
        buf = bytearray(n)
        self._preadinto(memoryview(buf), offset)
        return bytes(buf)

    def preadinto(self, buf: bytearray | memoryview, offset: int) -> int:
        """Fill ``buf`` from ``offset``; returns ``len(buf)``. The zero-copy path for bulk reads."""
        mv = memoryview(buf).cast("B")
        check_range(self._size, len(mv), offset)
        if len(mv):
            self._preadinto(mv, offset)
        return len(mv)

    # -- writes ----------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._readonly:
            raise ReadOnly("device is read-only")

    def pwrite(
        self, data: bytes | bytearray | memoryview, offset: int, *, fua: bool = False
    ) -> None:
        """Write all of ``data`` at ``offset``; with ``fua`` it is durable on return."""
        self._check_writable()
        mv = memoryview(data).cast("B")
        check_range(self._size, len(mv), offset)
        if len(mv):
            self._pwrite(mv, offset, fua and self.can_fua)
        if fua and not self.can_fua:
            self._flush()

    def flush(self) -> None:
        """Make every completed write durable."""
        if not self._readonly:
            self._flush()

    def discard(self, n: int, offset: int) -> None:
        """Tell the device the range is no longer needed. Advisory: contents become unspecified
        (engines here make them read as zeros or leave them unchanged)."""
        self._check_writable()
        check_range(self._size, n, offset)
        if n and self.can_discard:
            self._discard(n, offset)

    def write_zeroes(
        self, n: int, offset: int, *, may_unmap: bool = False, fua: bool = False, fast: bool = False
    ) -> None:
        """Make ``[offset, offset+n)`` read as zeros.

        ``may_unmap`` allows freeing the space (a hole); ``fast`` asks to fail with
        ``Unsupported("fast-zero")`` rather than fall back to writing zero buffers (NBD's
        FAST_ZERO).
        """
        self._check_writable()
        check_range(self._size, n, offset)
        if n:
            if self.can_write_zeroes:
                self._write_zeroes(n, offset, may_unmap)
            elif fast:
                raise Unsupported("fast-zero", "this device cannot zero faster than writing")
            else:
                pos, end = offset, offset + n
                while pos < end:
                    chunk = min(ZERO_CHUNK, end - pos)
                    self._pwrite(memoryview(_ZEROS)[:chunk], pos, False)
                    pos += chunk
        if fua:
            self._flush()

    def cache(self, n: int, offset: int) -> None:
        """Advise that the range will be read soon (NBD_CMD_CACHE). Default: nothing."""
        check_range(self._size, n, offset)

    # -- allocation map -------------------------------------------------------------------
    def extents(self, n: int, offset: int) -> Iterator[Extent]:
        """Yield contiguous runs covering ``[offset, offset+n)`` in order, with no gaps.

        Engines without allocation knowledge report one data extent.
        """
        check_range(self._size, n, offset)
        if n == 0:
            return iter(())
        return self._extents(n, offset)

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Flush (when writable) and release resources. Safe to call twice."""
        if self._closed:
            return
        try:
            if not self._readonly:
                self._flush()
        finally:
            self._closed = True
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def statistics(self) -> dict[str, object]:
        """Counters for monitoring; engines and filters add their own."""
        return {}

    def __repr__(self) -> str:
        mode = "ro" if self._readonly else "rw"
        return f"<{type(self).__name__} size={self._size} {mode}>"

    # -- hooks for engines ---------------------------------------------------------------
    def _preadinto(self, buf: memoryview, offset: int) -> None:
        raise NotImplementedError

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        raise ReadOnly("device does not support writing")

    def _flush(self) -> None:
        return None

    def _discard(self, n: int, offset: int) -> None:
        return None

    def _write_zeroes(self, n: int, offset: int, may_unmap: bool) -> None:
        pos, end = offset, offset + n
        while pos < end:
            chunk = min(ZERO_CHUNK, end - pos)
            self._pwrite(memoryview(_ZEROS)[:chunk], pos, False)
            pos += chunk

    def _extents(self, n: int, offset: int) -> Iterator[Extent]:
        yield Extent(offset, n, ExtentFlags.DATA)

    def _close(self) -> None:
        return None
