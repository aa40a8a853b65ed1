"""The sans-IO NBD state machines, byte for byte against the values of the NBD spec
(doc/proto.md): handshake, option replies, request validation and error values."""

from __future__ import annotations

import struct

import pytest

from burrow.errors import NotFound, RemoteProtocolError
from burrow.proto.nbd import (
    BlockStatus,
    Disconnect,
    ExportInfo,
    HandshakeDone,
    NBDClientConnection,
    NBDServerConnection,
    ReadData,
    ReadHole,
    ReplyDone,
    Request,
    StartTLS,
    TLSMode,
    TransmissionStarted,
    transmission_flags,
)
from burrow.proto.nbd import constants as C  # noqa: N812

SIZE = 1 << 20
RW = ExportInfo("", SIZE, transmission_flags(readonly=False, can_trim=True, can_fast_zero=True))
RO = ExportInfo("ro", SIZE, transmission_flags(readonly=True), description="read only")
BIG = ExportInfo("big", 64 << 20, transmission_flags(readonly=False))
EXPORTS = {"": RW, "ro": RO, "big": BIG}


def opt(option: int, data: bytes = b"") -> bytes:
    return struct.pack(">QII", 0x49484156454F5054, option, len(data)) + data


def info_data(name: str, *reqs: int) -> bytes:
    raw = name.encode()
    return (
        struct.pack(">I", len(raw))
        + raw
        + struct.pack(">H", len(reqs))
        + b"".join(struct.pack(">H", r) for r in reqs)
    )


def meta_data(name: str, *queries: str) -> bytes:
    raw = name.encode()
    out = struct.pack(">I", len(raw)) + raw + struct.pack(">I", len(queries))
    for q in queries:
        out += struct.pack(">I", len(q)) + q.encode()
    return out


def replies(data: bytes) -> list[tuple[int, int, bytes]]:
    """Split option replies: (option, type, data)."""
    out = []
    pos = 0
    while pos < len(data):
        magic, option, rtype, length = struct.unpack_from(">QIII", data, pos)
        assert magic == 0x3E889045565A9
        out.append((option, rtype, data[pos + 20 : pos + 20 + length]))
        pos += 20 + length
    return out


def server(tls: TLSMode = TLSMode.NOTLS, flags: int = 3) -> NBDServerConnection:
    sm = NBDServerConnection(EXPORTS, tls=tls)
    greeting = sm.data_to_send()
    # NBDMAGIC, IHAVEOPT, handshake flags FIXED_NEWSTYLE | NO_ZEROES
    assert greeting == b"NBDMAGIC" + b"IHAVEOPT" + b"\x00\x03"
    assert sm.receive_data(struct.pack(">I", flags)) == []
    return sm


def go(sm: NBDServerConnection, name: str = "", structured: bool = True, meta: bool = True) -> None:
    if structured:
        sm.receive_data(opt(C.NBD_OPT_STRUCTURED_REPLY))
    if meta:
        sm.receive_data(opt(C.NBD_OPT_SET_META_CONTEXT, meta_data(name, "base:allocation")))
    events = sm.receive_data(opt(C.NBD_OPT_GO, info_data(name)))
    assert isinstance(events[-1], TransmissionStarted)
    sm.data_to_send()


def req(cmd: int, cookie: int, offset: int = 0, length: int = 0, flags: int = 0) -> bytes:
    return struct.pack(">IHHQQI", 0x25609513, flags, cmd, cookie, offset, length)


def simple(data: bytes) -> tuple[int, int]:
    magic, error, cookie = struct.unpack(">IIQ", data[:16])
    assert magic == 0x67446698
    return error, cookie


def structured_error(data: bytes) -> tuple[int, int]:
    magic, flags, rtype, cookie, _length = struct.unpack_from(">IHHQI", data)
    assert magic == 0x668E33EF and flags & 1 and rtype == 0x8001
    (error,) = struct.unpack_from(">I", data, 20)
    return error, cookie


