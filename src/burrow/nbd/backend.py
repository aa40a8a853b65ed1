"""Adapters from what users serve (a ``BlockDevice``, a plain class, an async class) to the one
coroutine interface the NBD pump calls.

Why two paths: a ``BlockDevice`` (or a plain class with synchronous methods) blocks, so its
calls run in the event loop's thread pool; an object whose methods are coroutines is awaited
directly, in the loop. Raw host files get one more shortcut: small reads are done with
``os.preadv`` straight from the event loop, because a thread hop costs more than a 4 KiB read
from the page cache.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any

from burrow.block.device import BlockDevice, Extent, ExtentFlags
from burrow.errors import ReadOnly, Unsupported, UsageError

__all__ = ["AsyncBackend", "Backend", "PlainDevice", "ThreadBackend", "make_backend"]

INLINE_READ_MAX = 1024 * 1024  # raw reads up to this size run in the event loop
SPARSE_MIN = 64 * 1024  # structured reads at least this big may come back as hole chunks

ReadResult = bytes | bytearray | memoryview
Chunks = list[tuple[int, int, ReadResult | None]]
MAX_EXTENTS = 1 << 16  # block status answers at most this many extents per request
_HAS_FUA = "fua"


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _size_of(obj: Any) -> int:
    size = getattr(obj, "size", None)
    if callable(size):
        size = size()
    if not isinstance(size, int) or size < 0:
        raise UsageError(f"{type(obj).__name__}.size must be a non-negative int, not {size!r}")
    return size


def _as_extents(items: Iterable[Any], offset: int, n: int) -> Iterator[Extent]:
    """Accept Extent objects or ``(offset, length, flags)`` tuples from user classes."""
    for item in items:
        off, length, flags = item
        yield Extent(int(off), int(length), ExtentFlags(int(flags) & 3))


class PlainDevice(BlockDevice):
    """A ``BlockDevice`` around a user's plain class with synchronous methods.

    Recognised members: ``size`` (int attribute, property or method), ``pread(n, offset)`` or
    ``preadinto(buf, offset)``, and optionally ``pwrite(data, offset[, fua])``, ``flush()``,
    ``trim(n, offset)`` / ``discard``, ``zero(n, offset[, may_trim])`` / ``write_zeroes``,
    ``extents(n, offset)`` yielding ``(offset, length, flags)``, ``close()``, ``block_size``,
    ``can_multi_conn``, ``can_fua``, ``readonly``.
    """

    def __init__(self, obj: Any, *, readonly: bool | None = None) -> None:
        self.obj = obj
        self._size = _size_of(obj)
        self._block_size = int(getattr(obj, "block_size", 512) or 512)
        writable = callable(getattr(obj, "pwrite", None))
        self._readonly = (not writable) if readonly is None else (readonly or not writable)
        if bool(getattr(obj, "readonly", False)):
            self._readonly = True
        self._read_into = getattr(obj, "preadinto", None)
        self._read = getattr(obj, "pread", None)
        if not callable(self._read_into) and not callable(self._read):
            raise UsageError(f"{type(obj).__name__} needs a pread(n, offset) method")
        self._write = getattr(obj, "pwrite", None)
        self._write_fua = writable and _accepts(self._write, _HAS_FUA)
        self.can_fua = bool(getattr(obj, "can_fua", False)) and self._write_fua
        self._trim = getattr(obj, "trim", None) or getattr(obj, "discard", None)
        self.can_discard = callable(self._trim) and not self._readonly
        self._zero = getattr(obj, "zero", None) or getattr(obj, "write_zeroes", None)
        self.can_write_zeroes = callable(self._zero) and not self._readonly
        self._zero_unmap = self.can_write_zeroes and _accepts(self._zero, "may_trim")
        self._ext = getattr(obj, "extents", None)
        self.can_extents = callable(self._ext)
        self.can_multi_conn = bool(getattr(obj, "can_multi_conn", False))
        self._flush_fn = getattr(obj, "flush", None)

    def _preadinto(self, buf: memoryview, offset: int) -> None:
        if callable(self._read_into):
            self._read_into(buf, offset)
            return
        assert callable(self._read)
        data = self._read(len(buf), offset)
        if len(data) != len(buf):
            raise UsageError(f"pread returned {len(data)} bytes, wanted {len(buf)}")
        buf[:] = data

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        if not callable(self._write):
            raise ReadOnly("device does not support writing")
        if self._write_fua:
            self._write(data, offset, fua=fua)
        else:
            self._write(data, offset)

    def _flush(self) -> None:
        if callable(self._flush_fn):
            self._flush_fn()

    def _discard(self, n: int, offset: int) -> None:
        if callable(self._trim):
            self._trim(n, offset)

    def _write_zeroes(self, n: int, offset: int, may_unmap: bool) -> None:
        assert callable(self._zero)
        if self._zero_unmap:
            self._zero(n, offset, may_trim=may_unmap)
        else:
            self._zero(n, offset)

    def _extents(self, n: int, offset: int) -> Iterator[Extent]:
        if not callable(self._ext):
            yield Extent(offset, n, ExtentFlags.DATA)
            return
        yield from _as_extents(self._ext(n, offset), offset, n)

    def _close(self) -> None:
        close = getattr(self.obj, "close", None)
        if callable(close):
            close()


class Backend:
    """What the pump needs from an export, as coroutines. Bounds and flags are already checked."""

    size: int
    readonly: bool
    block_size: int
    can_trim: bool
    can_zero: bool
    can_fast_zero: bool
    can_multi_conn: bool
    can_extents: bool
    can_fua: bool

    def read_inline(self, n: int, offset: int, sparse: bool) -> ReadResult | Chunks | None:
        """A read done right now in the caller's thread, or None to use ``read``.

        With ``sparse`` the answer may be a list of chunks (holes as ``None``)."""
        return None

    async def read(self, n: int, offset: int) -> bytes | bytearray | memoryview:
        raise NotImplementedError

    async def read_sparse(
        self, n: int, offset: int
    ) -> list[tuple[int, int, bytes | bytearray | memoryview | None]]:
        """Data and hole runs covering the range (holes as ``None``)."""
        return [(offset, n, await self.read(n, offset))]

    async def write(self, data: bytes | bytearray, offset: int, fua: bool) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        raise NotImplementedError

    async def trim(self, n: int, offset: int, fua: bool) -> None:
        raise NotImplementedError

    async def zero(self, n: int, offset: int, may_trim: bool, fua: bool, fast: bool) -> None:
        raise NotImplementedError

    async def extents(self, n: int, offset: int) -> list[tuple[int, int]]:
        raise NotImplementedError

    async def cache(self, n: int, offset: int) -> None:
        return None

    def close(self) -> None:
        return None


def _runs(extents: Iterable[Extent], limit: int, offset: int, n: int) -> list[tuple[int, int]]:
    """``(length, flags)`` pairs covering ``[offset, offset+n)`` from its start, merged when
    neighbours agree, at most ``limit`` of them. Extents are clipped to the range; a gap or an
    extent out of order ends the list early (a shorter answer is allowed, a wrong one is not)."""
    out: list[tuple[int, int]] = []
    pos, end = offset, offset + n
    for ext in extents:
        start, stop = max(ext.offset, pos), min(ext.offset + ext.length, end)
        if ext.offset > pos or stop <= start:
            if ext.offset > pos:
                break
            continue
        flags = int(ext.flags) & 3
        length = stop - start
        if out and out[-1][1] == flags:
            out[-1] = (out[-1][0] + length, flags)
        elif len(out) >= limit:
            break
        else:
            out.append((length, flags))
        pos = stop
        if pos >= end:
            break
    return out


class ThreadBackend(Backend):
    """A ``BlockDevice`` whose (blocking) methods run in the loop's default thread pool."""

    def __init__(self, dev: BlockDevice, *, readonly: bool = False) -> None:
        self.dev = dev
        self.size = dev.size
        self.readonly = readonly or dev.readonly
        self.block_size = dev.block_size
        self.can_trim = dev.can_discard and not self.readonly
        self.can_zero = not self.readonly
        self.can_fast_zero = not self.readonly
        self.can_multi_conn = dev.can_multi_conn
        self.can_extents = dev.can_extents
        self.can_fua = not self.readonly
        from burrow.block.raw import RawDevice

        self._fd = dev.fileno() if type(dev) is RawDevice else -1

    def read_inline(self, n: int, offset: int, sparse: bool) -> ReadResult | Chunks | None:
        if self._fd < 0 or n > INLINE_READ_MAX:
            return None
        return self._raw_read(n, offset, sparse)

    def _raw_read(self, n: int, offset: int, sparse: bool) -> ReadResult | Chunks | None:
        """Read a raw file: data, one hole chunk, or None when the range mixes both."""
        fd = self._fd
        if sparse and n >= SPARSE_MIN:
            # Two lseeks tell whether the range is all hole, all data, or mixed (mixed goes
            # to the thread pool, which splits it into chunks).
            end = offset + n
            try:
                first_data = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                first_data = end  # ENXIO: no data after offset
            if first_data >= end:
                return [(offset, n, None)]
            if first_data > offset:
                return None
            try:
                hole = os.lseek(fd, offset, os.SEEK_HOLE)
            except OSError:
                return None
            if hole < end:
                return None
        got = os.pread(fd, n, offset)
        if len(got) != n:
            return None  # short read (file shrank?): let the device handle it
        return got

    def _call(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def read(self, n: int, offset: int) -> bytes | bytearray | memoryview:
        buf = bytearray(n)
        await self._call(self.dev.preadinto, buf, offset)
        return buf

    def _sparse(self, n: int, offset: int) -> list[tuple[int, int, bytearray | None]]:
        out: list[tuple[int, int, bytearray | None]] = []
        pos = offset
        for length, flags in _runs(self.dev.extents(n, offset), MAX_EXTENTS, offset, n):
            length = min(length, offset + n - pos)
            if length <= 0:
                break
            if flags & ExtentFlags.ZERO:
                out.append((pos, length, None))
            else:
                buf = bytearray(length)
                self.dev.preadinto(buf, pos)
                out.append((pos, length, buf))
            pos += length
        if pos < offset + n:  # the device reported less than asked: read the rest as data
            buf = bytearray(offset + n - pos)
            self.dev.preadinto(buf, pos)
            out.append((pos, len(buf), buf))
        return out

    async def read_sparse(
        self, n: int, offset: int
    ) -> list[tuple[int, int, bytes | bytearray | memoryview | None]]:
        if not self.can_extents:
            return [(offset, n, await self.read(n, offset))]
        if self._fd >= 0:
            got = await self._call(self._raw_read, n, offset, True)
            if isinstance(got, list):
                return got
            if got is not None:
                return [(offset, n, got)]
        return list(await self._call(self._sparse, n, offset))

    async def write(self, data: bytes | bytearray, offset: int, fua: bool) -> None:
        dev = self.dev
        await self._call(lambda: dev.pwrite(data, offset, fua=fua))

    async def flush(self) -> None:
        await self._call(self.dev.flush)

    def _trim(self, n: int, offset: int, fua: bool) -> None:
        self.dev.discard(n, offset)
        if fua:
            self.dev.flush()

    async def trim(self, n: int, offset: int, fua: bool) -> None:
        await self._call(self._trim, n, offset, fua)

    async def zero(self, n: int, offset: int, may_trim: bool, fua: bool, fast: bool) -> None:
        dev = self.dev
        await self._call(
            lambda: dev.write_zeroes(n, offset, may_unmap=may_trim, fua=fua, fast=fast)
        )

    async def extents(self, n: int, offset: int) -> list[tuple[int, int]]:
        dev = self.dev
        return list(await self._call(lambda: _runs(dev.extents(n, offset), MAX_EXTENTS, offset, n)))

    async def cache(self, n: int, offset: int) -> None:
        await self._call(self.dev.cache, n, offset)

    def close(self) -> None:
        self.dev.close()


class AsyncBackend(Backend):
    """A user's class whose methods are coroutines: awaited directly in the event loop."""

    def __init__(self, obj: Any, *, readonly: bool = False) -> None:
        self.obj = obj
        self.size = _size_of(obj)
        self.block_size = int(getattr(obj, "block_size", 512) or 512)
        if not callable(getattr(obj, "pread", None)):
            raise UsageError(f"{type(obj).__name__} needs a pread(n, offset) method")
        writable = callable(getattr(obj, "pwrite", None))
        self.readonly = readonly or not writable or bool(getattr(obj, "readonly", False))
        self._trim = getattr(obj, "trim", None) or getattr(obj, "discard", None)
        self._zero = getattr(obj, "zero", None) or getattr(obj, "write_zeroes", None)
        self.can_trim = callable(self._trim) and not self.readonly
        self.can_zero = not self.readonly
        self.can_fast_zero = not self.readonly
        self.can_multi_conn = bool(getattr(obj, "can_multi_conn", False))
        self.can_extents = callable(getattr(obj, "extents", None))
        self.can_fua = not self.readonly
        self._write_fua = writable and _accepts(obj.pwrite, _HAS_FUA)

    async def _maybe(self, value: Any) -> Any:
        if inspect.isawaitable(value):
            return await value
        return value

    async def read(self, n: int, offset: int) -> bytes | bytearray | memoryview:
        data = await self._maybe(self.obj.pread(n, offset))
        if len(data) != n:
            raise UsageError(f"pread returned {len(data)} bytes, wanted {n}")
        return data  # type: ignore[no-any-return]

    async def write(self, data: bytes | bytearray, offset: int, fua: bool) -> None:
        if self._write_fua:
            await self._maybe(self.obj.pwrite(data, offset, fua=fua))
        else:
            await self._maybe(self.obj.pwrite(data, offset))
            if fua:
                await self.flush()

    async def flush(self) -> None:
        fn = getattr(self.obj, "flush", None)
        if callable(fn):
            await self._maybe(fn())

    async def trim(self, n: int, offset: int, fua: bool) -> None:
        if callable(self._trim):
            await self._maybe(self._trim(n, offset))
        if fua:
            await self.flush()

    async def zero(self, n: int, offset: int, may_trim: bool, fua: bool, fast: bool) -> None:
        if callable(self._zero):
            if _accepts(self._zero, "may_trim"):
                await self._maybe(self._zero(n, offset, may_trim=may_trim))
            else:
                await self._maybe(self._zero(n, offset))
        elif fast:
            raise Unsupported("fast-zero", "this device cannot zero faster than writing")
        else:
            chunk = bytes(min(n, 1 << 20))
            pos = offset
            while pos < offset + n:
                take = min(len(chunk), offset + n - pos)
                await self.write(chunk[:take], pos, False)
                pos += take
        if fua:
            await self.flush()

    async def extents(self, n: int, offset: int) -> list[tuple[int, int]]:
        fn = getattr(self.obj, "extents", None)
        if not callable(fn):
            return [(n, 0)]
        items = fn(n, offset)
        if hasattr(items, "__aiter__"):
            got = [item async for item in items]
        else:
            got = list(itertools.islice(await self._maybe(items), MAX_EXTENTS))
        return _runs(_as_extents(got, offset, n), MAX_EXTENTS, offset, n)

    def close(self) -> None:
        close = getattr(self.obj, "close", None)
        if callable(close):
            result = close()
            if inspect.isawaitable(result):
                raise UsageError("close() of an async device must be synchronous")


def _is_async(obj: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(obj, "pread", None))


def make_backend(device: Any, *, readonly: bool = False) -> Backend:
    """The right backend for ``device``: a BlockDevice, a plain sync class or an async class."""
    if isinstance(device, Backend):
        return device
    if isinstance(device, BlockDevice):
        return ThreadBackend(device, readonly=readonly)
    if _is_async(device):
        return AsyncBackend(device, readonly=readonly)
    return ThreadBackend(PlainDevice(device, readonly=readonly or None), readonly=readonly)
