"""The asyncio NBD server: a thin pump between sockets, ``burrow.proto.nbd`` and devices.

Each connection is an ``asyncio.Protocol`` (no stream wrappers on the hot path): bytes go
into the sans-IO state machine, requests come out and run concurrently (device calls in the
thread pool, or awaited for async devices, or inline for small raw reads); each reply is
written as soon as it is ready, so replies leave out of order. Memory per connection is
bounded: a request is at most the export's maximum payload (32 MiB), and when the bytes of
requests in flight pass ``max_inflight`` the pump stops reading the socket until they drain
(as it does when the peer stops reading our replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

from burrow.errors import BurrowError, RemoteProtocolError, UsageError, errno_of
from burrow.nbd.backend import Backend, ThreadBackend, make_backend
from burrow.proto.nbd.constants import (
    DEFAULT_MAX_PAYLOAD,
    NBD_CMD_BLOCK_STATUS,
    NBD_CMD_CACHE,
    NBD_CMD_FLAG_DF,
    NBD_CMD_FLAG_FAST_ZERO,
    NBD_CMD_FLAG_FUA,
    NBD_CMD_FLAG_NO_HOLE,
    NBD_CMD_FLAG_REQ_ONE,
    NBD_CMD_FLUSH,
    NBD_CMD_READ,
    NBD_CMD_TRIM,
    NBD_CMD_WRITE,
    NBD_CMD_WRITE_ZEROES,
    NBD_EINVAL,
    NBD_EIO,
    NBD_ENOSPC,
    NBD_ENOTSUP,
    NBD_EPERM,
    NBD_ERRORS,
    NBD_ESHUTDOWN,
)
from burrow.proto.nbd.events import (
    Disconnect,
    Event,
    ExportInfo,
    Request,
    StartTLS,
    TransmissionStarted,
    transmission_flags,
)
from burrow.proto.nbd.server import NBDServerConnection, TLSMode

__all__ = ["Export", "NBDServer", "nbd_error", "serve", "start_server"]

log = logging.getLogger("burrow.nbd")

DEFAULT_MAX_INFLIGHT = 64 * 1024 * 1024
DEFAULT_HANDSHAKE_TIMEOUT = 60.0  # seconds a client may take to reach transmission
JOIN_MAX = 256 * 1024  # replies up to this size are joined into one write
MAX_OPTION_BACKLOG = 1024 * 1024  # bytes a client may send while its TLS handshake completes
SPARSE_READ_MIN = 64 * 1024  # structured reads at least this big look for holes


def nbd_error(exc: BaseException) -> int:
    """The NBD error value for an exception from a device (BurrowError via errno_of)."""
    code = errno_of(exc)
    if code in NBD_ERRORS:
        return code
    if code in (errno.EDQUOT, errno.EFBIG):
        return NBD_ENOSPC
    if code in (errno.EROFS, errno.EACCES):
        return NBD_EPERM
    if code == errno.EOPNOTSUPP:
        return NBD_ENOTSUP
    if code in (errno.ERANGE, errno.EDOM):
        return NBD_EINVAL
    return NBD_EIO


@dataclass
class Export:
    """One named export: a device (BlockDevice, plain class or async class) and its metadata."""

    device: Any
    name: str = ""
    description: str = ""
    readonly: bool = False
    tls_only: bool = False
    max_payload: int = DEFAULT_MAX_PAYLOAD

    def __post_init__(self) -> None:
        self.backend: Backend = make_backend(self.device, readonly=self.readonly)
        b = self.backend
        preferred = max(512, min(b.block_size or 4096, 65536))
        if preferred & (preferred - 1):
            preferred = 4096
        self.info = ExportInfo(
            name=self.name,
            size=b.size,
            flags=transmission_flags(
                readonly=b.readonly,
                can_trim=b.can_trim,
                can_zero=b.can_zero,
                can_fast_zero=b.can_fast_zero,
                can_multi_conn=b.can_multi_conn,
            ),
            description=self.description,
            preferred_block=preferred,
            max_payload=self.max_payload,
            tls_only=self.tls_only,
        )


class _Connection(asyncio.Protocol):
    """One client. All methods run in the event loop thread."""

    def __init__(self, server: NBDServer) -> None:
        self.server = server
        self.sm = NBDServerConnection(server.infos, tls=server.tls_mode)
        self.transport: asyncio.Transport | None = None
        self.backend: Backend | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.inflight = 0
        self.read_paused = False
        self.write_paused = False
        self.closing = False
        self.structured = False
        self.idle = asyncio.Event()
        self.idle.set()
        self.tls_early: list[bytes] | None = None  # set while STARTTLS is in progress
        self.backlog: deque[Event] = deque()  # parsed events not started yet (throttling)
        self.handshake_timer: asyncio.TimerHandle | None = None
        self.shutting_down = False

    # -- transport callbacks ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same API.
        self.transport = cast(asyncio.Transport, transport)
        self.loop = asyncio.get_running_loop()
        self.server._register(self)
        timeout = self.server.handshake_timeout
        if timeout:
            self.handshake_timer = asyncio.get_running_loop().call_later(
                timeout, self._handshake_expired
            )
        self._send()

    def _handshake_expired(self) -> None:
        if not self.sm.in_transmission:
            log.info("NBD client dropped: handshake not finished in time")
            self._abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._unregister(self)
        self.closing = True
        self.backlog.clear()  # nobody will read the answers
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._dispatch()

    def data_received(self, data: bytes) -> None:
        if self.tls_early is not None:
            # Decrypted bytes can arrive from the TLS layer before start_tls() returns to us.
            self.tls_early.append(data)
            if sum(map(len, self.tls_early)) > MAX_OPTION_BACKLOG:
                self._abort()
            return
        try:
            events = self.sm.receive_data(data)
        except RemoteProtocolError as exc:
            log.info("NBD client dropped: %s", exc)
            self._send()
            self._abort()
            return
        if self.backlog:
            self.backlog.extend(events)
        else:
            self.backlog = deque(events)
        self._dispatch()

    def _throttled(self) -> bool:
        return self.write_paused or self.inflight > self.server.max_inflight

    def _dispatch(self) -> None:
        """Start the requests parsed so far, unless too much is in flight or the client is not
        reading our replies: then they wait here (and the socket is not read) until it drains."""
        backlog = self.backlog
        backend = self.backend
        if self.shutting_down:
            return
        while backlog and not self._throttled():
            ev = backlog.popleft()
            if type(ev) is Request:
                if ev.command == NBD_CMD_READ and backend is not None and not ev.flags:
                    try:
                        got = backend.read_inline(ev.length, ev.offset, self.structured)
                    except OSError:
                        got = None
                    if got is not None:
                        if isinstance(got, list):
                            self.sm.reply_read_chunks(ev.cookie, got)
                        else:
                            self.sm.reply_read(ev.cookie, ev.offset, got)
                        continue
                self._start(ev)
            elif isinstance(ev, TransmissionStarted):
                self.backend = backend = self.server.exports[ev.export.name].backend
                self.structured = ev.structured_replies
                if self.handshake_timer is not None:
                    self.handshake_timer.cancel()
                    self.handshake_timer = None
            elif isinstance(ev, StartTLS):
                self._send()
                if self.transport is not None:  # the ClientHello is for the TLS layer, not us
                    self.transport.pause_reading()
                self.tls_early = []
                self._spawn(self._start_tls())
            elif isinstance(ev, Disconnect):
                self._send()
                self._spawn(self._close_when_idle())
        self._send()
        self._update_reading()

    # -- helpers -------------------------------------------------------------------------------
    def _send(self) -> None:
        bufs = self.sm.buffers_to_send()
        t = self.transport
        if bufs and t is not None and not t.is_closing():
            if len(bufs) == 1:
                t.write(bufs[0])
            elif sum(map(len, bufs)) <= JOIN_MAX:
                # One buffer, one system call: cheaper than handing many small pieces over.
                t.write(b"".join(bufs))
            else:
                t.writelines(bufs)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _update_reading(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        want_pause = bool(self.backlog) or self._throttled()
        if self.tls_early is not None:
            return  # start_tls() owns the reading state until the handshake is over
        if want_pause and not self.read_paused:
            self.read_paused = True
            t.pause_reading()
        elif not want_pause and self.read_paused:
            self.read_paused = False
            t.resume_reading()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        self.idle.clear()
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not self.tasks:
            self.idle.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("NBD connection task failed", exc_info=task.exception())

    def _start(self, req: Request) -> None:
        cost = req.length if req.command in (NBD_CMD_READ, NBD_CMD_WRITE) else 0
        self.inflight += cost
        if self.inflight > self.server.max_inflight:
            self._update_reading()
        self._spawn(self._execute(req, cost))

    async def _execute(self, req: Request, cost: int) -> None:
        backend = self.backend
        assert backend is not None
        sm = self.sm
        cmd, flags, off, n = req.command, req.flags, req.offset, req.length
        fua = bool(flags & NBD_CMD_FLAG_FUA)
        try:
            if cmd == NBD_CMD_READ:
                if (
                    self.structured
                    and backend.can_extents
                    and n >= SPARSE_READ_MIN
                    and not flags & NBD_CMD_FLAG_DF
                ):
                    chunks = await backend.read_sparse(n, off)
                    if len(chunks) == 1 and chunks[0][2] is not None:
                        sm.reply_read(req.cookie, off, chunks[0][2])
                    else:
                        sm.reply_read_chunks(req.cookie, chunks)
                else:
                    sm.reply_read(req.cookie, off, await backend.read(n, off))
            elif cmd == NBD_CMD_WRITE:
                assert req.data is not None
                await backend.write(req.data, off, fua)
                sm.reply_ok(req.cookie)
            elif cmd == NBD_CMD_FLUSH:
                await backend.flush()
                sm.reply_ok(req.cookie)
            elif cmd == NBD_CMD_TRIM:
                await backend.trim(n, off, fua)
                sm.reply_ok(req.cookie)
            elif cmd == NBD_CMD_WRITE_ZEROES:
                await backend.zero(
                    n,
                    off,
                    not flags & NBD_CMD_FLAG_NO_HOLE,
                    fua,
                    bool(flags & NBD_CMD_FLAG_FAST_ZERO),
                )
                sm.reply_ok(req.cookie)
            elif cmd == NBD_CMD_BLOCK_STATUS:
                extents = await backend.extents(n, off) if n else []
                if not extents:
                    extents = [(max(n, 1), 0)] if n else [(1, 0)]
                if flags & NBD_CMD_FLAG_REQ_ONE:
                    extents = [(min(extents[0][0], n) or 1, extents[0][1])]
                sm.reply_block_status(req.cookie, extents)
            elif cmd == NBD_CMD_CACHE:
                await backend.cache(n, off)
                sm.reply_ok(req.cookie)
            else:  # the state machine only lets known commands through
                sm.reply_error(req.cookie, NBD_EINVAL, "unknown command", command=cmd)
        except BurrowError as exc:
            sm.reply_error(req.cookie, nbd_error(exc), str(exc), command=cmd)
        except OSError as exc:
            sm.reply_error(req.cookie, nbd_error(exc), exc.strerror or str(exc), command=cmd)
        except Exception as exc:  # a bug in a device: tell the client EIO, keep serving
            log.exception("NBD device failed on %r", req)
            sm.reply_error(req.cookie, NBD_EIO, f"internal error: {type(exc).__name__}")
        finally:
            self.inflight -= cost
        self._send()
        if self.backlog or self.read_paused:
            self._dispatch()

    async def _start_tls(self) -> None:
        ctx = self.server.ssl_context
        assert ctx is not None and self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(self.transport, self, ctx, server_side=True)
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            log.info("NBD TLS handshake failed: %s", exc)
            self._abort()
            return
        if new is None:
            self._abort()
            return
        self.transport = new
        self.sm.tls_established()
        early, self.tls_early = self.tls_early or [], None
        self._send()
        for chunk in early:
            self.data_received(chunk)

    async def _close_when_idle(self) -> None:
        while len(self.tasks) > 1:  # everything but ourselves
            others = [t for t in self.tasks if t is not asyncio.current_task()]
            await asyncio.wait(others)
        self._send()
        if self.transport is not None:
            self.transport.close()

    async def shutdown(self) -> None:
        """Refuse new work, finish what is in flight, then close."""
        self.sm.start_shutdown()
        self.shutting_down = True
        # Requests parsed but not started get NBD_ESHUTDOWN, as the spec suggests.
        while self.backlog:
            ev = self.backlog.popleft()
            if type(ev) is Request and self.sm.in_transmission:
                self.sm.reply_error(ev.cookie, NBD_ESHUTDOWN, "server is shutting down")
        while self.tasks:
            await asyncio.wait(list(self.tasks))
        self._send()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _LoopThread:
    """An event loop running in its own thread (uvloop when installed)."""

    def __init__(self, index: int) -> None:
        try:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name=f"burrow-nbd-{index}", daemon=True
        )
        self.thread.start()

    def adopt(self, factory: Callable[[], _Connection], sock: socket.socket) -> None:
        def start() -> None:
            task = self.loop.create_task(self.loop.connect_accepted_socket(factory, sock))
            task.add_done_callback(_log_adopt_failure)

        self.loop.call_soon_threadsafe(start)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        if not self.thread.is_alive():
            self.loop.close()


def _log_adopt_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("NBD: could not set up a connection: %s", task.exception())


class NBDServer:
    """Serves one or more exports on TCP and/or Unix sockets. Use ``start_server``/``serve``."""

    def __init__(
        self,
        exports: Iterable[Export],
        *,
        ssl_context: ssl.SSLContext | None = None,
        tls_mode: TLSMode | str | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
        threads: int = 0,
    ) -> None:
        self.handshake_timeout = handshake_timeout
        self.exports: dict[str, Export] = {}
        for exp in exports:
            if exp.name in self.exports:
                raise UsageError(f"two exports named {exp.name!r}")
            self.exports[exp.name] = exp
        self.infos: Mapping[str, ExportInfo] = {n: e.info for n, e in self.exports.items()}
        self.ssl_context = ssl_context
        if tls_mode is None:
            tls_mode = TLSMode.FORCED if ssl_context else TLSMode.NOTLS
        self.tls_mode = TLSMode(tls_mode)
        if self.tls_mode is not TLSMode.NOTLS and ssl_context is None:
            raise UsageError("TLS mode needs a certificate and key")
        self.max_inflight = max_inflight
        self.connections: set[_Connection] = set()
        self._lock = threading.Lock()
        # Worker event loops (each in its own thread) that connections are spread over. Only
        # for exports whose devices are synchronous (they run in thread pools anyway): the
        # big copies (pread, send) release the GIL, so connections then proceed in parallel.
        sync_only = all(isinstance(e.backend, ThreadBackend) for e in self.exports.values())
        self.threads = threads if sync_only else 0
        self._workers: list[_LoopThread] = []
        self._accept_tasks: list[asyncio.Task[None]] = []
        self._listeners: list[socket.socket] = []
        self._next_worker = 0
        self.servers: list[asyncio.AbstractServer] = []
        self.uris: list[str] = []
        self._unix_paths: list[str] = []

    def _factory(self) -> _Connection:
        return _Connection(self)

    def _uri_name(self) -> str:
        first = next(iter(self.exports))
        return quote(first, safe="")

    def _register(self, conn: _Connection) -> None:
        with self._lock:
            self.connections.add(conn)

    def _unregister(self, conn: _Connection) -> None:
        with self._lock:
            self.connections.discard(conn)

    def _start_workers(self) -> None:
        if self.threads and not self._workers:
            self._workers = [_LoopThread(i) for i in range(self.threads)]

    def _listen_sock(self, sock: socket.socket) -> None:
        """Accept on ``sock`` in this loop and hand each connection to a worker loop."""
        sock.setblocking(False)
        self._listeners.append(sock)
        self._start_workers()
        task = asyncio.get_running_loop().create_task(self._accept_loop(sock))
        self._accept_tasks.append(task)

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    await asyncio.sleep(0.1)
                    continue
                raise
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            worker = self._workers[self._next_worker % len(self._workers)]
            self._next_worker += 1
            worker.adopt(self._factory, conn)

    async def listen_tcp(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port``; failures name the address (the CLI prints them as one line).

        An unresolvable host is a :class:`UsageError`; a bind failure is the ``OSError`` with
        ``filename`` set to ``host:port``.
        """
        loop = asyncio.get_running_loop()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise UsageError(f"cannot resolve: {exc.strerror or exc}", path=where) from None
        try:
            if self.threads:
                family, _, _, _, addr = infos[0]
                lsock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    lsock.bind(addr)
                    lsock.listen(128)
                except BaseException:
                    lsock.close()
                    raise
                self._listen_sock(lsock)
                sockname = lsock.getsockname()
            else:
                srv = await loop.create_server(self._factory, host, port, reuse_address=True)
                self.servers.append(srv)
                sockname = srv.sockets[0].getsockname()
        except OSError as exc:
            raise _named_os_error(exc, where) from None
        real_host, real_port = sockname[0], sockname[1]
        scheme = "nbds" if self.tls_mode is TLSMode.FORCED else "nbd"
        shown = f"[{real_host}]" if ":" in real_host else real_host
        self.uris.append(f"{scheme}://{shown}:{real_port}/{self._uri_name()}")
        return real_host, real_port

    async def listen_unix(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)  # a stale socket from an earlier run
        loop = asyncio.get_running_loop()
        try:
            if self.threads:
                lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    lsock.bind(path)
                    lsock.listen(128)
                except BaseException:
                    lsock.close()
                    raise
                self._listen_sock(lsock)
            else:
                srv = await loop.create_unix_server(self._factory, path)
                self.servers.append(srv)
        except OSError as exc:
            raise _named_os_error(exc, path) from None
        self._unix_paths.append(path)
        scheme = "nbds+unix" if self.tls_mode is TLSMode.FORCED else "nbd+unix"
        self.uris.append(f"{scheme}:///{self._uri_name()}?socket={quote(path, safe='/')}")

    async def aclose(self, *, close_devices: bool = False) -> None:
        """Stop listening, let connections finish what they started, flush every export."""
        for srv in self.servers:
            srv.close()
        for task in self._accept_tasks:
            task.cancel()
        for task in self._accept_tasks:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        self._accept_tasks.clear()
        for lsock in self._listeners:
            lsock.close()
        self._listeners.clear()
        with self._lock:
            conns = list(self.connections)
        here = asyncio.get_running_loop()
        for conn in conns:
            if conn.loop is here:
                await conn.shutdown()
            else:
                fut = asyncio.run_coroutine_threadsafe(conn.shutdown(), conn.loop)
                await asyncio.wrap_future(fut)
        for worker in self._workers:
            await asyncio.to_thread(worker.stop)
        self._workers.clear()
        for srv in self.servers:
            with contextlib.suppress(Exception):
                await srv.wait_closed()
        self.servers.clear()
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._unix_paths.clear()
        for exp in self.exports.values():
            try:
                if not exp.backend.readonly:
                    await exp.backend.flush()
                if close_devices:
                    exp.backend.close()
            except (BurrowError, OSError) as exc:
                log.error("flushing export %r failed: %s", exp.name, exc)

    def statistics(self) -> dict[str, object]:
        return {"connections": len(self.connections), "exports": list(self.exports)}