# -- handshake and options ----------------------------------------------------------------------
def test_unknown_client_flags_drop_the_connection() -> None:
    sm = NBDServerConnection(EXPORTS)
    sm.data_to_send()
    with pytest.raises(RemoteProtocolError):
        sm.receive_data(struct.pack(">I", 4))


def test_export_name_with_and_without_zeroes() -> None:
    for cflags, pad in ((3, 0), (1, 124)):
        sm = server(flags=cflags)
        events = sm.receive_data(opt(C.NBD_OPT_EXPORT_NAME, b"ro"))
        assert isinstance(events[0], TransmissionStarted) and events[0].export is RO
        out = sm.data_to_send()
        assert len(out) == 10 + pad
        size, flags = struct.unpack(">QH", out[:10])
        assert size == SIZE and flags & C.NBD_FLAG_READ_ONLY and flags & C.NBD_FLAG_HAS_FLAGS
        assert out[10:] == bytes(pad)


def test_export_name_unknown_is_a_hard_disconnect() -> None:
    sm = server()
    with pytest.raises(RemoteProtocolError):
        sm.receive_data(opt(C.NBD_OPT_EXPORT_NAME, b"nope"))


def test_unknown_option_and_bad_magic() -> None:
    sm = server()
    sm.receive_data(opt(42, b"xyz") + opt(C.NBD_OPT_EXTENDED_HEADERS))
    got = replies(sm.data_to_send())
    assert [(o, t) for o, t, _ in got] == [
        (42, C.NBD_REP_ERR_UNSUP),
        (C.NBD_OPT_EXTENDED_HEADERS, C.NBD_REP_ERR_UNSUP),
    ]
    with pytest.raises(RemoteProtocolError):
        sm.receive_data(b"X" * 16)


def test_list_and_info() -> None:
    sm = server()
    sm.receive_data(opt(C.NBD_OPT_LIST))
    got = replies(sm.data_to_send())
    assert [t for _, t, _ in got] == [C.NBD_REP_SERVER] * 3 + [C.NBD_REP_ACK]
    assert got[1][2] == struct.pack(">I", 2) + b"ro" + b"read only"
    sm.receive_data(opt(C.NBD_OPT_LIST, b"x"))
    assert replies(sm.data_to_send())[0][1] == C.NBD_REP_ERR_INVALID
    sm.receive_data(
        opt(
            C.NBD_OPT_INFO,
            info_data("ro", C.NBD_INFO_NAME, C.NBD_INFO_DESCRIPTION, C.NBD_INFO_BLOCK_SIZE),
        )
    )
    got = replies(sm.data_to_send())
    infos = {struct.unpack_from(">H", d)[0]: d for _, t, d in got if t == C.NBD_REP_INFO}
    assert got[-1][1] == C.NBD_REP_ACK
    assert struct.unpack(">HQH", infos[C.NBD_INFO_EXPORT])[1] == SIZE
    assert infos[C.NBD_INFO_NAME][2:] == b"ro"
    assert infos[C.NBD_INFO_DESCRIPTION][2:] == b"read only"
    _, minimum, preferred, maximum = struct.unpack(">HIII", infos[C.NBD_INFO_BLOCK_SIZE])
    assert minimum == 1 and preferred == 4096 and maximum == 32 << 20
    sm.receive_data(opt(C.NBD_OPT_INFO, info_data("missing")))
    assert replies(sm.data_to_send())[-1][1] == C.NBD_REP_ERR_UNKNOWN
    # name length pointing past the data, and a request count that does not match
    sm.receive_data(opt(C.NBD_OPT_GO, struct.pack(">I", 100) + b"\0\0"))
    sm.receive_data(opt(C.NBD_OPT_GO, struct.pack(">I", 0) + b"\0\5"))
    assert [t for _, t, _ in replies(sm.data_to_send())] == [C.NBD_REP_ERR_INVALID] * 2
    assert not sm.in_transmission


