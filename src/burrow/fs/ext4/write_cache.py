"""A write-back block cache between the ext4 writer and its device.

Why: the writer keeps dirty metadata (inode table blocks, directory blocks, tree nodes,
bitmaps, descriptors, the superblock) in memory and flushes it at ``sync``; the read side must
still see the new state, so it reads through this device, which overlays the dirty blocks on
the device below. File data never goes through here: it is written straight to the device in
one ``pwrite`` per run (the writer drops cached blocks when it frees them, so a data write can
never be shadowed by a stale cached block).
"""

from __future__ import annotations

import bisect

from burrow.block.device import BlockDevice

__all__ = ["WriteCache"]


class WriteCache(BlockDevice):
    """Dirty whole blocks in a dict, overlaid on reads; ``writeback`` pushes them down."""

    def __init__(self, base: BlockDevice, block_size: int) -> None:
        self.base = base
        self.bs = block_size
        self._size = base.size
        self._block_size = base.block_size
        self._readonly = base.readonly
        self.blocks: dict[int, bytes] = {}
        self._sorted: list[int] | None = None

    def put(self, blk: int, data: bytes | bytearray) -> None:
        if len(data) != self.bs:
            raise ValueError("cache holds whole blocks only")
        if blk not in self.blocks:
            self._sorted = None
        self.blocks[blk] = bytes(data)

    def get(self, blk: int) -> bytes:
        data = self.blocks.get(blk)
        if data is not None:
            return data
        return self.base.pread(self.bs, blk * self.bs)

    def get_range(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` inside one block (the superblock)."""
        blk, off = divmod(offset, self.bs)
        return self.get(blk)[off : off + n]

    def put_range(self, offset: int, data: bytes | bytearray) -> None:
        blk, off = divmod(offset, self.bs)
        cur = bytearray(self.get(blk))
        cur[off : off + len(data)] = data
        self.put(blk, cur)

    def drop(self, blk: int) -> None:
        if self.blocks.pop(blk, None) is not None:
            self._sorted = None

    def drop_range(self, start: int, n: int) -> None:
        """Forget cached blocks in [start, start+n) (they were freed or became file data)."""
        if not self.blocks:
            return
        if n <= 16:
            for b in range(start, start + n):
                self.drop(b)
        else:
            for b in self._cands(start, start + n - 1):
                self.drop(b)

    def _keys(self) -> list[int]:
        if self._sorted is None:
            self._sorted = sorted(self.blocks)
        return self._sorted

    def _preadinto(self, buf: memoryview, offset: int) -> None:
        self.base.preadinto(buf, offset)
        if not self.blocks:
            return
        bs = self.bs
        first = offset // bs
        last = (offset + len(buf) - 1) // bs
        if last - first < 8:
            cands = [b for b in range(first, last + 1) if b in self.blocks]
        else:
            keys = self._keys()
            cands = keys[bisect.bisect_left(keys, first) : bisect.bisect_right(keys, last)]
        for b in cands:
            data = self.blocks[b]
            lo = max(offset, b * bs)
            hi = min(offset + len(buf), (b + 1) * bs)
            buf[lo - offset : hi - offset] = data[lo - b * bs : hi - b * bs]

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        # whole cached blocks are updated in place; everything else goes below
        bs = self.bs
        first = offset // bs
        last = (offset + len(data) - 1) // bs
        self.base.pwrite(data, offset, fua=fua)
        for b in range(first, last + 1) if last - first < 8 else self._cands(first, last):
            if b in self.blocks:
                cur = bytearray(self.blocks[b])
                lo = max(offset, b * bs)
                hi = min(offset + len(data), (b + 1) * bs)
                cur[lo - b * bs : hi - b * bs] = data[lo - offset : hi - offset]
                self.blocks[b] = bytes(cur)

    def _cands(self, first: int, last: int) -> list[int]:
        keys = self._keys()
        return keys[bisect.bisect_left(keys, first) : bisect.bisect_right(keys, last)]

    def _flush(self) -> None:
        self.writeback()
        self.base.flush()

    def writeback(self) -> None:
        """Write every dirty block below, one ``pwrite`` per run of consecutive blocks."""
        if not self.blocks:
            return
        bs = self.bs
        keys = self._keys()
        i = 0
        while i < len(keys):
            j = i + 1
            while j < len(keys) and keys[j] == keys[j - 1] + 1:
                j += 1
            run = b"".join(self.blocks[k] for k in keys[i:j])
            self.base.pwrite(run, keys[i] * bs)
            i = j
        self.blocks.clear()
        self._sorted = None

    def _close(self) -> None:
        return None
