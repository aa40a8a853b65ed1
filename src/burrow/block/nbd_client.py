"""NBD client engine: a remote NBD export as a ``BlockDevice``.

``open_nbd_uri("nbd://host:port/export")`` or ``"nbd+unix:///export?socket=PATH"`` connects
with a blocking socket and drives :class:`burrow.proto.nbd.NBDClientConnection`. The device is
thread-safe: requests from several threads are pipelined on the connection and their replies
routed back by cookie (see ``NBDDevice._request``). Structured replies and ``base:allocation``
are negotiated when the server offers them, so reads skip holes and ``extents`` reports the
server's allocation map. ``nbds://`` and ``nbds+unix://`` use STARTTLS (``tls_ca``/system
trust store to verify the server).
"""

from __future__ import annotations

import itertools
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from burrow.block.device import BlockDevice, Extent, ExtentFlags
from burrow.errors import (
    ConnectionLost,
    LocalProtocolError,
    RemoteProtocolError,
    Unsupported,
    UsageError,
    error_for_errno,
)
from burrow.proto.nbd import (
    BlockStatus,
    HandshakeDone,
    NBDClientConnection,
    ReadData,
    ReadHole,
    ReplyDone,
    StartTLS,
)
from burrow.proto.nbd.constants import (
    BASE_ALLOCATION,
    CMD_NAMES,
    NBD_CMD_BLOCK_STATUS,
    NBD_CMD_CACHE,
    NBD_CMD_DISC,
    NBD_CMD_FLAG_FAST_ZERO,
    NBD_CMD_FLAG_FUA,
    NBD_CMD_FLAG_NO_HOLE,
    NBD_CMD_FLUSH,
    NBD_CMD_READ,
    NBD_CMD_TRIM,
    NBD_CMD_WRITE,
    NBD_CMD_WRITE_ZEROES,
    NBD_ENOTSUP,
    NBD_FLAG_CAN_MULTI_CONN,
    NBD_FLAG_READ_ONLY,
    NBD_FLAG_SEND_CACHE,
    NBD_FLAG_SEND_FAST_ZERO,
    NBD_FLAG_SEND_FLUSH,
    NBD_FLAG_SEND_FUA,
    NBD_FLAG_SEND_TRIM,
    NBD_FLAG_SEND_WRITE_ZEROES,
)

__all__ = ["NBDDevice", "open_nbd_uri", "parse_nbd_uri"]

RECV_SIZE = 256 * 1024
BLOCK_STATUS_CHUNK = 1 << 30  # ask the server about at most this much at once


def parse_nbd_uri(uri: str) -> dict[str, Any]:
    """Split an NBD URI (the NBD URI spec's forms) into ``tls``, ``host``, ``port``, ``socket``
    and ``export``."""
    parts = urlsplit(uri)
    scheme = parts.scheme
    if scheme not in ("nbd", "nbds", "nbd+unix", "nbds+unix"):
        raise UsageError(f"not an NBD URI: {uri!r}")
    tls = scheme.startswith("nbds")
    export = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    query = parse_qs(parts.query)
    if scheme.endswith("+unix"):
        sock = query.get("socket", [""])[0]
        if not sock:
            raise UsageError(f"{uri!r}: nbd+unix URIs need ?socket=PATH")
        return {"tls": tls, "socket": sock, "host": None, "port": None, "export": export}
    host = parts.hostname or "localhost"
    try:
        port = parts.port or 10809
    except ValueError:
        raise UsageError(f"{uri!r}: bad port") from None
    return {"tls": tls, "socket": None, "host": host, "port": port, "export": export}


class _Waiter:
    """One request in flight: where its data goes and how it ended."""

    __slots__ = ("done", "error", "extents", "into", "message", "offset")

    def __init__(self, offset: int, into: memoryview | None) -> None:
        self.offset = offset
        self.into = into
        self.done = False
        self.error = 0
        self.message = ""
        self.extents: list[tuple[int, int]] = []

    def finished(self) -> bool:
        return self.done


