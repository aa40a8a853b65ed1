"""The sans-IO secure channel: round trips, tampering, replay, reordering, truncation,
oversized records, unknown keys, rekeying and the WireGuard-style cookie defence."""

from __future__ import annotations

import os
import struct

import pytest

from burrow.errors import (
    AuthenticationError,
    ConnectionLost,
    LocalProtocolError,
    RemoteProtocolError,
)
from burrow.proto.noise import KeyPair
from burrow.proto.securechannel import (
    MAX_PAYLOAD,
    ChannelConfig,
    CloseReceived,
    CookieChecker,
    InitiationReceived,
    Message,
    PeerInfo,
    RateLimiter,
    SecureChannel,
    hchacha20,
    xchacha20poly1305_decrypt,
    xchacha20poly1305_encrypt,
)
from securechannel_helpers import Pair, do_handshake, make_pair


def _messages(events: list[object]) -> list[bytes]:
    return [e.data for e in events if isinstance(e, Message)]


@pytest.mark.parametrize("psk", [None, os.urandom(32)], ids=["IK", "IKpsk2"])
def test_round_trip_both_directions(psk: bytes | None) -> None:
    pair = make_pair(psk=psk)
    assert pair.client.handshake_hash == pair.server.handshake_hash
    assert pair.server.remote_static == pair.client_key.public
    assert pair.server.peer == PeerInfo("alice", psk)
    sizes = [0, 1, 15, 16, 17, 1000, 65536 - 100, MAX_PAYLOAD]
    for n in sizes:
        data = os.urandom(n)
        pair.client.send(data)
        assert _messages(pair.c2s()) == [data]
        pair.server.send(data[::-1])
        assert _messages(pair.s2c()) == [data[::-1]]


def test_byte_at_a_time_and_coalesced_delivery() -> None:
    pair = make_pair()
    msgs = [os.urandom(n) for n in (3, 300, 3000)]
    for m in msgs:
        pair.client.send(m)
    wire = pair.client.data_to_send()
    got: list[bytes] = []
    for i in range(len(wire)):
        got += _messages(pair.server.receive_data(wire[i : i + 1]))
    assert got == msgs
    for m in msgs:
        pair.server.send(m)
    assert _messages(pair.s2c()) == msgs


def test_bulk_stream_splits_into_full_records() -> None:
    pair = make_pair()
    data = os.urandom(3 * MAX_PAYLOAD + 5)
    pair.client.send_stream(data)
    wire = b"".join(pair.client.take_records())
    # Walk the records on the wire (the sender may seal them into one buffer).
    lengths, types, pos = [], [], 0
    while pos < len(wire):
        types.append(wire[pos])
        length = int.from_bytes(wire[pos + 4 : pos + 8], "little")
        lengths.append(8 + length)
        pos += 8 + length
    assert pos == len(wire)
    assert lengths == [16 + MAX_PAYLOAD + 16] * 3 + [16 + 5 + 16]
    assert types == [5, 5, 5, 5]  # four independent DATA records
    got = _messages(pair.server.receive_data(wire))
    assert [len(m) for m in got] == [MAX_PAYLOAD] * 3 + [5]
    assert b"".join(got) == data


def test_static_key_not_in_cleartext() -> None:
    pair = make_pair()
    wire = b"".join(pair.wire_c2s + pair.wire_s2c)
    assert pair.client_key.public not in wire
    assert pair.client_key.private not in wire
    assert pair.server_key.public not in wire  # the responder's key is a pre-message


def test_unknown_client_key_refused_before_payload() -> None:
    pair = make_pair(known=False, handshake=False)
    pair.client.start(0.0, b"secret hello")
    with pytest.raises(AuthenticationError, match="unknown client key"):
        pair.c2s()
    assert pair.server.data_to_send() == b""  # no reply at all
    with pytest.raises(LocalProtocolError):
        pair.server.receive_data(b"x")  # failed for good


