"""Sans-IO NBD client: drives the fixed newstyle handshake and decodes replies.

The handshake runs by itself once the greeting arrives: optional STARTTLS, then
NBD_OPT_STRUCTURED_REPLY, NBD_OPT_SET_META_CONTEXT ``base:allocation`` and NBD_OPT_GO (falling
back to NBD_OPT_EXPORT_NAME on servers that do not know GO). In transmission the caller queues
requests with ``send_request`` and receives ``ReadData``/``ReadHole``/``BlockStatus`` events
and one ``ReplyDone`` per request. Every length from the server is checked against the
request it answers before any byte is used.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from burrow.errors import LocalProtocolError, NotFound, RemoteProtocolError
from burrow.proto.nbd.constants import (
    BLOCK_DESCRIPTOR,
    CLIENT_FLAGS,
    DEFAULT_MAX_PAYLOAD,
    ERROR_CHUNK,
    EXPORT_NAME_REPLY,
    GREETING,
    IHAVEOPT,
    INFO_BLOCK_SIZE,
    INFO_EXPORT,
    MAX_EXTENTS_PER_CHUNK,
    MAX_STRING,
    NBD_CMD_BLOCK_STATUS,
    NBD_CMD_READ,
    NBD_CMD_WRITE,
    NBD_EINVAL,
    NBD_FLAG_C_FIXED_NEWSTYLE,
    NBD_FLAG_C_NO_ZEROES,
    NBD_FLAG_FIXED_NEWSTYLE,
    NBD_FLAG_NO_ZEROES,
    NBD_INFO_BLOCK_SIZE,
    NBD_INFO_DESCRIPTION,
    NBD_INFO_EXPORT,
    NBD_INFO_NAME,
    NBD_OPT_ABORT,
    NBD_OPT_EXPORT_NAME,
    NBD_OPT_GO,
    NBD_OPT_LIST,
    NBD_OPT_SET_META_CONTEXT,
    NBD_OPT_STARTTLS,
    NBD_OPT_STRUCTURED_REPLY,
    NBD_REP_ACK,
    NBD_REP_ERR_UNKNOWN,
    NBD_REP_ERR_UNSUP,
    NBD_REP_FLAG_ERROR,
    NBD_REP_INFO,
    NBD_REP_MAGIC,
    NBD_REP_META_CONTEXT,
    NBD_REP_SERVER,
    NBD_REPLY_FLAG_DONE,
    NBD_REPLY_TYPE_BLOCK_STATUS,
    NBD_REPLY_TYPE_ERROR,
    NBD_REPLY_TYPE_ERROR_OFFSET,
    NBD_REPLY_TYPE_NONE,
    NBD_REPLY_TYPE_OFFSET_DATA,
    NBD_REPLY_TYPE_OFFSET_HOLE,
    NBD_REQUEST_MAGIC,
    NBD_SIMPLE_REPLY_MAGIC,
    NBD_STRUCTURED_REPLY_MAGIC,
    NBDMAGIC,
    OFFSET_HOLE,
    OPTION_HEADER,
    OPTION_REPLY,
    REQUEST,
    SIMPLE_REPLY,
    STRUCTURED_REPLY,
    U16,
    U32,
    U64,
)
from burrow.proto.nbd.events import Event, StartTLS

__all__ = [
    "BlockStatus",
    "ExportList",
    "HandshakeDone",
    "NBDClientConnection",
    "ReadData",
    "ReadHole",
    "ReplyDone",
]

MAX_OPTION_REPLY = 1 << 20
MAX_CHUNK = 64 * 1024 * 1024 + 64  # largest structured chunk we accept


@dataclass(frozen=True)
class HandshakeDone(Event):
    """Transmission phase entered."""

    size: int
    flags: int
    structured_replies: bool
    contexts: dict[str, int] = field(default_factory=dict)
    min_block: int = 1
    preferred_block: int = 4096
    max_payload: int = DEFAULT_MAX_PAYLOAD
    name: str = ""
    description: str = ""


@dataclass(frozen=True)
class ExportList(Event):
    """Answer to a listing connection: ``(name, description)`` pairs."""

    exports: list[tuple[str, str]]


@dataclass(frozen=True)
class ReadData(Event):
    cookie: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class ReadHole(Event):
    cookie: int
    offset: int
    length: int


@dataclass(frozen=True)
class BlockStatus(Event):
    cookie: int
    context_id: int
    extents: list[tuple[int, int]]  # (length, flags)


@dataclass(frozen=True)
class ReplyDone(Event):
    """The last message for ``cookie``; ``error`` is 0 on success."""

    cookie: int
    error: int
    message: str = ""


class _S(enum.Enum):
    GREETING = 1
    STARTTLS = 2
    TLS_PENDING = 3
    STRUCTURED = 4
    META = 5
    GO = 6
    EXPORT_NAME = 7
    LIST = 8
    TRANSMISSION = 9
    CLOSED = 10


class _Pending:
    __slots__ = ("cmd", "covered", "error", "length", "message", "offset")

    def __init__(self, cmd: int, offset: int, length: int) -> None:
        self.cmd = cmd
        self.offset = offset
        self.length = length
        self.error = 0
        self.message = ""
        self.covered = 0  # bytes of a READ answered by data or hole chunks


class NBDClientConnection:
    """The client side of one NBD connection."""

    def __init__(
        self,
        export_name: str = "",
        *,
        structured_replies: bool = True,
        meta_contexts: tuple[str, ...] = ("base:allocation",),
        tls: bool = False,
        list_exports: bool = False,
    ) -> None:
        self.export_name = export_name
        self._want_structured = structured_replies
        self._want_meta = meta_contexts
        self._want_tls = tls
        self._list = list_exports
        self._state = _S.GREETING
        self._buf = bytearray()
        self._out: list[bytes | bytearray | memoryview] = []
        self._no_zeroes = False
        self.structured = False
        self.contexts: dict[str, int] = {}
        self._info: dict[str, object] = {}
        self._exports: list[tuple[str, str]] = []
        self._pending: dict[int, _Pending] = {}
        self.size = 0
        self.flags = 0
        self.max_payload = DEFAULT_MAX_PAYLOAD

    # -- output ------------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def buffers_to_send(self) -> list[bytes | bytearray | memoryview]:
        out = self._out
        self._out = []
        return out

    @property
    def in_transmission(self) -> bool:
        return self._state is _S.TRANSMISSION

    def _option(self, option: int, data: bytes = b"") -> None:
        self._out.append(OPTION_HEADER.pack(IHAVEOPT, option, len(data)) + data)

    def tls_established(self) -> None:
        if self._state is not _S.TLS_PENDING:
            raise LocalProtocolError("tls_established() without STARTTLS")
        self._after_tls()

    # -- handshake ---------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        if self._state is _S.CLOSED:
            return []
        self._buf += data
        events: list[Event] = []
        while True:
            state = self._state
            if state is _S.TRANSMISSION:
                if not self._step_reply(events):
                    break
            elif state is _S.GREETING:
                if len(self._buf) < GREETING.size:
                    break
                self._greeting()
            elif state is _S.EXPORT_NAME:
                need = EXPORT_NAME_REPLY.size + (0 if self._no_zeroes else 124)
                if len(self._buf) < need:
                    break
                self.size, self.flags = EXPORT_NAME_REPLY.unpack_from(self._buf)
                del self._buf[:need]
                self._done(events)
            elif state in (_S.CLOSED, _S.TLS_PENDING):
                if self._buf and state is _S.TLS_PENDING:
                    raise RemoteProtocolError("NBD: server sent plaintext after STARTTLS")
                break
            else:
                reply = self._take_option_reply()
                if reply is None:
                    break
                self._option_reply(*reply, events)
        return events

    def _greeting(self) -> None:
        magic, opt_magic, hflags = GREETING.unpack_from(self._buf)
        del self._buf[: GREETING.size]
        if magic != NBDMAGIC:
            raise RemoteProtocolError(f"NBD: not an NBD server (magic {magic:#x})")
        if opt_magic != IHAVEOPT:
            raise RemoteProtocolError("NBD: oldstyle servers are not supported")
        if not hflags & NBD_FLAG_FIXED_NEWSTYLE:
            raise RemoteProtocolError("NBD: server does not speak fixed newstyle")
        cflags = NBD_FLAG_C_FIXED_NEWSTYLE
        if hflags & NBD_FLAG_NO_ZEROES:
            cflags |= NBD_FLAG_C_NO_ZEROES
            self._no_zeroes = True
        self._out.append(CLIENT_FLAGS.pack(cflags))
        if self._want_tls:
            self._state = _S.STARTTLS
            self._option(NBD_OPT_STARTTLS)
        else:
            self._after_tls()

    def _after_tls(self) -> None:
        if self._list:
            self._state = _S.LIST
            self._option(NBD_OPT_LIST)
        elif self._want_structured:
            self._state = _S.STRUCTURED
            self._option(NBD_OPT_STRUCTURED_REPLY)
        else:
            self._send_go()

    def _send_meta_or_go(self) -> None:
        if self.structured and self._want_meta:
            name = self.export_name.encode()
            body = bytearray(U32.pack(len(name)) + name + U32.pack(len(self._want_meta)))
            for q in self._want_meta:
                raw = q.encode()
                body += U32.pack(len(raw)) + raw
            self._state = _S.META
            self._option(NBD_OPT_SET_META_CONTEXT, bytes(body))
        else:
            self._send_go()

    def _send_go(self) -> None:
        name = self.export_name.encode()
        reqs = (NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME, NBD_INFO_DESCRIPTION)
        body = (
            U32.pack(len(name)) + name + U16.pack(len(reqs)) + b"".join(U16.pack(r) for r in reqs)
        )
        self._state = _S.GO
        self._option(NBD_OPT_GO, body)

    def _take_option_reply(self) -> tuple[int, int, bytes] | None:
        if len(self._buf) < OPTION_REPLY.size:
            return None
        magic, option, rtype, length = OPTION_REPLY.unpack_from(self._buf)
        if magic != NBD_REP_MAGIC:
            raise RemoteProtocolError(f"NBD: bad option reply magic {magic:#x}")
        if length > MAX_OPTION_REPLY:
            raise RemoteProtocolError(f"NBD: option reply of {length} bytes is too large")
        if len(self._buf) < OPTION_REPLY.size + length:
            return None
        data = bytes(self._buf[OPTION_REPLY.size : OPTION_REPLY.size + length])
        del self._buf[: OPTION_REPLY.size + length]
        return option, rtype, data

    def _option_reply(self, option: int, rtype: int, data: bytes, events: list[Event]) -> None:
        state = self._state
        error = bool(rtype & NBD_REP_FLAG_ERROR)
        message = data.decode("utf-8", "replace")[:MAX_STRING] if error else ""
        if state is _S.STARTTLS:
            if rtype != NBD_REP_ACK:
                raise RemoteProtocolError(f"NBD: server refused STARTTLS ({rtype:#x}) {message}")
            self._state = _S.TLS_PENDING
            events.append(StartTLS())
        elif state is _S.LIST:
            if rtype == NBD_REP_SERVER:
                if len(data) < 4:
                    raise RemoteProtocolError("NBD: short NBD_REP_SERVER")
                (n,) = U32.unpack_from(data)
                if n > len(data) - 4:
                    raise RemoteProtocolError("NBD: bad name length in NBD_REP_SERVER")
                name = data[4 : 4 + n].decode("utf-8", "replace")
                desc = data[4 + n :].decode("utf-8", "replace")
                self._exports.append((name, desc))
            elif rtype == NBD_REP_ACK or error:
                if error:
                    raise RemoteProtocolError(f"NBD: listing refused: {message}")
                self._option(NBD_OPT_ABORT)
                self._state = _S.CLOSED
                events.append(ExportList(self._exports))
            else:
                raise RemoteProtocolError(f"NBD: unexpected reply {rtype} to NBD_OPT_LIST")
        elif state is _S.STRUCTURED:
            self.structured = rtype == NBD_REP_ACK
            self._send_meta_or_go()
        elif state is _S.META:
            if rtype == NBD_REP_META_CONTEXT:
                if len(data) < 4:
                    raise RemoteProtocolError("NBD: short NBD_REP_META_CONTEXT")
                (cid,) = U32.unpack_from(data)
                self.contexts[data[4:].decode("utf-8", "replace")] = cid
            elif rtype == NBD_REP_ACK or error:
                if error:
                    self.contexts.clear()
                self._send_go()
            else:
                raise RemoteProtocolError(f"NBD: unexpected reply {rtype} to SET_META_CONTEXT")
        elif state is _S.GO:
            if rtype == NBD_REP_INFO:
                self._info_reply(data)
            elif rtype == NBD_REP_ACK:
                if "export" not in self._info:
                    raise RemoteProtocolError("NBD: NBD_OPT_GO succeeded without NBD_INFO_EXPORT")
                self._done(events)
            elif rtype == NBD_REP_ERR_UNSUP:
                self._state = _S.EXPORT_NAME
                self._option(NBD_OPT_EXPORT_NAME, self.export_name.encode())
            elif rtype == NBD_REP_ERR_UNKNOWN:
                raise NotFound(f"NBD export {self.export_name!r} does not exist ({message})")
            elif error:
                raise RemoteProtocolError(f"NBD: server refused the export ({rtype:#x}) {message}")
            else:
                raise RemoteProtocolError(f"NBD: unexpected reply {rtype} to NBD_OPT_GO")
        else:
            raise RemoteProtocolError(f"NBD: option reply in state {state.name}")
        if option not in (
            NBD_OPT_STARTTLS,
            NBD_OPT_LIST,
            NBD_OPT_STRUCTURED_REPLY,
            NBD_OPT_SET_META_CONTEXT,
            NBD_OPT_GO,
        ):
            raise RemoteProtocolError(f"NBD: reply names option {option} we did not send")

    def _info_reply(self, data: bytes) -> None:
        if len(data) < 2:
            raise RemoteProtocolError("NBD: short NBD_REP_INFO")
        (itype,) = U16.unpack_from(data)
        if itype == NBD_INFO_EXPORT:
            if len(data) != INFO_EXPORT.size:
                raise RemoteProtocolError("NBD: NBD_INFO_EXPORT has the wrong length")
            _, self.size, self.flags = INFO_EXPORT.unpack(data)
            self._info["export"] = True
        elif itype == NBD_INFO_BLOCK_SIZE:
            if len(data) != INFO_BLOCK_SIZE.size:
                raise RemoteProtocolError("NBD: NBD_INFO_BLOCK_SIZE has the wrong length")
            _, minimum, preferred, maximum = INFO_BLOCK_SIZE.unpack(data)
            if minimum < 1 or minimum > 65536 or minimum & (minimum - 1):
                raise RemoteProtocolError(f"NBD: bad minimum block size {minimum}")
            self._info["block"] = (minimum, max(preferred, minimum), max(maximum, minimum))
        elif itype == NBD_INFO_NAME:
            self._info["name"] = data[2:].decode("utf-8", "replace")
        elif itype == NBD_INFO_DESCRIPTION:
            self._info["description"] = data[2:].decode("utf-8", "replace")

    def _done(self, events: list[Event]) -> None:
        self._state = _S.TRANSMISSION
        block = self._info.get("block", (1, 4096, DEFAULT_MAX_PAYLOAD))
        assert isinstance(block, tuple)
        minimum, preferred, maximum = block
        self.max_payload = min(int(maximum), DEFAULT_MAX_PAYLOAD)
        events.append(
            HandshakeDone(
                self.size,
                self.flags,
                self.structured,
                dict(self.contexts),
                int(minimum),
                int(preferred),
                self.max_payload,
                str(self._info.get("name", self.export_name)),
                str(self._info.get("description", "")),
            )
        )

    # -- transmission ------------------------------------------------------------------------
    def send_request(
        self,
        command: int,
        cookie: int,
        offset: int = 0,
        length: int = 0,
        flags: int = 0,
        data: bytes | bytearray | memoryview | None = None,
    ) -> None:
        """Queue one request. ``data`` is the payload of a WRITE (its length is ``length``)."""
        if self._state is not _S.TRANSMISSION:
            raise LocalProtocolError("NBD: requests before the handshake finished")
        if cookie in self._pending:
            raise LocalProtocolError(f"NBD: cookie {cookie} is already in flight")
        if command == NBD_CMD_WRITE and (data is None or len(data) != length):
            raise LocalProtocolError("NBD: WRITE needs exactly length bytes of data")
        self._out.append(REQUEST.pack(NBD_REQUEST_MAGIC, flags, command, cookie, offset, length))
        if command == NBD_CMD_WRITE and length:
            assert data is not None
            self._out.append(data)
        if command == 2:  # NBD_CMD_DISC: no reply
            self._state = _S.CLOSED
            return
        self._pending[cookie] = _Pending(command, offset, length)

    def _step_reply(self, events: list[Event]) -> bool:
        buf = self._buf
        if len(buf) < 4:
            return False
        (magic,) = U32.unpack_from(buf)
        if magic == NBD_SIMPLE_REPLY_MAGIC:
            if len(buf) < SIMPLE_REPLY.size:
                return False
            _, error, cookie = SIMPLE_REPLY.unpack_from(buf)
            req = self._pending.get(cookie)
            if req is None:
                raise RemoteProtocolError(f"NBD: reply for unknown cookie {cookie}")
            if req.cmd == NBD_CMD_READ and not error:
                if self.structured:
                    raise RemoteProtocolError("NBD: simple reply with data after structured")
                need = SIMPLE_REPLY.size + req.length
                if len(buf) < need:
                    return False
                events.append(ReadData(cookie, req.offset, bytes(buf[SIMPLE_REPLY.size : need])))
                del buf[:need]
            else:
                del buf[: SIMPLE_REPLY.size]
            del self._pending[cookie]
            events.append(ReplyDone(cookie, error))
            return True
        if magic != NBD_STRUCTURED_REPLY_MAGIC or not self.structured:
            raise RemoteProtocolError(f"NBD: bad reply magic {magic:#x}")
        if len(buf) < STRUCTURED_REPLY.size:
            return False
        _, rflags, rtype, cookie, length = STRUCTURED_REPLY.unpack_from(buf)
        req = self._pending.get(cookie)
        if req is None:
            raise RemoteProtocolError(f"NBD: reply for unknown cookie {cookie}")
        if length > MAX_CHUNK:
            raise RemoteProtocolError(f"NBD: reply chunk of {length} bytes is too large")
        start = STRUCTURED_REPLY.size
        if len(buf) < start + length:
            return False
        payload = bytes(buf[start : start + length])
        del buf[: start + length]
        self._chunk(req, cookie, rtype, payload, events)
        if req.covered > req.length:
            raise RemoteProtocolError("NBD: overlapping read chunks")
        if rflags & NBD_REPLY_FLAG_DONE:
            if req.cmd == NBD_CMD_READ and not req.error and req.covered != req.length:
                raise RemoteProtocolError(
                    f"NBD: read reply covers {req.covered} of {req.length} bytes"
                )
            del self._pending[cookie]
            events.append(ReplyDone(cookie, req.error, req.message))
        return True

    def _chunk(
        self, req: _Pending, cookie: int, rtype: int, payload: bytes, events: list[Event]
    ) -> None:
        lo, hi = req.offset, req.offset + req.length
        if rtype == NBD_REPLY_TYPE_NONE:
            if payload:
                raise RemoteProtocolError("NBD: NBD_REPLY_TYPE_NONE with a payload")
        elif rtype == NBD_REPLY_TYPE_OFFSET_DATA:
            if req.cmd != NBD_CMD_READ or len(payload) < 9:
                raise RemoteProtocolError("NBD: unexpected or short OFFSET_DATA chunk")
            (off,) = U64.unpack_from(payload)
            if off < lo or off + len(payload) - 8 > hi:
                raise RemoteProtocolError("NBD: OFFSET_DATA outside the request")
            req.covered += len(payload) - 8
            events.append(ReadData(cookie, off, payload[8:]))
        elif rtype == NBD_REPLY_TYPE_OFFSET_HOLE:
            if req.cmd != NBD_CMD_READ or len(payload) != OFFSET_HOLE.size:
                raise RemoteProtocolError("NBD: unexpected or malformed OFFSET_HOLE chunk")
            off, n = OFFSET_HOLE.unpack(payload)
            if n == 0 or off < lo or off + n > hi:
                raise RemoteProtocolError("NBD: OFFSET_HOLE outside the request")
            req.covered += n
            events.append(ReadHole(cookie, off, n))
        elif rtype == NBD_REPLY_TYPE_BLOCK_STATUS:
            if req.cmd != NBD_CMD_BLOCK_STATUS or len(payload) < 12 or (len(payload) - 4) % 8:
                raise RemoteProtocolError("NBD: malformed BLOCK_STATUS chunk")
            (cid,) = U32.unpack_from(payload)
            count = (len(payload) - 4) // 8
            if count > MAX_EXTENTS_PER_CHUNK:
                raise RemoteProtocolError("NBD: too many extents in one chunk")
            extents = [BLOCK_DESCRIPTOR.unpack_from(payload, 4 + 8 * i) for i in range(count)]
            if any(n == 0 for n, _ in extents):
                raise RemoteProtocolError("NBD: zero-length extent")
            events.append(BlockStatus(cookie, cid, extents))
        elif rtype & 0x8000:
            if len(payload) < ERROR_CHUNK.size:
                raise RemoteProtocolError("NBD: short error chunk")
            error, mlen = ERROR_CHUNK.unpack_from(payload)
            if mlen > len(payload) - ERROR_CHUNK.size:
                raise RemoteProtocolError("NBD: error message longer than its chunk")
            if rtype == NBD_REPLY_TYPE_ERROR_OFFSET and len(payload) < ERROR_CHUNK.size + mlen + 8:
                raise RemoteProtocolError("NBD: short ERROR_OFFSET chunk")
            if rtype not in (NBD_REPLY_TYPE_ERROR, NBD_REPLY_TYPE_ERROR_OFFSET):
                error = error or NBD_EINVAL
            req.error = req.error or error or NBD_EINVAL
            text = payload[ERROR_CHUNK.size : ERROR_CHUNK.size + mlen]
            req.message = req.message or text.decode("utf-8", "replace")
        else:
            raise RemoteProtocolError(f"NBD: unknown reply chunk type {rtype}")