def _named_os_error(exc: OSError, where: str) -> OSError:
    """``exc`` as a plain ``OSError`` naming ``where`` (asyncio's messages name no address)."""
    if exc.errno is None:
        return OSError(errno.EIO, str(exc), where)
    return OSError(exc.errno, os.strerror(exc.errno), where)


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep:
        host, port = listen, "10809"
    host = host.strip("[]") or "127.0.0.1"
    try:
        return host, int(port)
    except ValueError:
        raise UsageError(f"bad --listen {listen!r}: expected HOST:PORT") from None


def make_ssl_context(cert: str, key: str, *, ca: str | None = None) -> ssl.SSLContext:
    """A server TLS context from x509 PEM files (client certificates checked against ``ca``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _exports_from(device: Any, *, name: str, description: str, readonly: bool) -> list[Export]:
    if isinstance(device, Export):
        return [device]
    if isinstance(device, Mapping):
        return [
            d if isinstance(d, Export) else Export(d, name=n, readonly=readonly)
            for n, d in device.items()
        ]
    if isinstance(device, (list, tuple)) and all(isinstance(d, Export) for d in device):
        return list(device)
    return [Export(device, name=name, description=description, readonly=readonly)]


async def start_server(
    device: Any,
    *,
    listen: str | None = None,
    socket: str | os.PathLike[str] | None = None,
    name: str = "",
    description: str = "",
    readonly: bool = False,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls: str | None = None,
    tls_ca: str | None = None,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    handshake_timeout: float | None = DEFAULT_HANDSHAKE_TIMEOUT,
    threads: int = 0,
) -> NBDServer:
    """Start serving and return the running server (``.uris``, ``await .aclose()``).

    ``device`` is a BlockDevice, a plain class instance, an async class instance, an
    :class:`Export`, a list of Exports, or a mapping of export names to devices.
    ``tls`` is ``"required"`` (default with a certificate) or ``"optional"``; with ``tls_ca``
    clients must present a certificate signed by that CA. ``threads`` > 0 spreads connections
    over that many event loops in their own threads (synchronous devices only).
    """
    if listen is None and socket is None:
        raise UsageError("give listen='HOST:PORT' and/or socket=PATH")
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("TLS needs both a certificate and a key")
    if tls_ca and not tls_cert:
        raise UsageError("client certificate checking (tls_ca) needs a server certificate")
    ctx = make_ssl_context(tls_cert, tls_key, ca=tls_ca) if tls_cert and tls_key else None
    mode = TLSMode(tls) if tls else None
    server = NBDServer(
        _exports_from(device, name=name, description=description, readonly=readonly),
        ssl_context=ctx,
        tls_mode=mode,
        max_inflight=max_inflight,
        handshake_timeout=handshake_timeout,
        threads=threads,
    )
    try:
        if socket is not None:
            await server.listen_unix(os.fspath(socket))
        if listen is not None:
            await server.listen_tcp(*_parse_listen(listen))
    except BaseException:
        await server.aclose()
        raise
    return server


async def serve(
    device: Any,
    *,
    ready: Callable[[NBDServer], None] | None = None,
    close_devices: bool = False,
    **kwargs: Any,
) -> None:
    """Serve ``device`` until this coroutine is cancelled, then shut down cleanly.

    Usable inside any asyncio program: ``await burrow.nbd.serve(dev, socket="/tmp/s")``.
    ``ready`` is called once the sockets listen. Keyword arguments are those of
    :func:`start_server`. On cancellation every connection finishes its in-flight requests
    and every writable export is flushed.
    """
    server = await start_server(device, **kwargs)
    try:
        if ready is not None:
            ready(server)
        await asyncio.Event().wait()
    finally:
        await asyncio.shield(server.aclose(close_devices=close_devices))
