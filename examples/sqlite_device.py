"""A block device that keeps its blocks in an SQLite database, served over NBD by burrow.

    burrow nbd serve examples/sqlite_device.py:SQLiteDevice disk.sqlite size=64M \
        --socket /tmp/sq.sock

then, for example, ``qemu-img convert -O raw nbd+unix:///?socket=/tmp/sq.sock out.raw`` or
``nbdcopy image.raw nbd+unix:///?socket=/tmp/sq.sock``. Only blocks ever written with non-zero
data are stored; everything else reads as zeros and shows up as a hole in ``nbdinfo --map``.

This is a plain class: burrow adapts it (size, pread, pwrite, flush, trim, zero, extents) and
runs its methods in a thread pool, so it only has to be thread-safe, which one lock does.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator

SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = text[-1:] if text[-1:] in SUFFIXES else ""
    return int(text[: len(text) - len(unit)]) * SUFFIXES[unit]


class SQLiteDevice:
    """``size`` bytes in blocks of ``block_size`` rows of a table ``blocks(idx, data)``."""

    can_multi_conn = True  # one database, one lock: every connection sees every write

    def __init__(self, path: str, size: str | int = "64M", block_size: str | int = 4096) -> None:
        self.path = path
        self.block_size = parse_size(block_size)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)")
        self._db.execute("CREATE TABLE IF NOT EXISTS blocks (idx INTEGER PRIMARY KEY, data BLOB)")
        row = self._db.execute("SELECT value FROM meta WHERE key='size'").fetchone()
        if row is None:
            self.size = parse_size(size)
            self._db.execute("INSERT INTO meta VALUES ('size', ?)", (self.size,))
            self._db.execute("INSERT INTO meta VALUES ('block_size', ?)", (self.block_size,))
        else:
            self.size = int(row[0])
            bs = self._db.execute("SELECT value FROM meta WHERE key='block_size'").fetchone()
            self.block_size = int(bs[0])
        self._zero = bytes(self.block_size)

    # -- reads -----------------------------------------------------------------------------
    def pread(self, n: int, offset: int) -> bytes:
        bs = self.block_size
        first, last = offset // bs, (offset + n - 1) // bs
        out = bytearray((last - first + 1) * bs)
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, data FROM blocks WHERE idx BETWEEN ? AND ?", (first, last)
            ).fetchall()
        for idx, data in rows:
            start = (idx - first) * bs
            out[start : start + bs] = data
        skip = offset - first * bs
        return bytes(out[skip : skip + n])

    # -- writes ----------------------------------------------------------------------------
    def pwrite(self, data: bytes, offset: int) -> None:
        bs = self.block_size
        data = bytes(data)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                pos = 0
                while pos < len(data):
                    idx, within = divmod(offset + pos, bs)
                    take = min(bs - within, len(data) - pos)
                    if take == bs:
                        block = data[pos : pos + bs]
                    else:  # read-modify-write of a partial block
                        row = self._db.execute(
                            "SELECT data FROM blocks WHERE idx=?", (idx,)
                        ).fetchone()
                        buf = bytearray(row[0] if row else self._zero)
                        buf[within : within + take] = data[pos : pos + take]
                        block = bytes(buf)
                    if block == self._zero:
                        self._db.execute("DELETE FROM blocks WHERE idx=?", (idx,))
                    else:
                        self._db.execute(
                            "INSERT OR REPLACE INTO blocks VALUES (?, ?)", (idx, block)
                        )
                    pos += take
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def zero(self, n: int, offset: int) -> None:
        """Whole blocks are deleted (they read as zeros); partial ends are rewritten."""
        bs = self.block_size
        end = offset + n
        first_full = -(-offset // bs)
        last_full = end // bs  # exclusive
        if first_full >= last_full:
            self.pwrite(bytes(n), offset)
            return
        if offset < first_full * bs:
            self.pwrite(bytes(first_full * bs - offset), offset)
        with self._lock:
            self._db.execute(
                "DELETE FROM blocks WHERE idx >= ? AND idx < ?", (first_full, last_full)
            )
        if end > last_full * bs:
            self.pwrite(bytes(end - last_full * bs), last_full * bs)

    def trim(self, n: int, offset: int) -> None:
        self.zero(n, offset)

    def flush(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(FULL)")

    # -- allocation map --------------------------------------------------------------------
    def extents(self, n: int, offset: int) -> Iterator[tuple[int, int, int]]:
        """(offset, length, flags) runs: stored blocks are data (0), the rest holes (3)."""
        bs = self.block_size
        first, last = offset // bs, (offset + n - 1) // bs
        with self._lock:
            stored = [
                r[0]
                for r in self._db.execute(
                    "SELECT idx FROM blocks WHERE idx BETWEEN ? AND ? ORDER BY idx",
                    (first, last),
                )
            ]
        pos, end = offset, offset + n
        for idx in stored:
            start = max(idx * bs, offset)
            if start > pos:
                yield (pos, start - pos, 3)
            stop = min((idx + 1) * bs, end)
            yield (start, stop - start, 0)
            pos = stop
        if pos < end:
            yield (pos, end - pos, 3)

    def close(self) -> None:
        with self._lock:
            self._db.close()
