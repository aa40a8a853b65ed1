"""Classic ext2/ext3 block maps (direct, indirect, double and triple indirect) for the writer.

Like extent trees, the map is held in memory as a sorted list of runs (``write_extent.Ext``)
and the indirect blocks are rebuilt on flush. Memory and time are proportional to the mapped
runs, never to the file size, so a sparse terabyte file costs nothing; indirect blocks that
would hold only holes are left out, as ext2 does.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Sequence

from burrow.errors import CorruptImage, InvalidArgument
from burrow.fs.ext4.write_extent import Ext

__all__ = ["blockmap_meta_count", "build_blockmap", "max_blocks", "parse_blockmap"]

NDIR = 12


def max_blocks(bs: int) -> int:
    """Logical blocks a block map can address."""
    p = bs // 4
    return NDIR + p + p * p + p * p * p


class _Runs:
    """Range queries over sorted runs."""

    def __init__(self, exts: Sequence[Ext]) -> None:
        self.exts = exts
        self.starts = [e.lblk for e in exts]

    def any(self, lo: int, hi: int) -> bool:
        i = bisect.bisect_right(self.starts, lo) - 1
        if i >= 0 and self.exts[i].lblk + self.exts[i].length > lo:
            return True
        i += 1
        return i < len(self.starts) and self.starts[i] < hi

    def fill(self, lo: int, hi: int) -> list[int]:
        arr = [0] * (hi - lo)
        exts = self.exts
        i = max(0, bisect.bisect_right(self.starts, lo) - 1)
        while i < len(exts) and exts[i].lblk < hi:
            e = exts[i]
            s, t = max(lo, e.lblk), min(hi, e.lblk + e.length)
            if s < t:
                arr[s - lo : t - lo] = range(e.pblk + s - e.lblk, e.pblk + t - e.lblk)
            i += 1
        return arr


def _check_end(exts: Sequence[Ext], bs: int) -> None:
    if exts and exts[-1].lblk + exts[-1].length > max_blocks(bs):
        raise InvalidArgument("file too large for a block map")


def blockmap_meta_count(exts: Sequence[Ext], bs: int) -> int:
    """Indirect blocks needed to map ``exts``."""
    _check_end(exts, bs)
    runs = _Runs(exts)
    p = bs // 4

    def need(lo: int, level: int) -> int:
        if not runs.any(lo, lo + p**level):
            return 0
        if level == 1:
            return 1
        step = p ** (level - 1)
        return 1 + sum(need(lo + i * step, level - 1) for i in range(p))

    count = 0
    base = NDIR
    for level in (1, 2, 3):
        count += need(base, level)
        base += p**level
    return count


def build_blockmap(
    exts: Sequence[Ext], meta_blocks: Sequence[int], bs: int
) -> tuple[bytes, list[tuple[int, bytearray]]]:
    """The 60-byte ``i_block`` and the indirect blocks ``[(block number, data)]``;
    ``meta_blocks`` holds exactly ``blockmap_meta_count(exts, bs)`` block numbers."""
    _check_end(exts, bs)
    runs = _Runs(exts)
    p = bs // 4
    fmt = struct.Struct(f"<{p}I")
    out: list[tuple[int, bytearray]] = []
    pos = 0

    def build(lo: int, level: int) -> int:
        nonlocal pos
        if not runs.any(lo, lo + p**level):
            return 0
        blk = meta_blocks[pos]
        pos += 1
        if level == 1:
            vals = runs.fill(lo, lo + p)
        else:
            step = p ** (level - 1)
            vals = [build(lo + i * step, level - 1) for i in range(p)]
        out.append((blk, bytearray(fmt.pack(*vals))))
        return blk

    iblock = [*runs.fill(0, NDIR), 0, 0, 0]
    base = NDIR
    for level in (1, 2, 3):
        iblock[NDIR + level - 1] = build(base, level)
        base += p**level
    if pos != len(meta_blocks):
        raise ValueError("wrong number of indirect blocks")
    return struct.pack("<15I", *iblock), out


def parse_blockmap(
    iblock: bytes, nblocks: int, read_block: Callable[[int], bytes], max_block: int, bs: int
) -> tuple[list[Ext], list[int]]:
    """Runs mapping the first ``nblocks`` logical blocks, and the indirect blocks in use."""
    p = bs // 4
    nblocks = min(nblocks, max_blocks(bs))
    fmt = struct.Struct(f"<{p}I")
    exts: list[Ext] = []
    meta: list[int] = []
    seen: set[int] = set()

    def add(lblk: int, vals: Sequence[int]) -> None:
        for k, v in enumerate(vals):
            if not v:
                continue
            if v >= max_block:
                raise CorruptImage("block map", None, f"block {v} outside the filesystem")
            if exts:
                e = exts[-1]
                if e.lblk + e.length == lblk + k and e.pblk + e.length == v:
                    exts[-1] = Ext(e.lblk, e.pblk, e.length + 1)
                    continue
            exts.append(Ext(lblk + k, v, 1))

    def walk(blk: int, lo: int, level: int) -> None:
        if blk == 0 or lo >= nblocks:
            return
        if blk >= max_block or blk in seen:
            raise CorruptImage("indirect block", blk * bs, "outside the filesystem or looping")
        seen.add(blk)
        meta.append(blk)
        vals = fmt.unpack(read_block(blk)[:bs])
        if level == 1:
            add(lo, vals[: max(0, min(p, nblocks - lo))])
            return
        step = p ** (level - 1)
        for i, v in enumerate(vals):
            if lo + i * step >= nblocks:
                break
            walk(v, lo + i * step, level - 1)

    ptrs = struct.unpack("<15I", iblock)
    add(0, ptrs[: min(NDIR, nblocks)])
    base = NDIR
    for level in (1, 2, 3):
        walk(ptrs[NDIR + level - 1], base, level)
        base += p**level
    return exts, meta
