"""The share RPC codec: every operation's request and reply round-trip for arbitrary field
values (hypothesis), and every bound is enforced on decode."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from burrow.errors import LocalProtocolError, RemoteProtocolError
from burrow.proto import shareproto as sp
from burrow.proto.shareproto import Kind, Op

names = st.text(min_size=0, max_size=60).filter(
    lambda s: len(s.encode("utf-8", "surrogateescape")) <= 255
)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
handles = st.binary(min_size=24, max_size=24)
attrs = st.tuples(u64, u32, u32, u32, u32, u64, i64, i64, i64, u64, u64, u32, u64)
FIELD: dict[str, st.SearchStrategy[Any]] = {
    "H": handles,
    "S": names,
    "T": st.text(max_size=300),
    "B": st.binary(max_size=3000),
    "I": u32,
    "Q": u64,
    "q": i64,
    "A": attrs,
    "F": st.tuples(*[u64] * 8),
    "D": st.lists(st.tuples(names, handles, attrs), max_size=20),
    "L": st.lists(names, max_size=20),
}


def _fields(types: str) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.tuples(*[FIELD[c] for c in types])


@settings(max_examples=15, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("op", list(Op))
def test_round_trip(op: Op, data: st.DataObject) -> None:
    call_id = data.draw(u32)
    req = data.draw(_fields(sp.REQUESTS[op]))
    frame = sp.decode_frame(sp.encode_request(op, call_id, *req), expect=Kind.REQUEST)
    assert (frame.kind, frame.op, frame.call_id) == (Kind.REQUEST, op, call_id)
    assert _norm(frame.fields) == _norm(req)
    rep = data.draw(_fields(sp.REPLIES[op]))
    frame = sp.decode_frame(sp.encode_reply(op, call_id, *rep), expect=Kind.REPLY)
    assert _norm(frame.fields) == _norm(rep)
    zero = sp.decode_frame(sp.encode_reply(op, call_id, *rep), zero_copy=True)
    assert _norm(zero.fields) == _norm(rep)


def _norm(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def test_error_frames() -> None:
    frame = sp.decode_frame(sp.encode_error(Op.READ, 7, 2, "gone"), expect=Kind.REPLY)
    assert frame.kind == Kind.ERROR and frame.fields == (2, "gone") and frame.call_id == 7
    with pytest.raises(RemoteProtocolError):
        sp.decode_frame(sp.encode_error(Op.READ, 7, 2, "x"), expect=Kind.REQUEST)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x01\x00",
        struct.pack("<BBHI", 9, 1, 0, 0),  # unknown kind
        struct.pack("<BBHI", 1, 0, 0, 0),  # unknown op
        struct.pack("<BBHI", 1, 19, 1, 0),  # flags set
        struct.pack("<BBHI", 1, 19, 0, 0) + b"x",  # trailing
        struct.pack("<BBHI", 1, 2, 0, 0) + bytes(23),  # short handle
        struct.pack("<BBHI", 1, 1, 0, 0) + bytes(24) + struct.pack("<H", 256) + bytes(256),
        struct.pack("<BBHI", 1, 5, 0, 0) + bytes(32) + struct.pack("<I", sp.MAX_CHUNK + 1),
        struct.pack("<BBHI", 2, 3, 0, 0) + struct.pack("<H", 4097),  # too many entries
        bytes(sp.MAX_MESSAGE + 1),
    ],
)
def test_decode_refuses(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        sp.decode_frame(data)


def test_encode_refuses_out_of_bounds() -> None:
    with pytest.raises(LocalProtocolError):
        sp.encode_request(Op.LOOKUP, 1, bytes(24), "x" * 256)
    with pytest.raises(LocalProtocolError):
        sp.encode_request(Op.WRITE, 1, bytes(24), 0, bytes(sp.MAX_CHUNK + 1))
    with pytest.raises(LocalProtocolError):
        sp.encode_request(Op.GETATTR, 1, bytes(23))
    with pytest.raises(LocalProtocolError):
        sp.encode_request(Op.READ, 1, bytes(24), -1, 5)


def test_hello_and_welcome() -> None:
    assert sp.decode_hello(sp.encode_hello("data")) == (1, sp.PROTOCOL_VERSION, "data")
    root = bytes(range(24))
    assert sp.decode_welcome(sp.encode_welcome(1, writable=True, root=root)) == (
        1,
        0,
        True,
        root,
        "",
    )
    assert sp.decode_welcome(sp.encode_welcome(1, status=13, message="no"))[1:] == (
        13,
        False,
        b"",
        "no",
    )
    for bad in [b"", b"NOT-A-BURROW" + bytes(6), sp.encode_hello("x") + b"!"]:
        with pytest.raises(RemoteProtocolError):
            sp.decode_hello(bad)


@settings(max_examples=50, deadline=None)
@given(
    call_id=st.integers(0, 2**32 - 1),
    offset=st.integers(0, 2**64 - 1),
    data=st.binary(max_size=3000),
)
def test_write_head_plus_data_is_the_write_request(call_id: int, offset: int, data: bytes) -> None:
    handle = bytes(range(24))
    head = sp.encode_write_head(call_id, handle, offset, len(data))
    assert head + data == sp.encode_request(Op.WRITE, call_id, handle, offset, data)
    frame = sp.decode_frame(head + data, expect=Kind.REQUEST)
    assert frame.op == Op.WRITE and frame.fields == (handle, offset, data)


def test_write_head_bounds() -> None:
    with pytest.raises(LocalProtocolError):
        sp.encode_write_head(1, bytes(23), 0, 0)
    with pytest.raises(LocalProtocolError):
        sp.encode_write_head(1, bytes(24), 0, sp.MAX_CHUNK + 1)
    with pytest.raises(LocalProtocolError):
        sp.encode_write_head(1, bytes(24), -1, 0)