def test_psk_mismatch_refused() -> None:
    pair = make_pair(psk=None, server_psk=bytes(32), handshake=False)
    pair.client.start(0.0)
    with pytest.raises(AuthenticationError):
        pair.c2s()
    pair = make_pair(psk=bytes(32), server_psk=b"\x01" * 32, handshake=False)
    pair.client.start(0.0)
    pair.c2s()
    pair.server.accept(0.0)
    with pytest.raises(AuthenticationError):
        pair.s2c()


def test_wrong_server_key_fails_mac1_without_dh() -> None:
    client_key, server_key = KeyPair.generate(), KeyPair.generate()
    calls: list[bytes] = []
    client = SecureChannel(
        ChannelConfig(static=client_key, remote_static=KeyPair.generate().public),
        initiator=True,
    )
    server = SecureChannel(
        ChannelConfig(static=server_key, authorize=lambda k: calls.append(k) or None),
        initiator=False,
    )
    client.start(0.0)
    with pytest.raises(AuthenticationError, match="mac1"):
        server.receive_data(client.data_to_send())
    assert calls == []


@pytest.mark.parametrize("seed", range(8))
def test_garbage_initiation_rejected(seed: int) -> None:
    import random

    rng = random.Random(seed)
    server = SecureChannel(
        ChannelConfig(static=KeyPair.generate(), authorize=lambda k: None), initiator=False
    )
    body = rng.randbytes(rng.randint(0, 200))
    with pytest.raises(RemoteProtocolError):
        server.receive_data(struct.pack("<B3xI", 1, len(body)) + body)
        server.receive_data(b"")


def test_tampered_record_every_byte() -> None:
    length = 16 + 14 + 16
    for pos in range(length):
        pair = make_pair()
        pair.client.send(b"attack at dawn")
        wire = bytearray(pair.client.data_to_send())
        assert len(wire) == length
        wire[pos] ^= 0x01
        with pytest.raises(RemoteProtocolError):
            pair.server.receive_data(bytes(wire))
            pair.server.receive_data(b"")  # a length grown by tampering waits for more


def test_replayed_record_rejected() -> None:
    pair = make_pair()
    pair.client.send(b"pay 10")
    wire = pair.client.data_to_send()
    assert _messages(pair.server.receive_data(wire)) == [b"pay 10"]
    with pytest.raises(RemoteProtocolError, match="replayed"):
        pair.server.receive_data(wire)


def test_reordered_record_rejected() -> None:
    pair = make_pair()
    pair.client.send(b"first")
    first = pair.client.data_to_send()
    pair.client.send(b"second")
    second = pair.client.data_to_send()
    with pytest.raises(RemoteProtocolError, match="reordered"):
        pair.server.receive_data(second + first)


def test_counter_rewritten_fails_authentication() -> None:
    pair = make_pair()
    pair.client.send(b"one")
    pair.c2s()
    pair.client.send(b"two")
    wire = bytearray(pair.client.data_to_send())
    wire[0] = 7  # DATA -> CLOSE would pass the length check only if empty; make it so
    wire[4:8] = (24).to_bytes(4, "little")
    with pytest.raises(RemoteProtocolError):
        pair.server.receive_data(bytes(wire[:40]))
    pair = make_pair()
    pair.client.send(b"")
    wire = bytearray(pair.client.data_to_send())
    wire[0] = 6  # an empty DATA record relabelled KEY_UPDATE: the header is associated data
    with pytest.raises(RemoteProtocolError):
        pair.server.receive_data(bytes(wire))


def test_truncated_record_and_missing_close() -> None:
    pair = make_pair()
    pair.client.send(b"x" * 100)
    wire = pair.client.data_to_send()
    assert pair.server.receive_data(wire[:-1]) == []
    with pytest.raises(RemoteProtocolError, match="truncated"):
        pair.server.receive_data(b"")
    pair = make_pair()
    with pytest.raises(ConnectionLost):
        pair.server.receive_data(b"")


