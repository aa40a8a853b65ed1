"""Sans-IO NBD server: fixed newstyle handshake, option haggling and request validation.

The connection object never touches a socket or a device. Feed it bytes with
``receive_data``; it returns events (:mod:`burrow.proto.nbd.events`) and queues the bytes to
send, which the pump collects with ``buffers_to_send`` (a list, for ``writelines``) or
``data_to_send``. Requests that break the rules of the spec (bad flags, out of bounds, writes
on a read-only export, unadvertised commands) are answered here with the NBD error the spec
names, so the pump only ever sees requests it can execute. The pump answers those with the
``reply_*`` methods, in any order.

A peer that breaks a MUST of the protocol in a way that leaves the stream unusable (bad magic,
unknown client flags, an NBD_OPT_EXPORT_NAME that cannot be satisfied) makes ``receive_data``
raise ``RemoteProtocolError``: the pump then drops the connection (a hard disconnect, which
the spec allows in exactly these cases).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence

from burrow.errors import LocalProtocolError, RemoteProtocolError
from burrow.proto.nbd.constants import (
    BASE_ALLOCATION,
    BLOCK_DESCRIPTOR,
    CLIENT_FLAGS,
    ERROR_CHUNK,
    EXPORT_NAME_REPLY,
    GREETING,
    IHAVEOPT,
    INFO_BLOCK_SIZE,
    INFO_EXPORT,
    MAX_EXTENTS_PER_CHUNK,
    MAX_OPTION_DATA,
    MAX_STRING,
    NBD_CMD_BLOCK_STATUS,
    NBD_CMD_CACHE,
    NBD_CMD_DISC,
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
    NBD_ENOSPC,
    NBD_EOVERFLOW,
    NBD_EPERM,
    NBD_ESHUTDOWN,
    NBD_FLAG_C_FIXED_NEWSTYLE,
    NBD_FLAG_C_NO_ZEROES,
    NBD_FLAG_FIXED_NEWSTYLE,
    NBD_FLAG_NO_ZEROES,
    NBD_FLAG_SEND_DF,
    NBD_FLAG_SEND_FAST_ZERO,
    NBD_FLAG_SEND_FLUSH,
    NBD_FLAG_SEND_FUA,
    NBD_FLAG_SEND_TRIM,
    NBD_FLAG_SEND_WRITE_ZEROES,
    NBD_INFO_BLOCK_SIZE,
    NBD_INFO_DESCRIPTION,
    NBD_INFO_EXPORT,
    NBD_INFO_NAME,
    NBD_OPT_ABORT,
    NBD_OPT_EXPORT_NAME,
    NBD_OPT_GO,
    NBD_OPT_INFO,
    NBD_OPT_LIST,
    NBD_OPT_LIST_META_CONTEXT,
    NBD_OPT_SET_META_CONTEXT,
    NBD_OPT_STARTTLS,
    NBD_OPT_STRUCTURED_REPLY,
    NBD_REP_ACK,
    NBD_REP_ERR_INVALID,
    NBD_REP_ERR_POLICY,
    NBD_REP_ERR_SHUTDOWN,
    NBD_REP_ERR_TLS_REQD,
    NBD_REP_ERR_TOO_BIG,
    NBD_REP_ERR_UNKNOWN,
    NBD_REP_ERR_UNSUP,
    NBD_REP_INFO,
    NBD_REP_MAGIC,
    NBD_REP_META_CONTEXT,
    NBD_REP_SERVER,
    NBD_REPLY_FLAG_DONE,
    NBD_REPLY_TYPE_BLOCK_STATUS,
    NBD_REPLY_TYPE_ERROR,
    NBD_REPLY_TYPE_NONE,
    NBD_REPLY_TYPE_OFFSET_DATA,
    NBD_REPLY_TYPE_OFFSET_HOLE,
    NBD_REQUEST_MAGIC,
    NBD_SIMPLE_REPLY_MAGIC,
    NBD_STRUCTURED_REPLY_MAGIC,
    NBDMAGIC,
    OFFSET_DATA_HEADER,
    OFFSET_HOLE,
    OPTION_HEADER,
    OPTION_REPLY,
    REQUEST,
    SIMPLE_REPLY,
    STRUCTURED_REPLY,
    U16,
    U32,
)
from burrow.proto.nbd.events import (
    Disconnect,
    Event,
    ExportInfo,
    Request,
    StartTLS,
    TransmissionStarted,
)

__all__ = ["NBDServerConnection", "TLSMode"]

META_CONTEXT_ID = 1  # the id we give base:allocation when it is selected
MAX_OPTIONS = 4096  # options per connection before we call it a denial of service

# Command flags each command may carry (before checking what the export advertised).
_ALLOWED_FLAGS = {
    NBD_CMD_READ: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_DF,
    NBD_CMD_WRITE: NBD_CMD_FLAG_FUA,
    NBD_CMD_DISC: NBD_CMD_FLAG_FUA,
    NBD_CMD_FLUSH: NBD_CMD_FLAG_FUA,
    NBD_CMD_TRIM: NBD_CMD_FLAG_FUA,
    NBD_CMD_CACHE: NBD_CMD_FLAG_FUA,
    NBD_CMD_WRITE_ZEROES: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO,
    NBD_CMD_BLOCK_STATUS: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE,
}


class TLSMode(enum.Enum):
    """The spec's three server TLS modes (SELECTIVETLS is used with every export optional)."""

    NOTLS = "off"
    SELECTIVE = "optional"
    FORCED = "required"


