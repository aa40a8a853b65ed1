"""Extent trees for the writer: a file's mapping lives in memory as a sorted list of extents and
the on-disk tree is rebuilt from it when the inode is flushed.

Why rebuild instead of editing nodes in place: one bottom-up packing routine gives insert, split,
merge at any depth and shrink on truncate at once, and the result is always a valid, densely
packed tree (what ``e2fsck -E bmap2extent`` would produce). The caller hands in the node blocks
(reusing the old tree's blocks first) so allocation stays in the allocator, and a flush costs
O(extents), not O(blocks).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

from burrow.fs.ext4 import ondisk as od

__all__ = [
    "Ext",
    "build_tree",
    "index_blocks_needed",
    "merge_extents",
    "split_runs",
]

MAX_INIT = od.EXT_INIT_MAX_LEN  # 32768
MAX_UNINIT = od.EXT_UNWRITTEN_MAX_LEN  # 32767
_HDR = struct.Struct("<HHHHI")
_EXT = struct.Struct("<IHHI")
_IDX = struct.Struct("<IIHH")


class Ext(NamedTuple):
    """One mapping: ``length`` blocks from logical ``lblk`` at physical ``pblk``."""

    lblk: int
    pblk: int
    length: int
    uninit: bool = False


def split_runs(runs: Sequence[tuple[int, int]], start_lblk: int = 0) -> list[Ext]:
    """Physical runs (start, length) laid end to end from ``start_lblk`` -> extents of legal
    length."""
    out: list[Ext] = []
    lblk = start_lblk
    for pblk, n in runs:
        while n:
            take = min(n, MAX_INIT)
            out.append(Ext(lblk, pblk, take))
            lblk += take
            pblk += take
            n -= take
    return out


def merge_extents(exts: Sequence[Ext]) -> list[Ext]:
    """Join neighbours that continue each other (same state, contiguous on both sides) and cut
    any that are longer than the on-disk limit."""
    out: list[Ext] = []
    for e in exts:
        if out:
            p = out[-1]
            limit = MAX_UNINIT if e.uninit else MAX_INIT
            if (
                p.uninit == e.uninit
                and p.lblk + p.length == e.lblk
                and p.pblk + p.length == e.pblk
                and p.length < limit
            ):
                room = limit - p.length
                take = min(room, e.length)
                out[-1] = Ext(p.lblk, p.pblk, p.length + take, p.uninit)
                if take == e.length:
                    continue
                e = Ext(e.lblk + take, e.pblk + take, e.length - take, e.uninit)
        limit = MAX_UNINIT if e.uninit else MAX_INIT
        while e.length > limit:
            out.append(Ext(e.lblk, e.pblk, limit, e.uninit))
            e = Ext(e.lblk + limit, e.pblk + limit, e.length - limit, e.uninit)
        out.append(e)
    return out


def _per_block(bs: int) -> int:
    return (bs - 12) // 12


def _levels(n: int, bs: int) -> list[int]:
    """Node counts per level below the root, leaves first ([] when the root holds all)."""
    levels: list[int] = []
    per = _per_block(bs)
    while n > 4:
        n = -(-n // per)
        levels.append(n)
    return levels


def index_blocks_needed(n_extents: int, bs: int) -> int:
    """Tree blocks (leaves and index nodes, not the in-inode root) for ``n_extents``."""
    return sum(_levels(n_extents, bs))


def _pack_ext(e: Ext) -> bytes:
    length = e.length + (MAX_INIT if e.uninit else 0)
    return _EXT.pack(e.lblk, length, e.pblk >> 32, e.pblk & 0xFFFFFFFF)


def build_tree(
    exts: Sequence[Ext],
    node_blocks: Sequence[int],
    bs: int,
    set_tail: Callable[[bytearray], None] | None = None,
) -> tuple[bytes, list[tuple[int, bytearray]]]:
    """The 60-byte in-inode root and the tree blocks ``[(block number, data)]``.

    ``node_blocks`` must hold exactly ``index_blocks_needed(len(exts), bs)`` block numbers.
    ``set_tail`` stamps the ``ext4_extent_tail`` checksum on each tree block.
    """
    levels = _levels(len(exts), bs)
    if sum(levels) != len(node_blocks):
        raise ValueError("wrong number of extent tree blocks")
    per = _per_block(bs)
    # entries of the current level: (first logical block, packed entry)
    entries: list[tuple[int, bytes]] = [(e.lblk, _pack_ext(e)) for e in exts]
    out: list[tuple[int, bytearray]] = []
    pos = 0
    depth = 0
    for count in levels:
        nxt: list[tuple[int, bytes]] = []
        for i in range(count):
            chunk = entries[i * per : (i + 1) * per]
            blk = node_blocks[pos]
            pos += 1
            data = bytearray(bs)
            _HDR.pack_into(data, 0, od.EXT4_EXT_MAGIC, len(chunk), per, depth, 0)
            data[12 : 12 + 12 * len(chunk)] = b"".join(c for _, c in chunk)
            if set_tail is not None:
                set_tail(data)
            out.append((blk, data))
            nxt.append((chunk[0][0], _IDX.pack(chunk[0][0], blk & 0xFFFFFFFF, blk >> 32, 0)))
        entries = nxt
        depth += 1
    root = bytearray(60)
    _HDR.pack_into(root, 0, od.EXT4_EXT_MAGIC, len(entries), 4, depth, 0)
    root[12 : 12 + 12 * len(entries)] = b"".join(c for _, c in entries)
    return bytes(root), out


def parse_tree(
    root: bytes,
    read_block: Callable[[int], bytes],
    max_block: int,
) -> tuple[list[Ext], list[int]]:
    """All extents (sorted) and the tree's node blocks, from an in-inode root.

    Used to load a file the writer is about to change; bad trees raise ``CorruptImage``.
    """
    from burrow.errors import CorruptImage

    exts: list[Ext] = []
    nodes: list[int] = []
    seen: set[int] = set()

    def walk(buf: bytes, depth_expected: int | None, cap: int) -> None:
        if len(buf) < 12:
            raise CorruptImage("ext4_extent_header", None, "short node")
        magic, n, mx, depth, _ = _HDR.unpack_from(buf, 0)
        if magic != od.EXT4_EXT_MAGIC or n > mx or mx > cap or depth > od.EXT4_MAX_EXTENT_DEPTH:
            raise CorruptImage("ext4_extent_header", None, "bad header")
        if depth_expected is not None and depth != depth_expected:
            raise CorruptImage("ext4_extent_header", None, "bad depth")
        for i in range(n):
            off = 12 + 12 * i
            if depth == 0:
                lblk, ln, hi, lo = _EXT.unpack_from(buf, off)
                uninit = ln > MAX_INIT
                length = ln - MAX_INIT if uninit else ln
                p = (hi << 32) | lo
                if length == 0 or p + length > max_block:
                    raise CorruptImage("ext4_extent", None, "extent outside the filesystem")
                exts.append(Ext(lblk, p, length, uninit))
            else:
                _lb, lo, hi, _ = _IDX.unpack_from(buf, off)
                child = (hi << 32) | lo
                if child in seen or child >= max_block or child == 0:
                    raise CorruptImage("ext4_extent_idx", None, "bad or looping child")
                seen.add(child)
                nodes.append(child)
                data = read_block(child)
                walk(data, depth - 1, (len(data) - 12) // 12)

    walk(root, None, 4)
    exts.sort()
    return exts, nodes
