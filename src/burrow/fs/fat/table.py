"""The file allocation table: reading entries, walking chains, allocating, writing all copies.

Why this shape:

* Entries live in memory as ``array`` objects (``'H'`` for FAT12/16, ``'I'`` for FAT32) so
  that searching for free clusters (``array.index(0, lo, hi)``) and counting them
  (``array.count(0)``) run in C, never a Python loop per entry.
* FAT12 and FAT16 tables are small (at most 128 KiB) and are loaded whole at open. A FAT32
  table of a large disk can be hundreds of MiB, so it is loaded lazily in chunks of
  ``CHUNK_ENTRIES`` entries, only where it is touched.
* Changes are remembered as dirty entry ranges and written at ``flush`` to *every* FAT copy,
  so the copies never drift apart (unless FAT32 ``BPB_ExtFlags`` disables mirroring, then
  only the active copy is written, as the spec says).
* Chain walks are bounded (by the caller's limit and by the cluster count) and validate every
  link, so a looping or out-of-range chain becomes ``CorruptImage``, never a hang.
"""

from __future__ import annotations

import bisect
import sys
from array import array

from burrow.block.device import BlockDevice
from burrow.errors import CorruptImage, NoSpace
from burrow.fs.fat.ondisk import Geometry

__all__ = ["FatTable"]

CHUNK_ENTRIES = 16384
FAT32_MASK = 0x0FFFFFFF
_EOC = {12: 0xFF8, 16: 0xFFF8, 32: 0x0FFFFFF8}
_BAD = {12: 0xFF7, 16: 0xFFF7, 32: 0x0FFFFFF7}
_EOC_WRITE = {12: 0xFFF, 16: 0xFFFF, 32: 0x0FFFFFFF}
CLEAN_BIT = {16: 0x8000, 32: 0x08000000}  # entry 1: set = volume was cleanly unmounted


def _decode12(raw: bytes, count: int) -> array[int]:
    out = array("H", bytes(2 * count))
    for i in range(count):
        off = i + (i >> 1)
        v = raw[off] | (raw[off + 1] << 8)
        out[i] = (v >> 4) if i & 1 else (v & 0xFFF)
    return out


def _encode12(entries: array[int], into: bytearray) -> None:
    for i in range(len(entries)):
        off = i + (i >> 1)
        v = entries[i] & 0xFFF
        if i & 1:
            into[off] = (into[off] & 0x0F) | ((v & 0x0F) << 4)
            into[off + 1] = v >> 4
        else:
            into[off] = v & 0xFF
            into[off + 1] = (into[off + 1] & 0xF0) | (v >> 8)


