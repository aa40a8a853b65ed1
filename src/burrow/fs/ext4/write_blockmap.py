"""Classic ext2/ext3 block maps (direct, indirect, double and triple indirect) for the writer.

Like extent trees, the map is kept flat in memory (logical block -> physical block, 0 for a
hole) and the indirect blocks are rebuilt on flush; all-hole indirect blocks are left out, as
ext2 does for sparse files.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from burrow.errors import CorruptImage, InvalidArgument

__all__ = ["blockmap_meta_count", "build_blockmap", "parse_blockmap"]

NDIR = 12


def _spans(p: int) -> tuple[int, int, int]:
    return p, p * p, p * p * p


def blockmap_meta_count(nblocks: int, bs: int, flat: Sequence[int] | None = None) -> int:
    """Indirect blocks needed to map ``flat`` (or ``nblocks`` contiguous blocks)."""
    if flat is None:
        flat = [1] * nblocks
    count = 0
    p = bs // 4

    def need(lo: int, hi: int, level: int) -> int:
        # blocks needed for one indirect block of ``level`` covering flat[lo:hi]
        hi = min(hi, len(flat))
        if lo >= hi or not any(flat[lo:hi]):
            return 0
        if level == 1:
            return 1
        step = p ** (level - 1)
        return 1 + sum(need(s, s + step, level - 1) for s in range(lo, hi, step))

    base = NDIR
    for level in (1, 2, 3):
        span = p**level
        count += need(base, base + span, level)
        base += span
    if len(flat) > base:
        raise InvalidArgument("file too large for a block map")
    return count


def build_blockmap(
    flat: Sequence[int], meta_blocks: Sequence[int], bs: int
) -> tuple[bytes, list[tuple[int, bytearray]]]:
    """The 60-byte ``i_block`` and the indirect blocks ``[(block number, data)]``."""
    p = bs // 4
    iblock = [0] * 15
    out: list[tuple[int, bytearray]] = []
    pos = 0

    def build(lo: int, level: int) -> int:
        nonlocal pos
        hi = min(lo + p**level, len(flat))
        if lo >= hi or not any(flat[lo:hi]):
            return 0
        blk = meta_blocks[pos]
        pos += 1
        if level == 1:
            vals = list(flat[lo:hi]) + [0] * (p - (hi - lo))
        else:
            step = p ** (level - 1)
            vals = [build(lo + i * step, level - 1) for i in range(p)]
        out.append((blk, bytearray(struct.pack(f"<{p}I", *vals))))
        return blk

    for i in range(min(NDIR, len(flat))):
        iblock[i] = flat[i]
    base = NDIR
    for level in (1, 2, 3):
        iblock[NDIR + level - 1] = build(base, level)
        base += p**level
    if pos != len(meta_blocks):
        raise ValueError("wrong number of indirect blocks")
    return struct.pack("<15I", *iblock), out


def parse_blockmap(
    iblock: bytes, nblocks: int, read_block: Callable[[int], bytes], max_block: int, bs: int
) -> tuple[list[int], list[int]]:
    """Flat map for the first ``nblocks`` logical blocks, and the indirect blocks in use."""
    p = bs // 4
    flat = [0] * nblocks
    meta: list[int] = []
    seen: set[int] = set()
    ptrs = struct.unpack("<15I", iblock)
    for i in range(min(NDIR, nblocks)):
        flat[i] = ptrs[i]

    def walk(blk: int, lo: int, level: int) -> None:
        if blk == 0 or lo >= nblocks:
            return
        if blk >= max_block or blk in seen:
            raise CorruptImage("indirect block", blk * bs, "outside the filesystem or looping")
        seen.add(blk)
        meta.append(blk)
        vals = struct.unpack(f"<{p}I", read_block(blk))
        if level == 1:
            n = min(p, nblocks - lo)
            flat[lo : lo + n] = vals[:n]
            return
        step = p ** (level - 1)
        for i, v in enumerate(vals):
            walk(v, lo + i * step, level - 1)

    base = NDIR
    for level in (1, 2, 3):
        walk(ptrs[NDIR + level - 1], base, level)
        base += p**level
    for b in flat:
        if b >= max_block:
            raise CorruptImage("block map", None, f"block {b} outside the filesystem")
    return flat, meta
