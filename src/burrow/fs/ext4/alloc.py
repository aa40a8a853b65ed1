"""Block and inode allocation for the ext4 writer: bitmaps, free counts, group descriptors.

Why bitmaps are Python ints: finding the next free bit, the length of a free run and setting a
range of bits are each one big-integer operation (C speed over the whole 32768-bit group), so
allocating a 1 GiB file is a handful of operations per group, never a loop per block.

Rules kept (as the kernel and e2fsck expect):

* Free counts in each group descriptor and in the superblock always match the bitmaps.
* ``BLOCK_UNINIT`` groups get their bitmap computed (superblock/GDT backups and any group's
  metadata inside the group, which flex_bg puts elsewhere) the first time we allocate in them;
  ``INODE_UNINIT`` groups start from an empty bitmap; ``bg_itable_unused`` shrinks as inodes are
  used (we always take the lowest free inode of a group, so every inode below the high-water
  mark has been written).
* Bitmap checksums (metadata_csum), descriptor checksums (metadata_csum or gdt_csum) are set
  when the dirty groups are flushed.
* Allocation is goal-directed: data near the inode's group (or right after the file's last
  block), a single contiguous run when one exists.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from burrow.errors import CorruptImage, NoSpace
from burrow.fs.ext4 import ondisk as od

if TYPE_CHECKING:
    from burrow.fs.ext4.writer import Ext4WritableFilesystem

__all__ = ["Allocator", "Group"]


class Group:
    """Mutable state of one block group."""

    __slots__ = (
        "block_bitmap",
        "bmap",
        "dirty",
        "flags",
        "free_blocks",
        "free_inodes",
        "imap",
        "inode_bitmap",
        "inode_table",
        "itable_unused",
        "raw",
        "used_dirs",
    )

    def __init__(self, raw: bytearray, is64: bool) -> None:
        lay = od.EXT4_GROUP_DESC_64 if is64 else od.EXT4_GROUP_DESC
        d = lay.unpack(raw[: lay.size])
        hi = is64
        self.raw = raw
        self.block_bitmap = d.bg_block_bitmap_lo | ((d.bg_block_bitmap_hi << 32) if hi else 0)
        self.inode_bitmap = d.bg_inode_bitmap_lo | ((d.bg_inode_bitmap_hi << 32) if hi else 0)
        self.inode_table = d.bg_inode_table_lo | ((d.bg_inode_table_hi << 32) if hi else 0)
        self.free_blocks = d.bg_free_blocks_count_lo | (
            (d.bg_free_blocks_count_hi << 16) if hi else 0
        )
        self.free_inodes = d.bg_free_inodes_count_lo | (
            (d.bg_free_inodes_count_hi << 16) if hi else 0
        )
        self.used_dirs = d.bg_used_dirs_count_lo | ((d.bg_used_dirs_count_hi << 16) if hi else 0)
        self.flags = d.bg_flags
        self.itable_unused = d.bg_itable_unused_lo | ((d.bg_itable_unused_hi << 16) if hi else 0)
        self.bmap: int | None = None
        self.imap: int | None = None
        self.dirty = False

    def pack(self, is64: bool) -> None:
        """Write the mutable fields back into ``raw`` (checksums are set by the caller)."""
        r = self.raw
        m16 = 0xFFFF
        struct.pack_into(
            "<HHHH", r, 12, self.free_blocks & m16, self.free_inodes & m16,
            self.used_dirs & m16, self.flags,
        )  # fmt: skip
        struct.pack_into("<H", r, 0x1C, self.itable_unused & m16)
        if is64 and len(r) >= 64:
            struct.pack_into(
                "<HHHH", r, 0x2C, self.free_blocks >> 16, self.free_inodes >> 16,
                self.used_dirs >> 16, self.itable_unused >> 16,
            )  # fmt: skip


def _low_bit(x: int) -> int:
    return (x & -x).bit_length() - 1


class Allocator:
    """Owns every group's descriptor and bitmaps while the filesystem is open for writing."""

    def __init__(self, fs: Ext4WritableFilesystem) -> None:
        self.fs = fs
        self.bs = fs.block_size
        self.bpg = fs.blocks_per_group
        self.ipg = fs.inodes_per_group
        self.fdb = fs.first_data_block
        self.blocks_count = fs.blocks_count
        self.ngroups = fs.group_count
        self.is64 = fs.is_64bit
        self.uninit_ok = fs.has_csum or fs.has_gdt_csum
        self.groups: list[Group] = []
        ds = fs.desc_size
        per = fs.descs_per_block
        self.desc_blocks: list[int] = []
        for nr in range(-(-self.ngroups // per)):
            blk = fs.desc_block(nr)
            self.desc_blocks.append(blk)
            data = fs.cache.get(blk)
            for i in range(min(per, self.ngroups - nr * per)):
                self.groups.append(Group(bytearray(data[i * ds : (i + 1) * ds]), self.is64))
        self.free_blocks = sum(g.free_blocks for g in self.groups)
        self.free_inodes = sum(g.free_inodes for g in self.groups)
        self._meta_in_group: dict[int, list[tuple[int, int]]] | None = None
        self.dirty_descs: set[int] = set()
        itb = -(-self.ipg * fs.inode_size // self.bs)
        self.itable_blocks = itb
        for i, g in enumerate(self.groups):
            for blk, n in ((g.block_bitmap, 1), (g.inode_bitmap, 1), (g.inode_table, itb)):
                if blk < self.fdb or blk + n > self.blocks_count:
                    raise CorruptImage("ext4_group_desc", None, f"group {i}: metadata outside")

    # -- geometry --------------------------------------------------------------------------
    def group_start(self, g: int) -> int:
        return self.fdb + g * self.bpg

    def group_len(self, g: int) -> int:
        return min(self.bpg, self.blocks_count - self.group_start(g))

    def group_of_block(self, blk: int) -> int:
        return (blk - self.fdb) // self.bpg

    def _super_len(self, g: int) -> int:
        fs = self.fs
        if not fs.group_has_super(g):
            return 0
        n = 1 + len(self.desc_blocks) if not fs.has_meta_bg else 1
        return n + int(fs.sb.s_reserved_gdt_blocks)

    def _metadata_map(self) -> dict[int, list[tuple[int, int]]]:
        if self._meta_in_group is None:
            m: dict[int, list[tuple[int, int]]] = {}
            for gr in self.groups:
                for blk, n in ((gr.block_bitmap, 1), (gr.inode_bitmap, 1)):
                    m.setdefault(self.group_of_block(blk), []).append((blk, n))
                s, n = gr.inode_table, self.itable_blocks
                while n:
                    g = self.group_of_block(s)
                    take = min(n, self.group_start(g) + self.bpg - s)
                    m.setdefault(g, []).append((s, take))
                    s += take
                    n -= take
            self._meta_in_group = m
        return self._meta_in_group

    # -- bitmaps ---------------------------------------------------------------------------
    def block_map(self, g: int) -> int:
        gr = self.groups[g]
        if gr.bmap is None:
            if self.uninit_ok and gr.flags & od.EXT4_BG_BLOCK_UNINIT:
                x = 0
                gs = self.group_start(g)
                sl = self._super_len(g)
                if sl:
                    x |= (1 << sl) - 1
                for s, n in self._metadata_map().get(g, []):
                    x |= ((1 << n) - 1) << (s - gs)
                gr.bmap = x
            else:
                data = self.fs.cache.get(gr.block_bitmap)
                gr.bmap = int.from_bytes(data[: self.bpg // 8], "little")
        return gr.bmap

    def inode_map(self, g: int) -> int:
        gr = self.groups[g]
        if gr.imap is None:
            if self.uninit_ok and gr.flags & od.EXT4_BG_INODE_UNINIT:
                gr.imap = 0
            else:
                data = self.fs.cache.get(gr.inode_bitmap)
                gr.imap = int.from_bytes(data[: self.ipg // 8], "little")
        return gr.imap

    def _touch(self, g: int) -> None:
        self.groups[g].dirty = True
        self.dirty_descs.add(g)

    # -- blocks ----------------------------------------------------------------------------
    def _runs_in_group(self, g: int, start: int, want: int) -> list[tuple[int, int]]:
        """Free runs in group ``g`` from group offset ``start``, up to ``want`` blocks."""
        x = self.block_map(g)
        n = self.group_len(g)
        valid = (1 << n) - 1
        used = x | ~valid
        out: list[tuple[int, int]] = []
        pos = start
        got = 0
        while got < want and pos < n:
            free = ~(used >> pos)
            if free == 0:
                break
            s = pos + _low_bit(free)
            if s >= n:
                break
            run = _low_bit(used >> s)
            take = min(run, want - got)
            out.append((s, take))
            got += take
            pos = s + run
        return out

    def _longest_in_group(self, g: int, start: int, want: int) -> tuple[int, int] | None:
        """First free run of at least ``want`` blocks from ``start`` (else the longest)."""
        x = self.block_map(g)
        n = self.group_len(g)
        used = x | ~((1 << n) - 1)
        pos = start
        best: tuple[int, int] | None = None
        while pos < n:
            free = ~(used >> pos)
            if free == 0:  # nothing free from pos to the end of the group
                break
            s = pos + _low_bit(free)
            if s >= n:
                break
            run = _low_bit(used >> s)
            if run >= want:
                return (s, want)
            if best is None or run > best[1]:
                best = (s, run)
            pos = s + run
        return best

    def alloc_blocks(self, count: int, goal: int) -> list[tuple[int, int]]:
        """``count`` blocks as (start, length) runs, contiguous from ``goal`` when possible.

        Raises ``NoSpace`` (and allocates nothing) when fewer than ``count`` are free."""
        if count <= 0:
            return []
        if count > self.free_blocks:
            raise NoSpace(f"need {count} blocks, {self.free_blocks} free")
        if goal < self.fdb or goal >= self.blocks_count:
            goal = self.fdb
        g0 = self.group_of_block(goal)
        runs: list[tuple[int, int]] = []
        need = count
        # 1. one contiguous run in the goal group or the next few groups
        if count <= self.bpg:
            for k in range(min(self.ngroups, 8)):
                g = (g0 + k) % self.ngroups
                if self.groups[g].free_blocks < count:
                    continue
                off = goal - self.group_start(g) if k == 0 else 0
                hit = self._longest_in_group(g, max(0, off), count)
                if hit and hit[1] == count:
                    self._take(g, hit[0], count)
                    return [(self.group_start(g) + hit[0], count)]
        # 2. first fit from the goal on, in as many runs as needed
        for k in range(self.ngroups + 1):
            g = (g0 + k) % self.ngroups
            if self.groups[g].free_blocks == 0:
                continue
            off = goal - self.group_start(g) if k == 0 else 0
            for s, n in self._runs_in_group(g, max(0, off), need):
                self._take(g, s, n)
                runs.append((self.group_start(g) + s, n))
                need -= n
            if need == 0:
                break
        if need:
            # should not happen (counts said there was room): undo and refuse
            for s, n in runs:
                self.free_range(s, n)
            raise NoSpace("free block counts disagree with the bitmaps")
        return _coalesce(runs)

    def _take(self, g: int, off: int, n: int) -> None:
        gr = self.groups[g]
        gr.bmap = self.block_map(g) | (((1 << n) - 1) << off)
        if gr.flags & od.EXT4_BG_BLOCK_UNINIT:
            gr.flags &= ~od.EXT4_BG_BLOCK_UNINIT
        gr.free_blocks -= n
        self.free_blocks -= n
        self._touch(g)
        self.fs.cache.drop_range(self.group_start(g) + off, n)

    def free_range(self, start: int, n: int) -> None:
        """Return blocks [start, start+n) to the free pool (they may span groups)."""
        cache = self.fs.cache
        while n > 0:
            g = self.group_of_block(start)
            gs = self.group_start(g)
            take = min(n, gs + self.group_len(g) - start)
            mask = ((1 << take) - 1) << (start - gs)
            x = self.block_map(g)
            if x & mask != mask:
                raise CorruptImage("block bitmap", None, f"freeing free blocks at {start}")
            self.groups[g].bmap = x & ~mask
            self.groups[g].free_blocks += take
            self.free_blocks += take
            self._touch(g)
            cache.drop_range(start, take)
            start += take
            n -= take

    # -- inodes ----------------------------------------------------------------------------
    def alloc_inode(self, goal_group: int, is_dir: bool) -> int:
        if self.free_inodes <= 0:
            raise NoSpace("no free inodes")
        first_ino = self.fs.first_ino
        for k in range(self.ngroups):
            g = (goal_group + k) % self.ngroups
            gr = self.groups[g]
            if gr.free_inodes <= 0:
                continue
            x = self.inode_map(g)
            lo = max(0, first_ino - 1 - g * self.ipg)
            free = ~(x >> lo)
            idx = lo + _low_bit(free)
            if idx >= self.ipg:
                continue
            gr.imap = x | (1 << idx)
            if gr.flags & od.EXT4_BG_INODE_UNINIT:
                gr.flags &= ~od.EXT4_BG_INODE_UNINIT
            if self.uninit_ok and idx >= self.ipg - gr.itable_unused:
                gr.itable_unused = self.ipg - idx - 1
            gr.free_inodes -= 1
            self.free_inodes -= 1
            if is_dir:
                gr.used_dirs += 1
            self._touch(g)
            return g * self.ipg + idx + 1
        raise NoSpace("no free inodes (counts disagree with the bitmaps)")

    def free_inode(self, ino: int, is_dir: bool) -> None:
        g, idx = divmod(ino - 1, self.ipg)
        gr = self.groups[g]
        x = self.inode_map(g)
        if not x >> idx & 1:
            raise CorruptImage("inode bitmap", None, f"freeing free inode {ino}")
        gr.imap = x & ~(1 << idx)
        gr.free_inodes += 1
        self.free_inodes += 1
        if is_dir:
            gr.used_dirs -= 1
        self._touch(g)

    def inode_in_use(self, ino: int) -> bool:
        g, idx = divmod(ino - 1, self.ipg)
        return bool(self.inode_map(g) >> idx & 1)

    # -- flush -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Write dirty bitmaps and descriptor blocks into the cache (checksums included)."""
        if not self.dirty_descs:
            return
        fs = self.fs
        bs = self.bs
        csum = fs.csummer
        ds = fs.desc_size
        per = fs.descs_per_block
        desc_nrs: set[int] = set()
        for g in sorted(self.dirty_descs):
            gr = self.groups[g]
            if gr.bmap is not None and not gr.flags & od.EXT4_BG_BLOCK_UNINIT:
                n = self.group_len(g)
                x = gr.bmap | (((1 << (bs * 8)) - 1) & ~((1 << n) - 1))  # padding bits
                data = x.to_bytes(bs, "little")
                fs.cache.put(gr.block_bitmap, data)
                csum.set_block_bitmap_csum(gr.raw, data[: self.bpg // 8])
            if gr.imap is not None and not gr.flags & od.EXT4_BG_INODE_UNINIT:
                pad = ((1 << (bs * 8)) - 1) & ~((1 << self.ipg) - 1)
                data = (gr.imap | pad).to_bytes(bs, "little")
                fs.cache.put(gr.inode_bitmap, data)
                csum.set_inode_bitmap_csum(gr.raw, data[: self.ipg // 8])
            gr.pack(self.is64)
            csum.set_group_desc(gr.raw, g)
            desc_nrs.add(g // per)
            gr.dirty = False
        for nr in desc_nrs:
            blk = self.desc_blocks[nr]
            block = bytearray(fs.cache.get(blk))
            for i in range(min(per, self.ngroups - nr * per)):
                block[i * ds : (i + 1) * ds] = self.groups[nr * per + i].raw
            fs.cache.put(blk, block)
        self.dirty_descs.clear()


def _coalesce(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, n in runs:
        if out and out[-1][0] + out[-1][1] == s:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((s, n))
    return out