def test_meta_contexts() -> None:
    sm = server()
    sm.receive_data(opt(C.NBD_OPT_SET_META_CONTEXT, meta_data("", "base:allocation")))
    assert replies(sm.data_to_send())[0][1] == C.NBD_REP_ERR_INVALID  # structured first
    sm.receive_data(opt(C.NBD_OPT_STRUCTURED_REPLY))
    assert replies(sm.data_to_send()) == [(C.NBD_OPT_STRUCTURED_REPLY, C.NBD_REP_ACK, b"")]
    sm.receive_data(opt(C.NBD_OPT_LIST_META_CONTEXT, meta_data("")))
    got = replies(sm.data_to_send())
    assert got == [
        (C.NBD_OPT_LIST_META_CONTEXT, C.NBD_REP_META_CONTEXT, b"\0\0\0\0base:allocation"),
        (C.NBD_OPT_LIST_META_CONTEXT, C.NBD_REP_ACK, b""),
    ]
    sm.receive_data(opt(C.NBD_OPT_LIST_META_CONTEXT, meta_data("", "x-other:thing")))
    assert [t for _, t, _ in replies(sm.data_to_send())] == [C.NBD_REP_ACK]
    sm.receive_data(opt(C.NBD_OPT_SET_META_CONTEXT, meta_data("", "base:", "qemu:dirty")))
    assert [t for _, t, _ in replies(sm.data_to_send())] == [C.NBD_REP_ACK]
    sm.receive_data(opt(C.NBD_OPT_SET_META_CONTEXT, meta_data("", "base:allocation")))
    got = replies(sm.data_to_send())
    assert got[0][1] == C.NBD_REP_META_CONTEXT and got[0][2][4:] == b"base:allocation"
    assert struct.unpack_from(">I", got[0][2])[0] != 0
    # truncated query list
    sm.receive_data(opt(C.NBD_OPT_SET_META_CONTEXT, meta_data("", "base:allocation")[:-3]))
    assert replies(sm.data_to_send())[0][1] == C.NBD_REP_ERR_INVALID
    events = sm.receive_data(opt(C.NBD_OPT_GO, info_data("")))
    assert isinstance(events[0], TransmissionStarted)
    assert events[0].meta_context_id == 0  # the failed SET cleared the selection


def test_abort() -> None:
    sm = server()
    events = sm.receive_data(opt(C.NBD_OPT_ABORT))
    assert isinstance(events[0], Disconnect)
    assert replies(sm.data_to_send()) == [(C.NBD_OPT_ABORT, C.NBD_REP_ACK, b"")]
    assert sm.closed


def test_oversized_option_is_refused_without_buffering() -> None:
    sm = server()
    sm.receive_data(struct.pack(">QII", 0x49484156454F5054, 99, 1 << 30))
    for _ in range(4):
        sm.receive_data(bytes(1 << 16))
    assert replies(sm.data_to_send())[0][1] == C.NBD_REP_ERR_TOO_BIG
    assert len(sm._buf) == 0


