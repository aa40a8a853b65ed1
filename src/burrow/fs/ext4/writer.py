"""``Ext4WritableFilesystem``: every write operation of :class:`burrow.fs.vfs.Filesystem` on
ext2/ext3/ext4, in pure Python, leaving the filesystem ``e2fsck``-clean once synced.

Shape:

* Reads are the read driver's (the parent class), pointed at a :class:`WriteCache` that
  overlays our dirty metadata blocks on the device, so they see every change.
* Changed inodes (:class:`WInode`, mapping held as a list), directories (:class:`WDir`),
  bitmaps and descriptors (:class:`Allocator`) stay decoded in memory; ``_publish`` packs
  them into the cache with their checksums (before any read, and at ``sync``); ``sync``
  writes the cache below in runs. File data goes straight to the device, one ``pwrite`` per
  allocated run, after the blocks were allocated (contiguous when possible).
* Each operation checks everything that can fail (names, types, link counts, free space)
  before changing anything, so a refused operation leaves no trace.
* Crash safety is the block overlay's job (the CLI and the API edit through an overlay and
  commit at the end); the journal is never written and must be empty (we refuse a filesystem
  that needs recovery).
"""

from __future__ import annotations

import os
import stat as _stat
import struct
import time
from collections.abc import Iterator

from burrow.block.device import BlockDevice
from burrow.errors import (
    CorruptImage,
    Exists,
    InvalidArgument,
    InvalidOperation,
    IsADirectory,
    NameTooLong,
    NoSpace,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    ReadOnly,
    TooManyLinks,
    Unsupported,
    error_for_errno,
)
from burrow.fs import vfs
from burrow.fs.ext4 import ondisk as od
from burrow.fs.ext4 import write_xattr as wx
from burrow.fs.ext4.alloc import Allocator
from burrow.fs.ext4.filesystem import Ext4Filesystem, Inode
from burrow.fs.ext4.write_blockmap import (
    blockmap_meta_count,
    build_blockmap,
    max_blocks,
    parse_blockmap,
)
from burrow.fs.ext4.write_cache import WriteCache
from burrow.fs.ext4.write_csum import Checksummer
from burrow.fs.ext4.write_dir import parse_leaf
from burrow.fs.ext4.write_extent import (
    build_tree,
    index_blocks_needed,
    merge_extents,
    parse_tree,
)
from burrow.fs.ext4.write_htree import WDir
from burrow.fs.ext4.write_inode import WInode

__all__ = ["Ext4WritableFilesystem"]

LINK_MAX = 65000  # EXT4_LINK_MAX
MAX_WINODES = 100_000  # decoded inodes kept after a flush
MAX_WDIRS = 20_000
MAX_DIRTY_INODES = 50_000  # publish when this many inodes are dirty
MAX_CACHED_BLOCKS = 32_768  # write the metadata cache below past this many blocks
_EXT_ROOT_EMPTY = struct.pack("<HHHHI", od.EXT4_EXT_MAGIC, 0, 4, 0, 0) + bytes(48)

# features we can keep consistent while writing
_INCOMPAT_RW = (
    od.INCOMPAT_FILETYPE
    | od.INCOMPAT_EXTENTS
    | od.INCOMPAT_64BIT
    | od.INCOMPAT_FLEX_BG
    | od.INCOMPAT_CSUM_SEED
    | od.INCOMPAT_LARGEDIR
    | od.INCOMPAT_INLINE_DATA
)
_RO_COMPAT_RW = (
    od.RO_COMPAT_SPARSE_SUPER
    | od.RO_COMPAT_LARGE_FILE
    | od.RO_COMPAT_HUGE_FILE
    | od.RO_COMPAT_GDT_CSUM
    | od.RO_COMPAT_DIR_NLINK
    | od.RO_COMPAT_EXTRA_ISIZE
    | od.RO_COMPAT_METADATA_CSUM
)
_FT = {
    _stat.S_IFREG: od.EXT4_FT_REG_FILE,
    _stat.S_IFDIR: od.EXT4_FT_DIR,
    _stat.S_IFCHR: od.EXT4_FT_CHRDEV,
    _stat.S_IFBLK: od.EXT4_FT_BLKDEV,
    _stat.S_IFIFO: od.EXT4_FT_FIFO,
    _stat.S_IFSOCK: od.EXT4_FT_SOCK,
    _stat.S_IFLNK: od.EXT4_FT_SYMLINK,
}


def _check_name(name: str) -> bytes:
    raw = vfs.encode_name(name)
    if not raw or name in (".", "..") or b"/" in raw or b"\0" in raw:
        raise InvalidArgument(f"invalid file name {name!r}")
    if len(raw) > od.EXT4_NAME_LEN:
        raise NameTooLong(f"name longer than 255 bytes: {name[:40]!r}...")
    return raw


