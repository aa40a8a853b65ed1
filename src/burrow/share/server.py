"""``burrow serve``: the network-facing share server.

This process accepts secure channels (:mod:`burrow.share.channel`), checks every call, and
forwards it to the export's worker process (:mod:`burrow.share.worker`); it never opens a file
of an export itself. Per call it checks:

* the frame is well formed and bounded (:mod:`burrow.proto.shareproto`);
* the peer may write, for operations that change anything (``rw`` in the peers file, the
  export opened writable);
* every handle carries a valid MAC for *this* export and *this* peer's key (forged handles and
  handles from another export or another peer are refused with ``ESTALE``).

One audit line per connection and per refused call goes to the ``burrow.share.audit`` logger.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import errno
import hashlib
import hmac
import logging
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from burrow.errors import (
    BurrowError,
    ConnectionLost,
    ProtocolError,
    RemoteProtocolError,
    UsageError,
)
from burrow.proto import shareproto as sp
from burrow.proto.noise import KeyPair, hash_
from burrow.proto.securechannel import PeerInfo
from burrow.proto.shareproto import Kind, Op
from burrow.share.channel import Channel, ChannelServer
from burrow.share.keys import Peers
from burrow.share.worker import parse_ready, tune_malloc

__all__ = ["Export", "ShareServer", "audit"]

audit = logging.getLogger("burrow.share.audit")
MAX_IN_FLIGHT = 64  # calls per connection being worked on
MAX_WORKER_PENDING = 256  # calls queued at one export's worker, all connections together
_HANDLE_LABEL = b"burrow share handle key v1"
_CALL_ID = struct.Struct("<I")  # the call id inside a frame header, at offset 4
_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _fingerprint(key: bytes) -> str:
    return base64.b64encode(key).decode()[:12]


@dataclass
class Export:
    name: str
    path: str
    writable: bool = False  # the server may write it (images opened writable)
    root_ino: int = 0
    link: WorkerLink | None = None


@dataclass
class _Conn:
    peer: PeerInfo
    key: bytes
    export: Export | None = None
    writable: bool = False
    refused: str = ""
    calls: int = 0
    refused_calls: int = 0
    in_flight: int = 0
    dead: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class WorkerLink:
    """The network process's end of one worker's ``SOCK_SEQPACKET`` socket.

    Calls are callbacks, not tasks: :meth:`submit` sends a frame and remembers a function
    that the read loop calls with the reply frame (or ``None`` when the worker is gone).
    Bulk transfers are thousands of calls a second, so no per-call task or future.

    Copies are what a share costs per byte, so none that can be avoided: replies are read
    into one reused buffer and handed to the callback as a writable view (valid only during
    the call: the callback patches the call id in place and seals the reply into the secure
    channel before returning); requests go out as the patched 8-byte header plus a view of
    the client's frame in one ``sendmsg`` (one datagram), not as a copy."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes] | None) -> None:
        self.sock = sock
        self.proc = proc
        self._pending: dict[int, Callable[[memoryview | None], None]] = {}
        self._next = 1
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._outq: collections.deque[bytes] = collections.deque()
        self.failed: BaseException | None = None
        self.max_pending = MAX_WORKER_PENDING
        self._room = asyncio.Event()
        self._room.set()

    async def wait_for_room(self) -> None:
        """Block new calls while this worker has ``max_pending`` unanswered (all
        connections together): bounds the memory queued for one export."""
        while len(self._pending) >= self.max_pending and self.failed is None:
            self._room.clear()
            await self._room.wait()

    async def start(self, timeout: float = 30.0) -> tuple[int, bool]:
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        async with asyncio.timeout(timeout):
            data = await loop.sock_recv(self.sock, 64)
        if not data:
            raise UsageError("the export worker exited before it was ready (see its stderr)")
        ready = parse_ready(data)
        self._reader = loop.create_task(self._read_loop())
        return ready

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        buf = bytearray(sp.MAX_MESSAGE + 1)  # a frame is one datagram: room for the largest
        view = memoryview(buf)
        try:
            while True:
                n = await loop.sock_recv_into(self.sock, buf)
                if not n:
                    raise ConnectionLost("export worker exited")
                if n < sp.FRAME.size:
                    continue
                callback = self._pending.pop(_CALL_ID.unpack_from(buf, 4)[0], None)
                if callback is not None:
                    with view[:n] as data:
                        callback(data)
                if len(self._pending) < self.max_pending:
                    self._room.set()
        except (OSError, ConnectionLost) as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        self.failed = exc
        self._room.set()
        pending, self._pending = self._pending, {}
        for callback in pending.values():
            callback(None)

    def submit(
        self, frame: bytes | bytearray | memoryview, callback: Callable[[memoryview | None], None]
    ) -> None:
        """Send a request frame under a call id of ours (``frame`` itself is not changed);
        ``callback(reply)`` later, with a view that is valid only during the call."""
        if self.failed is not None:
            callback(None)
            return
        call_id = self._next
        self._next = (self._next + 1) & 0xFFFFFFFF or 1
        header = bytearray(frame[: sp.FRAME.size])
        _CALL_ID.pack_into(header, 4, call_id)
        self._pending[call_id] = callback
        if not self._outq:
            try:
                with memoryview(frame) as view:
                    self.sock.sendmsg([header, view[sp.FRAME.size :]])
                return
            except BlockingIOError:
                pass
            except OSError as exc:
                self._fail(exc)
                return
        # The socket buffer is full: one writer task drains the queue in order (the
        # selector keeps one writer callback per socket, so never two sock_sendall at once).
        self._outq.append(bytes(header) + bytes(frame[sp.FRAME.size :]))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._outq:
                await loop.sock_sendall(self.sock, self._outq[0])
                self._outq.popleft()
        except OSError as exc:
            self._outq.clear()
            self._fail(exc)

    async def call(self, op: Op, *fields: Any) -> bytes:
        """Convenience for tests and one-off calls."""
        fut: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self.submit(
            sp.encode_request(op, 0, *fields),
            lambda reply: fut.set_result(None if reply is None else bytes(reply)),
        )
        data = await fut
        if data is None:
            raise ConnectionLost("export worker is gone")
        return data

    async def aclose(self) -> None:
        for task in (self._reader, self._writer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.sock.close()
        if self.proc is not None:
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def spawn_worker(
    path: str, *, writable: bool, user: str | None = None, no_network: bool = False
) -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """Start ``python -m burrow.share.worker`` with one end of a socketpair."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (ours, theirs):  # a frame is one datagram: room for the largest one
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * sp.MAX_MESSAGE)
    cmd = [
        sys.executable,
        "-m",
        "burrow.share.worker",
        "--fd",
        str(theirs.fileno()),
        "--path",
        path,
    ]
    if writable:
        cmd.append("--writable")
    if user is not None:
        cmd += ["--user", user]
    if no_network:
        cmd.append("--no-network")
    proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
    theirs.close()
    return ours, proc


class ShareServer:
    """Serves ``exports`` (name -> host directory or ``IMAGE[@PART]``) to ``peers``."""

    def __init__(
        self,
        exports: Mapping[str, str],
        *,
        key: KeyPair,
        peers: Peers,
        readonly: bool = False,
        user: str | None = None,
        no_network: bool = False,
        **channel_options: Any,
    ) -> None:
        for name in exports:
            if not name or set(name) - _NAME_OK or len(name) > sp.MAX_NAME:
                raise UsageError(f"bad export name {name!r} (letters, digits, . _ -)")
        self.exports = {n: Export(n, p, not readonly) for n, p in exports.items()}
        self.key = key
        self.peers = peers
        self.user = user
        self.no_network = no_network
        self._handle_key = hash_(_HANDLE_LABEL + key.private)
        self._conns: dict[Channel, _Conn] = {}
        channel_options.setdefault("max_message", sp.MAX_MESSAGE)
        self.channel = ChannelServer(
            key=key,
            authorize=self._authorize,
            handler=self._handle,
            on_hello=self._on_hello,
            on_refused=self._on_refused,
            **channel_options,
        )
        self.statistics = {"connections": 0, "calls": 0, "refused_calls": 0, "refused": 0}

    # -- lifecycle ---------------------------------------------------------------------
    async def start_workers(self) -> None:
        tune_malloc()  # this process moves every chunk too
        for export in self.exports.values():
            sock, proc = spawn_worker(
                export.path, writable=export.writable, user=self.user, no_network=self.no_network
            )
            export.link = WorkerLink(sock, proc)
            export.root_ino, export.writable = await export.link.start()

    async def start(
        self, host: str | None, port: int, *, sock: socket.socket | None = None
    ) -> None:
        await self.start_workers()
        await self.channel.start(host, port, sock=sock)

    @property
    def port(self) -> int:
        return self.channel.port

    async def aclose(self) -> None:
        await self.channel.aclose()
        for export in self.exports.values():
            if export.link is not None:
                await export.link.aclose()

    # -- handles -----------------------------------------------------------------------
    def _mac(self, export: str, peer_key: bytes, ino: int) -> bytes:
        msg = export.encode() + b"\0" + peer_key + struct.pack("<Q", ino)
        return hashlib.blake2s(msg, key=self._handle_key, digest_size=16).digest()

    def make_handle(self, export: str, peer_key: bytes, ino: int) -> bytes:
        return struct.pack("<Q", ino) + self._mac(export, peer_key, ino)

    def check_handle(self, export: str, peer_key: bytes, handle: bytes) -> int:
        ino = struct.unpack_from("<Q", handle)[0]
        if not hmac.compare_digest(self._mac(export, peer_key, ino), handle[8:]):
            raise _Refused(errno.ESTALE, "invalid file handle")
        return int(ino)

    # -- handshake -----------------------------------------------------------------------
    def _authorize(self, key: bytes) -> PeerInfo | None:
        peer = self.peers.get(key)
        return PeerInfo(peer.name, peer.psk) if peer is not None else None

    def _on_refused(self, source: str, exc: BaseException) -> None:
        self.statistics["refused"] += 1
        audit.warning("refused-connection from=%s reason=%s", source, exc)

    def _on_hello(self, ch: Channel, payload: bytes) -> bytes:
        key = ch.remote_static or b""
        peer = self.peers.get(key)
        assert peer is not None and ch.peer is not None  # authorize() ran first
        conn = _Conn(ch.peer, key)
        self._conns[ch] = conn
        try:
            lo, hi, name = sp.decode_hello(payload)
        except RemoteProtocolError as exc:
            conn.refused = str(exc)
            return sp.encode_welcome(sp.PROTOCOL_VERSION, status=errno.EPROTO, message=str(exc))
        if not lo <= sp.PROTOCOL_VERSION <= hi:
            conn.refused = f"no common protocol version ({lo}..{hi})"
            return sp.encode_welcome(sp.PROTOCOL_VERSION, status=errno.EPROTO, message=conn.refused)
        export = self.exports.get(name)
        access = peer.access(name)
        if export is None or access is None:
            # Same answer for "no such export" and "not yours": do not reveal export names.
            conn.refused = f"no access to export {name!r}"
            return sp.encode_welcome(sp.PROTOCOL_VERSION, status=errno.EACCES, message=conn.refused)
        conn.export = export
        conn.writable = access == "rw" and export.writable
        root = self.make_handle(name, key, export.root_ino)
        return sp.encode_welcome(sp.PROTOCOL_VERSION, writable=conn.writable, root=root)

    # -- calls -------------------------------------------------------------------------
    async def _handle(self, ch: Channel) -> None:
        conn = self._conns.pop(ch, None)
        if conn is None:
            return
        source = ch.source_address()
        if conn.export is None:
            audit.warning(
                "refused-export peer=%s key=%s from=%s reason=%s",
                conn.peer.name,
                _fingerprint(conn.key),
                source,
                conn.refused,
            )
            self.statistics["refused"] += 1
            await asyncio.sleep(0.05)  # let the welcome leave before the close
            return
        self.statistics["connections"] += 1
        audit.info(
            "connect peer=%s key=%s from=%s export=%s access=%s",
            conn.peer.name,
            _fingerprint(conn.key),
            source,
            conn.export.name,
            "rw" if conn.writable else "ro",
        )
        try:
            while True:
                try:
                    data = await ch.recv()
                except ConnectionLost:
                    break
                while conn.in_flight >= MAX_IN_FLIGHT:
                    conn.wake.clear()
                    await conn.wake.wait()
                # A client that stops reading its replies stops being read: the transport's
                # buffer is bounded by its high-water mark, not by the client's patience.
                await ch.drain()
                assert conn.export is not None and conn.export.link is not None
                await conn.export.link.wait_for_room()
                if not self._dispatch(ch, conn, data):
                    break
        except ProtocolError as exc:
            audit.warning("protocol-error peer=%s from=%s reason=%s", conn.peer.name, source, exc)
        finally:
            conn.dead = True
            audit.info(
                "disconnect peer=%s from=%s export=%s calls=%d refused=%d",
                conn.peer.name,
                source,
                conn.export.name,
                conn.calls,
                conn.refused_calls,
            )

    def _dispatch(self, ch: Channel, conn: _Conn, data: bytes) -> bool:
        """Check one request and hand it to the worker; False drops the connection."""
        export = conn.export
        assert export is not None and export.link is not None
        try:
            frame = sp.decode_frame(data, expect=Kind.REQUEST, zero_copy=True)  # validate only
        except RemoteProtocolError as exc:
            audit.warning("malformed-call peer=%s reason=%s", conn.peer.name, exc)
            ch.abort()  # a client that sends garbage gets no second chance
            return False
        conn.calls += 1
        self.statistics["calls"] += 1
        try:
            if frame.op in sp.WRITE_OPS and not conn.writable:
                raise _Refused(errno.EROFS, "read-only access to this export")
            for i, code in enumerate(sp.REQUESTS[frame.op]):
                if code == "H":
                    self.check_handle(export.name, conn.key, frame.fields[i])
        except _Refused as exc:
            conn.refused_calls += 1
            self.statistics["refused_calls"] += 1
            audit.warning(
                "refused-call peer=%s export=%s op=%s errno=%s reason=%s",
                conn.peer.name,
                export.name,
                frame.op.name,
                errno.errorcode.get(exc.errno_value, exc.errno_value),
                exc,
            )
            self._send(ch, sp.encode_error(frame.op, frame.call_id, exc.errno_value, str(exc)))
            return True
        conn.in_flight += 1

        def done(raw: memoryview | None) -> None:
            conn.in_flight -= 1
            conn.wake.set()
            if conn.dead:
                return
            try:
                reply = self._reply(conn, export, frame, raw)
            except (RemoteProtocolError, ConnectionLost) as exc:
                reply = sp.encode_error(frame.op, frame.call_id, errno.EIO, f"export failed: {exc}")
            self._send(ch, reply)

        # The validated frame goes to the worker as it is (the worker reads only the inode
        # part of a handle and clamps lengths itself): no re-encoding of bulk data.
        export.link.submit(data, done)
        return True

    @staticmethod
    def _send(ch: Channel, reply: bytes | bytearray | memoryview) -> None:
        with contextlib.suppress(BurrowError):
            ch.send_nowait(reply)

    def _reply(
        self, conn: _Conn, export: Export, frame: sp.Frame, raw: memoryview | None
    ) -> bytes | bytearray | memoryview:
        if raw is None:
            raise ConnectionLost("export worker is gone")
        reply_types = sp.REPLIES[frame.op]
        if raw[0] == Kind.ERROR or ("H" not in reply_types and "D" not in reply_types):
            _CALL_ID.pack_into(raw, 4, frame.call_id)  # in place: sealed before raw is reused
            return raw
        reply = sp.decode_frame(raw, expect=Kind.REPLY)
        fields = list(reply.fields)
        for i, code in enumerate(reply_types):
            if code == "H":
                fields[i] = self.make_handle(
                    export.name, conn.key, struct.unpack_from("<Q", fields[i])[0]
                )
            elif code == "D":
                fields[i] = [
                    (n, self.make_handle(export.name, conn.key, struct.unpack_from("<Q", h)[0]), a)
                    for n, h, a in fields[i]
                ]
        return sp.encode_reply(frame.op, frame.call_id, *fields)


class _Refused(BurrowError):
    def __init__(self, errno_value: int, message: str) -> None:
        super().__init__(message)
        self.errno_value = errno_value


async def serve_forever(server: ShareServer, host: str, port: int) -> None:
    await server.start(host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await server.aclose()
