"""The share client: a remote export as a ``vfs.Filesystem`` (sync) or an async object.

``connect("burrow://host:port/export", key=..., server_key=...)`` returns
:class:`ShareFilesystem`, the same interface a local driver has, so the path layer, the CLI,
fsspec and FUSE work on shares unchanged. :func:`connect_async` returns the
:class:`AsyncShareClient` it is built on (all methods are coroutines with the same names).

How it is fast (sshfs is the habit to beat): every call has an id and many are in flight on
one connection; reads and writes larger than one chunk are split into chunk-sized calls that
are all sent before the first answer is awaited (a window of :data:`WINDOW`); attributes seen
in lookups are cached for :data:`ATTR_TTL` seconds (as NFS and sshfs do) and dropped on any
change made through this client.

After a dropped connection the next call reconnects (new handshake; handles stay valid
because the server derives them from its static key) up to ``retries`` times with backoff,
then fails with :class:`ConnectionLost`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import struct
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

from burrow.errors import (
    BurrowError,
    ConnectionLost,
    PermissionDenied,
    ProtocolError,
    RemoteProtocolError,
    UsageError,
    error_for_errno,
)
from burrow.fs.vfs import DirEntry, Filesystem, FsInfo, Stat, StatFS
from burrow.proto import shareproto as sp
from burrow.proto.noise import KeyPair
from burrow.proto.shareproto import Kind, Op
from burrow.share.channel import Channel, open_channel
from burrow.share.keys import KnownServers, resolve_private_key, resolve_server_key
from burrow.share.worker import stat_from_tuple

__all__ = [
    "AsyncShareClient",
    "ShareFilesystem",
    "connect",
    "connect_async",
    "open_url",
    "parse_url",
]

WINDOW = 16  # chunk calls in flight per read/write
#: Reads larger than one chunk and up to this size start a read-ahead of the same size.
READAHEAD_MAX = 8 << 20
ATTR_TTL = 1.0
DEFAULT_PORT = 7339
_T = TypeVar("_T")


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a background task's exception as seen (read-ahead errors are not reported: the
    reader asks again the normal way)."""
    if not task.cancelled():
        task.exception()


