"""L1/L2 tables: entry bits, decoding, and the LRU cache of L2 tables.

An L2 table is kept decoded as an ``array('Q')`` (8 bytes per entry, the same memory as on
disk), so a lookup is one index and random 4 KiB reads need no metadata I/O once the tables
covering the working set are cached. Dirty tables are never evicted: they are written back by
the engine's flush, in the order crash safety needs (refcounts, then L2, then L1).
"""

from __future__ import annotations

import sys
from array import array
from collections import OrderedDict

__all__ = [
    "L2_BITMAP_ALLOC",
    "L2_BITMAP_ZERO_ALL",
    "OFFSET_MASK",
    "OFLAG_COMPRESSED",
    "OFLAG_COPIED",
    "OFLAG_ZERO",
    "L2Cache",
    "L2Table",
    "decode_table",
    "encode_table",
]

OFLAG_COPIED = 1 << 63  # refcount is exactly one: may be written in place
OFLAG_COMPRESSED = 1 << 62
OFLAG_ZERO = 1  # v3 standard L2: the cluster reads as zeros
OFFSET_MASK = 0x00FFFFFFFFFFFE00  # bits 9-55
L2_BITMAP_ALLOC = 0xFFFFFFFF  # extended L2: bits 0-31 "subcluster allocated"
L2_BITMAP_ZERO_ALL = 0xFFFFFFFF << 32  # bits 32-63 "subcluster reads as zeros"

_BIG = sys.byteorder == "big"


def decode_table(data: bytes) -> array[int]:
    table = array("Q", data)
    if not _BIG:
        table.byteswap()
    return table


def encode_table(table: array[int]) -> bytes:
    out = array("Q", table)
    if not _BIG:
        out.byteswap()
    return out.tobytes()


class L2Table:
    __slots__ = ("dirty", "entries", "offset")

    def __init__(self, offset: int, entries: array[int], dirty: bool = False) -> None:
        self.offset = offset
        self.entries = entries
        self.dirty = dirty


class L2Cache:
    """LRU of L2 tables keyed by host offset. Not thread-safe: the engine's lock guards it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(2, capacity)
        self.tables: OrderedDict[int, L2Table] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, offset: int) -> L2Table | None:
        tbl = self.tables.get(offset)
        if tbl is None:
            self.misses += 1
            return None
        self.hits += 1
        self.tables.move_to_end(offset)
        return tbl

    def put(self, tbl: L2Table) -> None:
        self.tables[tbl.offset] = tbl
        self.tables.move_to_end(tbl.offset)
        self.trim()

    def trim(self) -> None:
        if len(self.tables) <= self.capacity:
            return
        for off in list(self.tables):
            if len(self.tables) <= self.capacity:
                return
            if not self.tables[off].dirty:
                del self.tables[off]

    def dirty_count(self) -> int:
        return sum(1 for t in self.tables.values() if t.dirty)

    def dirty_tables(self) -> list[L2Table]:
        return [t for t in self.tables.values() if t.dirty]

    def drop(self, offset: int) -> None:
        self.tables.pop(offset, None)
