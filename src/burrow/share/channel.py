"""asyncio pumps around the sans-IO secure channel (:mod:`burrow.proto.securechannel`).

Why ``asyncio.Protocol`` and not streams: bulk transfers move 64 KiB records at hundreds of
MB/s, and ``data_received`` hands bytes straight to the record layer without the extra copies
and wake-ups of ``StreamReader``. Flow control is explicit both ways: reading pauses while the
application has not consumed ``max_queued`` bytes, writers wait while the transport's buffer is
above its high-water mark.

Server side, every connection gets a handshake deadline; a process-wide :class:`HandshakeLoad`
decides when the server is "under load", which switches on WireGuard's cookie replies and the
per-source rate limit (see ``docs/secure-channel.md``).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from typing import Any, cast

from burrow.errors import (
    BurrowError,
    ConnectionLost,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from burrow.proto.noise import KeyPair
from burrow.proto.securechannel import (
    ChannelConfig,
    CloseReceived,
    CookieChecker,
    HandshakeComplete,
    InitiationReceived,
    Message,
    PeerInfo,
    RateLimiter,
    SecureChannel,
    key_query_record,
    parse_key_info,
)

__all__ = [
    "Channel",
    "ChannelServer",
    "HandshakeLoad",
    "fetch_server_key",
    "open_channel",
    "start_server",
]

HANDSHAKE_TIMEOUT = 10.0
MAX_QUEUED = 8 << 20


def _source_bytes(peername: Any) -> bytes:
    try:
        return ipaddress.ip_address(peername[0]).packed
    except (TypeError, ValueError, IndexError):
        return b""


class HandshakeLoad:
    """Process-wide handshake pressure: "under load" when more than ``max_rate`` handshakes
    started in the last second, or more than ``max_pending`` are unfinished."""

    def __init__(self, max_rate: float = 100.0, max_pending: int = 64) -> None:
        self.max_rate = max_rate
        self.max_pending = max_pending
        self.pending = 0
        self._starts: collections.deque[float] = collections.deque()

    def started(self, now: float) -> None:
        self._starts.append(now)
        self.pending += 1

    def finished(self) -> None:
        self.pending = max(0, self.pending - 1)

    def __call__(self, now: float) -> bool:
        while self._starts and now - self._starts[0] > 1.0:
            self._starts.popleft()
        return len(self._starts) > self.max_rate or self.pending > self.max_pending


class Channel(asyncio.Protocol):
    """One end of an open secure channel: ``await recv()`` messages, ``await send(data)``.

    Messages are at most ``MAX_PAYLOAD`` bytes; :meth:`send_stream` splits larger data into
    records. ``recv`` raises :class:`ConnectionLost` after the peer's close or a lost link,
    or the :class:`RemoteProtocolError` that ended the channel.
    """

    def __init__(
        self,
        sc: SecureChannel,
        *,
        max_queued: int = MAX_QUEUED,
        on_initiation: Callable[[Channel, InitiationReceived], bytes] | None = None,
    ) -> None:
        self.sc = sc
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._max_queued = max_queued
        self._reading_paused = False
        # Everyone waiting for news (recv() in a reader task, close() at the same time):
        # each gets its own future, all are woken. (A single shared slot let close() and a
        # reader overwrite each other's future, and close() then sat out its 5 s timeout.)
        self._waiters: list[asyncio.Future[None]] = []
        self._write_ok = asyncio.Event()
        self._write_ok.set()
        self._error: BaseException | None = None
        self._eof = False
        self.handshake_done: asyncio.Future[bytes] = self._loop.create_future()
        self._on_initiation = on_initiation
        self.peername: Any = None

    # -- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports implement the interface without
        # subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.peername = transport.get_extra_info("peername")
        if not self.sc.initiator:
            self.sc.source = _source_bytes(self.peername)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.set_write_buffer_limits(high=4 << 20)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.sc.receive_data(data, self._loop.time())
            for event in events:
                if isinstance(event, Message):
                    self._queue.append(event.data)
                    self._queued += len(event.data)
                elif isinstance(event, InitiationReceived):
                    payload = self._on_initiation(self, event) if self._on_initiation else b""
                    self.sc.accept(self._loop.time(), payload)
                    if not self.handshake_done.done():
                        self.handshake_done.set_result(event.payload)
                elif isinstance(event, HandshakeComplete):
                    if not self.handshake_done.done():
                        self.handshake_done.set_result(event.payload)
                elif isinstance(event, CloseReceived):
                    self._eof = True
                    if not self.sc.closed:
                        self.sc.close()  # answer the close, then hang up
            self._flush()
            if self._eof and self.transport is not None:
                self.transport.close()
        except BurrowError as exc:
            self._die(exc)
            return
        if self._queued > self._max_queued and not self._reading_paused and self.transport:
            self.transport.pause_reading()
            self._reading_paused = True
        self._wake()

    def eof_received(self) -> bool | None:
        try:
            self.sc.receive_data(b"", self._loop.time())
        except BurrowError as exc:
            self._die(exc)
        self._eof = True
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._error is None and not self._eof:
            self._error = ConnectionLost(f"connection lost: {exc}" if exc else "connection lost")
        if not self.handshake_done.done():
            self.handshake_done.set_exception(
                self._error or ConnectionLost("closed during the handshake")
            )
            self.handshake_done.exception()  # mark retrieved
        self._eof = True
        self._write_ok.set()
        self._wake()

    def pause_writing(self) -> None:
        self._write_ok.clear()

    def resume_writing(self) -> None:
        self._write_ok.set()

    # -- internals -------------------------------------------------------------------
    def _flush(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        records = self.sc.take_records()
        if len(records) == 1:
            self.transport.write(records[0])
        elif records:
            # One write per record: with an empty buffer each goes straight to send(2);
            # writelines() would first join them into one more copy (Python 3.11).
            write = self.transport.write
            for record in records:
                write(record)

    def _die(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        if not self.handshake_done.done():
            self.handshake_done.set_exception(exc)
            self.handshake_done.exception()
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    async def _wait(self) -> None:
        """Until the next :meth:`_wake` (a message, the end, an error)."""
        fut = self._loop.create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    # -- public API --------------------------------------------------------------------
    @property
    def remote_static(self) -> bytes | None:
        return self.sc.remote_static

    @property
    def peer(self) -> PeerInfo | None:
        return self.sc.peer

    def source_address(self) -> str:
        return str(self.peername[0]) if self.peername else "?"

    async def recv(self) -> bytes:
        """The next message; :class:`ConnectionLost` at the end."""
        while not self._queue:
            if self._error is not None:
                raise self._error
            if self._eof:
                raise ConnectionLost("the peer closed the channel")
            await self._wait()
        data = self._queue.popleft()
        self._queued -= len(data)
        if self._reading_paused and self._queued <= self._max_queued // 2 and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def _check_send(self) -> None:
        if self._error is not None:
            raise self._error
        if self.transport is None or self.transport.is_closing():
            raise ConnectionLost("the channel is closed")

    def send_nowait(self, data: bytes | bytearray | memoryview) -> None:
        """Queue one message without waiting for buffer space."""
        self._check_send()
        self.sc.send(data, self._loop.time())
        self._flush()

    def send_parts_nowait(
        self, head: bytes | bytearray, body: bytes | bytearray | memoryview
    ) -> None:
        """Queue the message ``head + body`` without copying ``body`` into it (bulk writes)."""
        self._check_send()
        self.sc.send_parts(head, body, self._loop.time())
        self._flush()

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        self.send_nowait(data)
        await self.drain()

    async def send_stream(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as full-size records, waiting for buffer space between batches."""
        self._check_send()
        step = self.sc.config.max_payload
        batch = step * 16
        with memoryview(data) as view:
            for off in range(0, len(view), batch):
                self.sc.send_stream(view[off : off + batch], self._loop.time())
                self._flush()
                await self.drain()

    async def drain(self) -> None:
        await self._write_ok.wait()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Send the close record and wait (briefly) for the peer's."""
        if self.transport is None or self.transport.is_closing():
            return
        try:
            if self.sc.is_open:
                self.sc.close()
                self._flush()
        except ProtocolError:
            pass
        try:
            async with asyncio.timeout(5.0):
                while not self._eof and self._error is None:
                    await self._wait()
        except TimeoutError:
            pass
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def open_channel(
    host: str,
    port: int,
    *,
    key: KeyPair,
    server_key: bytes,
    psk: bytes | None = None,
    hello: bytes = b"",
    timeout: float = HANDSHAKE_TIMEOUT,
    **config: Any,
) -> tuple[Channel, bytes]:
    """Connect and complete the handshake; returns the channel and the server's hello."""
    loop = asyncio.get_running_loop()
    sc = SecureChannel(
        ChannelConfig(static=key, remote_static=server_key, psk=psk, **config), initiator=True
    )
    sc.start(loop.time(), hello)
    try:
        async with asyncio.timeout(timeout):
            _, proto = await loop.create_connection(lambda: Channel(sc), host, port)
            payload = await proto.handshake_done
    except TimeoutError as exc:
        raise ConnectionLost(f"handshake with {host}:{port} timed out") from exc
    except OSError as exc:
        raise ConnectionLost(f"cannot connect to {host}:{port}: {exc}") from exc
    return proto, payload


