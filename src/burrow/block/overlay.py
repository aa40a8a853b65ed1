"""``OverlayDevice``: copy-on-write over any device; the base is written only by ``commit()``.

Writes land in a store with the same offsets as the base — memory (a sparse
``MemoryDevice``) or a sparse side file — in chunks of ``chunk_size`` bytes. A chunk is either
absent (read from the base), data (read from the store) or zero (reads as zeros, nothing
stored). Partial writes first copy the rest of their chunk from below.

``commit()`` is crash-safe through an intent log (journal):

1. the list of extents and their data are written to ``<journal>.tmp`` with a SHA-256 over
   everything, fsync'd, renamed to ``<journal>`` and the directory fsync'd — from this
   moment the commit has happened, logically;
2. the extents are applied to the base, and the base is flushed;
3. the journal is deleted (and the directory fsync'd).

After a crash, :func:`recover` (also run when an ``OverlayDevice`` is opened on the base)
replays a complete journal (the new image) or deletes an incomplete one (the base was not
touched yet: the old image). Replaying is idempotent, so a crash during recovery is fine too.
The journal lives next to the base (``<base path>.burrow-journal``) when the base has a path,
otherwise next to the side file, otherwise where ``journal_path`` says.

Overlay contents are volatile: ``flush()`` does not make them durable (only ``commit`` does),
and ``close()`` without ``commit()`` discards them.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

from burrow.block.device import BlockDevice, Extent, ExtentFlags
from burrow.block.memory import MemoryDevice
from burrow.errors import CorruptImage, ReadOnly, UsageError

__all__ = ["JOURNAL_SUFFIX", "OverlayDevice", "journal_path_for", "recover"]

JOURNAL_SUFFIX = ".burrow-journal"
JOURNAL_MAGIC = b"BURROWJ1"
JOURNAL_END = b"BURROWJE"
# Journal layout: header, extent table, the data of every DATA extent in order, trailer.
J_HEADER = struct.Struct(">8sIIQQ")  # magic, version, reserved, base_size, n_extents
J_EXTENT = struct.Struct(">QQB7x")  # offset, length, kind (0 data, 1 zero)
J_TRAILER = struct.Struct(">32s8s")  # sha256 of everything before, end magic
KIND_DATA, KIND_ZERO = 0, 1
COPY_CHUNK = 4 << 20

_ABSENT, _DATA, _ZERO = 0, 1, 2


class JournalExtent(NamedTuple):
    offset: int
    length: int
    kind: int


def journal_path_for(base_path: str | os.PathLike[str]) -> str:
    """Where the commit journal of the image at ``base_path`` lives."""
    return os.fspath(base_path) + JOURNAL_SUFFIX


def _device_path(dev: BlockDevice) -> str | None:
    """The host path of ``dev``, looking through filters (same offsets), not slices."""
    from burrow.block.filters.base import FilterDevice

    seen = 0
    while isinstance(dev, FilterDevice) and seen < 64:
        dev = dev.base
        seen += 1
    path = getattr(dev, "path", None)
    return path if isinstance(path, str) else None


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OverlayDevice(BlockDevice):
    """Copy-on-write view of ``base``; ``commit()`` applies it, ``drop()`` forgets it."""

    can_discard = True
    can_write_zeroes = True
    can_extents = True

    def __init__(
        self,
        base: BlockDevice,
        *,
        side_path: str | os.PathLike[str] | None = None,
        journal_path: str | os.PathLike[str] | None = None,
        chunk_size: int = 4096,
        owns_base: bool = False,
    ) -> None:
        if chunk_size < 512 or chunk_size & (chunk_size - 1):
            raise UsageError("chunk_size must be a power of two >= 512")
        self.base = base
        self._size = base.size
        self._block_size = base.block_size
        self._readonly = False
        self._owns = owns_base
        self._chunk = chunk_size
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._readers = 0
        self._resetting = False  # a commit()/drop() waits: new reads queue behind it
        self._data: set[int] = set()
        self._zero: set[int] = set()
        self.side_path = os.fspath(side_path) if side_path is not None else None
        if journal_path is not None:
            self.journal_path: str | None = os.fspath(journal_path)
        elif (bp := _device_path(base)) is not None:
            self.journal_path = journal_path_for(bp)
        elif self.side_path is not None:
            self.journal_path = self.side_path + JOURNAL_SUFFIX
        else:
            self.journal_path = None
        if self.journal_path is not None and os.path.exists(self.journal_path):
            self._recover_on_open()
        self._store = self._new_store()

    def _recover_on_open(self) -> None:
        assert self.journal_path is not None
        plan = _read_journal(self.journal_path)
        if plan is None:
            _remove_journal(self.journal_path)  # incomplete: the base was never touched
            return
        if self.base.readonly:
            raise UsageError(
                f"an interrupted commit left {self.journal_path!r}; open the base writable "
                "or run burrow.block.overlay.recover() before reading it"
            )
        _replay(self.base, self.journal_path, plan)

    def _new_store(self) -> BlockDevice:
        if self.side_path is None:
            return MemoryDevice(self._size, page_size=self._chunk)
        from burrow.block.raw import RawDevice

        fd = os.open(self.side_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, self._size)
        finally:
            os.close(fd)
        return RawDevice(self.side_path, readonly=False)

    def _drop_store(self) -> None:
        self._store.close()
        if self.side_path is not None:
            os.unlink(self.side_path)

    # -- state ----------------------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        """True while the overlay holds changes not committed to the base."""
        return bool(self._data or self._zero)

    def _state(self, c: int) -> int:
        if c in self._data:
            return _DATA
        if c in self._zero:
            return _ZERO
        return _ABSENT

    def _runs(self, offset: int, n: int) -> list[tuple[int, int, int]]:
        """(state, offset, length) runs over the range. Lock held."""
        if not self._data and not self._zero:
            return [(_ABSENT, offset, n)]
        cs = self._chunk
        end = offset + n
        runs: list[tuple[int, int, int]] = []
        c = offset // cs
        pos = offset
        data, zero = self._data, self._zero
        while pos < end:
            state = _DATA if c in data else _ZERO if c in zero else _ABSENT
            stop = min((c + 1) * cs, end)
            if runs and runs[-1][0] == state:
                runs[-1] = (state, runs[-1][1], stop - runs[-1][1])
            else:
                runs.append((state, pos, stop - pos))
            pos = stop
            c += 1
        return runs

    # -- reads --------------------------------------------------------------------------------
    def _preadinto(self, buf: memoryview, offset: int) -> None:
        # Map under the lock, copy outside it; commit()/drop() wait for readers in flight
        # before they replace the store.
        with self._lock:
            while self._resetting:  # else overlapping readers could starve commit()/drop()
                self._idle.wait()
            runs = self._runs(offset, len(buf))
            store = self._store
            self._readers += 1
        try:
            for state, off, length in runs:
                dst = buf[off - offset : off - offset + length]
                if state == _DATA:
                    store.preadinto(dst, off)
                elif state == _ZERO:
                    dst[:] = bytes(length)
                else:
                    self.base.preadinto(dst, off)
        finally:
            with self._lock:
                self._readers -= 1
                if not self._readers:
                    self._idle.notify_all()

    def _extents(self, n: int, offset: int) -> Iterator[Extent]:
        with self._lock:
            runs = self._runs(offset, n)
        for state, off, length in runs:
            if state == _DATA:
                yield Extent(off, length, ExtentFlags.DATA)
            elif state == _ZERO:
                yield Extent(off, length, ExtentFlags.HOLE | ExtentFlags.ZERO)
            else:
                yield from self.base.extents(length, off)

    # -- writes -------------------------------------------------------------------------------
    def _chunk_range(self, c: int) -> tuple[int, int]:
        start = c * self._chunk
        return start, min(start + self._chunk, self._size)

    def _fill(self, c: int) -> None:
        """Copy chunk ``c``'s current contents into the store before a partial write."""
        start, end = self._chunk_range(c)
        content = bytes(end - start) if c in self._zero else self.base.pread(end - start, start)
        self._store.pwrite(content, start)

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        cs = self._chunk
        end = offset + len(data)
        first, last = offset // cs, (end - 1) // cs
        with self._lock:
            for c in {first, last}:
                cstart, cend = self._chunk_range(c)
                if (offset > cstart or end < cend) and c not in self._data:
                    self._fill(c)
            self._store.pwrite(data, offset)
            chunks = range(first, last + 1)
            self._data.update(chunks)
            if self._zero:
                self._zero.difference_update(chunks)

    def _zero_range(self, n: int, offset: int, discard: bool) -> None:
        cs = self._chunk
        end = offset + n
        with self._lock:
            first_full = -(-offset // cs)
            last_full = end // cs  # exclusive, unless the device's last chunk is short
            if end == self._size and self._size % cs:
                last_full = (self._size - 1) // cs + 1
            if last_full > first_full:
                chunks = range(first_full, last_full)
                self._zero.update(chunks)
                self._data.difference_update(chunks)
                lo = first_full * cs
                hi = min(last_full * cs, self._size)
                self._store.discard(hi - lo, lo)
                head_end = lo
                tail_start = hi
            else:
                head_end = tail_start = end
            if not discard:
                if head_end > offset:
                    self._pwrite(memoryview(bytes(head_end - offset)), offset, False)
                if end > tail_start >= head_end:
                    self._pwrite(memoryview(bytes(end - tail_start)), tail_start, False)

    def _write_zeroes(self, n: int, offset: int, may_unmap: bool) -> None:
        self._zero_range(n, offset, False)

    def _discard(self, n: int, offset: int) -> None:
        self._zero_range(n, offset, True)

    def _flush(self) -> None:
        return None  # overlay contents are volatile until commit()

    # -- commit / drop --------------------------------------------------------------------------
    def extents_to_commit(self) -> list[JournalExtent]:
        """The overlay's changes as merged (offset, length, kind) runs, in order."""
        with self._lock:
            out: list[JournalExtent] = []
            for c in sorted(self._data | self._zero):
                kind = KIND_DATA if c in self._data else KIND_ZERO
                start, end = self._chunk_range(c)
                if out and out[-1].kind == kind and out[-1].offset + out[-1].length == start:
                    last = out[-1]
                    out[-1] = JournalExtent(last.offset, end - last.offset, kind)
                else:
                    out.append(JournalExtent(start, end - start, kind))
            return out

    def commit(self) -> None:
        """Apply the overlay to the base crash-safely (see the module docstring)."""
        with self._lock:
            if not self.dirty:
                return
            if self.base.readonly:
                raise ReadOnly("cannot commit: the base device is read-only")
            if self.journal_path is None:
                raise UsageError(
                    "cannot commit: the base has no path; give OverlayDevice a journal_path "
                    "or a side_path"
                )
            extents = self.extents_to_commit()
            _write_journal(self.journal_path, self._size, extents, self._store)
            _apply(self.base, extents, lambda i, off, n: self._store.pread(n, off))
            self.base.flush()
            _remove_journal(self.journal_path)
            self._reset()

    def drop(self) -> None:
        """Forget every change since the last commit."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        """Replace the store once the reads in flight are done (lock held). New reads wait
        meanwhile, so a stream of overlapping reads cannot keep the count above zero."""
        self._resetting = True
        try:
            while self._readers:
                self._idle.wait()
            self._data.clear()
            self._zero.clear()
            self._drop_store()
            self._store = self._new_store()
        finally:
            self._resetting = False
            self._idle.notify_all()

    def statistics(self) -> dict[str, object]:
        with self._lock:
            return {
                "data_chunks": len(self._data),
                "zero_chunks": len(self._zero),
                "chunk_size": self._chunk,
                "dirty": self.dirty,
            }

    def _close(self) -> None:
        try:
            self._drop_store()
        finally:
            if self._owns:
                self.base.close()


# -- the journal ----------------------------------------------------------------------------------
def _write_journal(path: str, size: int, extents: list[JournalExtent], store: BlockDevice) -> None:
    tmp = path + ".tmp"
    h = hashlib.sha256()
    with open(tmp, "wb") as f:

        def put(b: bytes) -> None:
            h.update(b)
            f.write(b)

        put(J_HEADER.pack(JOURNAL_MAGIC, 1, 0, size, len(extents)))
        for ext in extents:
            put(J_EXTENT.pack(ext.offset, ext.length, ext.kind))
        for ext in extents:
            if ext.kind != KIND_DATA:
                continue
            pos = ext.offset
            while pos < ext.offset + ext.length:
                n = min(COPY_CHUNK, ext.offset + ext.length - pos)
                put(store.pread(n, pos))
                pos += n
        f.write(J_TRAILER.pack(h.digest(), JOURNAL_END))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path)


def _remove_journal(path: str) -> None:
    for p in (path, path + ".tmp"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            continue
    _fsync_dir(path)


class _Plan(NamedTuple):
    size: int
    extents: list[JournalExtent]
    data_start: int


def _read_journal(path: str) -> _Plan | None:
    """Validate a journal; None when it is incomplete or damaged (never applied then)."""
    try:
        total = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(J_HEADER.size)
            if len(head) < J_HEADER.size:
                return None
            magic, version, _, size, count = J_HEADER.unpack(head)
            if magic != JOURNAL_MAGIC or version != 1:
                return None
            table_end = J_HEADER.size + count * J_EXTENT.size
            if table_end + J_TRAILER.size > total:
                return None
            table = f.read(count * J_EXTENT.size)
            extents = [
                JournalExtent(*J_EXTENT.unpack_from(table, i * J_EXTENT.size)) for i in range(count)
            ]
            data_len = 0
            for ext in extents:
                if ext.kind not in (KIND_DATA, KIND_ZERO) or ext.offset + ext.length > size:
                    return None
                if ext.kind == KIND_DATA:
                    data_len += ext.length
            if table_end + data_len + J_TRAILER.size != total:
                return None
            h = hashlib.sha256(head + table)
            remaining = data_len
            while remaining:
                chunk = f.read(min(COPY_CHUNK, remaining))
                if not chunk:
                    return None
                h.update(chunk)
                remaining -= len(chunk)
            digest, end = J_TRAILER.unpack(f.read(J_TRAILER.size))
            if end != JOURNAL_END or digest != h.digest():
                return None
            return _Plan(size, extents, table_end)
    except OSError:
        return None


def _apply(
    dev: BlockDevice, extents: list[JournalExtent], read: Callable[[int, int, int], bytes]
) -> None:
    """Write every extent to ``dev``; ``read(index, offset, n)`` supplies DATA bytes."""
    for i, ext in enumerate(extents):
        if ext.kind == KIND_ZERO:
            dev.write_zeroes(ext.length, ext.offset)
            continue
        pos = ext.offset
        while pos < ext.offset + ext.length:
            n = min(COPY_CHUNK, ext.offset + ext.length - pos)
            dev.pwrite(read(i, pos, n), pos)
            pos += n


def _replay(dev: BlockDevice, path: str, plan: _Plan) -> None:
    if plan.size != dev.size:
        raise CorruptImage(
            "overlay journal", 0, f"written for a {plan.size}-byte device, not {dev.size}"
        )
    starts: list[int] = []  # where each extent's data begins in the journal
    pos = plan.data_start
    for ext in plan.extents:
        starts.append(pos)
        if ext.kind == KIND_DATA:
            pos += ext.length
    with open(path, "rb") as f:
        fd = f.fileno()

        def read(i: int, off: int, n: int) -> bytes:
            return os.pread(fd, n, starts[i] + off - plan.extents[i].offset)

        _apply(dev, plan.extents, read)
    dev.flush()
    _remove_journal(path)


def recover(
    base_path: str | os.PathLike[str],
    *,
    journal_path: str | os.PathLike[str] | None = None,
    format: str | None = None,
) -> str:
    """Finish or undo an interrupted commit on the image at ``base_path``.

    Returns ``"none"`` (no journal), ``"replayed"`` (the new image) or ``"discarded"`` (an
    incomplete journal: the old image, untouched).
    """
    jpath = os.fspath(journal_path) if journal_path is not None else journal_path_for(base_path)
    if not os.path.exists(jpath) and not os.path.exists(jpath + ".tmp"):
        return "none"
    plan = _read_journal(jpath) if os.path.exists(jpath) else None
    if plan is None:
        _remove_journal(jpath)
        return "discarded"
    from burrow import block

    with block.open(base_path, format=format, readonly=False) as dev:
        _replay(dev, jpath, plan)
    return "replayed"