class NBDDevice(BlockDevice):
    """A remote NBD export. Thread-safe: requests from several threads are pipelined on the
    one connection (the server may answer them in any order)."""

    def __init__(
        self,
        sock: socket.socket,
        export: str = "",
        *,
        readonly: bool = True,
        tls_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self._sock: socket.socket = sock
        self._send_lock = threading.Lock()  # one sender at a time, in data_to_send order
        self._cv = threading.Condition()  # guards the state machine, waiters and _reading
        self._waiters: dict[int, _Waiter] = {}
        self._reading = False
        self._broken: BaseException | None = None
        self._cookies = itertools.count(1)
        self._conn = NBDClientConnection(export, tls=tls_context is not None)
        self.uri = ""
        try:
            done = self._handshake(tls_context, server_hostname)
        except BaseException:
            sock.close()
            raise
        self.info = done
        self._size = done.size
        self._flags = done.flags
        # We ask for NBD_INFO_BLOCK_SIZE, so we must honour the minimum block size: every
        # request is aligned to it (partial blocks are read-modify-written under _rmw_lock).
        self._min_block = max(1, done.min_block)
        self._block_size = max(512, min(done.preferred_block, 65536), self._min_block)
        payload = max(self._min_block, min(done.max_payload, 32 * 1024 * 1024))
        self._max_payload = payload - payload % self._min_block
        self._rmw_lock = threading.RLock()
        remote_ro = bool(done.flags & NBD_FLAG_READ_ONLY)
        self._readonly = readonly or remote_ro
        # Context ids are opaque: 0 is a valid id (qemu-nbd uses it), so None means "none".
        self._context: int | None = done.contexts.get(BASE_ALLOCATION)
        self.can_fua = bool(done.flags & NBD_FLAG_SEND_FUA)
        self.can_flush = True
        self.can_discard = bool(done.flags & NBD_FLAG_SEND_TRIM) and not self._readonly
        self.can_write_zeroes = bool(done.flags & NBD_FLAG_SEND_WRITE_ZEROES) and not self._readonly
        self.can_extents = self._context is not None
        self.can_multi_conn = bool(done.flags & NBD_FLAG_CAN_MULTI_CONN)
        self.can_cache = bool(done.flags & NBD_FLAG_SEND_CACHE)

    # -- plumbing ------------------------------------------------------------------------------
    def _send(self) -> None:
        data = self._conn.data_to_send()
        if data:
            try:
                self._sock.sendall(data)
            except OSError as exc:
                raise ConnectionLost(f"NBD connection lost: {exc}") from exc

    def _recv(self) -> bytes:
        try:
            data = self._sock.recv(RECV_SIZE)
        except OSError as exc:
            raise ConnectionLost(f"NBD connection lost: {exc}") from exc
        if not data:
            raise ConnectionLost("NBD server closed the connection")
        return data

    def _handshake(
        self, tls_context: ssl.SSLContext | None, server_hostname: str | None
    ) -> HandshakeDone:
        while True:
            self._send()
            for ev in self._conn.receive_data(self._recv()):
                if isinstance(ev, HandshakeDone):
                    self._send()
                    return ev
                if isinstance(ev, StartTLS):
                    assert tls_context is not None
                    self._send()
                    try:
                        self._sock = tls_context.wrap_socket(
                            self._sock, server_hostname=server_hostname
                        )
                    except (ssl.SSLError, OSError) as exc:
                        raise RemoteProtocolError(f"NBD TLS handshake failed: {exc}") from exc
                    self._conn.tls_established()

    def _request(
        self,
        cmd: int,
        offset: int = 0,
        length: int = 0,
        flags: int = 0,
        data: bytes | bytearray | memoryview | None = None,
        into: memoryview | None = None,
    ) -> list[tuple[int, int]]:
        """Send one request and wait for its reply; fill ``into`` for reads; return block
        status extents.

        Several threads may have requests in flight on the one connection: senders take turns
        on ``_send_lock``; while waiting, one thread at a time (the "reader") receives and
        routes every reply to its waiter, then hands the job on when its own reply is in.
        The reader never needs the send lock, so a large WRITE being sent cannot stop the
        replies from being drained (which could otherwise deadlock against a throttling
        server)."""
        if self._closed:
            raise ConnectionLost("NBD device is closed")
        waiter = _Waiter(offset, into)
        with self._send_lock:
            with self._cv:
                self._check_broken()
                cookie = next(self._cookies)
                self._waiters[cookie] = waiter
                self._conn.send_request(cmd, cookie, offset, length, flags, data)
                out = self._conn.data_to_send()
            try:
                self._sock.sendall(out)
            except OSError as exc:
                self._fail(ConnectionLost(f"NBD connection lost: {exc}"))
        self._wait(waiter)
        if waiter.error:
            if waiter.error == NBD_ENOTSUP and flags & NBD_CMD_FLAG_FAST_ZERO:
                raise Unsupported("fast-zero", waiter.message)
            # Servers may send no message (nbdkit, qemu-nbd): say what failed and the errno's
            # text, so the user's one-line error is not just "NBD server".
            what = f"NBD server: {CMD_NAMES.get(cmd, cmd)} of {length} bytes at {offset} failed"
            detail = waiter.message or os.strerror(waiter.error)
            raise error_for_errno(waiter.error, f"{what}: {detail}")
        return waiter.extents

    def _check_broken(self) -> None:
        if self._broken is not None:
            raise ConnectionLost(f"NBD connection is unusable: {self._broken}")

    def _fail(self, exc: BaseException) -> None:
        with self._cv:
            if self._broken is None:
                self._broken = exc
            self._cv.notify_all()

    def _wait(self, waiter: _Waiter) -> None:
        with self._cv:
            while not waiter.done:
                self._check_broken()
                if not self._reading:
                    self._reading = True
                    break
                self._cv.wait()
            else:
                return
        try:
            while True:
                try:
                    data = self._recv()
                except ConnectionLost as exc:
                    self._fail(exc)
                    raise
                with self._cv:
                    try:
                        events = self._conn.receive_data(data)
                    except RemoteProtocolError as exc:
                        self._broken = exc
                        self._cv.notify_all()
                        raise
                    finished = False
                    for ev in events:
                        finished |= self._route(ev)
                    if finished:
                        self._cv.notify_all()
                    if waiter.finished():  # (a call: mypy narrows attributes across the loop)
                        return
        finally:
            with self._cv:
                self._reading = False
                self._cv.notify_all()

    def _route(self, ev: object) -> bool:
        """Deliver one reply event to its waiter; True when a request finished."""
        if isinstance(ev, ReadData):
            w = self._waiters.get(ev.cookie)
            if w is not None and w.into is not None:
                start = ev.offset - w.offset
                w.into[start : start + len(ev.data)] = ev.data
        elif isinstance(ev, ReadHole):
            w = self._waiters.get(ev.cookie)
            if w is not None and w.into is not None:
                start = ev.offset - w.offset
                w.into[start : start + ev.length] = bytes(ev.length)
        elif isinstance(ev, BlockStatus):
            w = self._waiters.get(ev.cookie)
            if w is not None and ev.context_id == self._context:
                w.extents = ev.extents
        elif isinstance(ev, ReplyDone):
            w = self._waiters.pop(ev.cookie, None)
            if w is not None:
                w.error = ev.error
                w.message = ev.message
                w.done = True
                return True
        return False

    # -- BlockDevice hooks -------------------------------------------------------------------
    def _aligned(self, offset: int, end: int) -> bool:
        """Whether ``[offset, end)`` may be sent as is (the export's end counts as aligned)."""
        mb = self._min_block
        return mb == 1 or (offset % mb == 0 and (end % mb == 0 or end == self._size))

    def _block_span(self, pos: int) -> tuple[int, int]:
        """The minimum-size block holding byte ``pos`` (cut at the end of the export)."""
        start = pos - pos % self._min_block
        return start, min(self._size, start + self._min_block)

    def _preadinto(self, buf: memoryview, offset: int) -> None:
        end = offset + len(buf)
        if self._aligned(offset, end):
            self._read_aligned(buf, offset)
            return
        pos = offset
        while pos < end:
            b0, b1 = self._block_span(pos)
            if pos == b0 and (end >= b1):
                mid = b0 + (end - b0) // self._min_block * self._min_block
                if end == self._size:
                    mid = end
                self._read_aligned(buf[pos - offset : mid - offset], pos)
                pos = mid
                continue
            block = bytearray(b1 - b0)
            self._read_aligned(memoryview(block), b0)
            take = min(end, b1) - pos
            buf[pos - offset : pos - offset + take] = block[pos - b0 : pos - b0 + take]
            pos += take

    def _read_aligned(self, buf: memoryview, offset: int) -> None:
        pos, end = 0, len(buf)
        step = self._max_payload
        while pos < end:
            n = min(step, end - pos)
            self._request(NBD_CMD_READ, offset + pos, n, into=buf[pos : pos + n])
            pos += n

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        flags = NBD_CMD_FLAG_FUA if fua and self.can_fua else 0
        end = offset + len(data)
        if self._min_block == 1:
            self._write_aligned(data, offset, flags)
            return
        with self._rmw_lock:  # no aligned write may slip between a partial block's read and write
            pos = offset
            while pos < end:
                b0, b1 = self._block_span(pos)
                if pos == b0 and end >= b1:
                    mid = b0 + (end - b0) // self._min_block * self._min_block
                    if end == self._size:
                        mid = end
                    self._write_aligned(data[pos - offset : mid - offset], pos, flags)
                    pos = mid
                    continue
                block = bytearray(b1 - b0)
                self._read_aligned(memoryview(block), b0)
                take = min(end, b1) - pos
                block[pos - b0 : pos - b0 + take] = data[pos - offset : pos - offset + take]
                self._write_aligned(memoryview(block), b0, flags)
                pos += take

    def _write_aligned(self, data: memoryview, offset: int, flags: int) -> None:
        pos, end = 0, len(data)
        while pos < end:
            n = min(self._max_payload, end - pos)
            self._request(NBD_CMD_WRITE, offset + pos, n, flags, data[pos : pos + n])
            pos += n

    def _inner(self, n: int, offset: int) -> tuple[int, int]:
        """The aligned part ``[start, end)`` of a range (empty when ``start >= end``)."""
        mb = self._min_block
        start = -(-offset // mb) * mb
        end = offset + n
        if end != self._size:
            end -= end % mb
        return start, end

    def _flush(self) -> None:
        if self._flags & NBD_FLAG_SEND_FLUSH:
            self._request(NBD_CMD_FLUSH)

    def _discard(self, n: int, offset: int) -> None:
        start, end = self._inner(n, offset)  # advisory: partial blocks are left alone
        if end > start:
            self._ranged(NBD_CMD_TRIM, end - start, start, 0)

    def _ranged(self, cmd: int, n: int, offset: int, flags: int) -> None:
        if self._min_block > 1 and cmd != NBD_CMD_CACHE:
            with self._rmw_lock:  # a partial block's read-modify-write must not undo this
                self._ranged_unlocked(cmd, n, offset, flags)
        else:
            self._ranged_unlocked(cmd, n, offset, flags)

    def _ranged_unlocked(self, cmd: int, n: int, offset: int, flags: int) -> None:
        pos, end = offset, offset + n
        step = 1 << 30
        while pos < end:
            take = min(step, end - pos)
            self._request(cmd, pos, take, flags)
            pos += take

    def _write_zeroes(self, n: int, offset: int, may_unmap: bool) -> None:
        flags = 0 if may_unmap else NBD_CMD_FLAG_NO_HOLE
        if self._aligned(offset, offset + n):
            self._ranged(NBD_CMD_WRITE_ZEROES, n, offset, flags)
            return
        start, end = self._inner(n, offset)
        if end <= start:  # inside one or two partial blocks
            self._pwrite(memoryview(bytes(n)), offset, False)
            return
        if start > offset:
            self._pwrite(memoryview(bytes(start - offset)), offset, False)
        self._ranged(NBD_CMD_WRITE_ZEROES, end - start, start, flags)
        if offset + n > end:
            self._pwrite(memoryview(bytes(offset + n - end)), end, False)

    def write_zeroes(
        self, n: int, offset: int, *, may_unmap: bool = False, fua: bool = False, fast: bool = False
    ) -> None:
        if fast and self.can_write_zeroes:
            self._check_writable()
            if not self._flags & NBD_FLAG_SEND_FAST_ZERO:
                raise Unsupported("fast-zero", "the server does not offer fast zeroing")
            if not self._aligned(offset, offset + n):
                raise Unsupported("fast-zero", "the range is not aligned to the block size")
            flags = NBD_CMD_FLAG_FAST_ZERO | (0 if may_unmap else NBD_CMD_FLAG_NO_HOLE)
            if fua and self.can_fua:
                flags |= NBD_CMD_FLAG_FUA
            if n:
                self._ranged(NBD_CMD_WRITE_ZEROES, n, offset, flags)
            if fua and not self.can_fua:
                self._flush()
            return
        super().write_zeroes(n, offset, may_unmap=may_unmap, fua=fua, fast=fast)

    def cache(self, n: int, offset: int) -> None:
        super().cache(n, offset)
        if n and self.can_cache:
            start = offset - offset % self._min_block
            end = min(self._size, -(-(offset + n) // self._min_block) * self._min_block)
            self._ranged(NBD_CMD_CACHE, end - start, start, 0)

    def _extents(self, n: int, offset: int) -> Iterator[Extent]:
        if self._context is None:
            yield Extent(offset, n, ExtentFlags.DATA)
            return
        pos, end = offset, offset + n
        mb = self._min_block
        while pos < end:
            # Ask from the block holding pos, for whole blocks; skip what lies before pos.
            at = pos - pos % mb
            ask_end = min(self._size, -(-min(end, at + BLOCK_STATUS_CHUNK) // mb) * mb)
            got = self._request(NBD_CMD_BLOCK_STATUS, at, ask_end - at)
            if not got or at + sum(length for length, _ in got) <= pos:
                raise RemoteProtocolError("NBD: block status reply without extents past the start")
            for length, flags in got:
                if at + length <= pos:
                    at += length
                    continue
                take = min(at + length, end) - pos
                if take <= 0:
                    raise RemoteProtocolError("NBD: block status extent of length 0")
                yield Extent(pos, take, ExtentFlags(flags & 3))
                at += length
                pos += take
                if pos >= end:
                    return

    def _close(self) -> None:
        try:
            with self._send_lock, self._cv:
                if self._broken is None:
                    self._conn.send_request(NBD_CMD_DISC, 0)
                    self._send()
        except (ConnectionLost, RemoteProtocolError, LocalProtocolError):
            pass
        finally:
            self._sock.close()

    def close(self) -> None:
        if self._closed:
            return
        try:
            if not self._readonly:
                self._flush()
        finally:
            self._close()
            self._closed = True

    def statistics(self) -> dict[str, object]:
        return {
            "uri": self.uri,
            "flags": self._flags,
            "structured_replies": self.info.structured_replies,
            "contexts": dict(self.info.contexts),
        }


def open_nbd_uri(
    uri: str,
    *,
    readonly: bool = True,
    timeout: float | None = 30.0,
    tls_ca: str | None = None,
) -> BlockDevice:
    """Connect to the export named by ``uri`` and return it as a ``BlockDevice``."""
    target = parse_nbd_uri(uri)
    try:
        if target["socket"]:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(target["socket"])
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection((target["host"], target["port"]), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        raise ConnectionLost(f"cannot connect to {uri}: {exc.strerror or exc}") from exc
    ctx: ssl.SSLContext | None = None
    if target["tls"]:
        ctx = ssl.create_default_context(cafile=tls_ca)
        if target["socket"]:
            ctx.check_hostname = False
    dev = NBDDevice(
        sock,
        target["export"],
        readonly=readonly,
        tls_context=ctx,
        server_hostname=target["host"] or None,
    )
    dev.uri = uri
    return dev
