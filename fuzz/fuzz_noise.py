"""Fuzz the Noise handshake and the secure-channel record parser.

Seeds: the published test-vector handshake messages, and a real session (initiation, response,
data, key update, close records) recorded from a pair of channels with fixed keys. Every input
is fed to a responder that knows the seed client's key, an initiator waiting for a response,
and an open channel expecting transport records; only BurrowError may come out.
"""

from __future__ import annotations

import json
from pathlib import Path

from burrow.proto.noise import HandshakeState, KeyPair
from burrow.proto.securechannel import ChannelConfig, PeerInfo, SecureChannel

_CLIENT = KeyPair.from_private(bytes(range(1, 33)))
_SERVER = KeyPair.from_private(bytes(range(33, 65)))
_VECTORS = Path(__file__).resolve().parent.parent / "tests" / "data" / "noise_vectors.json"


def _authorize(key: bytes) -> PeerInfo | None:
    return PeerInfo("fuzz") if key == _CLIENT.public else None


def _pair() -> tuple[SecureChannel, SecureChannel]:
    client = SecureChannel(
        ChannelConfig(static=_CLIENT, remote_static=_SERVER.public, rekey_after_messages=2),
        initiator=True,
    )
    server = SecureChannel(
        ChannelConfig(static=_SERVER, authorize=_authorize, rekey_after_messages=2),
        initiator=False,
    )
    return client, server


def _session() -> tuple[bytes, bytes, bytes]:
    """(initiation, response, transport records) of a short real session."""
    client, server = _pair()
    client.start(0.0, b"hello")
    initiation = client.data_to_send()
    server.receive_data(initiation)
    server.accept(0.0, b"welcome")
    response = server.data_to_send()
    client.receive_data(response)
    for i in range(4):
        client.send(b"message %d" % i * (i + 1))
    client.close()
    return initiation, response, client.data_to_send()


def seeds(tmp_path: Path) -> list[bytes]:
    initiation, response, records = _session()
    out = [initiation, response, records, initiation + records]
    for vector in json.loads(_VECTORS.read_text())["vectors"]:
        out.append(bytes.fromhex(vector["messages"][0]["ciphertext"]))
    return out


def one_input(data: bytes) -> None:
    # 1. A responder: the record parser, mac1 and (for valid mac1) the handshake.
    from burrow.errors import BurrowError

    _, server = _pair()
    try:
        server.receive_data(data)
        server.receive_data(b"")
    except BurrowError:
        pass
    # 2. Raw Noise message 1 into a HandshakeState.
    try:
        HandshakeState(initiator=False, s=_SERVER).read_message(data[:65535])
    except BurrowError:
        pass
    # 3. Transport records into an open channel.
    client, server = _pair()
    client.start(0.0)
    server.receive_data(client.data_to_send())
    server.accept(0.0)
    client.receive_data(server.data_to_send())
    server.receive_data(data)
