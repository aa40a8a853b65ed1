"""FAT directories: parsing 32-byte slots into entries (with VFAT long names) and writing them.

A :class:`Directory` holds the whole directory in memory (FAT directories are at most 65536
slots, 2 MiB) together with the device location of every slot, so that a change rewrites
only the slots it touched. Parsing follows the kernel: a long-name run is used only when its
sequence numbers and checksum match the short entry that follows; otherwise the short name
is shown. Parsing stops at the first slot whose first byte is 0 (end of directory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from burrow.block.device import BlockDevice
from burrow.errors import CorruptImage, NoSpace
from burrow.fs.fat import names
from burrow.fs.fat.ondisk import (
    ATTR_DIRECTORY,
    ATTR_LONG_NAME,
    ATTR_LONG_NAME_MASK,
    ATTR_VOLUME_ID,
    DELETED,
    DIRENT,
    DIRENT_SIZE,
    LAST_LONG_ENTRY,
    DirEntryRaw,
    Geometry,
)

__all__ = ["MAX_DIR_BYTES", "Directory", "Entry"]

MAX_DIR_BYTES = 65536 * DIRENT_SIZE
_DOT = b".          "
_DOTDOT = b"..         "
_FREE_TABLE = bytes(70 if i == DELETED else 85 for i in range(256))  # F(ree) / U(sed)


@dataclass(eq=False)
class Entry:
    """One file or directory as its short entry describes it, plus its long name."""

    name: str
    short: bytes
    attr: int
    ntres: int
    first_slot: int  # first slot of the long-name run (== slot when there is none)
    slot: int  # the short entry
    cluster: int
    size: int
    crt_tenth: int = 0
    crt_time: int = 0
    crt_date: int = 0
    acc_date: int = 0
    wrt_time: int = 0
    wrt_date: int = 0

    @property
    def is_dir(self) -> bool:
        return bool(self.attr & ATTR_DIRECTORY)

    def pack(self) -> bytes:
        return DIRENT.pack(
            self.short, self.attr, self.ntres, self.crt_tenth, self.crt_time, self.crt_date,
            self.acc_date, self.cluster >> 16, self.wrt_time, self.wrt_date,
            self.cluster & 0xFFFF, self.size,
        )  # fmt: skip


class Directory:
    """A directory loaded in memory. ``clusters`` is None for the FAT12/16 fixed root."""

    def __init__(
        self,
        dev: BlockDevice,
        geo: Geometry,
        clusters: list[int] | None,
        *,
        is_root: bool,
        fat32: bool,
    ) -> None:
        self.dev = dev
        self.geo = geo
        self.clusters = clusters
        self.is_root = is_root
        self.fat32 = fat32
        if clusters is None:
            self.data = bytearray(dev.pread(geo.root_size, geo.root_offset))
        else:
            self.data = bytearray(len(clusters) * geo.cluster_size)
            mv = memoryview(self.data)
            pos = 0
            for first, count in _runs(clusters):
                n = count * geo.cluster_size
                dev.preadinto(mv[pos : pos + n], geo.cluster_offset(first))
                pos += n
        self.entries: list[Entry] = []
        self.by_slot: dict[int, Entry] = {}
        self.index: dict[str, Entry] = {}
        self.shorts: set[bytes] = set()
        self.tail_hints: dict[str, int] = {}  # short-name basis -> next ~N to try
        self.label_slot: int | None = None
        self.label: bytes | None = None
        self.dotdot_slot: int | None = None
        self.end_slot = len(self.data) // DIRENT_SIZE  # first slot after the 0x00 marker
        self._dirty: tuple[int, int] | None = None  # byte range not yet written
        self._dupes = False
        self._parse()

    # -- locations ------------------------------------------------------------------------
    @property
    def slots(self) -> int:
        return len(self.data) // DIRENT_SIZE

    def slot_offset(self, slot: int) -> int:
        """Absolute byte offset of ``slot`` on the device."""
        pos = slot * DIRENT_SIZE
        if self.clusters is None:
            return self.geo.root_offset + pos
        idx, within = divmod(pos, self.geo.cluster_size)
        return self.geo.cluster_offset(self.clusters[idx]) + within

    # -- parsing --------------------------------------------------------------------------
    def _parse(self) -> None:
        data = self.data
        lfn_parts: list[bytes] = []
        lfn_expect = 0
        lfn_sum = -1
        lfn_start = -1
        for slot, fields in enumerate(DIRENT.iter_unpack(data)):
            raw = DirEntryRaw._make(fields)
            first = raw.DIR_Name[0]
            if first == 0:
                self.end_slot = slot
                break
            if first == DELETED:
                lfn_parts, lfn_expect = [], 0
                continue
            if raw.DIR_Attr & ATTR_LONG_NAME_MASK == ATTR_LONG_NAME:
                base = slot * DIRENT_SIZE
                order = first
                if order & LAST_LONG_ENTRY:
                    count = order & 0x3F
                    if not 1 <= count <= 20:
                        lfn_parts, lfn_expect = [], 0
                        continue
                    lfn_parts = [names.lfn_chars(bytes(data[base : base + 32]))]
                    lfn_expect = count - 1
                    lfn_sum = data[base + 13]
                    lfn_start = slot
                elif lfn_parts and order == lfn_expect and data[base + 13] == lfn_sum:
                    lfn_parts.append(names.lfn_chars(bytes(data[base : base + 32])))
                    lfn_expect -= 1
                else:
                    lfn_parts, lfn_expect = [], 0
                continue
            if raw.DIR_Attr & ATTR_VOLUME_ID:
                if self.is_root and self.label_slot is None:
                    self.label_slot = slot
                    self.label = raw.DIR_Name
                lfn_parts, lfn_expect = [], 0
                continue
            if raw.DIR_Name == _DOT:
                lfn_parts, lfn_expect = [], 0
                continue
            if raw.DIR_Name == _DOTDOT:
                self.dotdot_slot = slot
                lfn_parts, lfn_expect = [], 0
                continue
            long_name: str | None = None
            if lfn_parts and lfn_expect == 0 and lfn_sum == names.checksum(raw.DIR_Name):
                utf16 = b"".join(reversed(lfn_parts))
                for i in range(0, len(utf16), 2):
                    if utf16[i : i + 2] == b"\0\0":
                        utf16 = utf16[:i]
                        break
                text = utf16.decode("utf-16-le", "replace")  # unpaired surrogates -> U+FFFD
                if text and "/" not in text and "\0" not in text and text not in (".", ".."):
                    long_name = text
            start = lfn_start if long_name is not None else slot
            lfn_parts, lfn_expect = [], 0
            cluster = raw.DIR_FstClusLO | ((raw.DIR_FstClusHI << 16) if self.fat32 else 0)
            name = long_name or names.display_short(raw.DIR_Name, raw.DIR_NTRes)
            if "/" in name or "\0" in name or name in ("", ".", ".."):
                continue  # unrepresentable; fsck territory, never shown
            entry = Entry(
                name, raw.DIR_Name, raw.DIR_Attr, raw.DIR_NTRes, start, slot, cluster,
                raw.DIR_FileSize, raw.DIR_CrtTimeTenth, raw.DIR_CrtTime, raw.DIR_CrtDate,
                raw.DIR_LstAccDate, raw.DIR_WrtTime, raw.DIR_WrtDate,
            )  # fmt: skip
            self._add(entry)

    def _add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.by_slot[entry.slot] = entry
        self.shorts.add(entry.short)
        for key in (names.fold(entry.name), names.fold(names.display_short(entry.short, 0))):
            if self.index.setdefault(key, entry) is not entry:
                self._dupes = True  # a damaged directory: two entries answer to one name

    def adopt(self, i: int, live: Entry) -> None:
        """Use ``live`` (the same entry, already held by a node) instead of the freshly
        parsed ``entries[i]``."""
        parsed = self.entries[i]
        self.entries[i] = live
        self.by_slot[live.slot] = live
        for key in (names.fold(parsed.name), names.fold(names.display_short(parsed.short, 0))):
            if self.index.get(key) is parsed:
                self.index[key] = live

    def _remove(self, entry: Entry) -> None:
        self.entries.remove(entry)
        self.by_slot.pop(entry.slot, None)
        self.shorts.discard(entry.short)
        for key in (names.fold(entry.name), names.fold(names.display_short(entry.short, 0))):
            if self.index.get(key) is entry:
                del self.index[key]
                if not self._dupes:
                    continue
                for other in self.entries:  # a duplicate (corrupt dir) takes over the name
                    if key in (
                        names.fold(other.name),
                        names.fold(names.display_short(other.short, 0)),
                    ):
                        self.index[key] = other
                        break

    # -- queries --------------------------------------------------------------------------
    def lookup(self, name: str) -> Entry | None:
        return self.index.get(names.fold(name))

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self.entries))

    def is_empty(self) -> bool:
        return not self.entries

    # -- writing --------------------------------------------------------------------------
    def write_slots(self, start: int, blob: bytes) -> None:
        """Put ``blob`` (whole slots) at ``start`` in memory; the device is written by
        :meth:`flush` (write-back: many changes to one directory cost one write)."""
        pos = start * DIRENT_SIZE
        self.data[pos : pos + len(blob)] = blob
        end = pos + len(blob)
        if self._dirty is None:
            self._dirty = (pos, end)
        else:
            self._dirty = (min(self._dirty[0], pos), max(self._dirty[1], end))

    @property
    def dirty(self) -> bool:
        return self._dirty is not None

    def flush(self) -> None:
        """Write the changed byte range to the device, one call per cluster it spans."""
        if self._dirty is None:
            return
        pos, end = self._dirty
        step = self.geo.cluster_size if self.clusters is not None else len(self.data) or 1
        while pos < end:
            chunk_end = min(end, (pos // step + 1) * step)
            self.dev.pwrite(self.data[pos:chunk_end], self.slot_offset(pos // DIRENT_SIZE))
            pos = chunk_end
        self._dirty = None

    def _free_run(self, n: int) -> int | None:
        firsts = bytes(self.data[0::DIRENT_SIZE])
        end = self.end_slot
        marks = firsts[:end].translate(_FREE_TABLE) + b"F" * (len(firsts) - end)
        found = marks.find(b"F" * n)
        return None if found < 0 else found

    def add(
        self,
        entry: Entry,
        lfn: list[bytes],
        grow: Callable[[], int] | None,
    ) -> None:
        """Write ``lfn`` entries followed by ``entry``'s short entry into free slots.

        ``grow`` allocates one more zeroed cluster for this directory and returns it; None
        (the fixed root) means the directory cannot grow.
        """
        n = len(lfn) + 1
        start = self.ensure_room(n, grow)
        entry.first_slot = start
        entry.slot = start + n - 1
        self.write_slots(start, b"".join(lfn) + entry.pack())
        if entry.slot >= self.end_slot:
            self.end_slot = entry.slot + 1
            nxt = self.end_slot
            if nxt < self.slots and self.data[nxt * DIRENT_SIZE] != 0:
                self.write_slots(nxt, bytes(DIRENT_SIZE))  # keep the end marker after us
        self._add(entry)

    def ensure_room(self, n: int, grow: Callable[[], int] | None) -> int:
        """First slot of a free run of ``n`` slots, growing the directory if needed (raises
        ``NoSpace`` before changing anything when it cannot)."""
        start = self._free_run(n)
        while start is None:
            if grow is None or self.clusters is None:
                raise NoSpace("the root directory is full")
            if len(self.data) + self.geo.cluster_size > MAX_DIR_BYTES:
                raise NoSpace("a FAT directory holds at most 65536 entries")
            cluster = grow()
            self.clusters.append(cluster)
            self.data.extend(bytes(self.geo.cluster_size))
            start = self._free_run(n)
        return start

    def update(self, entry: Entry) -> None:
        """Rewrite ``entry``'s short entry (size, cluster, times, attributes changed)."""
        self.write_slots(entry.slot, entry.pack())

    def delete(self, entry: Entry) -> None:
        """Mark the entry's slots deleted (0xE5), as every FAT implementation does."""
        for slot in range(entry.first_slot, entry.slot + 1):
            pos = slot * DIRENT_SIZE
            self.data[pos] = DELETED
        pos = entry.first_slot * DIRENT_SIZE
        blob = bytes(self.data[pos : (entry.slot + 1) * DIRENT_SIZE])
        self.write_slots(entry.first_slot, blob)
        self._remove(entry)

    def set_dotdot(self, cluster: int) -> None:
        if self.dotdot_slot is None:
            raise CorruptImage("FAT directory", self.slot_offset(0), "no '..' entry")
        pos = self.dotdot_slot * DIRENT_SIZE
        self.data[pos + 20 : pos + 22] = (cluster >> 16).to_bytes(2, "little")
        self.data[pos + 26 : pos + 28] = (cluster & 0xFFFF).to_bytes(2, "little")
        self.write_slots(self.dotdot_slot, bytes(self.data[pos : pos + DIRENT_SIZE]))


def _runs(clusters: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in clusters:
        if out and out[-1][0] + out[-1][1] == c:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((c, 1))
    return out