def parse_url(url: str) -> tuple[str, int, str, str]:
    """``burrow://host[:port]/export[/path]`` -> (host, port, export, path inside)."""
    parts = urlsplit(url)
    if parts.scheme != "burrow" or not parts.hostname:
        raise UsageError(f"not a burrow:// URL: {url!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise UsageError(f"bad port in {url!r}") from exc
    export, _, inner = parts.path.lstrip("/").partition("/")
    if not export:
        raise UsageError(f"{url!r} names no export (burrow://host:port/EXPORT/...)")
    return parts.hostname, port, export, "/" + inner


class AsyncShareClient:
    """One connection to one export; every ``vfs`` method as a coroutine."""

    def __init__(
        self,
        host: str,
        port: int,
        export: str,
        *,
        key: KeyPair,
        server_key: bytes,
        psk: bytes | None = None,
        retries: int = 3,
        timeout: float = 30.0,
        call_timeout: float = 120.0,
    ) -> None:
        self.host, self.port, self.export = host, port, export
        self.call_timeout = call_timeout
        self.key, self.server_key, self.psk = key, server_key, psk
        self.retries = retries
        self.timeout = timeout
        self._ch: Channel | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[sp.Frame]] = {}
        self._next = 1
        self._handles: dict[int, bytes] = {}
        self._attrs: dict[int, tuple[float, Stat]] = {}
        self._dentries: dict[tuple[int, str], tuple[float, int]] = {}
        self._lock = asyncio.Lock()
        self._closed = False
        # Read-ahead (one file at a time): the chunks after the last large read, fetched in
        # the background so a sequential reader never lets the pipe drain between calls.
        self._ra: tuple[int, int, int, float, asyncio.Task[list[tuple[Any, ...]]]] | None = None
        self.root_ino = 0
        self.writable = False
        self.reconnects = 0

    # -- connection ----------------------------------------------------------------------
    async def connect(self) -> None:
        ch, welcome = await open_channel(
            self.host,
            self.port,
            key=self.key,
            server_key=self.server_key,
            psk=self.psk,
            hello=sp.encode_hello(self.export),
            timeout=self.timeout,
            max_message=sp.MAX_MESSAGE,
        )
        try:
            version, status, writable, root, message = sp.decode_welcome(welcome)
        except RemoteProtocolError:
            ch.abort()
            raise
        if status:
            await ch.close()
            err = error_for_errno(status, message)
            if status == 13:
                raise PermissionDenied(message or "no access to this export")
            raise err
        if version != sp.PROTOCOL_VERSION:
            ch.abort()
            raise RemoteProtocolError(f"server chose unsupported version {version}")
        ino = struct.unpack_from("<Q", root)[0]
        if self.root_ino and ino != self.root_ino:
            ch.abort()
            raise RemoteProtocolError("the export's root changed across a reconnect")
        self.root_ino = ino
        self._handles[ino] = root
        self.writable = writable
        self._ch = ch
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(ch))

    async def _read_loop(self, ch: Channel) -> None:
        err: BaseException
        try:
            while True:
                data = await ch.recv()
                frame = sp.decode_frame(data, expect=Kind.REPLY, zero_copy=True)
                fut = self._pending.pop(frame.call_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(frame)
        except ProtocolError as exc:
            err = exc if isinstance(exc, ConnectionLost) else ConnectionLost(str(exc))
            if isinstance(exc, RemoteProtocolError):
                ch.abort()
        except asyncio.CancelledError:
            err = ConnectionLost("client closed")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        if self._ch is ch:
            self._ch = None

    def _current(self) -> Channel | None:
        return self._ch

    async def _ensure(self) -> Channel:
        if self._closed:
            raise ConnectionLost("the share connection is closed")
        if self._ch is not None:
            return self._ch
        async with self._lock:
            current = self._current()
            if current is not None:
                return current
            delay = 0.2
            last: BaseException | None = None
            for attempt in range(self.retries + 1):
                if attempt:
                    await asyncio.sleep(delay)
                    delay *= 2
                had_connection = self._reader is not None
                try:
                    await self.connect()
                except ConnectionLost as exc:
                    last = exc
                    continue
                except OSError as exc:
                    if isinstance(exc, BurrowError):
                        raise  # the server answered: no access, bad version...
                    last = exc
                    continue
                if had_connection:
                    self.reconnects += 1
                current = self._current()
                assert current is not None
                return current
            raise ConnectionLost(
                f"share {self.host}:{self.port}/{self.export} unreachable after "
                f"{self.retries + 1} attempts: {last}"
            )

    async def call(self, op: Op, *fields: Any) -> tuple[Any, ...]:
        """One RPC; reconnects (bounded) when the connection dropped before the call."""
        for attempt in range(2):
            ch = await self._ensure()
            call_id = self._next
            self._next = (self._next + 1) & 0xFFFFFFFF or 1
            fut: asyncio.Future[sp.Frame] = asyncio.get_running_loop().create_future()
            self._pending[call_id] = fut
            try:
                ch.send_nowait(sp.encode_request(op, call_id, *fields))
                await ch.drain()
                try:
                    async with asyncio.timeout(self.call_timeout):  # no task per call
                        frame = await fut
                except TimeoutError:
                    # A link that died silently (no RST): drop it and let the retry reconnect.
                    ch.abort()
                    self._ch = None
                    raise ConnectionLost(f"no answer within {self.call_timeout} s") from None
            except ConnectionLost:
                self._pending.pop(call_id, None)
                if attempt or self._closed:
                    raise
                continue
            if frame.kind == Kind.ERROR:
                code, message = frame.fields
                raise error_for_errno(code, message)
            return frame.fields
        raise ConnectionLost("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        self._closed = True
        self._drop_readahead()
        ch, self._ch = self._ch, None
        if ch is not None:
            with contextlib.suppress(BurrowError, OSError):
                await ch.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    # -- handles and caches --------------------------------------------------------------
    def _h(self, ino: int) -> bytes:
        handle = self._handles.get(ino)
        if handle is None:
            raise error_for_errno(116, f"unknown inode {ino} (look it up first)")  # ESTALE
        return handle

    def _learn(self, handle: bytes, attr: tuple[int, ...] | None = None) -> int:
        ino = int(struct.unpack_from("<Q", handle)[0])
        self._handles[ino] = handle
        if attr is not None:
            self._attrs[ino] = (time.monotonic(), stat_from_tuple(attr))
        return ino

    def _dirty(self, *inos: int) -> None:
        for ino in inos:
            self._attrs.pop(ino, None)
            if self._ra is not None and self._ra[0] == ino:
                self._drop_readahead()

    def _names_changed(self) -> None:
        """A name was removed or moved: forget cached names and attributes (link counts)."""
        self._dentries.clear()
        self._attrs.clear()
        self._drop_readahead()

    def _drop_readahead(self) -> None:
        ra, self._ra = self._ra, None
        if ra is not None and not ra[4].done():
            ra[4].cancel()

    async def _take_readahead(self, ino: int, offset: int, n: int) -> list[bytes] | None:
        """The read-ahead's chunks when it is exactly this read (same file, offset and size:
        what a sequential reader asks for next) and fresh (no older than :data:`ATTR_TTL`,
        like the attribute cache); else ``None``."""
        ra, self._ra = self._ra, None
        if ra is None:
            return None
        ra_ino, ra_off, ra_len, started, task = ra
        if ra_ino != ino or ra_off != offset or ra_len != n:
            if not task.done():
                task.cancel()
            return None
        try:
            results = await task
        except (BurrowError, OSError, asyncio.CancelledError):
            return None  # read again the normal way (which reports any error)
        if time.monotonic() - started > ATTR_TTL:
            return None
        return [r[0] for r in results]

    def _start_readahead(self, ino: int, handle: bytes, offset: int, n: int) -> None:
        args = [
            (handle, pos, min(sp.MAX_CHUNK, offset + n - pos))
            for pos in range(offset, offset + n, sp.MAX_CHUNK)
        ]
        task = asyncio.get_running_loop().create_task(self._pipelined(Op.READ, args))
        task.add_done_callback(_retrieve)
        self._ra = (ino, offset, n, time.monotonic(), task)

    def cached_lookup(self, parent: int, name: str) -> int | None:
        """The inode of ``name`` when the name cache still knows it, else ``None``. Plain
        dict reads of immutable entries: safe from another thread (the sync wrapper uses it
        to answer without a round trip through the event loop's thread)."""
        cached = self._dentries.get((parent, name))
        if cached is not None and time.monotonic() - cached[0] < ATTR_TTL:
            return cached[1]
        return None

    def cached_getattr(self, ino: int) -> Stat | None:
        """Cached attributes of ``ino`` while fresh, else ``None`` (thread-safe, see above)."""
        cached = self._attrs.get(ino)
        if cached is not None and time.monotonic() - cached[0] < ATTR_TTL:
            return cached[1]
        return None

    # -- vfs operations --------------------------------------------------------------------
    async def lookup(self, parent: int, name: str) -> int:
        cached = self.cached_lookup(parent, name)
        if cached is not None:
            return cached
        handle, attr = await self.call(Op.LOOKUP, self._h(parent), name)
        ino = self._learn(handle, attr)
        self._dentries[(parent, name)] = (time.monotonic(), ino)
        return ino

    async def getattr(self, ino: int) -> Stat:
        cached = self.cached_getattr(ino)
        if cached is not None:
            return cached
        (attr,) = await self.call(Op.GETATTR, self._h(ino))
        st = stat_from_tuple(attr)
        self._attrs[ino] = (time.monotonic(), st)
        return st

    async def readdir(self, ino: int) -> list[DirEntry]:
        out: list[DirEntry] = []
        start = 0
        while True:
            entries, nxt = await self.call(Op.READDIR, self._h(ino), start)
            now = time.monotonic()
            for name, handle, attr in entries:
                child = self._learn(handle, attr)
                self._dentries[(ino, name)] = (now, child)
                out.append(DirEntry(name, child, attr[1] & 0o170000))
            if not nxt or nxt <= start:
                return out
            start = nxt

    async def _windowed(self, calls: list[Coroutine[Any, Any, _T]]) -> list[_T]:
        """Run chunk calls with at most :data:`WINDOW` in flight (a sliding window, so the
        pipe never drains between batches); results in order."""
        sem = asyncio.Semaphore(WINDOW)

        async def one(coro: Coroutine[Any, Any, _T]) -> _T:
            async with sem:
                return await coro

        return await asyncio.gather(*(one(c) for c in calls))

    async def _pipelined(self, op: Op, args: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The chunk calls ``op(*a) for a in args`` with :data:`WINDOW` in flight; results in
        order. Bulk fast path: plain futures in a sliding window, no task, semaphore or
        retry loop per chunk (those cost as much CPU per 255 KiB chunk as the chunk's
        decryption). A connection lost midway redoes the chunks through :meth:`call`, which
        reconnects (chunk reads and writes at fixed offsets can be repeated)."""
        try:
            return await self._pipelined_once(op, args)
        except ConnectionLost:
            if self._closed:
                raise
            return await self._windowed([self.call(op, *a) for a in args])

    async def _pipelined_once(self, op: Op, args: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        ch = await self._ensure()
        loop = asyncio.get_running_loop()
        pending = self._pending
        results: list[tuple[Any, ...]] = []
        window: collections.deque[tuple[int, asyncio.Future[sp.Frame]]] = collections.deque()
        it = iter(args)
        more = True
        try:
            while True:
                while more and len(window) < WINDOW:
                    a = next(it, None)
                    if a is None:
                        more = False
                        break
                    call_id = self._next
                    self._next = (call_id + 1) & 0xFFFFFFFF or 1
                    fut: asyncio.Future[sp.Frame] = loop.create_future()
                    pending[call_id] = fut
                    window.append((call_id, fut))
                    if op == Op.WRITE:  # the data goes to the channel as its own buffer
                        handle, off, data = a
                        ch.send_parts_nowait(
                            sp.encode_write_head(call_id, handle, off, len(data)), data
                        )
                    else:
                        ch.send_nowait(sp.encode_request(op, call_id, *a))
                if not window:
                    return results
                await ch.drain()
                call_id, fut = window.popleft()
                try:
                    async with asyncio.timeout(self.call_timeout):
                        frame = await fut
                except TimeoutError:
                    ch.abort()  # a link that died silently: the fallback reconnects
                    if self._ch is ch:
                        self._ch = None
                    raise ConnectionLost(f"no answer within {self.call_timeout} s") from None
                if frame.kind == Kind.ERROR:
                    code, message = frame.fields
                    raise error_for_errno(code, message)
                results.append(frame.fields)
        finally:
            for call_id, _ in window:
                pending.pop(call_id, None)

    async def read(self, ino: int, offset: int, n: int) -> bytes:
        if n <= sp.MAX_CHUNK:
            (data,) = await self.call(Op.READ, self._h(ino), offset, n)
            return bytes(data)
        handle = self._h(ino)
        parts: list[bytes] = []
        pos = offset
        ahead = await self._take_readahead(ino, offset, n)
        if ahead is not None:
            for data in ahead:
                parts.append(data)
                short = len(data) < min(sp.MAX_CHUNK, offset + n - pos)
                pos += len(data)
                if short:
                    return b"".join(parts)  # end of file
        args = [
            (handle, p, min(sp.MAX_CHUNK, offset + n - p))
            for p in range(pos, offset + n, sp.MAX_CHUNK)
        ]
        eof = False
        for a, (data,) in zip(args, await self._pipelined(Op.READ, args), strict=True):
            parts.append(data)
            if len(data) < a[2]:
                eof = True  # end of file
                break
        if not eof and not self._closed and n <= READAHEAD_MAX:
            # A large read: fetch what a sequential reader asks for next in the background.
            self._start_readahead(ino, handle, offset + n, n)
        return b"".join(parts)

    async def write(self, ino: int, offset: int, data: bytes | bytearray | memoryview) -> int:
        handle = self._h(ino)
        self._dirty(ino)
        view = memoryview(data)
        args = [
            (handle, offset + off, view[off : off + sp.MAX_CHUNK])
            for off in range(0, len(view), sp.MAX_CHUNK)
        ]
        total = sum(int(r[0]) for r in await self._pipelined(Op.WRITE, args))
        self._dirty(ino)
        return total

    async def _make(self, op: Op, parent: int, *args: Any) -> int:
        handle, attr = await self.call(op, self._h(parent), *args)
        self._dirty(parent)
        return self._learn(handle, attr)

    async def create(self, parent: int, name: str, mode: int) -> int:
        return await self._make(Op.CREATE, parent, name, mode & 0o7777)

    async def mkdir(self, parent: int, name: str, mode: int) -> int:
        return await self._make(Op.MKDIR, parent, name, mode & 0o7777)

    async def mknod(self, parent: int, name: str, mode: int, rdev: int = 0) -> int:
        return await self._make(Op.MKNOD, parent, name, mode & 0o177777, rdev)

    async def symlink(self, parent: int, name: str, target: str) -> int:
        return await self._make(Op.SYMLINK, parent, name, target)

    async def readlink(self, ino: int) -> str:
        (target,) = await self.call(Op.READLINK, self._h(ino))
        return str(target)

    async def link(self, ino: int, new_parent: int, new_name: str) -> None:
        (attr,) = await self.call(Op.LINK, self._h(ino), self._h(new_parent), new_name)
        self._dirty(new_parent)
        self._attrs[ino] = (time.monotonic(), stat_from_tuple(attr))

    async def unlink(self, parent: int, name: str) -> None:
        await self.call(Op.UNLINK, self._h(parent), name)
        self._names_changed()

    async def rmdir(self, parent: int, name: str) -> None:
        await self.call(Op.RMDIR, self._h(parent), name)
        self._names_changed()

    async def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        await self.call(
            Op.RENAME, self._h(old_parent), old_name, self._h(new_parent), new_name, flags
        )
        self._names_changed()

    async def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> Stat:
        mask = 0
        for bit, value in (
            (sp.SET_MODE, mode),
            (sp.SET_UID, uid),
            (sp.SET_GID, gid),
            (sp.SET_SIZE, size),
            (sp.SET_ATIME, atime_ns),
            (sp.SET_MTIME, mtime_ns),
        ):
            if value is not None:
                mask |= bit
        if size is not None and size < 0:
            raise error_for_errno(22, "negative size")
        (attr,) = await self.call(
            Op.SETATTR,
            self._h(ino),
            mask,
            (mode or 0) & 0o7777,
            uid or 0,
            gid or 0,
            size or 0,
            atime_ns or 0,
            mtime_ns or 0,
        )
        st = stat_from_tuple(attr)
        self._dirty(ino)  # (drops a read-ahead of this file: its size may have changed)
        self._attrs[ino] = (time.monotonic(), st)
        return st

    async def listxattr(self, ino: int) -> list[str]:
        (names,) = await self.call(Op.LISTXATTR, self._h(ino))
        return list(names)

    async def getxattr(self, ino: int, name: str) -> bytes:
        (value,) = await self.call(Op.GETXATTR, self._h(ino), name)
        return bytes(value)  # a copy: the reply buffer is not kept

    async def setxattr(self, ino: int, name: str, value: bytes, flags: int = 0) -> None:
        await self.call(Op.SETXATTR, self._h(ino), name, value, flags)

    async def removexattr(self, ino: int, name: str) -> None:
        await self.call(Op.REMOVEXATTR, self._h(ino), name)

    async def statfs(self) -> StatFS:
        (t,) = await self.call(Op.STATFS)
        return StatFS(*t)

    async def sync(self) -> None:
        await self.call(Op.SYNC)


class ShareFilesystem(Filesystem):
    """A remote export as a synchronous ``vfs.Filesystem`` (an event loop runs in a thread)."""

    def __init__(self, client: AsyncShareClient, *, readonly: bool | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="burrow-share-client", daemon=True
        )
        self._thread.start()
        self._client = client
        self._closed = False
        try:
            self._run(client._ensure())
        except BaseException:
            self._stop()
            raise
        self.root_ino = client.root_ino
        self.readonly = (
            (not client.writable) if readonly is None else (readonly or not client.writable)
        )

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._closed:
            coro.close()
            raise ConnectionLost("the share filesystem is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _w(self) -> None:
        if self.readonly:
            from burrow.errors import ReadOnly

            raise ReadOnly("the share is mounted read-only")

    @property
    def client(self) -> AsyncShareClient:
        return self._client

    # lookup/getattr answer from the client's caches in the caller's thread when they can:
    # a walk over a 10k-file tree is mostly cache hits, and each hop to the loop's thread
    # and back costs more than the lookup itself.
    def lookup(self, parent: int, name: str) -> int:
        if self._closed:
            raise ConnectionLost("the share filesystem is closed")
        cached = self._client.cached_lookup(parent, name)
        if cached is not None:
            return cached
        return self._run(self._client.lookup(parent, name))

    def getattr(self, ino: int) -> Stat:
        if self._closed:
            raise ConnectionLost("the share filesystem is closed")
        cached = self._client.cached_getattr(ino)
        if cached is not None:
            return cached
        return self._run(self._client.getattr(ino))

    def readdir(self, ino: int) -> Iterator[DirEntry]:
        return iter(self._run(self._client.readdir(ino)))

    def read(self, ino: int, offset: int, n: int) -> bytes:
        return self._run(self._client.read(ino, offset, n))

    def readlink(self, ino: int) -> str:
        return self._run(self._client.readlink(ino))

    def listxattr(self, ino: int) -> list[str]:
        return self._run(self._client.listxattr(ino))

    def getxattr(self, ino: int, name: str) -> bytes:
        return self._run(self._client.getxattr(ino, name))

    def statfs(self) -> StatFS:
        return self._run(self._client.statfs())

    def info(self) -> FsInfo:
        c = self._client
        return FsInfo(
            fstype="share",
            extra={"url": f"burrow://{c.host}:{c.port}/{c.export}", "writable": c.writable},
        )

    def write(self, ino: int, offset: int, data: bytes | bytearray | memoryview) -> int:
        self._w()
        return self._run(self._client.write(ino, offset, data))

    def create(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0) -> int:
        self._w()
        return self._run(self._client.create(parent, name, mode))

    def mkdir(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0) -> int:
        self._w()
        return self._run(self._client.mkdir(parent, name, mode))

    def mknod(
        self, parent: int, name: str, mode: int, rdev: int = 0, uid: int = 0, gid: int = 0
    ) -> int:
        self._w()
        return self._run(self._client.mknod(parent, name, mode, rdev))

    def symlink(self, parent: int, name: str, target: str, uid: int = 0, gid: int = 0) -> int:
        self._w()
        return self._run(self._client.symlink(parent, name, target))

    def link(self, ino: int, new_parent: int, new_name: str) -> None:
        self._w()
        self._run(self._client.link(ino, new_parent, new_name))

    def unlink(self, parent: int, name: str) -> None:
        self._w()
        self._run(self._client.unlink(parent, name))

    def rmdir(self, parent: int, name: str) -> None:
        self._w()
        self._run(self._client.rmdir(parent, name))

    def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        self._w()
        self._run(self._client.rename(old_parent, old_name, new_parent, new_name, flags))

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
    ) -> Stat:
        self._w()
        return self._run(
            self._client.setattr(
                ino, mode=mode, uid=uid, gid=gid, size=size, atime_ns=atime_ns, mtime_ns=mtime_ns
            )
        )

    def setxattr(self, ino: int, name: str, value: bytes, flags: int = 0) -> None:
        self._w()
        self._run(self._client.setxattr(ino, name, value, flags))

    def removexattr(self, ino: int, name: str) -> None:
        self._w()
        self._run(self._client.removexattr(ino, name))

    def sync(self) -> None:
        if not self.readonly:
            self._run(self._client.sync())

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._client.aclose())
        finally:
            self._closed = True
            self._stop()


def _resolve(
    url: str,
    key: str | os.PathLike[str] | KeyPair | None,
    server_key: str | bytes | None,
    known_servers: str | os.PathLike[str] | None,
    tofu: bool = False,
) -> tuple[str, int, str, KeyPair, bytes]:
    host, port, export, _ = parse_url(url)
    pair = resolve_private_key(key)
    hostport = f"{host}:{port}"
    known = KnownServers(known_servers)
    skey = resolve_server_key(hostport, server_key, known=known)
    if skey is None and tofu:
        # Trust on first use, only when asked: learn the key once, pin it, warn loudly.
        from burrow.share.channel import fetch_server_key
        from burrow.share.keys import encode_key

        skey = asyncio.run(fetch_server_key(host, port))
        known.add(hostport, skey)
        import sys

        print(
            f"burrow: trusting {hostport} on first use; pinned key {encode_key(skey)} "
            f"in {known.path}",
            file=sys.stderr,
        )
    if skey is None:
        raise UsageError(
            f"no public key for server {hostport}: pass --server-key, set BURROW_SERVER_KEY "
            "or add it to the known-servers file"
        )
    return host, port, export, pair, skey


async def connect_async(
    url: str,
    *,
    key: str | os.PathLike[str] | KeyPair | None = None,
    server_key: str | bytes | None = None,
    known_servers: str | os.PathLike[str] | None = None,
    psk: bytes | None = None,
    retries: int = 3,
) -> AsyncShareClient:
    """Connect to ``burrow://host:port/export`` and return the async client."""
    host, port, export, pair, skey = _resolve(url, key, server_key, known_servers)
    client = AsyncShareClient(
        host, port, export, key=pair, server_key=skey, psk=psk, retries=retries
    )
    await client._ensure()
    return client


def connect(
    url: str,
    *,
    key: str | os.PathLike[str] | KeyPair | None = None,
    server_key: str | bytes | None = None,
    known_servers: str | os.PathLike[str] | None = None,
    psk: bytes | None = None,
    retries: int = 3,
    readonly: bool | None = None,
    tofu: bool = False,
) -> ShareFilesystem:
    """Connect to ``burrow://host:port/export``; a ``vfs.Filesystem`` (close it when done).

    ``key``: private key file (default ``BURROW_KEY``); ``server_key``: base64 or raw
    (default ``BURROW_SERVER_KEY``, then the known-servers file). ``tofu=True``: when none
    of those knows the server, ask it for its key and pin it (trust on first use).
    """
    host, port, export, pair, skey = _resolve(url, key, server_key, known_servers, tofu)
    client = AsyncShareClient(
        host, port, export, key=pair, server_key=skey, psk=psk, retries=retries
    )
    return ShareFilesystem(client, readonly=readonly)


def open_url(
    url: str,
    *,
    key: str | os.PathLike[str] | KeyPair | None = None,
    server_key: str | bytes | None = None,
    writable: bool = False,
    readonly: bool | None = None,
    known_servers: str | os.PathLike[str] | None = None,
    tofu: bool = False,
) -> ShareFilesystem:
    """For the CLI and ``burrow.disk.open_target``: ``burrow://host:port/export[/...]`` as a
    filesystem (read-only unless ``writable``); keys from ``BURROW_KEY`` /
    ``BURROW_SERVER_KEY`` / the known-servers file when not given. The path after the export
    is left to the caller."""
    ro = (not writable) if readonly is None else readonly
    return connect(
        url, key=key, server_key=server_key, known_servers=known_servers, readonly=ro, tofu=tofu
    )