def test_oversized_record_rejected_from_header_alone() -> None:
    pair = make_pair()
    header = struct.pack("<B3xIQ", 5, 8 + 65535 + 16 + 1, 0)
    with pytest.raises(RemoteProtocolError, match="oversized"):
        pair.server.receive_data(header)
    pair = make_pair(max_payload=1024)
    pair.client.config.max_payload = 4096
    pair.client.send(bytes(2000))
    with pytest.raises(RemoteProtocolError, match="oversized"):
        pair.c2s()
    with pytest.raises(LocalProtocolError):
        make_pair().client.send(bytes(MAX_PAYLOAD + 1))


@pytest.mark.parametrize(
    "header",
    [
        struct.pack("<B3xI", 99, 10),  # unknown type
        struct.pack("<BBBBI", 5, 1, 0, 0, 24),  # reserved byte set
        struct.pack("<B3xI", 6, 100),  # key update must be empty
        struct.pack("<B3xI", 3, 80),  # a response sent to the server
    ],
)
def test_bad_headers(header: bytes) -> None:
    pair = make_pair()
    with pytest.raises(RemoteProtocolError):
        pair.server.receive_data(header)


def test_data_before_handshake_rejected() -> None:
    pair = make_pair(handshake=False)
    pair.client.start(0.0)
    wire = pair.client.data_to_send()
    events = pair.server.receive_data(wire)
    assert isinstance(events[0], InitiationReceived)
    with pytest.raises(RemoteProtocolError, match="before the handshake"):
        pair.server.receive_data(struct.pack("<B3xIQ", 5, 24, 0) + bytes(16))


def test_clean_close_both_ways() -> None:
    pair = make_pair()
    pair.client.send(b"bye")
    pair.client.close()
    events = pair.c2s()
    assert _messages(events) == [b"bye"] and isinstance(events[-1], CloseReceived)
    with pytest.raises(LocalProtocolError):
        pair.client.send(b"more")
    pair.server.send(b"last words")
    pair.server.close()
    events = pair.s2c()
    assert _messages(events) == [b"last words"] and isinstance(events[-1], CloseReceived)
    assert pair.client.closed and pair.server.closed
    assert pair.server.receive_data(b"") == []  # EOF after close is fine


def test_data_after_close_rejected() -> None:
    pair = make_pair()
    pair.client.close()
    close = pair.client.data_to_send()
    pair.server.receive_data(close)
    with pytest.raises(RemoteProtocolError):
        pair.server.receive_data(struct.pack("<B3xIQ", 5, 24, 1) + bytes(16))


def test_rekey_under_traffic_by_count_and_time() -> None:
    pair = make_pair(rekey_after_messages=5, reject_after_messages=7)
    key0 = pair.client._send.cipher.k  # type: ignore[union-attr]
    for i in range(23):
        pair.client.send(b"m%d" % i, now=1.0)
        pair.server.send(b"r%d" % i, now=1.0)
        assert _messages(pair.c2s(1.0)) == [b"m%d" % i]
        assert _messages(pair.s2c(1.0)) == [b"r%d" % i]
    assert pair.client.stats.rekeys_sent == 4 == pair.server.stats.rekeys_received
    assert pair.client._send.cipher.k != key0  # type: ignore[union-attr]
    # Time-based: after rekey_after_time the next send rekeys first.
    before = pair.client.stats.rekeys_sent
    pair.client.send(b"late", now=1000.0)
    assert _messages(pair.c2s(1000.0)) == [b"late"]
    assert pair.client.stats.rekeys_sent == before + 1


def test_peer_that_never_rekeys_is_rejected() -> None:
    pair = make_pair(rekey_after_messages=10**9, reject_after_messages=3)
    for i in range(3):
        pair.client.send(b"%d" % i)
        pair.c2s()
    pair.client.send(b"too many")
    with pytest.raises(RemoteProtocolError, match="rekey"):
        pair.c2s()
    pair = make_pair(rekey_after_time=10**9, reject_after_time=100.0)
    pair.client.send(b"old key", now=150.0)
    with pytest.raises(RemoteProtocolError, match="rekey"):
        pair.c2s(now=150.0)