def test_tls_modes() -> None:
    sm = server(TLSMode.NOTLS)
    sm.receive_data(opt(C.NBD_OPT_STARTTLS))
    assert replies(sm.data_to_send())[0][1] == C.NBD_REP_ERR_UNSUP
    # FORCEDTLS: everything but STARTTLS/ABORT gets TLS_REQD; EXPORT_NAME disconnects.
    sm = server(TLSMode.FORCED)
    sm.receive_data(opt(C.NBD_OPT_LIST) + opt(C.NBD_OPT_GO, info_data("")) + opt(77))
    assert [t for _, t, _ in replies(sm.data_to_send())] == [C.NBD_REP_ERR_TLS_REQD] * 3
    sm.receive_data(opt(C.NBD_OPT_STRUCTURED_REPLY))
    sm.data_to_send()
    events = sm.receive_data(opt(C.NBD_OPT_STARTTLS))
    assert isinstance(events[0], StartTLS)
    assert replies(sm.data_to_send()) == [(C.NBD_OPT_STARTTLS, C.NBD_REP_ACK, b"")]
    with pytest.raises(RemoteProtocolError):  # plaintext after the ACK
        sm.receive_data(opt(C.NBD_OPT_LIST))
    sm = server(TLSMode.FORCED)
    sm.receive_data(opt(C.NBD_OPT_STARTTLS))
    sm.data_to_send()
    sm.tls_established()
    sm.receive_data(opt(C.NBD_OPT_STARTTLS))
    assert replies(sm.data_to_send())[0][1] == C.NBD_REP_ERR_INVALID
    events = sm.receive_data(opt(C.NBD_OPT_GO, info_data("")))
    assert isinstance(events[-1], TransmissionStarted)
    assert not events[-1].structured_replies  # nothing survives STARTTLS
    sm = server(TLSMode.FORCED)
    with pytest.raises(RemoteProtocolError):
        sm.receive_data(opt(C.NBD_OPT_EXPORT_NAME, b""))


# -- transmission ---------------------------------------------------------------------------
def test_request_validation_errors_keep_the_connection() -> None:
    sm = server()
    go(sm, structured=False, meta=False)
    cases = [
        (req(C.NBD_CMD_READ, 1, SIZE - 10, 20), C.NBD_EINVAL),  # past the end
        (req(C.NBD_CMD_WRITE_ZEROES, 2, SIZE, 1), C.NBD_ENOSPC),
        (req(C.NBD_CMD_TRIM, 3, SIZE, 512), C.NBD_EINVAL),
        (req(99, 4), C.NBD_EINVAL),  # unknown command
        (req(C.NBD_CMD_READ, 5, 0, 512, flags=C.NBD_CMD_FLAG_NO_HOLE), C.NBD_EINVAL),
        (req(C.NBD_CMD_READ, 6, 0, 512, flags=C.NBD_CMD_FLAG_DF), C.NBD_EINVAL),  # no DF
        (req(C.NBD_CMD_BLOCK_STATUS, 7, 0, 512), C.NBD_EINVAL),  # no context
        (req(C.NBD_CMD_FLUSH, 8, 1, 0), C.NBD_EINVAL),
        (req(C.NBD_CMD_READ, 9, 0, (32 << 20) + 1), C.NBD_EINVAL),
        (req(C.NBD_CMD_READ, 10, 0, 8, flags=1 << 9), C.NBD_EINVAL),
    ]
    for raw, error in cases:
        assert sm.receive_data(raw) == []
        assert simple(sm.data_to_send()) == (error, struct.unpack_from(">Q", raw, 8)[0])
    # a write past the end: payload consumed, ENOSPC, and the stream stays in sync
    events = sm.receive_data(req(C.NBD_CMD_WRITE, 11, SIZE - 2, 4) + b"abcd" + req(0, 12, 0, 8))
    assert simple(sm.data_to_send()) == (C.NBD_ENOSPC, 11)
    assert len(events) == 1 and isinstance(events[0], Request) and events[0].cookie == 12


def test_writes_on_read_only_export_get_eperm() -> None:
    sm = server()
    sm.receive_data(opt(C.NBD_OPT_GO, info_data("ro")))
    sm.data_to_send()
    for cmd in (C.NBD_CMD_WRITE, C.NBD_CMD_TRIM, C.NBD_CMD_WRITE_ZEROES):
        payload = b"x" * 16 if cmd == C.NBD_CMD_WRITE else b""
        assert sm.receive_data(req(cmd, cmd, 0, 16) + payload) == []
        assert simple(sm.data_to_send()) == (C.NBD_EPERM, cmd)
    # flush is not advertised on a read-only export
    sm.receive_data(req(C.NBD_CMD_FLUSH, 9))
    assert simple(sm.data_to_send()) == (C.NBD_EINVAL, 9)


