"""A mutable inode for the writer: raw bytes plus the file's block mapping held in memory.

Why keep the mapping as a list: every change to a file's blocks (allocating holes, converting
uninitialised extents, truncating) is a list edit; the on-disk extent tree or block map is
rebuilt once when the inode is flushed (``write_extent.build_tree`` /
``write_blockmap.build_blockmap``), so there is one code path for insert, split, merge, grow a
level and shrink.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable

from burrow.fs.ext4 import ondisk as od
from burrow.fs.ext4.write_extent import Ext, merge_extents

__all__ = ["WInode", "encode_time"]

_I = od.EXT4_INODE
O_MODE = _I.offset("i_mode")
O_UID = _I.offset("i_uid")
O_SIZE_LO = _I.offset("i_size_lo")
O_ATIME = _I.offset("i_atime")
O_CTIME = _I.offset("i_ctime")
O_MTIME = _I.offset("i_mtime")
O_DTIME = _I.offset("i_dtime")
O_GID = _I.offset("i_gid")
O_LINKS = _I.offset("i_links_count")
O_BLOCKS_LO = _I.offset("i_blocks_lo")
O_FLAGS = _I.offset("i_flags")
O_BLOCK = _I.offset("i_block")
O_GEN = _I.offset("i_generation")
O_ACL_LO = _I.offset("i_file_acl_lo")
O_SIZE_HI = _I.offset("i_size_high")
O_BLOCKS_HI = _I.offset("l_i_blocks_high")
O_ACL_HI = _I.offset("l_i_file_acl_high")
O_UID_HI = _I.offset("l_i_uid_high")
O_GID_HI = _I.offset("l_i_gid_high")
O_EXTRA = _I.offset("i_extra_isize")
O_CTIME_X = _I.offset("i_ctime_extra")
O_MTIME_X = _I.offset("i_mtime_extra")
O_ATIME_X = _I.offset("i_atime_extra")
O_CRTIME = _I.offset("i_crtime")
O_CRTIME_X = _I.offset("i_crtime_extra")

_H = struct.Struct("<H")
_U = struct.Struct("<I")


def encode_time(ns: int) -> tuple[int, int]:
    """Nanoseconds since the epoch -> (i_*time, i_*time_extra) with the epoch bits."""
    sec, nsec = divmod(ns, 1_000_000_000)
    lo = sec & 0xFFFFFFFF
    signed_lo = lo - (1 << 32) if lo & 0x80000000 else lo
    epoch = ((sec - signed_lo) >> 32) & 3
    return lo, (nsec << 2) | epoch


class WInode:
    """An inode being changed. ``raw`` is the full on-disk inode (``inode_size`` bytes)."""

    __slots__ = ("blockmap", "dirty", "exts", "ino", "map_dirty", "meta", "nodes", "raw")

    def __init__(self, ino: int, raw: bytearray) -> None:
        self.ino = ino
        self.raw = raw
        self.dirty = False
        self.exts: list[Ext] | None = None  # the mapping (None: not loaded / no blocks)
        self.blockmap = False  # True: written as an ext2/3 block map, not an extent tree
        self.nodes: list[int] = []  # extent tree blocks (not the in-inode root)
        self.meta: list[int] = []  # indirect blocks of a block map
        self.map_dirty = False

    # -- fields ---------------------------------------------------------------------------
    def _g16(self, off: int) -> int:
        return int(_H.unpack_from(self.raw, off)[0])

    def _g32(self, off: int) -> int:
        return int(_U.unpack_from(self.raw, off)[0])

    @property
    def mode(self) -> int:
        return self._g16(O_MODE)

    @mode.setter
    def mode(self, v: int) -> None:
        _H.pack_into(self.raw, O_MODE, v & 0xFFFF)

    @property
    def uid(self) -> int:
        return self._g16(O_UID) | (self._g16(O_UID_HI) << 16)

    @uid.setter
    def uid(self, v: int) -> None:
        _H.pack_into(self.raw, O_UID, v & 0xFFFF)
        _H.pack_into(self.raw, O_UID_HI, (v >> 16) & 0xFFFF)

    @property
    def gid(self) -> int:
        return self._g16(O_GID) | (self._g16(O_GID_HI) << 16)

    @gid.setter
    def gid(self, v: int) -> None:
        _H.pack_into(self.raw, O_GID, v & 0xFFFF)
        _H.pack_into(self.raw, O_GID_HI, (v >> 16) & 0xFFFF)

    @property
    def links(self) -> int:
        return self._g16(O_LINKS)

    @links.setter
    def links(self, v: int) -> None:
        _H.pack_into(self.raw, O_LINKS, v)

    @property
    def size(self) -> int:
        return self._g32(O_SIZE_LO) | (self._g32(O_SIZE_HI) << 32)

    @size.setter
    def size(self, v: int) -> None:
        _U.pack_into(self.raw, O_SIZE_LO, v & 0xFFFFFFFF)
        _U.pack_into(self.raw, O_SIZE_HI, v >> 32)

    @property
    def flags(self) -> int:
        return self._g32(O_FLAGS)

    @flags.setter
    def flags(self, v: int) -> None:
        _U.pack_into(self.raw, O_FLAGS, v)

    @property
    def file_acl(self) -> int:
        return self._g32(O_ACL_LO) | (self._g16(O_ACL_HI) << 32)

    @file_acl.setter
    def file_acl(self, v: int) -> None:
        _U.pack_into(self.raw, O_ACL_LO, v & 0xFFFFFFFF)
        _H.pack_into(self.raw, O_ACL_HI, v >> 32)

    @property
    def generation(self) -> int:
        return self._g32(O_GEN)

    @property
    def extra_isize(self) -> int:
        return self._g16(O_EXTRA) if len(self.raw) > 128 else 0

    @property
    def i_block(self) -> bytes:
        return bytes(self.raw[O_BLOCK : O_BLOCK + 60])

    @i_block.setter
    def i_block(self, v: bytes) -> None:
        self.raw[O_BLOCK : O_BLOCK + 60] = v.ljust(60, b"\0")

    def set_blocks(self, sectors: int) -> None:
        _U.pack_into(self.raw, O_BLOCKS_LO, sectors & 0xFFFFFFFF)
        _H.pack_into(self.raw, O_BLOCKS_HI, (sectors >> 32) & 0xFFFF)

    def set_dtime(self, sec: int) -> None:
        _U.pack_into(self.raw, O_DTIME, sec & 0xFFFFFFFF)

    def set_times(
        self,
        *,
        atime: int | None = None,
        mtime: int | None = None,
        ctime: int | None = None,
        crtime: int | None = None,
    ) -> None:
        extra = self.extra_isize
        for ns, off, xoff, need in (
            (atime, O_ATIME, O_ATIME_X, 16),
            (mtime, O_MTIME, O_MTIME_X, 12),
            (ctime, O_CTIME, O_CTIME_X, 8),
            (crtime, O_CRTIME, O_CRTIME_X, 24),
        ):
            if ns is None:
                continue
            lo, x = encode_time(ns)
            if off == O_CRTIME and extra < need:
                continue
            _U.pack_into(self.raw, off, lo)
            if extra >= need:
                _U.pack_into(self.raw, xoff, x)

    # -- mapping (extents) -----------------------------------------------------------------
    def segments(self, lo: int, hi: int) -> list[tuple[int, int, int, bool]]:
        """Cover logical blocks [lo, hi) with (lblk, pblk or -1 for a hole, count, uninit)."""
        out: list[tuple[int, int, int, bool]] = []
        pos = lo
        exts = self.exts or []
        i = max(0, bisect.bisect_right(exts, (lo, 1 << 62)) - 1)
        while pos < hi:
            if i < len(exts) and exts[i].lblk + exts[i].length <= pos:
                i += 1
                continue
            if i >= len(exts) or exts[i].lblk >= hi:
                out.append((pos, -1, hi - pos, False))
                break
            e = exts[i]
            if e.lblk > pos:
                out.append((pos, -1, e.lblk - pos, False))
                pos = e.lblk
            end = min(hi, e.lblk + e.length)
            out.append((pos, e.pblk + pos - e.lblk, end - pos, e.uninit))
            pos = end
            i += 1
        return out

    def set_range(self, lblk: int, pblk: int, count: int) -> None:
        """Map [lblk, lblk+count) to pblk.. (initialised), replacing what was there."""
        if self.exts is None:
            raise ValueError(f"inode {self.ino}: mapping not loaded")
        self.map_dirty = True
        self.exts = _replace(self.exts, lblk, lblk + count, [Ext(lblk, pblk, count)])

    def cut(self, nblocks: int) -> list[tuple[int, int]]:
        """Drop every mapping at or beyond logical ``nblocks``; returns freed (pblk, n)."""
        freed: list[tuple[int, int]] = []
        keep: list[Ext] = []
        for e in self.exts or []:
            if e.lblk + e.length <= nblocks:
                keep.append(e)
            elif e.lblk >= nblocks:
                freed.append((e.pblk, e.length))
            else:
                k = nblocks - e.lblk
                keep.append(Ext(e.lblk, e.pblk, k, e.uninit))
                freed.append((e.pblk + k, e.length - k))
        if freed:
            self.map_dirty = True
        if self.exts is not None:
            self.exts = keep
        return freed

    def data_blocks(self) -> int:
        return sum(e.length for e in self.exts or [])

    def last_pblk(self) -> int:
        """Physical block after the file's last mapped block (a goal for appends), or 0."""
        if self.exts:
            e = self.exts[-1]
            return e.pblk + e.length
        return 0


def _replace(exts: list[Ext], lo: int, hi: int, new: list[Ext]) -> list[Ext]:
    """``exts`` with [lo, hi) replaced by ``new`` (extents are cut where they overlap)."""
    out: list[Ext] = []
    for e in exts:
        end = e.lblk + e.length
        if end <= lo or e.lblk >= hi:
            out.append(e)
            continue
        if e.lblk < lo:
            out.append(Ext(e.lblk, e.pblk, lo - e.lblk, e.uninit))
        if end > hi:
            out.append(Ext(hi, e.pblk + hi - e.lblk, end - hi, e.uninit))
    out.extend(new)
    out.sort()
    return merge_extents(out)


ReadBlock = Callable[[int], bytes]
