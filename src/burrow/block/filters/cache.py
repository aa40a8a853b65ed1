"""``CacheFilter``: an LRU read cache of aligned blocks, for slow devices below (NBD, qcow2
chains over a network filesystem).

Reads fill whole blocks (runs of missing blocks are fetched with one read); writes, zeroes and
discards go straight through and invalidate the blocks they touch. A write generation counter
keeps a read that raced with a write from inserting stale blocks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from burrow.block.device import BlockDevice, check_range
from burrow.block.filters.base import FilterDevice
from burrow.errors import InvalidArgument

__all__ = ["CacheFilter"]


class CacheFilter(FilterDevice):
    def __init__(
        self,
        base: BlockDevice,
        *,
        block_size: int = 65536,
        capacity_blocks: int = 256,
        owns_base: bool = True,
    ) -> None:
        if block_size <= 0 or block_size & (block_size - 1) or capacity_blocks < 1:
            raise InvalidArgument("block_size must be a power of two and capacity >= 1")
        super().__init__(base, owns_base=owns_base)
        self.can_multi_conn = False  # other connections would not invalidate this cache
        self.can_cache = True
        self._bs = block_size
        self._cap = capacity_blocks
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._gen = 0
        self.hits = 0
        self.misses = 0

    def _preadinto(self, buf: memoryview, offset: int) -> None:
        bs = self._bs
        first, last = offset // bs, (offset + len(buf) - 1) // bs
        with self._lock:
            gen = self._gen
            found = {}
            for b in range(first, last + 1):
                data = self._blocks.get(b)
                if data is not None:
                    self._blocks.move_to_end(b)
                    found[b] = data
            self.hits += len(found)
            self.misses += last - first + 1 - len(found)
        fetched: dict[int, bytes] = {}
        b = first
        while b <= last:
            if b in found:
                b += 1
                continue
            run_end = b
            while run_end + 1 <= last and run_end + 1 not in found:
                run_end += 1
            start = b * bs
            stop = min((run_end + 1) * bs, self._size)
            chunk = self.base.pread(stop - start, start)
            for k in range(b, run_end + 1):
                fetched[k] = chunk[(k - b) * bs : (k - b + 1) * bs]
            b = run_end + 1
        found.update(fetched)
        pos, end, out = offset, offset + len(buf), 0
        while pos < end:
            blk, within = divmod(pos, bs)
            take = min(bs - within, end - pos)
            buf[out : out + take] = found[blk][within : within + take]
            pos += take
            out += take
        if fetched:
            with self._lock:
                if gen == self._gen:
                    self._blocks.update(fetched)
                    while len(self._blocks) > self._cap:
                        self._blocks.popitem(last=False)

    def _invalidate(self, n: int, offset: int) -> None:
        bs = self._bs
        with self._lock:
            self._gen += 1
            if not self._blocks:
                return
            first, last = offset // bs, (offset + max(n, 1) - 1) // bs
            if last - first > len(self._blocks):
                for b in [b for b in self._blocks if first <= b <= last]:
                    del self._blocks[b]
            else:
                for b in range(first, last + 1):
                    self._blocks.pop(b, None)

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        try:
            self.base.pwrite(data, offset, fua=fua)
        finally:
            self._invalidate(len(data), offset)

    def _discard(self, n: int, offset: int) -> None:
        try:
            self.base.discard(n, offset)
        finally:
            self._invalidate(n, offset)

    def _write_zeroes(self, n: int, offset: int, may_unmap: bool) -> None:
        try:
            self.base.write_zeroes(n, offset, may_unmap=may_unmap)
        finally:
            self._invalidate(n, offset)

    def cache(self, n: int, offset: int) -> None:
        """NBD_CMD_CACHE: read the range into the cache (at most its capacity)."""
        check_range(self._size, n, offset)
        n = min(n, self._cap * self._bs)
        pos, end = offset, offset + n
        buf = bytearray(min(n, 4 << 20))
        while pos < end:
            step = min(len(buf), end - pos)
            self._preadinto(memoryview(buf)[:step], pos)
            pos += step

    def drop_cache(self) -> None:
        with self._lock:
            self._gen += 1
            self._blocks.clear()

    def statistics(self) -> dict[str, object]:
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "cached_blocks": len(self._blocks),
                "block_size": self._bs,
                "base": self.base.statistics(),
            }