def test_structured_errors_and_replies() -> None:
    sm = server()
    go(sm)
    sm.receive_data(req(C.NBD_CMD_READ, 1, SIZE, 1))
    assert structured_error(sm.data_to_send()) == (C.NBD_EINVAL, 1)
    big = server()
    go(big, "big")
    big.receive_data(req(C.NBD_CMD_READ, 2, 0, (32 << 20) + 1))
    assert structured_error(big.data_to_send()) == (C.NBD_EOVERFLOW, 2)
    (ev,) = sm.receive_data(req(C.NBD_CMD_READ, 3, 4096, 8, flags=C.NBD_CMD_FLAG_DF))
    assert isinstance(ev, Request) and ev.flags == C.NBD_CMD_FLAG_DF
    sm.reply_read(3, 4096, b"12345678")
    out = sm.data_to_send()
    assert struct.unpack(">IHHQIQ", out[:28]) == (0x668E33EF, 1, 1, 3, 16, 4096)
    assert out[28:] == b"12345678"
    sm.reply_read_chunks(4, [(0, 512, None), (512, 4, b"abcd")])
    out = sm.data_to_send()
    assert struct.unpack_from(">IHHQIQI", out) == (0x668E33EF, 0, 2, 4, 12, 0, 512)
    sm.reply_block_status(5, [(4096, 0), (8192, 3)])
    out = sm.data_to_send()
    assert struct.unpack(">IHHQI", out[:20]) == (0x668E33EF, 1, 5, 5, 20)
    assert struct.unpack(">IIIII", out[20:]) == (1, 4096, 0, 8192, 3)


def test_split_delivery_gives_the_same_events() -> None:
    stream = (
        req(C.NBD_CMD_WRITE, 1, 100, 5000)
        + bytes(range(256)) * 19
        + b"x" * 136
        + req(C.NBD_CMD_READ, 2, 0, 4096)
        + req(C.NBD_CMD_FLUSH, 3)
        + req(C.NBD_CMD_DISC, 4)
        + b"ignored after DISC"
    )
    whole = server()
    go(whole, structured=False, meta=False)
    expect = whole.receive_data(stream)
    for step in (1, 7, 28, 1000):
        sm = server()
        go(sm, structured=False, meta=False)
        got = []
        for i in range(0, len(stream), step):
            got += sm.receive_data(stream[i : i + step])
        assert [repr(e) for e in got] == [repr(e) for e in expect]
        assert bytes(got[0].data) == bytes(expect[0].data)
    assert isinstance(expect[-1], Disconnect)


def test_bad_request_magic_is_fatal() -> None:
    sm = server()
    go(sm)
    with pytest.raises(RemoteProtocolError):
        sm.receive_data(b"\x12\x34\x56\x78" + bytes(24))


# -- client against server, in memory -----------------------------------------------------
def pump(client: NBDClientConnection, sm: NBDServerConnection) -> list[object]:
    """Shuttle bytes until both sides are quiet; return the client's events."""
    events: list[object] = []
    for _ in range(100):
        to_server = client.data_to_send()
        to_client = sm.data_to_send()
        if not to_server and not to_client:
            break
        if to_server:
            for ev in sm.receive_data(to_server):
                events.append(("server", ev))
        if to_client:
            events.extend(client.receive_data(to_client))
    return events


