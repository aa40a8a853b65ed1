"""A pair harness for the sans-IO secure channel: two ends wired together in memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from burrow.proto.noise import KeyPair
from burrow.proto.securechannel import (
    ChannelConfig,
    Event,
    HandshakeComplete,
    InitiationReceived,
    PeerInfo,
    SecureChannel,
)


@dataclass
class Pair:
    client: SecureChannel
    server: SecureChannel
    client_key: KeyPair
    server_key: KeyPair
    wire_c2s: list[bytes] = field(default_factory=list)
    wire_s2c: list[bytes] = field(default_factory=list)

    def c2s(self, now: float = 0.0) -> list[Event]:
        data = self.client.data_to_send()
        self.wire_c2s.append(data)
        return self.server.receive_data(data, now) if data else []

    def s2c(self, now: float = 0.0) -> list[Event]:
        data = self.server.data_to_send()
        self.wire_s2c.append(data)
        return self.client.receive_data(data, now) if data else []


def make_pair(
    *,
    psk: bytes | None = None,
    server_psk: bytes | None = None,
    known: bool = True,
    handshake: bool = True,
    **config: Any,
) -> Pair:
    client_key, server_key = KeyPair.generate(), KeyPair.generate()
    peers = {client_key.public: PeerInfo("alice", server_psk if server_psk is not None else psk)}

    def authorize(pub: bytes) -> PeerInfo | None:
        return peers.get(pub) if known else None

    client = SecureChannel(
        ChannelConfig(static=client_key, remote_static=server_key.public, psk=psk, **config),
        initiator=True,
    )
    server = SecureChannel(
        ChannelConfig(static=server_key, authorize=authorize, **config),
        initiator=False,
        source=b"\x7f\x00\x00\x01",
    )
    pair = Pair(client, server, client_key, server_key)
    if handshake:
        do_handshake(pair)
    return pair


def do_handshake(pair: Pair, now: float = 0.0) -> HandshakeComplete:
    pair.client.start(now, b"client hello")
    events = pair.c2s(now)
    assert len(events) == 1 and isinstance(events[0], InitiationReceived)
    assert events[0].payload == b"client hello"
    pair.server.accept(now, b"server hello")
    events = pair.s2c(now)
    assert len(events) == 1 and isinstance(events[0], HandshakeComplete)
    assert events[0].payload == b"server hello"
    return events[0]
