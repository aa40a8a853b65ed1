"""A directory being changed: its leaf blocks decoded in memory, plus the htree index.

Why hold a directory decoded: inserts and removals then cost a dict lookup and one list edit;
blocks are packed (with their ``ext4_dir_entry_tail`` checksum) only when the writer flushes.

htree handling mirrors ``fs/ext4/namei.c``: a name goes to the leaf whose index hash range
holds its hash; a full leaf is split at the median hash (the new index entry gets the
collision bit when both halves share the split hash); the index itself (dx_root and, when
the root overflows, one level of dx_node blocks — two with ``large_dir``) is rebuilt from the
sorted leaf list at flush, which is how the tree grows a level. A linear directory that
outgrows its first block becomes indexed, as the kernel's ``make_indexed_dir`` does.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable

from burrow.errors import CorruptImage, Exists, NoSpace, NotFound
from burrow.fs.ext4 import ondisk as od
from burrow.fs.ext4.dirhash import dirhash
from burrow.fs.ext4.write_dir import DirEnt, entry_size, pack_leaf, parse_leaf, used_bytes

__all__ = ["WDir"]

_DE = struct.Struct("<IHBB")


class WDir:
    """Decoded directory. ``leaves`` maps logical block -> entries (block 0 of a linear
    directory holds ``.`` and ``..`` as ordinary entries; an indexed directory's block 0 is the
    dx_root and is not a leaf)."""

    def __init__(
        self,
        ino: int,
        bs: int,
        *,
        tail: bool,
        ftype: bool,
        hash_version: int,
        hash_seed: tuple[int, ...],
        max_levels: int,
    ) -> None:
        self.ino = ino
        self.bs = bs
        self.tail = tail
        self.ftype = ftype
        self.hash_version = hash_version  # effective (signedness applied)
        self.root_hash_version = hash_version  # as stored in dx_root_info
        self.hash_seed = hash_seed
        self.max_levels = max_levels
        self.parent = 0
        self.nblocks = 0
        self.leaves: dict[int, list[DirEnt]] = {}
        self.names: dict[bytes, tuple[int, int, int]] = {}  # name -> (ino, ftype, leaf)
        self.free: dict[int, int] = {}
        self.indexed = False
        self.dx: list[tuple[int, int]] = []  # (stored hash, leaf lblk), sorted
        self.dx_nodes: list[int] = []  # logical blocks used by dx_node blocks
        self.dirty: set[int] = set()
        self.index_dirty = False
        self._hcache: dict[bytes, int] = {}
        self._keys: list[int] | None = None  # hashes of self.dx, rebuilt when dx changes

    @property
    def room(self) -> int:
        return self.bs - (12 if self.tail else 0)

    def _hash(self, name: bytes) -> int:
        h = self._hcache.get(name)
        if h is None:
            h = dirhash(name, self.hash_version, self.hash_seed)[0] & ~1
            if len(self._hcache) > 200_000:
                self._hcache.clear()
            self._hcache[name] = h
        return h

    # -- loading ---------------------------------------------------------------------------
    def load_linear(self, blocks: dict[int, bytes]) -> None:
        for lblk in sorted(blocks):
            ents = parse_leaf(blocks[lblk], self._has_tail(blocks[lblk]))
            self._add_leaf(lblk, ents)
        first = self.leaves.get(0, [])
        for n, i, _f in first[:2]:
            if n == b"..":
                self.parent = i
        if not any(n == b".." for n, _i, _f in first[:2]):
            raise CorruptImage("ext4_dir_entry_2", None, f"dir {self.ino}: no '..' entry")

    def _has_tail(self, data: bytes) -> bool:
        if not self.tail:
            return False
        t = self.bs - 12
        z, rl, nl, ft = _DE.unpack_from(data, t)
        return bool(z == 0 and rl == 12 and nl == 0 and ft == od.EXT4_FT_DIR_CSUM)

    def _add_leaf(self, lblk: int, ents: list[DirEnt]) -> None:
        self.leaves[lblk] = ents
        self.free[lblk] = self.room - used_bytes(ents)
        for n, i, f in ents:
            if n not in (b".", b".."):
                self.names[n] = (i, f, lblk)

    def load_indexed(self, read: Callable[[int], bytes], nblocks: int) -> None:
        """Parse the dx_root at block 0 and every dx_node, then the leaves they name."""
        bs = self.bs
        root = read(0)
        nl = root[6]
        pino, _prl, pnl, _pft = _DE.unpack_from(root, 12)
        if nl != 1 or pnl != 2 or root[8:9] != b"." or root[20:22] != b"..":
            raise CorruptImage("dx_root", None, f"dir {self.ino}: bad '.'/'..' in root")
        self.parent = pino
        info = od.DX_ROOT_INFO.unpack(root, od.DX_ROOT_INFO_OFFSET)
        if info.info_length != 8 or info.indirect_levels >= self.max_levels:
            raise CorruptImage("dx_root_info", None, f"dir {self.ino}: bad root info")
        self.root_hash_version = info.hash_version
        self.indexed = True
        seen: set[int] = {0}
        leaves: list[tuple[int, int]] = []

        def entries(data: bytes, off: int) -> list[tuple[int, int]]:
            limit, count = struct.unpack_from("<HH", data, off)
            if count == 0 or count > limit or off + 8 * count > bs:
                raise CorruptImage("dx_countlimit", None, f"dir {self.ino}: bad count")
            out = [(0, struct.unpack_from("<I", data, off + 4)[0])]
            for i in range(1, count):
                h, b = struct.unpack_from("<II", data, off + 8 * i)
                out.append((h, b))
            return out

        def walk(ents: list[tuple[int, int]], level: int, lo_hash: int) -> None:
            for k, (h, b) in enumerate(ents):
                if b in seen or b >= nblocks:
                    raise CorruptImage("dx_entry", None, f"dir {self.ino}: bad block {b}")
                seen.add(b)
                hh = lo_hash if k == 0 else h
                if level == 0:
                    leaves.append((hh, b))
                else:
                    self.dx_nodes.append(b)
                    walk(entries(read(b), 8), level - 1, hh)

        walk(entries(root, 32), info.indirect_levels, 0)
        self.dx = leaves
        self._keys = None
        for _h, b in leaves:
            data = read(b)
            self._add_leaf(b, parse_leaf(data, self._has_tail(data)))

    # -- queries ---------------------------------------------------------------------------
    def get(self, name: bytes) -> tuple[int, int] | None:
        hit = self.names.get(name)
        return None if hit is None else (hit[0], hit[1])

    def is_empty(self) -> bool:
        return not self.names

    # -- changes ---------------------------------------------------------------------------
    def set_entry(self, name: bytes, ino: int, ft: int) -> None:
        """Point an existing entry at another inode (rename over an existing name)."""
        old = self.names.get(name)
        if old is None:
            raise NotFound(name.decode("utf-8", "surrogateescape"))
        lblk = old[2]
        ents = self.leaves[lblk]
        for k, (n, _i, _f) in enumerate(ents):
            if n == name:
                ents[k] = (n, ino, ft)
                break
        self.names[name] = (ino, ft, lblk)
        self.dirty.add(lblk)

    def set_parent(self, parent: int) -> None:
        self.parent = parent
        if self.indexed:
            self.index_dirty = True
            self.dirty.add(0)
        else:
            ents = self.leaves[0]
            for k, (n, _i, f) in enumerate(ents):
                if n == b"..":
                    ents[k] = (n, parent, f)
            self.dirty.add(0)

    def remove(self, name: bytes) -> tuple[int, int]:
        hit = self.names.pop(name, None)
        if hit is None:
            raise NotFound(name.decode("utf-8", "surrogateescape"))
        ino, ft, lblk = hit
        ents = self.leaves[lblk]
        for k, (n, _i, _f) in enumerate(ents):
            if n == name:
                del ents[k]
                break
        self.free[lblk] += entry_size(len(name))
        self.dirty.add(lblk)
        return ino, ft

    def blocks_needed_for_insert(self) -> int:
        """Worst-case new directory blocks one insert may need (for ENOSPC checks)."""
        return 4

    def insert(self, name: bytes, ino: int, ft: int, new_block: Callable[[], int]) -> None:
        """Add an entry. ``new_block()`` appends a block to the directory and returns its
        logical number (it may be called up to twice)."""
        if name in self.names:
            raise Exists(name.decode("utf-8", "surrogateescape"))
        need = entry_size(len(name))
        ent: DirEnt = (name, ino, ft)
        if self.indexed:
            self._insert_indexed(ent, need, new_block)
            return
        for lblk in sorted(self.leaves):
            if self.free[lblk] >= need:
                self._put(lblk, ent, need)
                return
        if self.hash_version >= 0 and len(self.leaves) == 1 and 0 in self.leaves:
            self._make_indexed(ent, new_block)
            return
        lblk = new_block()
        self.leaves[lblk] = []
        self.free[lblk] = self.room
        self._put(lblk, ent, need)

    def _put(self, lblk: int, ent: DirEnt, need: int) -> None:
        self.leaves[lblk].append(ent)
        self.free[lblk] -= need
        self.names[ent[0]] = (ent[1], ent[2], lblk)
        self.dirty.add(lblk)

    def _make_indexed(self, ent: DirEnt, new_block: Callable[[], int]) -> None:
        ents = [e for e in self.leaves.pop(0) if e[0] not in (b".", b"..")]
        del self.free[0]
        ents.append(ent)
        ents.sort(key=lambda e: self._hash(e[0]))
        half = _split_point(ents, self._hash)
        lo, hi = ents[:half], ents[half:]
        a = new_block()
        b = new_block()
        self.indexed = True
        self.root_hash_version = self._stored_version()
        split = self._hash(hi[0][0]) if hi else 0
        if lo and hi and self._hash(lo[-1][0]) == split:
            split |= 1
        self.dx = [(0, a), (split, b)]
        self._keys = None
        for k in (a, b):
            self.leaves[k] = []
            self.free[k] = self.room
        for e in lo:
            self._put(a, e, entry_size(len(e[0])))
        for e in hi:
            self._put(b, e, entry_size(len(e[0])))
        self.dirty.add(0)
        self.index_dirty = True

    def _stored_version(self) -> int:
        v = self.hash_version
        return v - 3 if v in (3, 4, 5) else v

    def _insert_indexed(self, ent: DirEnt, need: int, new_block: Callable[[], int]) -> None:
        h = self._hash(ent[0])
        if self._keys is None or len(self._keys) != len(self.dx):
            self._keys = [d[0] for d in self.dx]
        keys = self._keys
        i = max(0, bisect.bisect_right(keys, h) - 1)
        lblk = self.dx[i][1]
        if self.free[lblk] >= need:
            self._put(lblk, ent, need)
            return
        if len(self.dx) + 1 > self._capacity():
            raise NoSpace(f"directory {self.ino} index is full")
        ents = sorted([*self.leaves[lblk], ent], key=lambda e: self._hash(e[0]))
        half = _split_point(ents, self._hash)
        lo, hi = ents[:half], ents[half:]
        split = self._hash(hi[0][0])
        if lo and self._hash(lo[-1][0]) == split:
            split |= 1
        new = new_block()
        for name, _i, _f in self.leaves[lblk]:
            self.names.pop(name, None)
        self.leaves[lblk] = []
        self.free[lblk] = self.room
        self.leaves[new] = []
        self.free[new] = self.room
        for e in lo:
            self._put(lblk, e, entry_size(len(e[0])))
        for e in hi:
            self._put(new, e, entry_size(len(e[0])))
        if self.free[lblk] < 0 or self.free[new] < 0:
            raise CorruptImage("ext4_dir_entry_2", None, f"dir {self.ino}: split overflow")
        self.dx.insert(i + 1, (split, new))
        keys.insert(i + 1, split)
        self.index_dirty = True

    def limits(self) -> tuple[int, int]:
        t = 8 if self.tail else 0
        return (self.bs - 32 - t) // 8, (self.bs - 8 - t) // 8

    def _capacity(self) -> int:
        root, node = self.limits()
        cap = root
        for _ in range(self.max_levels - 1):
            cap *= node
        return cap

    # -- packing ---------------------------------------------------------------------------
    def pack_root(self, entries: list[tuple[int, int]], levels: int) -> bytearray:
        bs = self.bs
        data = bytearray(bs)
        _DE.pack_into(data, 0, self.ino, 12, 1, 2 if self.ftype else 0)
        data[8:9] = b"."
        _DE.pack_into(data, 12, self.parent, od.rec_len_to_disk(bs - 12, bs), 2,
                      2 if self.ftype else 0)  # fmt: skip
        data[20:22] = b".."
        od.DX_ROOT_INFO.pack_into(
            data, 24,
            {"hash_version": self.root_hash_version, "info_length": 8,
             "indirect_levels": levels},
        )  # fmt: skip
        self._pack_entries(data, 32, entries, self.limits()[0])
        return data

    def pack_node(self, entries: list[tuple[int, int]]) -> bytearray:
        bs = self.bs
        data = bytearray(bs)
        _DE.pack_into(data, 0, 0, od.rec_len_to_disk(bs, bs), 0, 0)
        self._pack_entries(data, 8, entries, self.limits()[1])
        return data

    @staticmethod
    def _pack_entries(
        data: bytearray, off: int, entries: list[tuple[int, int]], limit: int
    ) -> None:
        struct.pack_into("<HHI", data, off, limit, len(entries), entries[0][1])
        for k in range(1, len(entries)):
            struct.pack_into("<II", data, off + 8 * k, entries[k][0], entries[k][1])

    def pack_leaf_block(self, lblk: int) -> bytearray:
        data = pack_leaf(self.leaves[lblk], self.bs, self.tail, self.ftype)
        if data is None:
            raise CorruptImage("ext4_dir_entry_2", None, f"dir {self.ino}: leaf overflow")
        return data


def _split_point(ents: list[DirEnt], h: Callable[[bytes], int]) -> int:
    """Index splitting ``ents`` (sorted by hash) into halves of about equal bytes, moved off
    runs of equal hashes when possible."""
    total = used_bytes(ents)
    acc = 0
    k = 0
    for e in ents:
        acc += entry_size(len(e[0]))
        if acc * 2 >= total:
            break
        k += 1
    k = max(1, k + 1) if len(ents) > 1 else 1
    k = min(k, len(ents) - 1) if len(ents) > 1 else k
    # prefer a split where the hashes differ
    j = k
    while 0 < j < len(ents) and h(ents[j - 1][0]) == h(ents[j][0]):
        j += 1
    if 0 < j < len(ents):
        return j
    j = k
    while j > 0 and h(ents[j - 1][0]) == h(ents[j][0]):
        j -= 1
    return j if j > 0 else k