def test_client_and_server_state_machines_agree() -> None:
    sm = NBDServerConnection(EXPORTS)
    client = NBDClientConnection("")
    events = pump(client, sm)
    done = [e for e in events if isinstance(e, HandshakeDone)]
    assert done and done[0].size == SIZE and done[0].structured_replies
    assert done[0].contexts == {"base:allocation": 1}
    client.send_request(C.NBD_CMD_READ, 7, 512, 1024)
    client.send_request(C.NBD_CMD_BLOCK_STATUS, 8, 0, SIZE)
    server_events = [e for who, e in pump(client, sm) if who == "server"]  # type: ignore[misc]
    assert [e.cookie for e in server_events] == [7, 8]
    sm.reply_block_status(8, [(SIZE, 3)])  # out of order
    sm.reply_read_chunks(7, [(512, 512, None), (1024, 512, b"z" * 512)])
    got = pump(client, sm)
    assert isinstance(got[0], BlockStatus) and got[0].extents == [(SIZE, 3)]
    assert got[1] == ReplyDone(8, 0)
    assert got[2] == ReadHole(7, 512, 512)
    assert got[3] == ReadData(7, 1024, b"z" * 512)
    assert got[4] == ReplyDone(7, 0)
    client.send_request(C.NBD_CMD_READ, 9, SIZE, 1)  # past the end: the server refuses
    assert pump(client, sm)[-1] == ReplyDone(9, C.NBD_EINVAL, "")


def test_client_reports_unknown_export() -> None:
    sm = NBDServerConnection(EXPORTS)
    client = NBDClientConnection("missing")
    with pytest.raises(NotFound):
        pump(client, sm)


def test_client_rejects_replies_outside_the_request() -> None:
    sm = NBDServerConnection(EXPORTS)
    client = NBDClientConnection("")
    pump(client, sm)
    client.send_request(C.NBD_CMD_READ, 1, 0, 512)
    pump(client, sm)
    sm.reply_read(1, 4096, b"x" * 512)  # wrong offset
    with pytest.raises(RemoteProtocolError):
        client.receive_data(sm.data_to_send())


def test_selective_tls_with_a_tls_only_export() -> None:
    secret = ExportInfo("secret", SIZE, transmission_flags(readonly=True), tls_only=True)
    sm = NBDServerConnection({"": RW, "secret": secret}, tls=TLSMode.SELECTIVE)
    sm.data_to_send()
    sm.receive_data(struct.pack(">I", 3))
    sm.receive_data(opt(C.NBD_OPT_LIST))
    names = [d[4:] for _, t, d in replies(sm.data_to_send()) if t == C.NBD_REP_SERVER]
    assert names == [b""]  # the TLS-only export is not listed before TLS
    sm.receive_data(opt(C.NBD_OPT_STRUCTURED_REPLY))
    sm.receive_data(opt(C.NBD_OPT_SET_META_CONTEXT, meta_data("secret", "base:allocation")))
    sm.receive_data(opt(C.NBD_OPT_GO, info_data("secret")))
    got = [t for _, t, _ in replies(sm.data_to_send())]
    # TLS_REQD only for INFO/GO/EXPORT_NAME; the plaintext export still works
    assert got == [C.NBD_REP_ACK, C.NBD_REP_ERR_POLICY, C.NBD_REP_ERR_TLS_REQD]
    sm.receive_data(opt(C.NBD_OPT_STARTTLS))
    sm.data_to_send()
    sm.tls_established()
    events = sm.receive_data(opt(C.NBD_OPT_GO, info_data("secret")))
    assert isinstance(events[-1], TransmissionStarted) and events[-1].export is secret


def test_client_rejects_incomplete_or_overlapping_reads() -> None:
    for chunks in (
        [(0, 256, b"x" * 256)],  # half the request, then DONE
        [(0, 512, None), (0, 512, b"y" * 512)],  # the same bytes twice
    ):
        sm = NBDServerConnection(EXPORTS)
        client = NBDClientConnection("")
        pump(client, sm)
        client.send_request(C.NBD_CMD_READ, 1, 0, 512)
        pump(client, sm)
        sm.reply_read_chunks(1, chunks)
        with pytest.raises(RemoteProtocolError):
            client.receive_data(sm.data_to_send())