# -- cookies and rate limits ---------------------------------------------------------------


def test_hchacha20_draft_vector_and_xchacha_round_trip() -> None:
    # draft-irtf-cfrg-xchacha-03, section 2.2.1.
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    assert hchacha20(key, nonce).hex() == (
        "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
    )
    n24 = os.urandom(24)
    sealed = xchacha20poly1305_encrypt(key, n24, b"cookie", b"ad")
    assert xchacha20poly1305_decrypt(key, n24, sealed, b"ad") == b"cookie"
    with pytest.raises(AuthenticationError):
        xchacha20poly1305_decrypt(key, n24, sealed, b"other ad")


def test_cookie_round_under_load() -> None:
    server_key = KeyPair.generate()
    checker = CookieChecker(server_key.public)
    load = {"on": True}
    limiter = RateLimiter(rate=1.0, burst=2.0)
    client_key = KeyPair.generate()
    client = SecureChannel(
        ChannelConfig(static=client_key, remote_static=server_key.public), initiator=True
    )
    server = SecureChannel(
        ChannelConfig(
            static=server_key,
            authorize=lambda k: PeerInfo("c") if k == client_key.public else None,
            cookies=checker,
            under_load=lambda now: load["on"],
            limiter=limiter,
        ),
        initiator=False,
        source=b"\x0a\x00\x00\x02",
    )
    pair = Pair(client, server, client_key, server_key)
    client.start(5.0, b"hi")
    assert pair.c2s(5.0) == []  # no DH: a cookie reply instead
    assert server.stats.cookie_replies == 1
    reply = server.data_to_send()
    assert reply[0] == 4 and len(reply) == 8 + 56
    assert client.receive_data(reply, 5.0) == []  # client re-initiates with mac2
    events = pair.c2s(5.0)
    assert isinstance(events[0], InitiationReceived) and events[0].payload == b"hi"
    server.accept(5.0)
    pair.s2c(5.0)
    assert client.is_open and server.is_open


def test_cookie_bound_to_source_and_secret_rotation() -> None:
    key = KeyPair.generate().public
    checker = CookieChecker(key)
    c1 = checker.cookie_for(b"a", 0.0)
    assert checker.cookie_for(b"a", 10.0) == c1
    assert checker.cookie_for(b"b", 10.0) != c1
    assert checker.cookie_for(b"a", 200.0) != c1  # the secret changed after 120 s


def test_too_many_cookie_rounds_without_mac2() -> None:
    server_key = KeyPair.generate()
    server = SecureChannel(
        ChannelConfig(
            static=server_key,
            authorize=lambda k: None,
            cookies=CookieChecker(server_key.public),
            under_load=lambda now: True,
        ),
        initiator=False,
        source=b"x",
    )
    for _ in range(3):
        client = SecureChannel(
            ChannelConfig(static=KeyPair.generate(), remote_static=server_key.public),
            initiator=True,
        )
        client.start(0.0)
        assert server.receive_data(client.data_to_send()) == []
    with pytest.raises(RemoteProtocolError, match="cookie"):
        c = SecureChannel(
            ChannelConfig(static=KeyPair.generate(), remote_static=server_key.public),
            initiator=True,
        )
        c.start(0.0)
        server.receive_data(c.data_to_send())