class _State(enum.Enum):
    CLIENT_FLAGS = 1
    OPTIONS = 2
    TLS_PENDING = 3
    TRANSMISSION = 4
    CLOSED = 5


class NBDServerConnection:
    """One client connection, from greeting to disconnect.

    ``exports`` maps export names to their :class:`ExportInfo`; it is consulted when the
    client names one, so the pump may pass a live mapping.
    """

    def __init__(
        self,
        exports: Mapping[str, ExportInfo],
        *,
        tls: TLSMode = TLSMode.NOTLS,
        allow_list: bool = True,
    ) -> None:
        self._exports = exports
        self._tls_mode = tls
        self._allow_list = allow_list
        self._tls_active = False
        self._state = _State.CLIENT_FLAGS
        self._buf = bytearray()
        self._out: list[bytes | bytearray | memoryview] = []
        self._fixed = False
        self._no_zeroes = False
        self._structured = False
        self._meta_export: str | None = None  # export named by the last SET_META_CONTEXT
        self._meta_selected = False
        self._shutting_down = False
        self._options_seen = 0
        self._skip = 0  # payload bytes of a refused request still to discard
        self._skip_reply: tuple[int, int, int] | None = None  # (cookie, command, error)
        self._payload: bytearray | None = None  # WRITE payload being collected
        self._payload_fill = 0
        self._pending: tuple[int, int, int, int, int] | None = None  # header of that WRITE
        self.export: ExportInfo | None = None
        self.meta_context_id = 0
        self._fast_size = -1  # READs inside this size skip the full validation
        self._fast_max = 0
        self._out.append(
            GREETING.pack(NBDMAGIC, IHAVEOPT, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)
        )

    # -- public state ------------------------------------------------------------------------
    @property
    def structured_replies(self) -> bool:
        return self._structured

    @property
    def in_transmission(self) -> bool:
        return self._state is _State.TRANSMISSION

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    def data_to_send(self) -> bytes:
        """Every queued byte, joined (and forgotten)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def buffers_to_send(self) -> list[bytes | bytearray | memoryview]:
        """The queued buffers without joining them (for ``transport.writelines``)."""
        out = self._out
        self._out = []
        return out

    def tls_established(self) -> None:
        """The pump finished the TLS handshake after a StartTLS event."""
        if self._state is not _State.TLS_PENDING:
            raise LocalProtocolError("tls_established() without a pending STARTTLS")
        self._tls_active = True
        self._state = _State.OPTIONS
        # The spec: no negotiation state survives STARTTLS.
        self._structured = False
        self._meta_export = None
        self._meta_selected = False

    def start_shutdown(self) -> None:
        """The server is going away: refuse further options and requests politely."""
        self._shutting_down = True
        self._fast_size = -1

    # -- input ---------------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Consume bytes from the client; return the events they complete."""
        state = self._state
        if state is _State.CLOSED or not data:
            return []
        if state is _State.TLS_PENDING:
            raise RemoteProtocolError("NBD: client sent plaintext after STARTTLS was accepted")
        if state is _State.TRANSMISSION:
            return self._receive_transmission(data)
        self._buf += data
        events: list[Event] = []
        while self._state in (_State.CLIENT_FLAGS, _State.OPTIONS):
            if self._state is _State.CLIENT_FLAGS:
                if len(self._buf) < 4:
                    return events
                (cflags,) = CLIENT_FLAGS.unpack_from(self._buf)
                del self._buf[:4]
                if cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES):
                    self._state = _State.CLOSED
                    raise RemoteProtocolError(f"NBD: unknown client flags {cflags:#x}")
                self._fixed = bool(cflags & NBD_FLAG_C_FIXED_NEWSTYLE)
                self._no_zeroes = bool(cflags & NBD_FLAG_C_NO_ZEROES)
                self._state = _State.OPTIONS
                continue
            if not self._step_option(events):
                break
        if self._state is _State.TRANSMISSION and self._buf:
            rest = bytes(self._buf)
            self._buf.clear()
            events.extend(self._receive_transmission(rest))
        elif self._state is _State.TLS_PENDING and self._buf:
            self._state = _State.CLOSED
            raise RemoteProtocolError("NBD: client sent plaintext after STARTTLS was accepted")
        return events

    # -- option haggling ---------------------------------------------------------------------
    def _step_option(self, events: list[Event]) -> bool:
        """Handle one complete option from the buffer; False when more bytes are needed."""
        buf = self._buf
        if self._skip:
            drop = min(self._skip, len(buf))
            del buf[:drop]
            self._skip -= drop
            if self._skip:
                return False
        if len(buf) < OPTION_HEADER.size:
            return False
        magic, option, length = OPTION_HEADER.unpack_from(buf)
        if magic != IHAVEOPT:
            self._state = _State.CLOSED
            raise RemoteProtocolError(f"NBD: bad option magic {magic:#x}")
        self._options_seen += 1
        if self._options_seen > MAX_OPTIONS:
            self._state = _State.CLOSED
            raise RemoteProtocolError("NBD: too many options (denial of service?)")
        if length > MAX_OPTION_DATA:
            if option == NBD_OPT_EXPORT_NAME:
                self._state = _State.CLOSED
                raise RemoteProtocolError("NBD: oversized NBD_OPT_EXPORT_NAME")
            del buf[: OPTION_HEADER.size]
            self._skip = length
            self._reply(option, NBD_REP_ERR_TOO_BIG, b"option data too large")
            return True
        if len(buf) < OPTION_HEADER.size + length:
            return False
        data = bytes(buf[OPTION_HEADER.size : OPTION_HEADER.size + length])
        del buf[: OPTION_HEADER.size + length]
        self._handle_option(option, data, events)
        return True

    def _reply(self, option: int, reply: int, data: bytes = b"") -> None:
        self._out.append(OPTION_REPLY.pack(NBD_REP_MAGIC, option, reply, len(data)))
        if data:
            self._out.append(data)

    def _handle_option(self, option: int, data: bytes, events: list[Event]) -> None:
        if option == NBD_OPT_ABORT:
            self._reply(option, NBD_REP_ACK)
            self._state = _State.CLOSED
            events.append(Disconnect("NBD_OPT_ABORT"))
            return
        tls_missing = self._tls_mode is TLSMode.FORCED and not self._tls_active
        if option == NBD_OPT_EXPORT_NAME:
            if tls_missing:
                self._state = _State.CLOSED
                raise RemoteProtocolError("NBD: NBD_OPT_EXPORT_NAME before STARTTLS (TLS required)")
            self._export_name(data, events)
            return
        if not self._fixed:
            # Non-fixed newstyle knows only NBD_OPT_EXPORT_NAME; nothing else can be answered.
            self._state = _State.CLOSED
            raise RemoteProtocolError("NBD: option other than EXPORT_NAME without fixed newstyle")
        if self._shutting_down:
            self._reply(option, NBD_REP_ERR_SHUTDOWN, b"server is shutting down")
            return
        if option == NBD_OPT_STARTTLS:
            self._starttls(data, events)
            return
        if tls_missing:
            self._reply(option, NBD_REP_ERR_TLS_REQD, b"TLS is required: use NBD_OPT_STARTTLS")
            return
        if option == NBD_OPT_LIST:
            self._list(data)
        elif option in (NBD_OPT_INFO, NBD_OPT_GO):
            self._info_go(option, data, events)
        elif option == NBD_OPT_STRUCTURED_REPLY:
            if data:
                self._reply(option, NBD_REP_ERR_INVALID, b"NBD_OPT_STRUCTURED_REPLY takes no data")
            else:
                self._structured = True
                self._reply(option, NBD_REP_ACK)
        elif option in (NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT):
            self._meta_context(option, data)
        else:
            self._reply(option, NBD_REP_ERR_UNSUP, f"option {option} is not supported".encode())

    def _starttls(self, data: bytes, events: list[Event]) -> None:
        option = NBD_OPT_STARTTLS
        if self._tls_mode is TLSMode.NOTLS:
            self._reply(option, NBD_REP_ERR_UNSUP, b"TLS is not configured on this server")
        elif self._tls_active:
            self._reply(option, NBD_REP_ERR_INVALID, b"TLS is already active")
        elif data:
            self._reply(option, NBD_REP_ERR_INVALID, b"NBD_OPT_STARTTLS takes no data")
        else:
            self._reply(option, NBD_REP_ACK)
            self._state = _State.TLS_PENDING
            events.append(StartTLS())

    def _list(self, data: bytes) -> None:
        if data:
            self._reply(NBD_OPT_LIST, NBD_REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")
            return
        if not self._allow_list:
            self._reply(NBD_OPT_LIST, NBD_REP_ERR_POLICY, b"listing exports is disabled")
            return
        for name, info in self._exports.items():
            if info.tls_only and not self._tls_active:
                continue
            raw = name.encode()
            desc = info.description.encode()[:MAX_STRING]
            self._reply(NBD_OPT_LIST, NBD_REP_SERVER, U32.pack(len(raw)) + raw + desc)
        self._reply(NBD_OPT_LIST, NBD_REP_ACK)

    def _lookup(self, raw: bytes) -> ExportInfo | None:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return self._exports.get(name)

    def _flags_for(self, info: ExportInfo) -> int:
        flags = info.flags
        if self._structured:
            flags |= NBD_FLAG_SEND_DF
        return flags & 0xFFFF

    def _export_name(self, data: bytes, events: list[Event]) -> None:
        info = self._lookup(data) if len(data) <= MAX_STRING else None
        if info is None or (info.tls_only and not self._tls_active) or self._shutting_down:
            self._state = _State.CLOSED
            raise RemoteProtocolError(
                f"NBD: export {data[:64]!r} is not available (NBD_OPT_EXPORT_NAME cannot fail)"
            )
        self._out.append(EXPORT_NAME_REPLY.pack(info.size, self._flags_for(info)))
        if not self._no_zeroes:
            self._out.append(bytes(124))
        self._enter_transmission(info, data, events)

    def _enter_transmission(self, info: ExportInfo, raw_name: bytes, events: list[Event]) -> None:
        self.export = info
        self._fast_size = info.size
        self._fast_max = info.max_payload
        selected = self._meta_selected and self._meta_export == info.name
        self.meta_context_id = META_CONTEXT_ID if (selected and self._structured) else 0
        self._state = _State.TRANSMISSION
        events.append(TransmissionStarted(info, self._structured, self.meta_context_id))

    def _info_go(self, option: int, data: bytes, events: list[Event]) -> None:
        if len(data) < 6:
            self._reply(option, NBD_REP_ERR_INVALID, b"option data too short")
            return
        (namelen,) = U32.unpack_from(data)
        if namelen > len(data) - 6:
            self._reply(option, NBD_REP_ERR_INVALID, b"export name length exceeds option data")
            return
        raw = data[4 : 4 + namelen]
        (nreq,) = U16.unpack_from(data, 4 + namelen)
        if 4 + namelen + 2 + 2 * nreq != len(data):
            self._reply(option, NBD_REP_ERR_INVALID, b"information request count mismatch")
            return
        requests = {U16.unpack_from(data, 6 + namelen + 2 * i)[0] for i in range(nreq)}
        info = self._lookup(raw)
        if info is None:
            self._reply(option, NBD_REP_ERR_UNKNOWN, b"no such export")
            return
        if info.tls_only and not self._tls_active:
            self._reply(option, NBD_REP_ERR_TLS_REQD, b"this export needs TLS")
            return
        self._reply(
            option,
            NBD_REP_INFO,
            INFO_EXPORT.pack(NBD_INFO_EXPORT, info.size, self._flags_for(info)),
        )
        if NBD_INFO_NAME in requests:
            self._reply(option, NBD_REP_INFO, U16.pack(NBD_INFO_NAME) + info.name.encode())
        if NBD_INFO_DESCRIPTION in requests and info.description:
            desc = info.description.encode()[:MAX_STRING]
            self._reply(option, NBD_REP_INFO, U16.pack(NBD_INFO_DESCRIPTION) + desc)
        self._reply(
            option,
            NBD_REP_INFO,
            INFO_BLOCK_SIZE.pack(
                NBD_INFO_BLOCK_SIZE, info.min_block, info.preferred_block, info.max_payload
            ),
        )
        self._reply(option, NBD_REP_ACK)
        if option == NBD_OPT_GO:
            self._enter_transmission(info, raw, events)

    def _meta_context(self, option: int, data: bytes) -> None:
        if option == NBD_OPT_SET_META_CONTEXT:
            self._meta_selected = False  # replaced even when this request fails
            self._meta_export = None
            if not self._structured:
                self._reply(
                    option, NBD_REP_ERR_INVALID, b"negotiate NBD_OPT_STRUCTURED_REPLY first"
                )
                return
        parsed = _parse_meta_request(data)
        if parsed is None:
            self._reply(option, NBD_REP_ERR_INVALID, b"malformed metadata context request")
            return
        raw, queries = parsed
        info = self._lookup(raw)
        if info is None:
            self._reply(option, NBD_REP_ERR_UNKNOWN, b"no such export")
            return
        if info.tls_only and not self._tls_active:
            # TLS_REQD is only allowed for INFO/GO/EXPORT_NAME (SELECTIVETLS rules).
            self._reply(option, NBD_REP_ERR_POLICY, b"this export needs TLS")
            return
        if any(b":" not in q for q in queries):
            self._reply(option, NBD_REP_ERR_INVALID, b"a query lacks the namespace colon")
            return
        name = BASE_ALLOCATION.encode()
        if option == NBD_OPT_LIST_META_CONTEXT:
            if not queries or any(q in (b"base:", name) for q in queries):
                self._reply(option, NBD_REP_META_CONTEXT, U32.pack(0) + name)
        elif name in queries:
            self._meta_selected = True
            self._meta_export = info.name
            self._reply(option, NBD_REP_META_CONTEXT, U32.pack(META_CONTEXT_ID) + name)
        self._reply(option, NBD_REP_ACK)

    # -- transmission ------------------------------------------------------------------------
    def _receive_transmission(self, data: bytes | bytearray | memoryview) -> list[Event]:
        events: list[Event] = []
        mv = memoryview(data).cast("B")
        pos, end = 0, len(mv)
        # Finish a WRITE payload or a refused payload from the previous call first.
        if self._payload is not None:
            pos = self._fill_payload(mv, events)
        elif self._skip:
            pos = self._skip_payload(mv, 0)
        buf = self._buf
        if buf:  # a partial header from last time
            need = REQUEST.size - len(buf)
            buf += mv[pos : pos + need]
            pos = min(end, pos + need)
            if len(buf) < REQUEST.size:
                return events
            header = bytes(buf)
            buf.clear()
            pos = self._request(header, 0, mv, pos, events)
        unpack = REQUEST.unpack_from
        hsize = REQUEST.size
        fast_size, fast_max = self._fast_size, self._fast_max
        while pos < end and self._state is _State.TRANSMISSION:
            if self._payload is not None:
                pos = self._fill_payload(mv, events, pos)
                continue
            if self._skip:
                pos = self._skip_payload(mv, pos)
                continue
            if end - pos < hsize:
                buf += mv[pos:end]
                break
            magic, flags, cmd, cookie, offset, length = unpack(mv, pos)
            pos += hsize
            if (
                magic == NBD_REQUEST_MAGIC
                and cmd == NBD_CMD_READ
                and not flags
                and offset + length <= fast_size
                and 0 < length <= fast_max
            ):
                events.append(Request(cmd, 0, cookie, offset, length))
                continue
            pos = self._request(None, pos - hsize, mv, pos, events)
        return events

    def _skip_payload(self, mv: memoryview, pos: int) -> int:
        take = min(self._skip, len(mv) - pos)
        self._skip -= take
        pos += take
        if not self._skip and self._skip_reply is not None:
            cookie, command, error = self._skip_reply
            self._skip_reply = None
            self.reply_error(cookie, error, command=command)
        return pos

    def _fill_payload(self, mv: memoryview, events: list[Event], pos: int = 0) -> int:
        payload = self._payload
        assert payload is not None and self._pending is not None
        take = min(len(payload) - self._payload_fill, len(mv) - pos)
        payload[self._payload_fill : self._payload_fill + take] = mv[pos : pos + take]
        self._payload_fill += take
        pos += take
        if self._payload_fill == len(payload):
            cmd, flags, cookie, offset, length = self._pending
            self._payload = None
            self._pending = None
            events.append(Request(cmd, flags, cookie, offset, length, payload))
        return pos

    def _request(
        self, header: bytes | None, hpos: int, mv: memoryview, pos: int, events: list[Event]
    ) -> int:
        """Validate one request whose header is at ``hpos`` (or in ``header``); ``pos`` is the
        first byte after it. Returns the new position in ``mv``."""
        fields = REQUEST.unpack(header) if header is not None else REQUEST.unpack_from(mv, hpos)
        magic, flags, cmd, cookie, offset = fields[:5]
        length: int = fields[5]
        if magic != NBD_REQUEST_MAGIC:
            self._state = _State.CLOSED
            raise RemoteProtocolError(f"NBD: bad request magic {magic:#x}")
        info = self.export
        assert info is not None
        if cmd == NBD_CMD_DISC:
            self._state = _State.CLOSED
            events.append(Disconnect("NBD_CMD_DISC"))
            return len(mv)
        error = self._check(info, cmd, flags, offset, length)
        if cmd == NBD_CMD_WRITE:
            if error:
                # Consume the payload we will not use, then answer.
                self._skip = length
                self._skip_reply = (cookie, cmd, error)
                return self._skip_payload(mv, pos)
            avail = len(mv) - pos
            if avail >= length:
                data = bytes(mv[pos : pos + length])
                events.append(Request(cmd, flags, cookie, offset, length, data))
                return pos + length
            self._payload = bytearray(length)
            self._payload_fill = 0
            self._pending = (cmd, flags, cookie, offset, length)
            return self._fill_payload(mv, events, pos)
        if error:
            self.reply_error(cookie, error, command=cmd)
            return pos
        events.append(Request(cmd, flags, cookie, offset, length))
        return pos

    def _check(self, info: ExportInfo, cmd: int, flags: int, offset: int, length: int) -> int:
        """The NBD error for a request, or 0 when the pump should execute it."""
        if self._shutting_down:
            return NBD_ESHUTDOWN
        allowed = _ALLOWED_FLAGS.get(cmd)
        if allowed is None or flags & ~allowed:
            return NBD_EINVAL
        tflags = self._flags_for(info)
        if flags & NBD_CMD_FLAG_FUA and not tflags & NBD_FLAG_SEND_FUA:
            return NBD_EINVAL
        if flags & NBD_CMD_FLAG_DF and not tflags & NBD_FLAG_SEND_DF:
            return NBD_EINVAL
        if flags & NBD_CMD_FLAG_FAST_ZERO and not tflags & NBD_FLAG_SEND_FAST_ZERO:
            return NBD_EINVAL
        writes = cmd in (NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES)
        if cmd == NBD_CMD_FLUSH:
            if not tflags & NBD_FLAG_SEND_FLUSH or offset or length:
                return NBD_EINVAL
            return 0
        if writes and info.readonly:
            return NBD_EPERM
        if cmd == NBD_CMD_TRIM and not tflags & NBD_FLAG_SEND_TRIM:
            return NBD_EINVAL
        if cmd == NBD_CMD_WRITE_ZEROES and not tflags & NBD_FLAG_SEND_WRITE_ZEROES:
            return NBD_EINVAL
        if cmd == NBD_CMD_BLOCK_STATUS and not self.meta_context_id:
            return NBD_EINVAL
        if offset + length > info.size:
            return NBD_ENOSPC if cmd in (NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES) else NBD_EINVAL
        if info.min_block > 1 and (offset % info.min_block or length % info.min_block):
            return NBD_EINVAL
        if cmd == NBD_CMD_WRITE and length > info.max_payload:
            return NBD_EINVAL
        if cmd == NBD_CMD_READ and length > info.max_payload:
            return NBD_EOVERFLOW if self._structured else NBD_EINVAL
        return 0

    # -- replies -------------------------------------------------------------------------------
    def _check_reply_state(self) -> None:
        if self.export is None:
            raise LocalProtocolError("NBD: replies before transmission")

    def reply_ok(self, cookie: int) -> None:
        """Success for any command without a payload (a simple reply is always allowed)."""
        self._out.append(SIMPLE_REPLY.pack(NBD_SIMPLE_REPLY_MAGIC, 0, cookie))

    def reply_read(self, cookie: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Data for a READ, in one message (one data chunk flagged DONE when structured)."""
        if self._structured:
            if not len(data):
                self._out.append(
                    STRUCTURED_REPLY.pack(
                        NBD_STRUCTURED_REPLY_MAGIC,
                        NBD_REPLY_FLAG_DONE,
                        NBD_REPLY_TYPE_NONE,
                        cookie,
                        0,
                    )
                )
                return
            self._out.append(
                OFFSET_DATA_HEADER.pack(
                    NBD_STRUCTURED_REPLY_MAGIC,
                    NBD_REPLY_FLAG_DONE,
                    NBD_REPLY_TYPE_OFFSET_DATA,
                    cookie,
                    len(data) + 8,
                    offset,
                )
            )
        else:
            self._out.append(SIMPLE_REPLY.pack(NBD_SIMPLE_REPLY_MAGIC, 0, cookie))
        if len(data):
            self._out.append(data)

    def reply_read_chunks(
        self, cookie: int, chunks: Sequence[tuple[int, int, bytes | bytearray | memoryview | None]]
    ) -> None:
        """A structured READ reply made of data and hole chunks ``(offset, length, data|None)``;
        ``None`` marks a hole. Chunks must cover the request exactly, in any order."""
        if not self._structured:
            raise LocalProtocolError("NBD: hole chunks need structured replies")
        out = self._out
        for off, length, data in chunks:
            if data is None:
                out.append(
                    STRUCTURED_REPLY.pack(
                        NBD_STRUCTURED_REPLY_MAGIC, 0, NBD_REPLY_TYPE_OFFSET_HOLE, cookie, 12
                    )
                )
                out.append(OFFSET_HOLE.pack(off, length))
            else:
                out.append(
                    OFFSET_DATA_HEADER.pack(
                        NBD_STRUCTURED_REPLY_MAGIC,
                        0,
                        NBD_REPLY_TYPE_OFFSET_DATA,
                        cookie,
                        length + 8,
                        off,
                    )
                )
                out.append(data)
        out.append(
            STRUCTURED_REPLY.pack(
                NBD_STRUCTURED_REPLY_MAGIC, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, cookie, 0
            )
        )

    def reply_block_status(self, cookie: int, extents: Iterable[tuple[int, int]]) -> None:
        """One BLOCK_STATUS chunk for base:allocation: ``(length, flags)`` descriptors."""
        if not self.meta_context_id:
            raise LocalProtocolError("NBD: block status without a metadata context")
        body = bytearray(U32.pack(self.meta_context_id))
        count = 0
        for length, flags in extents:
            if length <= 0:
                continue
            body += BLOCK_DESCRIPTOR.pack(length, flags)
            count += 1
            if count >= MAX_EXTENTS_PER_CHUNK:
                break
        if not count:
            raise LocalProtocolError("NBD: block status needs at least one extent")
        self._out.append(
            STRUCTURED_REPLY.pack(
                NBD_STRUCTURED_REPLY_MAGIC,
                NBD_REPLY_FLAG_DONE,
                NBD_REPLY_TYPE_BLOCK_STATUS,
                cookie,
                len(body),
            )
        )
        self._out.append(body)

    def reply_error(self, cookie: int, error: int, message: str = "", *, command: int = -1) -> None:
        """An error for a request: an ERROR chunk when structured replies are on (mandatory for
        READ), otherwise a simple reply with the error and no payload."""
        if not error:
            raise LocalProtocolError("NBD: error replies need a nonzero error")
        if self._structured:
            text = message.encode("utf-8", "replace")[:MAX_STRING]
            self._out.append(
                STRUCTURED_REPLY.pack(
                    NBD_STRUCTURED_REPLY_MAGIC,
                    NBD_REPLY_FLAG_DONE,
                    NBD_REPLY_TYPE_ERROR,
                    cookie,
                    ERROR_CHUNK.size + len(text),
                )
            )
            self._out.append(ERROR_CHUNK.pack(error, len(text)) + text)
        else:
            self._out.append(SIMPLE_REPLY.pack(NBD_SIMPLE_REPLY_MAGIC, error, cookie))


def _parse_meta_request(data: bytes) -> tuple[bytes, list[bytes]] | None:
    """Export name and queries of a LIST/SET_META_CONTEXT option, or None when malformed."""
    if len(data) < 8:
        return None
    (namelen,) = U32.unpack_from(data)
    if namelen > len(data) - 8:
        return None
    raw = data[4 : 4 + namelen]
    pos = 4 + namelen
    (count,) = U32.unpack_from(data, pos)
    pos += 4
    if count > (len(data) - pos) // 4:
        return None
    queries: list[bytes] = []
    for _ in range(count):
        if pos + 4 > len(data):
            return None
        (qlen,) = U32.unpack_from(data, pos)
        pos += 4
        if qlen > len(data) - pos:
            return None
        queries.append(data[pos : pos + qlen])
        pos += qlen
    if pos != len(data):
        return None
    return raw, queries