class Ext4WritableFilesystem(Ext4Filesystem):
    """ext2/3/4 opened for writing (see the module docstring)."""

    readonly = False

    def __init__(self, dev: BlockDevice, *, ignore_checksums: bool = False) -> None:
        if dev.readonly:
            raise ReadOnly("device is read-only")
        super().__init__(dev, ignore_checksums=ignore_checksums)
        if self.journal_replayed or self.sb.s_feature_incompat & od.INCOMPAT_RECOVER:
            raise Unsupported("needs_recovery", "replay the journal (e2fsck or mount) first")
        if self.sb.s_state & od.EXT4_ERROR_FS or not self.sb.s_state & od.EXT4_VALID_FS:
            raise CorruptImage(
                "ext4_super_block", od.SUPERBLOCK_OFFSET + 0x3A,
                "filesystem has errors or was not cleanly unmounted; run e2fsck first",
            )  # fmt: skip
        self._check_features()
        self.real_dev = dev
        self.cache = WriteCache(dev, self.block_size)
        self.dev = self.cache
        self.invalidate_all()
        self.csummer = Checksummer(
            bytes(self.sb.s_uuid),
            metadata_csum=self.has_csum,
            gdt_csum=self.has_gdt_csum,
            desc_size=self.desc_size,
            csum_seed=self.csum_seed if self.has_csum else None,
        )
        self.alloc = Allocator(self)
        self._verify = self.has_csum and not ignore_checksums
        self._inodes: dict[int, WInode] = {}
        self._dirs: dict[int, WDir] = {}
        self._pins: dict[int, int] = {}
        self._dirty = False
        self._dirty_inos: set[int] = set()
        self._mounted = False
        self._bytes_written = 0
        self._large_file = False
        self._closing = False
        self._closed = False
        want = self.sb.s_want_extra_isize or 32
        self._extra_isize = min(want, self.inode_size - 128) if self.inode_size > 128 else 0
        hv = self.sb.s_def_hash_version
        if hv <= od.DX_HASH_TEA:
            hv += self.hash_unsigned
        self._hash_version = hv if self.has_dir_index else -1

    def _check_features(self) -> None:
        names = od.feature_names
        bad = self.feature_incompat & ~_INCOMPAT_RW
        if bad:
            raise Unsupported(names(0, bad, 0)[0], "cannot write this feature")
        bad = self.feature_ro_compat & ~_RO_COMPAT_RW
        if bad:
            raise Unsupported(names(0, 0, bad)[0], "cannot write this feature")
        known_compat = (
            od.COMPAT_DIR_PREALLOC | od.COMPAT_HAS_JOURNAL | od.COMPAT_EXT_ATTR
            | od.COMPAT_RESIZE_INODE | od.COMPAT_DIR_INDEX | od.COMPAT_SPARSE_SUPER2
        )  # fmt: skip
        bad = self.feature_compat & ~known_compat
        if bad:
            raise Unsupported(names(bad, 0, 0)[0], "cannot write this feature")
        if self.bigalloc:
            raise Unsupported("bigalloc", "cannot write this feature")

    # ================================================================== state =============
    def _now(self) -> int:
        return time.time_ns()

    def _check_writable(self) -> None:
        if self._closed:
            raise InvalidArgument("filesystem is closed")

    def _get(self, ino: int) -> WInode:
        w = self._inodes.get(ino)
        if w is not None:
            return w
        if ino < 1 or ino > self.inodes_count:
            raise NotFound(f"no inode {ino}")
        g, idx = divmod(ino - 1, self.inodes_per_group)
        gr = self.alloc.groups[g]
        isz = self.inode_size
        if self.alloc.uninit_ok and gr.flags & od.EXT4_BG_INODE_UNINIT:
            raw = bytearray(isz)
        else:
            bs = self.block_size
            blk = gr.inode_table + idx * isz // bs
            off = idx * isz % bs
            raw = bytearray(self.cache.get(blk)[off : off + isz])
            if self._verify and any(raw[:0x24]):
                want = bytearray(raw)
                self.csummer.set_inode(want, ino, isz)
                if want != raw:
                    raise CorruptImage("ext4_inode", blk * bs + off + 0x7C, f"inode {ino} checksum")
        w = WInode(ino, raw)
        self._inodes[ino] = w
        return w

    # -- checksum verification of what the writer loads itself (the reader verifies the rest)
    def _check_extent_block(self, blk: int, data: bytes, ino: int, gen: int) -> bytes:
        if self._verify:
            eh_max = struct.unpack_from("<H", data, 4)[0]
            at = 12 + 12 * eh_max
            if at + 4 > len(data):
                raise CorruptImage("ext4_extent_header", blk * self.block_size, "bad eh_max")
            want = bytearray(data)
            self.csummer.set_extent_tail(want, ino, gen)
            if want[at : at + 4] != data[at : at + 4]:
                raise CorruptImage("ext4_extent_tail", blk * self.block_size + at, f"inode {ino}")
        return data

    def _check_dir_block(self, blk: int, data: bytes, ino: int, gen: int, lblk: int) -> bytes:
        if not self._verify:
            return data
        bs = self.block_size
        z, rl, nl, ft = struct.unpack_from("<IHBB", data, bs - 12)
        if z == 0 and rl == 12 and nl == 0 and ft == od.EXT4_FT_DIR_CSUM:
            want = bytearray(data)
            self.csummer.set_dir_tail(want, ino, gen)
            if want != data:
                raise CorruptImage("ext4_dir_entry_tail", blk * bs + bs - 12, f"dir {ino}")
            return data
        w = self._inodes.get(ino)
        indexed = w is not None and w.flags & od.EXT4_INDEX_FL
        first_ino, first_rl, first_nl = struct.unpack_from("<IHB", data, 0)
        is_node = lblk == 0 or (first_ino == 0 and first_nl == 0
                                and od.rec_len_from_disk(first_rl, bs) == bs)  # fmt: skip
        if indexed and is_node:
            off = 32 if lblk == 0 else 8
            limit, count = struct.unpack_from("<HH", data, off)
            if off + 8 * limit + 8 > bs or count > limit:
                raise CorruptImage("dx_countlimit", blk * bs + off, f"dir {ino}")
            want = bytearray(data)
            self.csummer.set_dx_tail(want, ino, gen, off)
            if want != data:
                raise CorruptImage("dx_tail", blk * bs + off + 8 * limit, f"dir {ino}")
        return data

    def _live(self, ino: int) -> WInode:
        w = self._get(ino)
        if w.mode == 0 or (w.links == 0 and ino not in self._pins):
            raise NotFound(f"no inode {ino}")
        return w

    def _ensure_map(self, w: WInode) -> None:
        if w.exts is not None:
            return
        bs = self.block_size
        if w.flags & od.EXT4_INLINE_DATA_FL:
            return
        if w.flags & od.EXT4_EXTENTS_FL:
            gen = w.generation

            def node(blk: int) -> bytes:
                if blk >= self.blocks_count:
                    raise CorruptImage("ext4_extent_idx", None, f"inode {w.ino}: bad block")
                return self._check_extent_block(blk, self.cache.get(blk), w.ino, gen)

            exts, nodes = parse_tree(w.i_block, node, self.blocks_count)
            w.exts = merge_extents(exts)
            w.nodes = nodes
        else:
            nb = -(-w.size // bs)
            runs, meta = parse_blockmap(w.i_block, nb, self.cache.get, self.blocks_count, bs)
            w.exts = runs
            w.blockmap = True
            w.meta = meta

    def _is_fast_symlink(self, w: WInode) -> bool:
        if not _stat.S_ISLNK(w.mode) or w.flags & od.EXT4_INLINE_DATA_FL:
            return False
        sectors = struct.unpack_from("<I", w.raw, 0x1C)[0]
        ea = self.block_size // 512 if w.file_acl else 0
        return sectors - ea == 0 and w.size < 60

    def _has_blocks(self, w: WInode) -> bool:
        m = _stat.S_IFMT(w.mode)
        if m in (_stat.S_IFREG, _stat.S_IFDIR):
            return not w.flags & od.EXT4_INLINE_DATA_FL
        if m == _stat.S_IFLNK:
            return not self._is_fast_symlink(w) and not w.flags & od.EXT4_INLINE_DATA_FL
        return False

    def _mark(self, w: WInode) -> None:
        self._inodes[w.ino] = w  # the object being changed is the one that gets flushed
        w.dirty = True
        self._dirty = True
        self._dirty_inos.add(w.ino)

    # ================================================================== publish ===========
    def _publish(self) -> None:
        """Pack every dirty structure into the write cache (checksums set) and drop the read
        side's caches so it sees them."""
        if not self._dirty:
            return
        dirty = self._dirty_inos
        for ino in sorted(dirty):
            d = self._dirs.get(ino)
            if d is not None and (d.dirty or d.index_dirty):
                self._flush_dir(d)
        for ino in sorted(dirty):
            w = self._inodes.get(ino)
            if w is not None and w.map_dirty:
                self._flush_map(w)
        for ino in sorted(dirty):
            w = self._inodes.get(ino)
            if w is not None and w.dirty:
                self._store_inode(w)
        dirty.clear()
        self.alloc.flush()
        self._write_superblock()
        self.invalidate_all()
        self._dirty = False
        self._evict()

    def _evict(self) -> None:
        """Bound memory: forget clean inodes and directories once there are many (they are
        reloaded from the cache on next use)."""
        if len(self._inodes) > MAX_WINODES:
            for ino in [i for i, w in self._inodes.items() if not w.dirty and i not in self._pins]:
                del self._inodes[ino]
        if len(self._dirs) > MAX_WDIRS:
            for ino in [i for i, d in self._dirs.items() if not d.dirty and not d.index_dirty]:
                del self._dirs[ino]

    def _store_inode(self, w: WInode) -> None:
        g, idx = divmod(w.ino - 1, self.inodes_per_group)
        gr = self.alloc.groups[g]
        bs, isz = self.block_size, self.inode_size
        blk = gr.inode_table + idx * isz // bs
        off = idx * isz % bs
        self.csummer.set_inode(w.raw, w.ino, isz)
        data = bytearray(self.cache.get(blk))
        data[off : off + isz] = w.raw
        self.cache.put(blk, data)
        w.dirty = False

    def _flush_map(self, w: WInode) -> None:
        if w.exts is None:
            w.map_dirty = False
            return
        bs = self.block_size
        goal = self._inode_goal(w.ino)
        exts = merge_extents(w.exts)
        w.exts = exts
        first = exts[0].pblk if exts else goal
        blocks: list[tuple[int, bytearray]]
        if w.blockmap:
            self._resize_meta(w.meta, blockmap_meta_count(exts, bs), first)
            iblock, blocks = build_blockmap(exts, w.meta, bs)
            w.i_block = iblock
            nmeta = len(w.meta)
        else:
            self._resize_meta(w.nodes, index_blocks_needed(len(exts), bs), first)
            seed_ino, gen = w.ino, w.generation

            def tail(data: bytearray) -> None:
                self.csummer.set_extent_tail(data, seed_ino, gen)

            root, blocks = build_tree(exts, w.nodes, bs, tail)
            w.i_block = root
            nmeta = len(w.nodes)
        for blk, data in blocks:
            self.cache.put(blk, data)
        self._set_iblocks(w, w.data_blocks() + nmeta)
        w.map_dirty = False
        self._mark(w)

    def _set_iblocks(self, w: WInode, fs_blocks: int) -> None:
        if w.file_acl:
            fs_blocks += 1
        w.set_blocks(fs_blocks * (self.block_size // 512))

    def _add_iblocks(self, w: WInode, delta: int) -> None:
        """Keep st_blocks current between flushes (tree blocks are counted at flush)."""
        sectors = struct.unpack_from("<I", w.raw, 0x1C)[0] | (
            struct.unpack_from("<H", w.raw, 0x74)[0] << 32
        )
        w.set_blocks(max(0, sectors + delta * (self.block_size // 512)))

    def _resize_meta(self, blocks: list[int], need: int, goal: int) -> None:
        if need > len(blocks):
            for s, n in self.alloc.alloc_blocks(need - len(blocks), goal):
                blocks.extend(range(s, s + n))
        while len(blocks) > need:
            self.alloc.free_range(blocks.pop(), 1)

    def _write_superblock(self) -> None:
        sb = od.EXT4_SUPER_BLOCK.unpack(self.cache.get_range(od.SUPERBLOCK_OFFSET, 1024))
        now = self._now() // 1_000_000_000
        fb = self.alloc.free_blocks
        sb.s_free_blocks_count_lo = fb & 0xFFFFFFFF
        if self.is_64bit:
            sb.s_free_blocks_count_hi = fb >> 32
        sb.s_free_inodes_count = self.alloc.free_inodes
        if not self._mounted:
            self._mounted = True
            sb.s_mnt_count = (sb.s_mnt_count + 1) & 0xFFFF
            sb.s_mtime = now & 0xFFFFFFFF
            sb.s_mtime_hi = (now >> 32) & 0xFF
        if not self.feature_compat & od.COMPAT_HAS_JOURNAL:
            # like an ext2 mount: "not clean" while open for writing, clean again at close
            if self._closing:
                sb.s_state |= od.EXT4_VALID_FS
            else:
                sb.s_state &= ~od.EXT4_VALID_FS
        sb.s_wtime = now & 0xFFFFFFFF
        sb.s_wtime_hi = (now >> 32) & 0xFF
        sb.s_kbytes_written += self._bytes_written >> 10
        if self._large_file:  # a file past 2 GiB needs large_file, as the kernel sets it
            sb.s_feature_ro_compat |= od.RO_COMPAT_LARGE_FILE
        self._bytes_written &= 1023
        raw = bytearray(od.EXT4_SUPER_BLOCK.pack(sb))
        self.csummer.set_superblock(raw)
        self.cache.put_range(od.SUPERBLOCK_OFFSET, raw)

    # ================================================================== reads =============
    def inode(self, ino: int) -> Inode:
        w = self._inodes.get(ino)
        if w is not None:
            return self._decode_inode(ino, bytes(w.raw), -1)
        return super().inode(ino)

    def getattr(self, ino: int) -> vfs.Stat:
        w = self._inodes.get(ino)
        if (
            w is not None
            and w.map_dirty
            and w.exts is not None
            and index_blocks_needed(len(w.exts), self.block_size) != len(w.nodes)
        ):
            self._publish()  # st_blocks must count the extent tree blocks too
        if w is not None and (w.mode == 0 or (w.links == 0 and ino not in self._pins)):
            raise NotFound(f"no inode {ino}")
        return super().getattr(ino)

    def lookup(self, parent: int, name: str) -> int:
        d = self._dirs.get(parent)
        if d is not None and name not in (".", ".."):
            hit = d.get(vfs.encode_name(name))
            if hit is None:
                raise NotFound(name)
            return hit[0]
        self._publish()
        return super().lookup(parent, name)

    def readdir(self, ino: int) -> Iterator[vfs.DirEntry]:
        self._publish()
        return super().readdir(ino)

    def read(self, ino: int, offset: int, n: int) -> bytes:
        self._publish()
        return super().read(ino, offset, n)

    def readinto(self, ino: int, offset: int, buf: bytearray | memoryview) -> int:
        self._publish()
        return super().readinto(ino, offset, buf)

    def readlink(self, ino: int) -> str:
        self._publish()
        return super().readlink(ino)

    def listxattr(self, ino: int) -> list[str]:
        self._publish()
        return super().listxattr(ino)

    def getxattr(self, ino: int, name: str) -> bytes:
        self._publish()
        return super().getxattr(ino, name)

    def statfs(self) -> vfs.StatFS:
        self._publish()  # the read side's figures, from the descriptors we keep current
        return super().statfs()

    def info(self) -> vfs.FsInfo:
        self._publish()
        self.read_superblock()
        return super().info()

    # ================================================================== directories =======
    def _dir(self, ino: int) -> WDir:
        d = self._dirs.get(ino)
        if d is not None:
            return d
        w = self._live(ino)
        if not _stat.S_ISDIR(w.mode):
            raise NotADirectory(f"inode {ino} is not a directory")
        if w.flags & od.EXT4_INLINE_DATA_FL:
            self._inline_dir_to_blocks(w)
            return self._dirs[ino]
        self._ensure_map(w)
        bs = self.block_size
        nblocks = w.size // bs
        d = WDir(
            ino,
            bs,
            tail=self.has_csum,
            ftype=self.has_filetype,
            hash_version=self._hash_version,
            hash_seed=self.hash_seed,
            max_levels=od.EXT4_HTREE_LEVEL if self.has_largedir else od.EXT4_HTREE_LEVEL_COMPAT,
        )
        d.nblocks = nblocks
        segs = w.segments(0, nblocks)

        gen = w.generation

        def read(lblk: int) -> bytes:
            for s, p, n, _u in segs:
                if s <= lblk < s + n and p >= 0:
                    blk = p + lblk - s
                    return self._check_dir_block(blk, self.cache.get(blk), ino, gen, lblk)
            raise CorruptImage("ext4_dir_entry_2", None, f"dir {ino}: hole at block {lblk}")

        if w.flags & od.EXT4_INDEX_FL and self.has_dir_index:
            if d.hash_version < 0:
                d.hash_version = od.DX_HASH_HALF_MD4 + self.hash_unsigned
            d.load_indexed(read, nblocks)
        else:
            if w.flags & od.EXT4_INDEX_FL:  # indexed but dir_index off: treat as linear
                w.flags = w.flags & ~od.EXT4_INDEX_FL
                self._mark(w)
            blocks = {}
            for s, p, n, _u in segs:
                if p < 0:
                    continue
                for k in range(n):
                    blocks[s + k] = self._check_dir_block(
                        p + k, self.cache.get(p + k), ino, gen, s + k
                    )
            d.load_linear(blocks)
        if d.indexed and d.root_hash_version > od.DX_HASH_TEA:
            d.hash_version = d.root_hash_version
        elif d.indexed:
            d.hash_version = d.root_hash_version + self.hash_unsigned
        self._dirs[ino] = d
        return d

    def _dir_new_block(self, w: WInode, d: WDir) -> int:
        """Append one block to directory ``w``; returns its logical number."""
        self._ensure_map(w)
        lblk = d.nblocks
        (s, _n), *_ = self.alloc.alloc_blocks(1, w.last_pblk() or self._inode_goal(w.ino))
        w.set_range(lblk, s, 1)
        d.nblocks += 1
        w.size = d.nblocks * self.block_size
        self._mark(w)
        return lblk

    def _flush_dir(self, d: WDir) -> None:
        w = self._get(d.ino)
        self._ensure_map(w)
        gen = w.generation

        def pblk(lblk: int) -> int:
            segs = w.segments(lblk, lblk + 1)
            if not segs or segs[0][1] < 0:
                raise CorruptImage("ext4_dir_entry_2", None, f"dir {d.ino}: unmapped {lblk}")
            return segs[0][1]

        if d.indexed and (d.index_dirty or 0 in d.dirty):
            root_limit, node_limit = d.limits()
            entries = list(d.dx)
            levels = 0
            pos = 0
            while len(entries) > root_limit:
                nxt: list[tuple[int, int]] = []
                for k in range(0, len(entries), node_limit):
                    chunk = entries[k : k + node_limit]
                    if pos == len(d.dx_nodes):
                        d.dx_nodes.append(self._dir_new_block(w, d))
                    node_lblk = d.dx_nodes[pos]
                    pos += 1
                    data = d.pack_node(chunk)
                    self.csummer.set_dx_tail(data, d.ino, gen, 8)
                    self.cache.put(pblk(node_lblk), data)
                    nxt.append((chunk[0][0], node_lblk))
                entries = nxt
                levels += 1
            if levels >= d.max_levels:
                raise CorruptImage("dx_root", None, f"dir {d.ino}: index too deep")
            root = d.pack_root(entries, levels)
            self.csummer.set_dx_tail(root, d.ino, gen, 32)
            self.cache.put(pblk(0), root)
            if not w.flags & od.EXT4_INDEX_FL:
                w.flags = w.flags | od.EXT4_INDEX_FL
                self._mark(w)
            d.dirty.discard(0)
            d.index_dirty = False
        for lblk in sorted(d.dirty):
            if lblk not in d.leaves:
                continue
            data = d.pack_leaf_block(lblk)
            if self.has_csum:
                self.csummer.set_dir_tail(data, d.ino, gen)
            self.cache.put(pblk(lblk), data)
        d.dirty.clear()

    def _ft(self, mode: int) -> int:
        return _FT.get(_stat.S_IFMT(mode), 0) if self.has_filetype else 0

    def _need_blocks(self, n: int) -> None:
        if self.alloc.free_blocks < n:
            raise NoSpace(f"no space left ({self.alloc.free_blocks} blocks free)")

    # ================================================================== inodes ============
    def _inode_goal(self, ino: int) -> int:
        g = (ino - 1) // self.inodes_per_group
        return self.alloc.group_start(g)

    def _new_inode(self, parent: int, mode: int, uid: int, gid: int) -> WInode:
        is_dir = _stat.S_ISDIR(mode)
        pg = (parent - 1) // self.inodes_per_group
        ino = self.alloc.alloc_inode(pg, is_dir)
        raw = bytearray(self.inode_size)
        w = WInode(ino, raw)
        if self.inode_size > 128:
            struct.pack_into("<H", raw, 0x80, self._extra_isize)
        w.mode = mode
        w.uid = uid
        w.gid = gid
        w.links = 2 if is_dir else 1
        struct.pack_into("<I", raw, 0x64, int.from_bytes(os.urandom(4), "little"))
        now = self._now()
        w.set_times(atime=now, mtime=now, ctime=now, crtime=now)
        fmt = _stat.S_IFMT(mode)
        if fmt in (_stat.S_IFREG, _stat.S_IFDIR, _stat.S_IFLNK):
            if self.has_extents:
                w.flags = od.EXT4_EXTENTS_FL
                w.i_block = _EXT_ROOT_EMPTY
                w.exts = []
            else:
                w.exts = []
                w.blockmap = True
        self._inodes[ino] = w
        self._mark(w)
        return w

    def _release(self, w: WInode) -> None:
        """Free an inode with no links and no pins: its blocks, xattrs, the inode itself."""
        is_dir = _stat.S_ISDIR(w.mode)
        if self._has_blocks(w):
            self._ensure_map(w)
            for s, n in w.cut(0):
                self.alloc.free_range(s, n)
            for b in w.nodes + w.meta:
                self.alloc.free_range(b, 1)
            w.nodes, w.meta = [], []
        if w.file_acl:
            self._drop_xattr_block(w)
        self.alloc.free_inode(w.ino, is_dir)
        self._dirs.pop(w.ino, None)
        now = self._now() // 1_000_000_000
        gen = w.generation
        w.raw[:] = bytes(len(w.raw))
        struct.pack_into("<I", w.raw, 0x64, gen)
        if self.inode_size > 128:
            struct.pack_into("<H", w.raw, 0x80, self._extra_isize)
        w.set_dtime(now)
        w.exts = None
        w.map_dirty = False
        self._mark(w)

    def _unref(self, w: WInode) -> None:
        if w.links == 0 and w.ino not in self._pins:
            self._release(w)

    # ================================================================== create ============
    def _maybe_flush(self) -> None:
        """Bound memory during long runs of writes (populating a big tree): pack dirty state
        and push the cache down once it grows (between operations, when all is consistent)."""
        if len(self._dirty_inos) > MAX_DIRTY_INODES:
            self._publish()
        if len(self.cache.blocks) > MAX_CACHED_BLOCKS:
            self._publish()
            self.cache.writeback()

    def _prepare_entry(self, parent: int, name: str) -> tuple[WDir, bytes]:
        self._check_writable()
        self._maybe_flush()
        raw = _check_name(name)
        d = self._dir(parent)
        if self._get(parent).links == 0:
            raise NotFound("directory was removed")  # an open, already-deleted directory
        if d.get(raw) is not None:
            raise Exists(name)
        if self.alloc.free_inodes <= 0:
            raise NoSpace("no free inodes")
        self._need_blocks(6)
        return d, raw

    def _link_in(self, d: WDir, raw: bytes, w: WInode) -> None:
        pw = self._get(d.ino)
        d.insert(raw, w.ino, self._ft(w.mode), lambda: self._dir_new_block(pw, d))
        now = self._now()
        pw.set_times(mtime=now, ctime=now)
        self._mark(pw)
        self._dirty = True

    def create(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0) -> int:
        d, raw = self._prepare_entry(parent, name)
        w = self._new_inode(parent, _stat.S_IFREG | (mode & 0o7777), uid, gid)
        self._link_in(d, raw, w)
        return w.ino

    def mknod(
        self, parent: int, name: str, mode: int, rdev: int = 0, uid: int = 0, gid: int = 0
    ) -> int:
        fmt = _stat.S_IFMT(mode)
        if fmt in (_stat.S_IFREG, 0):
            return self.create(parent, name, mode, uid, gid)
        if fmt not in (_stat.S_IFCHR, _stat.S_IFBLK, _stat.S_IFIFO, _stat.S_IFSOCK):
            raise InvalidArgument(f"mknod cannot make mode {mode:o}")
        d, raw = self._prepare_entry(parent, name)
        w = self._new_inode(parent, fmt | (mode & 0o7777), uid, gid)
        if fmt in (_stat.S_IFCHR, _stat.S_IFBLK):
            ma, mi = os.major(rdev), os.minor(rdev)
            if ma < 256 and mi < 256:
                w.i_block = struct.pack("<II", (ma << 8) | mi, 0)
            else:
                w.i_block = struct.pack("<II", 0, (mi & 0xFF) | (ma << 8) | ((mi & ~0xFF) << 12))
        self._link_in(d, raw, w)
        return w.ino

    def mkdir(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0) -> int:
        d, raw = self._prepare_entry(parent, name)
        pw = self._get(parent)
        new_links = pw.links + 1
        if new_links > LINK_MAX and not (self.feature_ro_compat & od.RO_COMPAT_DIR_NLINK):
            raise TooManyLinks(f"directory {parent} has too many subdirectories")
        w = self._new_inode(parent, _stat.S_IFDIR | (mode & 0o7777), uid, gid)
        nd = WDir(
            w.ino,
            self.block_size,
            tail=self.has_csum,
            ftype=self.has_filetype,
            hash_version=self._hash_version,
            hash_seed=self.hash_seed,
            max_levels=d.max_levels,
        )
        nd.parent = parent
        nd.leaves[0] = []
        nd.free[0] = nd.room
        self._dirs[w.ino] = nd
        self._dir_new_block(w, nd)
        for n, i in ((b".", w.ino), (b"..", parent)):
            nd.leaves[0].append((n, i, self._ft(_stat.S_IFDIR)))
            nd.free[0] -= 12
        nd.dirty.add(0)
        self._link_in(d, raw, w)
        self._bump_dir_links(pw, +1)
        return w.ino

    def _bump_dir_links(self, pw: WInode, delta: int) -> None:
        links = pw.links
        if delta > 0:
            if links >= LINK_MAX or links == 1:
                pw.links = 1  # dir_nlink: "many subdirectories"
            else:
                pw.links = links + 1
        elif links > 2:
            pw.links = links - 1
        elif links == 1:
            pass  # the count is unknown ("many"); it stays 1, as the kernel does
        self._mark(pw)

    def symlink(self, parent: int, name: str, target: str, uid: int = 0, gid: int = 0) -> int:
        tb = vfs.encode_name(target)
        if not tb:
            raise InvalidArgument("empty symlink target")
        if b"\0" in tb:
            raise InvalidArgument("symlink target contains NUL")
        if len(tb) >= self.block_size:
            raise NameTooLong("symlink target too long")
        d, raw = self._prepare_entry(parent, name)
        w = self._new_inode(parent, _stat.S_IFLNK | 0o777, uid, gid)
        if len(tb) < 60:
            w.flags = w.flags & ~od.EXT4_EXTENTS_FL
            w.exts = None
            w.i_block = tb
            w.size = len(tb)
        else:
            self._write_data(w, 0, tb)
        self._link_in(d, raw, w)
        return w.ino

    def link(self, ino: int, new_parent: int, new_name: str) -> None:
        self._check_writable()
        self._maybe_flush()
        w = self._live(ino)
        if _stat.S_ISDIR(w.mode):
            raise NotPermitted("hard links to directories are not allowed")
        if w.links >= LINK_MAX:
            raise TooManyLinks(f"inode {ino} has {w.links} links")
        d, raw = self._prepare_entry(new_parent, new_name)
        self._link_in(d, raw, w)
        w.links = w.links + 1
        w.set_times(ctime=self._now())
        self._mark(w)

    # ================================================================== remove ============
    def unlink(self, parent: int, name: str) -> None:
        self._check_writable()
        raw = vfs.encode_name(name)
        d = self._dir(parent)
        hit = d.get(raw)
        if hit is None or name in (".", ".."):
            raise NotFound(name)
        w = self._get(hit[0])
        if _stat.S_ISDIR(w.mode):
            raise IsADirectory(f"{name} is a directory")
        d.remove(raw)
        self._touch_dir(parent)
        w.links = max(0, w.links - 1)
        w.set_times(ctime=self._now())
        self._mark(w)
        self._unref(w)

    def _touch_dir(self, ino: int) -> None:
        pw = self._get(ino)
        now = self._now()
        pw.set_times(mtime=now, ctime=now)
        self._mark(pw)

    def rmdir(self, parent: int, name: str) -> None:
        self._check_writable()
        if name == ".":
            raise InvalidArgument("cannot remove '.'")
        if name == "..":
            raise NotEmpty("cannot remove '..'")
        raw = vfs.encode_name(name)
        d = self._dir(parent)
        hit = d.get(raw)
        if hit is None:
            raise NotFound(name)
        w = self._get(hit[0])
        if not _stat.S_ISDIR(w.mode):
            raise NotADirectory(f"{name} is not a directory")
        if not self._dir(w.ino).is_empty():
            raise NotEmpty(name)
        d.remove(raw)
        self._touch_dir(parent)
        self._bump_dir_links(self._get(parent), -1)
        w.links = 0
        w.set_times(ctime=self._now())
        self._mark(w)
        self._unref(w)

    # ================================================================== rename ============
    def _is_ancestor(self, anc: int, ino: int) -> bool:
        """Is directory ``anc`` ``ino`` or above it?"""
        seen: set[int] = set()
        cur = ino
        while True:
            if cur == anc:
                return True
            if cur == self.root_ino or cur in seen:
                return False
            seen.add(cur)
            cur = self._dir(cur).parent

    def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        self._check_writable()
        if flags & ~(vfs.RENAME_NOREPLACE | vfs.RENAME_EXCHANGE) or flags == (
            vfs.RENAME_NOREPLACE | vfs.RENAME_EXCHANGE
        ):
            raise InvalidArgument("bad rename flags")
        if old_name in (".", "..") or new_name in (".", ".."):
            raise InvalidOperation("cannot rename '.' or '..'")
        oraw = vfs.encode_name(old_name)
        nraw = _check_name(new_name)
        od_ = self._dir(old_parent)
        nd = self._dir(new_parent)
        src = od_.get(oraw)
        if src is None:
            raise NotFound(old_name)
        sw = self._get(src[0])
        dst = nd.get(nraw)
        s_dir = _stat.S_ISDIR(sw.mode)
        if flags & vfs.RENAME_EXCHANGE:
            if dst is None:
                raise NotFound(new_name)
            self._exchange(od_, oraw, nd, nraw, sw, self._get(dst[0]))
            return
        if dst is not None and flags & vfs.RENAME_NOREPLACE:
            raise Exists(new_name)
        if dst is not None and dst[0] == src[0]:
            return  # both names are links to one inode: nothing to do (POSIX)
        if s_dir and old_parent != new_parent and self._is_ancestor(src[0], new_parent):
            raise InvalidOperation("cannot move a directory into itself")
        dw = self._get(dst[0]) if dst is not None else None
        if dw is not None:
            d_dir = _stat.S_ISDIR(dw.mode)
            if s_dir and not d_dir:
                raise NotADirectory(new_name)
            if not s_dir and d_dir:
                raise IsADirectory(new_name)
            if d_dir and not self._dir(dw.ino).is_empty():
                raise NotEmpty(new_name)
        npw = self._get(new_parent)
        if (
            s_dir
            and old_parent != new_parent
            and dw is None
            and npw.links >= LINK_MAX
            and not self.feature_ro_compat & od.RO_COMPAT_DIR_NLINK
        ):
            raise TooManyLinks("target directory has too many links")
        if dw is None:
            self._need_blocks(6)
        # -- commit
        if dw is not None:
            nd.set_entry(nraw, sw.ino, self._ft(sw.mode))
        else:
            nd.insert(nraw, sw.ino, self._ft(sw.mode), lambda: self._dir_new_block(npw, nd))
        od_.remove(oraw)
        now = self._now()
        self._touch_dir(old_parent)
        self._touch_dir(new_parent)
        sw.set_times(ctime=now)
        self._mark(sw)
        if s_dir and old_parent != new_parent:
            self._dir(sw.ino).set_parent(new_parent)
            self._bump_dir_links(self._get(old_parent), -1)
            if dw is None:
                self._bump_dir_links(npw, +1)
        if dw is not None:
            if _stat.S_ISDIR(dw.mode):
                if old_parent == new_parent or not s_dir:
                    self._bump_dir_links(npw, -1)
                dw.links = 0
            else:
                dw.links = max(0, dw.links - 1)
            dw.set_times(ctime=now)
            self._mark(dw)
            self._unref(dw)
        self._dirty = True

    def _exchange(
        self, od_: WDir, oraw: bytes, nd: WDir, nraw: bytes, sw: WInode, dw: WInode
    ) -> None:
        if sw.ino == dw.ino:
            return
        s_dir, d_dir = _stat.S_ISDIR(sw.mode), _stat.S_ISDIR(dw.mode)
        if od_.ino != nd.ino:
            if s_dir and self._is_ancestor(sw.ino, nd.ino):
                raise InvalidOperation("cannot move a directory into itself")
            if d_dir and self._is_ancestor(dw.ino, od_.ino):
                raise InvalidOperation("cannot move a directory into itself")
        od_.set_entry(oraw, dw.ino, self._ft(dw.mode))
        nd.set_entry(nraw, sw.ino, self._ft(sw.mode))
        now = self._now()
        for w in (sw, dw):
            w.set_times(ctime=now)
            self._mark(w)
        self._touch_dir(od_.ino)
        self._touch_dir(nd.ino)
        if od_.ino != nd.ino:
            if s_dir:
                self._dir(sw.ino).set_parent(nd.ino)
            if d_dir:
                self._dir(dw.ino).set_parent(od_.ino)
            if s_dir != d_dir:
                op, np_ = self._get(od_.ino), self._get(nd.ino)
                if s_dir:
                    self._bump_dir_links(op, -1)
                    self._bump_dir_links(np_, +1)
                else:
                    self._bump_dir_links(np_, -1)
                    self._bump_dir_links(op, +1)
        self._dirty = True

    # ================================================================== data ==============
    def write(self, ino: int, offset: int, data: bytes | bytearray | memoryview) -> int:
        self._check_writable()
        self._maybe_flush()  # before taking any inode: flushing may forget clean ones
        w = self._live(ino)
        if _stat.S_ISDIR(w.mode):
            raise IsADirectory(f"inode {ino} is a directory")
        if not _stat.S_ISREG(w.mode):
            raise InvalidArgument(f"inode {ino} is not a regular file")
        if offset < 0:
            raise InvalidArgument("negative offset")
        mv = memoryview(data).cast("B")
        if not len(mv):
            return 0
        self._write_data(w, offset, mv)
        now = self._now()
        w.set_times(mtime=now, ctime=now)
        self._mark(w)
        return len(mv)

    def _max_blocks(self, w: WInode) -> int:
        return max_blocks(self.block_size) if w.blockmap else 1 << 32

    def _write_data(self, w: WInode, offset: int, mv: bytes | bytearray | memoryview) -> None:
        mv = memoryview(mv).cast("B")
        bs = self.block_size
        end = offset + len(mv)
        if w.flags & od.EXT4_INLINE_DATA_FL:
            self._inline_file_to_blocks(w)
        self._ensure_map(w)
        lo, hi = offset // bs, -(-end // bs)
        if hi > self._max_blocks(w):
            raise NoSpace("file too large for this filesystem")  # EFBIG in the kernel
        segs = w.segments(lo, hi)
        holes = [(s, n) for s, p, n, _u in segs if p < 0]
        need = sum(n for _s, n in holes)
        fresh: list[tuple[int, int]] = [(s, n) for s, p, n, u in segs if p >= 0 and u]
        if need:
            exts_now = len(w.exts or [])
            if w.blockmap:
                p = bs // 4
                slack = need // p + need // (p * p) + 2 * len(holes) + 3
            else:
                slack = index_blocks_needed(exts_now + 2 * len(holes) + 2, bs) + 1
            self._need_blocks(need + slack)
            goal = w.last_pblk() if w.last_pblk() else self._inode_goal(w.ino)
            if lo > 0:
                before = w.segments(lo - 1, lo)
                if before and before[0][1] >= 0:
                    goal = before[0][1] + 1
            runs = self.alloc.alloc_blocks(need, goal)
            ri = 0
            rs, rn = runs[0]
            for s, n in holes:
                while n:
                    take = min(n, rn)
                    w.set_range(s, rs, take)
                    fresh.append((s, take))
                    s += take
                    n -= take
                    rs += take
                    rn -= take
                    if rn == 0 and ri + 1 < len(runs):
                        ri += 1
                        rs, rn = runs[ri]
        for s, p, n, u in segs:
            if p >= 0 and u:
                w.set_range(s, p, n)  # converts the uninitialised extent to written
        dev = self.real_dev
        # zero the parts of new blocks the write does not cover
        if fresh:
            head_new = any(s <= lo < s + n for s, n in fresh)
            tail_new = any(s <= hi - 1 < s + n for s, n in fresh)
            if head_new and offset % bs:
                p = self._pblk(w, lo)
                dev.pwrite(bytes(offset % bs), p * bs)
            if tail_new and end % bs:
                p = self._pblk(w, hi - 1)
                dev.pwrite(bytes(bs - end % bs), p * bs + end % bs)
            for s, n in fresh:  # new blocks wholly outside [offset, end) do not exist
                del s, n
        pos = offset
        for s, p, n in ((a, b, c) for a, b, c, _d in w.segments(lo, hi)):
            seg_end = min(end, (s + n) * bs)
            if seg_end <= pos:
                continue
            dev.pwrite(mv[pos - offset : seg_end - offset], p * bs + (pos - s * bs))
            pos = seg_end
        self._bytes_written += len(mv)
        w.size = max(w.size, end)
        if end > 0x7FFFFFFF:
            self._large_file = True
        if need:
            self._add_iblocks(w, need)
        w.map_dirty = True
        self._mark(w)

    def _pblk(self, w: WInode, lblk: int) -> int:
        seg = w.segments(lblk, lblk + 1)[0]
        return seg[1]

    def _truncate(self, w: WInode, size: int) -> None:
        bs = self.block_size
        if w.flags & od.EXT4_INLINE_DATA_FL:
            self._inline_file_to_blocks(w)
        self._ensure_map(w)
        old = w.size
        if size < old:
            nb = -(-size // bs)
            for s, n in w.cut(nb):
                self.alloc.free_range(s, n)
                self._add_iblocks(w, -n)
            if size % bs:
                seg = w.segments(nb - 1, nb)[0]
                if seg[1] >= 0 and not seg[3]:
                    self.real_dev.pwrite(bytes(bs - size % bs), seg[1] * bs + size % bs)
        elif size > old and w.blockmap and -(-size // bs) > self._max_blocks(w):
            raise NoSpace("file too large for this filesystem")
        w.size = size
        if size > 0x7FFFFFFF:
            self._large_file = True
        w.map_dirty = True
        self._mark(w)

    def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> vfs.Stat:
        self._check_writable()
        w = self._live(ino)
        if size is not None:
            if _stat.S_ISDIR(w.mode):
                raise IsADirectory(f"inode {ino} is a directory")
            if not _stat.S_ISREG(w.mode):
                raise InvalidArgument("size can only be set on regular files")
            if size < 0:
                raise InvalidArgument("negative size")
            if size != w.size:
                self._truncate(w, size)
                now = self._now()
                w.set_times(mtime=now)
        if mode is not None:
            w.mode = _stat.S_IFMT(w.mode) | (mode & 0o7777)
        if uid is not None:
            w.uid = uid
        if gid is not None:
            w.gid = gid
        w.set_times(atime=atime_ns, mtime=mtime_ns, ctime=self._now())
        self._mark(w)
        return self.getattr(ino)

    # ================================================================== inline data =======
    def _inline_payload(self, w: WInode) -> bytes:
        attrs_in, _blk = self._load_xattrs(w)
        extra = b""
        for idx, name, value in attrs_in:
            if idx == od.EXT4_XATTR_INDEX_SYSTEM and name == b"data":
                extra = value
        return w.i_block + extra

    def _strip_inline(self, w: WInode) -> None:
        attrs = [
            a for a in self._all_xattrs(w)
            if not (a[0] == od.EXT4_XATTR_INDEX_SYSTEM and a[1] == b"data")
        ]  # fmt: skip
        w.flags = w.flags & ~od.EXT4_INLINE_DATA_FL
        if self.has_extents:
            w.flags = w.flags | od.EXT4_EXTENTS_FL
            w.i_block = _EXT_ROOT_EMPTY
            w.exts, w.nodes = [], []
        else:
            w.i_block = bytes(60)
            w.exts, w.meta = [], []
            w.blockmap = True
        self._store_xattrs(w, attrs)

    def _inline_file_to_blocks(self, w: WInode) -> None:
        data = self._inline_payload(w)[: w.size]
        size = w.size
        self._need_blocks(3)
        self._strip_inline(w)
        w.size = 0
        if data:
            self._write_data(w, 0, data)
        w.size = size
        self._mark(w)

    def _inline_dir_to_blocks(self, w: WInode) -> None:
        payload = self._inline_payload(w)
        parent = struct.unpack_from("<I", payload, 0)[0]
        ents: list[tuple[bytes, int, int]] = []
        for start, stop in ((4, 60), (60, len(payload))):
            if stop <= start:
                continue
            chunk = payload[start:stop]
            ents += [e for e in parse_leaf(chunk, False) if e[1]]
        self._need_blocks(4)
        self._strip_inline(w)
        w.size = 0
        d = WDir(
            w.ino, self.block_size, tail=self.has_csum, ftype=self.has_filetype,
            hash_version=self._hash_version, hash_seed=self.hash_seed,
            max_levels=od.EXT4_HTREE_LEVEL if self.has_largedir else od.EXT4_HTREE_LEVEL_COMPAT,
        )  # fmt: skip
        d.parent = parent
        d.leaves[0] = []
        d.free[0] = d.room
        self._dir_new_block(w, d)
        for n, i in ((b".", w.ino), (b"..", parent)):
            d.leaves[0].append((n, i, self._ft(_stat.S_IFDIR)))
            d.free[0] -= 12
        d.dirty.add(0)
        self._dirs[w.ino] = d
        for name, ino, ft in ents:
            d.insert(name, ino, ft, lambda: self._dir_new_block(w, d))
        self._mark(w)

    # ================================================================== xattrs ============
    def _load_xattrs(self, w: WInode) -> tuple[list[wx.XAttr], list[wx.XAttr]]:
        isz = self.inode_size
        inode_attrs: list[wx.XAttr] = []
        extra = w.extra_isize
        start = 128 + extra
        if (
            isz > 128
            and extra
            and start + 4 <= isz
            and struct.unpack_from("<I", w.raw, start)[0] == od.EXT4_XATTR_MAGIC
        ):
            inode_attrs = wx.parse_area(w.raw, start + 4, isz, start + 4)
        block_attrs: list[wx.XAttr] = []
        if w.file_acl:
            data = self.cache.get(w.file_acl)
            if self._verify:
                want = bytearray(data)
                self.csummer.set_xattr_block(want, w.file_acl)
                if want != data:
                    raise CorruptImage("ext4_xattr_header", w.file_acl * self.block_size + 16,
                                       f"inode {w.ino}: xattr block checksum")  # fmt: skip
            h = od.EXT4_XATTR_HEADER.unpack(data)
            if h.h_magic != od.EXT4_XATTR_MAGIC or h.h_blocks != 1:
                raise CorruptImage("ext4_xattr_header", w.file_acl * self.block_size, "bad")
            block_attrs = wx.parse_area(data, 32, self.block_size, 0)
        return inode_attrs, block_attrs

    def _all_xattrs(self, w: WInode) -> list[wx.XAttr]:
        a, b = self._load_xattrs(w)
        return a + b

    def _drop_xattr_block(self, w: WInode) -> None:
        blk = w.file_acl
        data = bytearray(self.cache.get(blk))
        h = od.EXT4_XATTR_HEADER.unpack(data)
        if h.h_refcount > 1:
            struct.pack_into("<I", data, 4, h.h_refcount - 1)
            self.csummer.set_xattr_block(data, blk)
            self.cache.put(blk, data)
        else:
            self.alloc.free_range(blk, 1)
        w.file_acl = 0

    def _store_xattrs(self, w: WInode, attrs: list[wx.XAttr]) -> None:
        """Place ``attrs`` (checked to fit first), rewriting the inode body and the block."""
        bs = self.block_size
        in_inode, in_block = wx.place(attrs, self.inode_size, w.extra_isize, bs)
        old_blk = w.file_acl
        new_needed = bool(in_block)
        if new_needed and (not old_blk or self._xattr_shared(old_blk)):
            self._need_blocks(1)
        if w.extra_isize:
            wx.pack_ibody(w.raw, w.extra_isize, in_inode)
        if old_blk:
            if new_needed and not self._xattr_shared(old_blk):
                data = wx.pack_block(bs, in_block)
                self.csummer.set_xattr_block(data, old_blk)
                self.cache.put(old_blk, data)
                new_needed = False
            else:
                self._drop_xattr_block(w)
        if new_needed:
            goal = self._inode_goal(w.ino)
            (blk, _n), *_ = self.alloc.alloc_blocks(1, goal)
            data = wx.pack_block(bs, in_block)
            self.csummer.set_xattr_block(data, blk)
            self.cache.put(blk, data)
            w.file_acl = blk
        self._mark(w)
        if self._has_blocks(w):
            self._ensure_map(w)
            w.map_dirty = True
        else:
            self._set_iblocks(w, 0)

    def _xattr_shared(self, blk: int) -> bool:
        return int(struct.unpack_from("<I", self.cache.get(blk), 4)[0]) > 1

    def setxattr(self, ino: int, name: str, value: bytes, flags: int = 0) -> None:
        self._check_writable()
        w = self._live(ino)
        idx, key = wx.split_name(name)
        value = bytes(value)
        if len(value) > 65536:
            raise NoSpace("attribute value too large")
        if idx in (od.EXT4_XATTR_INDEX_POSIX_ACL_ACCESS, od.EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT):
            value = wx.acl_from_xattr(value)
        if self._has_blocks(w) or w.flags & od.EXT4_INLINE_DATA_FL:
            self._ensure_map(w)
        attrs = self._all_xattrs(w)
        found = [k for k, a in enumerate(attrs) if a[0] == idx and a[1] == key]
        if found and flags & vfs.XATTR_CREATE:
            raise Exists(f"attribute {name} exists")
        if not found and flags & vfs.XATTR_REPLACE:
            raise error_for_errno(61, f"no such attribute: {name}")
        if found:
            attrs[found[0]] = (idx, key, value)
        else:
            attrs.append((idx, key, value))
        wx.place(attrs, self.inode_size, w.extra_isize, self.block_size)  # fit check
        self._store_xattrs(w, attrs)
        w.set_times(ctime=self._now())
        self._mark(w)

    def removexattr(self, ino: int, name: str) -> None:
        self._check_writable()
        w = self._live(ino)
        idx, key = wx.split_name(name)
        if self._has_blocks(w):
            self._ensure_map(w)
        attrs = self._all_xattrs(w)
        keep = [a for a in attrs if not (a[0] == idx and a[1] == key)]
        if len(keep) == len(attrs):
            raise error_for_errno(61, f"no such attribute: {name}")
        self._store_xattrs(w, keep)
        w.set_times(ctime=self._now())
        self._mark(w)

    # ================================================================== lifetime ==========
    def pin(self, ino: int) -> None:
        self._pins[ino] = self._pins.get(ino, 0) + 1

    def unpin(self, ino: int) -> None:
        n = self._pins.get(ino, 0) - 1
        if n > 0:
            self._pins[ino] = n
            return
        self._pins.pop(ino, None)
        if self._closed:
            return
        w = self._inodes.get(ino)
        if w is not None and w.mode and w.links == 0:
            self._release(w)

    def sync(self) -> None:
        if self._closed:
            return
        self._publish()
        self.cache.flush()

    def close(self) -> None:
        if self._closed:
            return
        for ino in list(self._pins):
            self._pins.pop(ino, None)
            w = self._inodes.get(ino)
            if w is not None and w.mode and w.links == 0:
                self._release(w)
        self._closing = True
        if self._mounted and not self.feature_compat & od.COMPAT_HAS_JOURNAL:
            self._dirty = True  # rewrite the superblock as cleanly unmounted
        self.sync()
        self._closed = True
        super().close()