class FatTable:
    """In-memory view of the FAT with write-back to every copy."""

    def __init__(self, dev: BlockDevice, geo: Geometry) -> None:
        self.dev = dev
        self.geo = geo
        self.bits = geo.fat_bits
        self.entries = geo.cluster_count + 2
        self.eoc = _EOC[self.bits]
        self.bad = _BAD[self.bits]
        self.eoc_write = _EOC_WRITE[self.bits]
        self._source = geo.active_fat or 0  # the copy we read from
        self._chunks: list[array[int] | None]
        self._dirty: dict[int, tuple[int, int]] = {}  # chunk -> (lo, hi) entry range
        self._raw12: bytearray | None = None
        self._free: int | None = None
        self.next_free = 2
        base = geo.fat_offset + self._source * geo.fat_size
        if self.bits == 12:
            nbytes = (self.entries * 3 + 1) // 2
            raw = bytearray(dev.pread(nbytes, base))
            self._raw12 = raw
            self._chunks = [_decode12(bytes(raw) + b"\0", self.entries)]
            self._chunk_n = self.entries
        elif self.bits == 16:
            self._chunks = [self._read_array(base, 0, self.entries)]
            self._chunk_n = self.entries
        else:
            self._chunk_n = CHUNK_ENTRIES
            self._chunks = [None] * ((self.entries + CHUNK_ENTRIES - 1) // CHUNK_ENTRIES)

    # -- loading --------------------------------------------------------------------------
    def _read_array(self, base: int, first: int, count: int) -> array[int]:
        width = 2 if self.bits == 16 else 4
        arr = array("H" if width == 2 else "I")
        arr.frombytes(self.dev.pread(count * width, base + first * width))
        if sys.byteorder == "big":  # pragma: no cover - little-endian hosts only in CI
            arr.byteswap()
        return arr

    def _chunk(self, idx: int) -> array[int]:
        arr = self._chunks[idx]
        if arr is None:
            first = idx * CHUNK_ENTRIES
            count = min(CHUNK_ENTRIES, self.entries - first)
            base = self.geo.fat_offset + self._source * self.geo.fat_size
            arr = self._read_array(base, first, count)
            self._chunks[idx] = arr
        return arr

    # -- entries --------------------------------------------------------------------------
    def get(self, cluster: int) -> int:
        idx, pos = divmod(cluster, self._chunk_n)
        v = self._chunk(idx)[pos]
        return v & FAT32_MASK if self.bits == 32 else v

    def set(self, cluster: int, value: int) -> None:
        idx, pos = divmod(cluster, self._chunk_n)
        arr = self._chunk(idx)
        if self.bits == 32:
            value = (arr[pos] & ~FAT32_MASK & 0xFFFFFFFF) | (value & FAT32_MASK)
        old = arr[pos]
        arr[pos] = value
        if self._free is not None and cluster >= 2:
            old_free = (old & FAT32_MASK if self.bits == 32 else old) == 0
            new_free = (value & FAT32_MASK if self.bits == 32 else value) == 0
            self._free += int(new_free) - int(old_free)
        lo, hi = self._dirty.get(idx, (pos, pos + 1))
        self._dirty[idx] = (min(lo, pos), max(hi, pos + 1))

    def is_eoc(self, value: int) -> bool:
        return value >= self.eoc

    # -- the clean-shutdown bit (entry 1) -----------------------------------------------------
    def clean_bit(self) -> bool | None:
        """True/False for FAT16/32 (None on FAT12, which has no such bit)."""
        if self.bits == 12:
            return None
        return bool(self._chunk(0)[1] & CLEAN_BIT[self.bits])

    def set_clean_bit(self, clean: bool) -> None:
        if self.bits == 12:
            return
        arr = self._chunk(0)
        bit = CLEAN_BIT[self.bits]
        value = (arr[1] | bit) if clean else (arr[1] & ~bit)
        if value != arr[1]:
            arr[1] = value
            lo, hi = self._dirty.get(0, (1, 2))
            self._dirty[0] = (min(lo, 1), max(hi, 2))

    # -- chains ---------------------------------------------------------------------------
    def valid(self, cluster: int) -> bool:
        return 2 <= cluster < self.entries

    def chain(
        self, start: int, limit: int, *, what: str = "cluster chain", must_end: bool = False
    ) -> list[int]:
        """Clusters of the chain starting at ``start``, at most ``limit`` of them.

        Stops early at end-of-chain. A link to a free, bad, reserved or out-of-range cluster,
        or a cluster reached twice (a loop), raises ``CorruptImage``; so does reaching
        ``limit`` without an end-of-chain mark when ``must_end`` (directories).

        Contiguous stretches (cluster c links to c+1) are recognised with array slice
        comparisons, so a file written in one piece costs a few C calls, not one Python
        step per cluster. Loops are found by checking each stretch against the ones seen.
        """
        out: list[int] = []
        if start == 0:
            return out
        if not self.valid(start):
            raise CorruptImage(what, None, f"first cluster {start} is outside the data area")
        starts: list[int] = []  # sorted run starts
        ends: dict[int, int] = {}  # run start -> end (exclusive)
        cur = start
        while True:
            k = 1 + self._consecutive(cur, limit - len(out) - 1)
            pos = bisect.bisect_right(starts, cur)
            overlap = (pos > 0 and ends[starts[pos - 1]] > cur) or (
                pos < len(starts) and starts[pos] < cur + k
            )
            if overlap:
                raise CorruptImage(what, None, f"chain from cluster {start} loops near {cur}")
            starts.insert(pos, cur)
            ends[cur] = cur + k
            out.extend(range(cur, cur + k))
            last = cur + k - 1
            nxt = self.get(last)
            if nxt >= self.eoc:
                return out
            if len(out) >= limit:
                if must_end:
                    raise CorruptImage(what, None, f"chain from {start} exceeds {limit} clusters")
                return out
            if not 2 <= nxt < self.entries or nxt == self.bad:
                raise CorruptImage(
                    what,
                    self._entry_offset(last),
                    f"cluster {last} links to invalid cluster {nxt:#x}",
                )
            cur = nxt

    def _consecutive(self, cur: int, most: int) -> int:
        """How many of the entries ``cur, cur+1, ...`` (at most ``most``) link to their
        successor, staying inside ``cur``'s chunk."""
        if most <= 0:
            return 0
        idx, within = divmod(cur, self._chunk_n)
        arr = self._chunk(idx)
        room = min(most, len(arr) - within - 1, self.entries - cur - 2)
        done, step = 0, 8
        tc = arr.typecode
        while step >= 1:
            if done + step <= room and arr[within + done : within + done + step] == array(
                tc, range(cur + done + 1, cur + done + step + 1)
            ):
                done += step
                step *= 2
            else:
                step //= 2
        return done

    def _entry_offset(self, cluster: int) -> int:
        return self.geo.fat_offset + self._source * self.geo.fat_size + cluster * self.bits // 8

    @staticmethod
    def runs(clusters: list[int]) -> list[tuple[int, int]]:
        """Contiguous runs ``(first_cluster, count)`` of a chain, for one I/O per run."""
        out: list[tuple[int, int]] = []
        for c in clusters:
            if out and out[-1][0] + out[-1][1] == c:
                out[-1] = (out[-1][0], out[-1][1] + 1)
            else:
                out.append((c, 1))
        return out

    # -- allocation -----------------------------------------------------------------------
    def count_free(self) -> int:
        if self._free is None:
            free = 0
            for idx in range(len(self._chunks)):
                arr = self._chunk(idx)
                # FAT32 entries with stray high bits and a zero low part are counted as used;
                # Windows and the kernel write 0 for free clusters.
                free += arr.count(0)
                if idx == 0:
                    free -= sum(1 for v in arr[:2] if v == 0)
            self._free = free
        return self._free

    def _find_free(self, start: int) -> int | None:
        """First free cluster at or after ``start`` (wrapping around once)."""
        if not self.valid(start):
            start = 2
        for lo, hi in ((start, self.entries), (2, start)):
            pos = lo
            while pos < hi:
                idx, within = divmod(pos, self._chunk_n)
                arr = self._chunk(idx)
                stop = min(len(arr), within + (hi - pos))
                try:
                    found = arr.index(0, within, stop)
                except ValueError:
                    pos += stop - within
                    continue
                return idx * self._chunk_n + found
        return None

    def _free_prefix(self, cluster: int, limit: int) -> int:
        """How many free clusters follow from ``cluster`` (itself free), up to ``limit``,
        without leaving its chunk. Runs in C (``bytes.lstrip``)."""
        idx, within = divmod(cluster, self._chunk_n)
        arr = self._chunk(idx)
        stop = min(len(arr), within + limit)
        if cluster + (stop - within) > self.entries:
            stop = within + self.entries - cluster
        raw = arr[within:stop].tobytes()
        zero_bytes = len(raw) - len(raw.lstrip(b"\0"))
        return max(1, zero_bytes // arr.itemsize)

    def _fill(self, first: int, count: int, start: int) -> None:
        """Set ``count`` entries from ``first`` to ``start, start+1, ...`` (``start`` 0: all
        zero, i.e. free), a chunk at a time with array slices."""
        pos, done = first, 0
        while done < count:
            idx, within = divmod(pos, self._chunk_n)
            arr = self._chunk(idx)
            m = min(count - done, len(arr) - within)
            if start:
                part = array(arr.typecode, range(start + done, start + done + m))
            else:
                part = array(arr.typecode, bytes(m * arr.itemsize))
            old = arr[within : within + m]
            if self._free is not None:
                self._free += part.count(0) - old.count(0)
            if self.bits == 32 and old and max(old) > FAT32_MASK:  # max() loops in C
                for j, v in enumerate(old):  # keep the reserved high 4 bits (rare)
                    part[j] |= v & ~FAT32_MASK & 0xFFFFFFFF
            arr[within : within + m] = part
            lo, hi = self._dirty.get(idx, (within, within + m))
            self._dirty[idx] = (min(lo, within), max(hi, within + m))
            pos += m
            done += m

    def allocate(self, n: int, after: int = 0) -> list[int]:
        """Allocate ``n`` clusters as a chain (linked, terminated), preferring contiguity
        right after cluster ``after``. Raises ``NoSpace`` (allocating nothing) if short.

        Free runs are found and linked a run at a time (array slices), not cluster by cluster.
        """
        if n <= 0:
            return []
        if self.count_free() < n:
            raise NoSpace("no free clusters left on the FAT volume")
        runs: list[tuple[int, int]] = []
        hint = after + 1 if after else self.next_free
        remaining = n
        while remaining:
            c = self._find_free(hint)
            if c is None:  # pragma: no cover - count_free said there was room
                raise NoSpace("no free clusters left on the FAT volume")
            k = min(self._free_prefix(c, remaining), remaining)
            runs.append((c, k))
            remaining -= k
            hint = c + k
            if not self.valid(hint):
                hint = 2
        for i, (first, k) in enumerate(runs):
            nxt = runs[i + 1][0] if i + 1 < len(runs) else self.eoc_write
            # entries first..first+k-2 link to their successor; the last to the next run
            self._fill(first, k - 1, first + 1)
            self._fill(first + k - 1, 1, nxt)
        self.next_free = hint if self.valid(hint) else 2
        out: list[int] = []
        for first, k in runs:
            out.extend(range(first, first + k))
        return out

    def free_chain_list(self, clusters: list[int]) -> None:
        """Mark ``clusters`` free, a contiguous run at a time."""
        for first, k in self.runs(clusters):
            self._fill(first, k, 0)
        if clusters:
            self.next_free = min(self.next_free, *clusters)

    # -- writing back ---------------------------------------------------------------------
    def flush(self) -> None:
        if not self._dirty:
            return
        geo = self.geo
        copies = [geo.active_fat] if geo.active_fat is not None else range(geo.num_fats)
        if self.bits == 12:
            assert self._raw12 is not None
            _encode12(self._chunks[0] or array("H"), self._raw12)
            for copy in copies:
                self.dev.pwrite(self._raw12, geo.fat_offset + copy * geo.fat_size)
            self._dirty.clear()
            return
        width = self.bits // 8
        for idx, (lo, hi) in sorted(self._dirty.items()):
            arr = self._chunks[idx]
            assert arr is not None
            part = arr[lo:hi]
            if sys.byteorder == "big":  # pragma: no cover
                part.byteswap()
            data = part.tobytes()
            first = idx * self._chunk_n + lo
            for copy in copies:
                self.dev.pwrite(data, geo.fat_offset + copy * geo.fat_size + first * width)
        self._dirty.clear()