async def fetch_server_key(host: str, port: int, *, timeout: float = HANDSHAKE_TIMEOUT) -> bytes:
    """Ask a server for its public key (KEY_QUERY). The answer is *unauthenticated*: use it
    only for trust on first use, then pin it."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(key_query_record())
                data = await reader.readexactly(8 + 32)
            finally:
                writer.close()
    except TimeoutError as exc:
        raise ConnectionLost(f"{host}:{port} did not answer the key query") from exc
    except (OSError, asyncio.IncompleteReadError) as exc:
        raise ConnectionLost(f"key query to {host}:{port} failed: {exc}") from exc
    return parse_key_info(data)


class ChannelServer:
    """Accepts secure channels and runs ``handler(channel)`` for each authorized one.

    ``authorize(public_key) -> PeerInfo | None`` is consulted before any payload is looked
    at; ``on_hello(channel, payload) -> bytes`` produces the responder's handshake payload
    (raise a :class:`BurrowError` to refuse). ``on_refused(source, exc)`` sees every failed
    handshake (for the audit log).
    """

    def __init__(
        self,
        *,
        key: KeyPair,
        authorize: Callable[[bytes], PeerInfo | None],
        handler: Callable[[Channel], Awaitable[None]],
        on_hello: Callable[[Channel, bytes], bytes] | None = None,
        on_refused: Callable[[str, BaseException], None] | None = None,
        load: HandshakeLoad | None = None,
        limiter: RateLimiter | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        max_connections: int = 1024,
        max_queued: int = 2 << 20,
        **config: Any,
    ) -> None:
        self.key = key
        self.authorize = authorize
        self.handler = handler
        self.on_hello = on_hello
        self.on_refused = on_refused
        self.cookies = CookieChecker(key.public)
        self.load = load or HandshakeLoad()
        self.limiter = limiter or RateLimiter()
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.max_queued = max_queued  # per connection: unread messages before reading pauses
        self.config = config
        self.connections: set[Channel] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    def _protocol(self) -> Channel:
        loop = asyncio.get_running_loop()
        sc = SecureChannel(
            ChannelConfig(
                static=self.key,
                authorize=self.authorize,
                cookies=self.cookies,
                under_load=self.load,
                limiter=self.limiter,
                **self.config,
            ),
            initiator=False,
        )

        def on_initiation(ch: Channel, ev: InitiationReceived) -> bytes:
            return self.on_hello(ch, ev.payload) if self.on_hello else b""

        ch = Channel(sc, on_initiation=on_initiation, max_queued=self.max_queued)
        task = loop.create_task(self._run(ch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ch

    async def _run(self, ch: Channel) -> None:
        await asyncio.sleep(0)  # let connection_made run
        if len(self.connections) >= self.max_connections:
            ch.abort()
            return
        self.load.started(asyncio.get_running_loop().time())
        try:
            async with asyncio.timeout(self.handshake_timeout):
                await ch.handshake_done
        except (TimeoutError, ProtocolError, OSError) as exc:
            if self.on_refused is not None:
                self.on_refused(ch.source_address(), exc)
            ch.abort()
            return
        finally:
            self.load.finished()
        self.connections.add(ch)
        try:
            await self.handler(ch)
        except (BurrowError, OSError) as exc:
            if self.on_refused is not None:
                self.on_refused(ch.source_address(), exc)
        finally:
            self.connections.discard(ch)
            await ch.close()

    async def start(
        self, host: str | None, port: int, *, sock: socket.socket | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        if sock is not None:
            self.server = await loop.create_server(self._protocol, sock=sock)
        else:
            self.server = await loop.create_server(self._protocol, host, port)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
        for ch in list(self.connections):
            ch.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()


async def start_server(host: str | None, port: int, **kwargs: Any) -> ChannelServer:
    server = ChannelServer(**kwargs)
    await server.start(host, port)
    return server


# Re-exported for callers that catch channel failures.
ChannelError = (RemoteProtocolError, LocalProtocolError, ConnectionLost)
