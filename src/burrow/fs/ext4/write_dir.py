"""Directory leaf blocks for the writer: parse, pack, and the first block of a new directory.

Why repack whole blocks: a leaf holds at most a few hundred entries, so rewriting the block from
a list is as cheap as splicing records and can never leave a bad ``rec_len`` chain behind.
With metadata_csum every leaf ends in a 12-byte ``ext4_dir_entry_tail`` (checksum set later).
"""

from __future__ import annotations

import struct

from burrow.errors import CorruptImage
from burrow.fs.ext4 import ondisk as od

__all__ = [
    "DirEnt",
    "empty_dir_block",
    "entry_size",
    "fresh_dir_first_block",
    "pack_leaf",
    "parse_leaf",
]

_DE = struct.Struct("<IHBB")
TAIL = 12

DirEnt = tuple[bytes, int, int]  # (name, inode, file type)


def entry_size(name_len: int) -> int:
    return (8 + name_len + 3) & ~3


def parse_leaf(block: bytes | bytearray | memoryview, tail: bool, where: int = 0) -> list[DirEnt]:
    """Live entries of a leaf block, in on-disk order (``.``/``..`` included)."""
    bs = len(block)
    end = bs - (TAIL if tail else 0)
    out: list[DirEnt] = []
    off = 0
    while off < end:
        if off + 8 > bs:
            raise CorruptImage("ext4_dir_entry_2", where + off, "entry header past block end")
        ino, rl, nl, ft = _DE.unpack_from(block, off)
        rl = od.rec_len_from_disk(rl, bs)
        if rl < 8 or rl % 4 or off + rl > bs or 8 + nl > rl:
            raise CorruptImage("ext4_dir_entry_2", where + off, f"bad rec_len {rl}")
        if ino:
            out.append((bytes(block[off + 8 : off + 8 + nl]), ino, ft))
        off += rl
    return out


def used_bytes(entries: list[DirEnt]) -> int:
    return sum(entry_size(len(n)) for n, _, _ in entries)


def pack_leaf(entries: list[DirEnt], bs: int, tail: bool, ftype: bool = True) -> bytearray | None:
    """Pack ``entries`` into one leaf block (None if they do not fit)."""
    end = bs - (TAIL if tail else 0)
    if used_bytes(entries) > end:
        return None
    data = bytearray(bs)
    off = 0
    if not entries:
        _DE.pack_into(data, 0, 0, od.rec_len_to_disk(end, bs), 0, 0)
    for i, (name, ino, ft) in enumerate(entries):
        size = entry_size(len(name))
        rl = end - off if i == len(entries) - 1 else size
        _DE.pack_into(data, off, ino, od.rec_len_to_disk(rl, bs), len(name), ft if ftype else 0)
        data[off + 8 : off + 8 + len(name)] = name
        off += size
    if tail:
        _DE.pack_into(data, end, 0, TAIL, 0, od.EXT4_FT_DIR_CSUM)
    return data


def empty_dir_block(bs: int, tail: bool) -> bytearray:
    data = pack_leaf([], bs, tail)
    assert data is not None
    return data


def fresh_dir_first_block(
    bs: int, ino: int, parent: int, entries: list[DirEnt], *, tail: bool, ftype: bool
) -> bytearray:
    data = pack_leaf([(b".", ino, 2), (b"..", parent, 2), *entries], bs, tail, ftype)
    if data is None:
        raise ValueError("entries do not fit in one block")
    return data