def test_rate_limiter() -> None:
    lim = RateLimiter(rate=2.0, burst=3.0, max_sources=2)
    assert [lim.allow(b"a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert lim.allow(b"a", 0.5)  # one token earned
    assert not lim.allow(b"a", 0.5)
    lim.allow(b"b", 0.5)
    lim.allow(b"c", 0.5)
    assert len(lim) == 2  # bounded


def test_rate_limited_under_load_with_valid_cookie() -> None:
    server_key = KeyPair.generate()
    checker = CookieChecker(server_key.public)
    limiter = RateLimiter(rate=0.0, burst=1.0)
    client_key = KeyPair.generate()

    def server() -> SecureChannel:
        return SecureChannel(
            ChannelConfig(
                static=server_key,
                authorize=lambda k: PeerInfo("c"),
                cookies=checker,
                under_load=lambda now: True,
                limiter=limiter,
            ),
            initiator=False,
            source=b"s",
        )

    for attempt in range(2):
        client = SecureChannel(
            ChannelConfig(static=client_key, remote_static=server_key.public), initiator=True
        )
        srv = server()
        client.start(0.0)
        srv.receive_data(client.data_to_send())
        client.receive_data(srv.data_to_send())
        if attempt == 0:
            assert isinstance(srv.receive_data(client.data_to_send())[0], InitiationReceived)
        else:
            with pytest.raises(RemoteProtocolError, match="rate limit"):
                srv.receive_data(client.data_to_send())


def test_handshake_twice_refused() -> None:
    pair = make_pair()
    with pytest.raises(LocalProtocolError):
        do_handshake(pair)


def test_key_query_answered_once_before_handshake() -> None:
    from burrow.proto.securechannel import key_query_record, parse_key_info

    pair = make_pair(handshake=False)
    assert pair.server.receive_data(key_query_record()) == []
    assert parse_key_info(pair.server.data_to_send()) == pair.server_key.public
    with pytest.raises(RemoteProtocolError, match="out of order"):
        pair.server.receive_data(key_query_record())
    pair = make_pair(handshake=False)
    pair.server.config.answer_key_query = False
    with pytest.raises(RemoteProtocolError):
        pair.server.receive_data(key_query_record())
    pair = make_pair()  # after the handshake: refused
    with pytest.raises(RemoteProtocolError):
        pair.server.receive_data(key_query_record())
    with pytest.raises(RemoteProtocolError):
        parse_key_info(bytes(40))


def test_multi_record_messages() -> None:
    pair = make_pair(max_message=1 << 20, rekey_after_messages=3)
    for n in (MAX_PAYLOAD + 1, 3 * MAX_PAYLOAD, (1 << 20) - 100):
        data = os.urandom(n)
        pair.client.send(data)
        assert _messages(pair.c2s()) == [data]
    assert pair.client.stats.rekeys_sent >= 2  # rekeys happened between continuation records
    with pytest.raises(LocalProtocolError):
        pair.client.send(bytes((1 << 20) + 1))


def test_multi_record_limits_enforced_by_receiver() -> None:
    pair = make_pair(max_message=4 * MAX_PAYLOAD)
    pair.server.config.max_message = 2 * MAX_PAYLOAD
    pair.client.send(bytes(3 * MAX_PAYLOAD))
    with pytest.raises(RemoteProtocolError, match="maximum"):
        pair.c2s()
    pair = make_pair(max_message=4 * MAX_PAYLOAD)
    pair.server.config.max_message = MAX_PAYLOAD  # continuation records not allowed at all
    pair.client.send(bytes(2 * MAX_PAYLOAD))
    with pytest.raises(RemoteProtocolError, match="length"):
        pair.c2s()
    # a peer that starts a multi-record message and then closes
    from burrow.proto.securechannel import DATA_MORE

    pair = make_pair(max_message=4 * MAX_PAYLOAD)
    pair.client._out.append(pair.client._seal(DATA_MORE, b"x" * 100))
    pair.client.close()
    with pytest.raises(RemoteProtocolError, match="inside a multi-record"):
        pair.c2s()


def _twin(pair: Pair) -> SecureChannel:
    """A second sender with the client's exact sending key and counter (same bytes out)."""
    from burrow.proto.noise import CipherState
    from burrow.proto.securechannel import _Direction

    send = pair.client._send
    assert send is not None
    twin = SecureChannel(pair.client.config, initiator=True)
    twin._state = pair.client._state
    cipher = CipherState(send.cipher.k)
    cipher.n = send.cipher.n
    twin._send = _Direction(cipher, send.since_rekey, send.key_time)
    return twin


@pytest.mark.parametrize("rekey_after", [10**6, 4], ids=["batched", "rekey-inside"])
def test_batched_sealing_is_record_by_record_on_the_wire(rekey_after: int) -> None:
    """send_stream/send seal many records into one buffer; the bytes must be exactly those of
    sealing each record on its own (same headers, counters, tags, KEY_UPDATEs)."""
    pair = make_pair(max_message=5 * MAX_PAYLOAD, rekey_after_messages=rekey_after)
    twin = _twin(pair)
    data = os.urandom(3 * MAX_PAYLOAD + 77)
    pair.client.send_stream(data, now=1.0)
    pair.client.send(data, now=1.0)  # one message: DATA_MORE x3, DATA
    batched = b"".join(pair.client.take_records())
    for off in range(0, len(data), MAX_PAYLOAD):
        twin.send(data[off : off + MAX_PAYLOAD], now=1.0)
    for off in range(0, len(data), MAX_PAYLOAD):
        twin._maybe_rekey(1.0)
        last = off + MAX_PAYLOAD >= len(data)
        twin._out.append(twin._seal(5 if last else 10, data[off : off + MAX_PAYLOAD]))
    assert batched == b"".join(twin.take_records())
    assert pair.client.stats.records_sent == twin.stats.records_sent
    events = pair.server.receive_data(batched, now=1.0)
    got = _messages(events)
    assert b"".join(got[:4]) == data and got[4] == data
    if rekey_after == 4:
        assert pair.server.stats.rekeys_received == 1  # before the fifth of eight records


def test_multi_record_total_checked_on_the_final_record() -> None:
    """The final DATA record counts too: a message one byte over the receiver's limit is
    refused, one exactly at it is accepted (and decrypted into a single buffer)."""
    limit = 2 * MAX_PAYLOAD + 100
    pair = make_pair(max_message=limit + 1)
    pair.server.config.max_message = limit
    data = os.urandom(limit)
    pair.client.send(data)
    assert _messages(pair.c2s()) == [data]
    pair.client.send(bytes(limit + 1))
    with pytest.raises(RemoteProtocolError, match="maximum"):
        pair.c2s()


def test_multi_record_messages_beyond_the_preallocation() -> None:
    pair = make_pair(max_message=3 << 20)
    for n in (3 << 20, (1 << 20) + 1, MAX_PAYLOAD + 1):
        data = os.urandom(n)
        pair.client.send(data)
        wire = pair.client.data_to_send()
        # Fed in odd-sized pieces: records split across reads still land in one buffer.
        got: list[bytes] = []
        for off in range(0, len(wire), 100_003):
            got += _messages(pair.server.receive_data(wire[off : off + 100_003]))
        assert got == [data]


@pytest.mark.parametrize("rekey_after", [10**6, 3], ids=["split", "rekey-fallback"])
def test_send_parts_is_one_message(rekey_after: int) -> None:
    """head + body arrive as exactly one message, whatever the records were; a multi-record
    one carries the head in a record of its own (no join on the sender)."""
    pair = make_pair(max_message=5 * MAX_PAYLOAD, rekey_after_messages=rekey_after)
    head = os.urandom(40)
    for n in (0, 100, MAX_PAYLOAD - 40, MAX_PAYLOAD, 4 * MAX_PAYLOAD + 3):
        body = os.urandom(n)
        pair.client.send_parts(head, memoryview(body))
        wire = b"".join(pair.client.take_records())
        assert _messages(pair.server.receive_data(wire)) == [head + body]
        if n == MAX_PAYLOAD and rekey_after > 10:
            assert wire[0] == 10 and int.from_bytes(wire[4:8], "little") == 8 + 40 + 16
    with pytest.raises(LocalProtocolError):
        pair.client.send_parts(head, bytes(5 * MAX_PAYLOAD))
