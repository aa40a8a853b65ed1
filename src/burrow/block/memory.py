"""``MemoryDevice``: a sparse in-RAM device, for tests, scratch space and overlays.

Stores fixed-size pages in a dict; pages never written read as zeros and show as holes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from burrow.block.device import BlockDevice, Extent, ExtentFlags

__all__ = ["MemoryDevice"]


class MemoryDevice(BlockDevice):
    """A sparse byte array of ``size`` bytes held in pages of ``page_size`` bytes."""

    can_discard = True
    can_write_zeroes = True
    can_extents = True
    can_fua = True  # memory is as durable as it gets
    can_multi_conn = True

    def __init__(self, size: int, *, page_size: int = 65536, data: bytes | None = None) -> None:
        if size < 0 or page_size <= 0 or page_size & (page_size - 1):
            raise ValueError("size must be >= 0 and page_size a power of two")
        self._size = size
        self._page = page_size
        self._pages: dict[int, bytearray] = {}
        self._readonly = False
        self._lock = threading.Lock()
        if data:
            self._pwrite(memoryview(data)[:size], 0, False)

    def _preadinto(self, buf: memoryview, offset: int) -> None:
        page, pages = self._page, self._pages
        pos, end, out = offset, offset + len(buf), 0
        while pos < end:
            idx, within = divmod(pos, page)
            take = min(page - within, end - pos)
            data = pages.get(idx)
            if data is None:
                buf[out : out + take] = bytes(take)
            else:
                buf[out : out + take] = data[within : within + take]
            pos += take
            out += take

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        page, pages = self._page, self._pages
        pos, end, src = offset, offset + len(data), 0
        with self._lock:
            while pos < end:
                idx, within = divmod(pos, page)
                take = min(page - within, end - pos)
                block = pages.get(idx)
                if block is None:
                    block = pages[idx] = bytearray(page)
                block[within : within + take] = data[src : src + take]
                pos += take
                src += take

    def _zero(self, n: int, offset: int) -> None:
        page, pages = self._page, self._pages
        pos, end = offset, offset + n
        with self._lock:
            while pos < end:
                idx, within = divmod(pos, page)
                take = min(page - within, end - pos)
                if take == page:
                    pages.pop(idx, None)
                elif idx in pages:
                    pages[idx][within : within + take] = bytes(take)
                pos += take

    def _discard(self, n: int, offset: int) -> None:
        self._zero(n, offset)

    def _write_zeroes(self, n: int, offset: int, may_unmap: bool) -> None:
        self._zero(n, offset)

    def _extents(self, n: int, offset: int) -> Iterator[Extent]:
        page, pages = self._page, self._pages
        pos, end = offset, offset + n
        run_start, run_flags = pos, None
        while pos < end:
            idx, within = divmod(pos, page)
            take = min(page - within, end - pos)
            flags = ExtentFlags.DATA if idx in pages else ExtentFlags.HOLE | ExtentFlags.ZERO
            if run_flags is None:
                run_flags = flags
            elif flags != run_flags:
                yield Extent(run_start, pos - run_start, run_flags)
                run_start, run_flags = pos, flags
            pos += take
        if run_flags is not None:
            yield Extent(run_start, end - run_start, run_flags)

    def resize(self, size: int) -> None:
        """Grow or shrink; bytes past a shrink point are forgotten."""
        self._check_writable()
        if size < self._size:
            with self._lock:
                last = (size + self._page - 1) // self._page
                for idx in [i for i in self._pages if i >= last]:
                    del self._pages[idx]
                if size % self._page and (size // self._page) in self._pages:
                    blk = self._pages[size // self._page]
                    blk[size % self._page :] = bytes(self._page - size % self._page)
        self._size = size

    def statistics(self) -> dict[str, object]:
        return {"pages": len(self._pages), "page_size": self._page}
