"""Noise IK / IKpsk2 against the published test vectors (cacophony, snow), byte for byte, plus
round trips with generated keys and the failure modes the spec requires."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from burrow.errors import AuthenticationError, LocalProtocolError, RemoteProtocolError
from burrow.proto.noise import (
    CipherState,
    HandshakeState,
    KeyPair,
    dh,
    hkdf,
    hmac_hash,
)

VECTORS = json.loads((Path(__file__).parent / "data" / "noise_vectors.json").read_text())["vectors"]


def _ids(v: dict[str, Any]) -> str:
    return f"{v['source']}-{v['protocol_name']}"


def _psk(v: dict[str, Any], side: str) -> bytes | None:
    psks = v.get(f"{side}_psks") or []
    assert len(psks) <= 1  # IKpsk2 uses one psk
    return bytes.fromhex(psks[0]) if psks else None


def test_vector_file_covers_both_patterns() -> None:
    names = {v["protocol_name"] for v in VECTORS}
    assert names == {
        "Noise_IK_25519_ChaChaPoly_BLAKE2s",
        "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s",
    }


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_published_vector(vector: dict[str, Any]) -> None:
    pattern = vector["protocol_name"].split("_")[1]
    init = HandshakeState(
        initiator=True,
        s=KeyPair.from_private(bytes.fromhex(vector["init_static"])),
        rs=bytes.fromhex(vector["init_remote_static"]),
        prologue=bytes.fromhex(vector["init_prologue"]),
        psk=_psk(vector, "init"),
        pattern=pattern,
        e=bytes.fromhex(vector["init_ephemeral"]),
    )
    resp = HandshakeState(
        initiator=False,
        s=KeyPair.from_private(bytes.fromhex(vector["resp_static"])),
        prologue=bytes.fromhex(vector["resp_prologue"]),
        psk=_psk(vector, "resp"),
        pattern=pattern,
        e=bytes.fromhex(vector["resp_ephemeral"]),
    )
    messages = vector["messages"]
    # Handshake: message 0 initiator -> responder, message 1 responder -> initiator.
    m0 = messages[0]
    wire, split = init.write_message(bytes.fromhex(m0["payload"]))
    assert wire.hex() == m0["ciphertext"]
    assert split is None
    payload, split = resp.read_message(wire)
    assert payload.hex() == m0["payload"]
    assert resp.rs == init.s.public  # the responder learned who the initiator is
    m1 = messages[1]
    wire, r_split = resp.write_message(bytes.fromhex(m1["payload"]))
    assert wire.hex() == m1["ciphertext"]
    payload, i_split = init.read_message(wire)
    assert payload.hex() == m1["payload"]
    assert i_split is not None and r_split is not None
    if "handshake_hash" in vector:
        assert init.get_handshake_hash().hex() == vector["handshake_hash"]
    assert resp.get_handshake_hash() == init.get_handshake_hash()
    # Transport: messages keep alternating; the initiator sends with c1, the responder with c2.
    i_send, i_recv = i_split
    r_recv, r_send = r_split
    for index, msg in enumerate(messages[2:], start=2):
        sender, receiver = (i_send, r_recv) if index % 2 == 0 else (r_send, i_recv)
        ciphertext = sender.encrypt_with_ad(b"", bytes.fromhex(msg["payload"]))
        assert ciphertext.hex() == msg["ciphertext"]
        assert receiver.decrypt_with_ad(b"", ciphertext).hex() == msg["payload"]


def _pair(psk: bytes | None = None) -> tuple[HandshakeState, HandshakeState, KeyPair, KeyPair]:
    i_key, r_key = KeyPair.generate(), KeyPair.generate()
    init = HandshakeState(initiator=True, s=i_key, rs=r_key.public, prologue=b"p", psk=psk)
    resp = HandshakeState(initiator=False, s=r_key, prologue=b"p", psk=psk)
    return init, resp, i_key, r_key


@pytest.mark.parametrize("psk", [None, bytes(range(32))])
def test_round_trip_generated_keys(psk: bytes | None) -> None:
    init, resp, i_key, _ = _pair(psk)
    m0, _ = init.write_message(b"hello")
    assert i_key.public not in m0  # IK hides the initiator's static key
    assert resp.read_message(m0)[0] == b"hello"
    m1, (r_recv, r_send) = resp.write_message(b"world")  # type: ignore[misc]
    payload, (i_send, i_recv) = init.read_message(m1)  # type: ignore[misc]
    assert payload == b"world"
    for i in range(5):
        assert r_recv.decrypt_with_ad(b"ad", i_send.encrypt_with_ad(b"ad", b"x" * i)) == b"x" * i
        assert i_recv.decrypt_with_ad(b"", r_send.encrypt_with_ad(b"", b"y" * i)) == b"y" * i


def test_late_psk_for_responder() -> None:
    psk = bytes(32)
    init, _, _, r_key = _pair(psk)
    resp = HandshakeState(initiator=False, s=r_key, prologue=b"p", pattern="IKpsk2")
    resp.read_message(init.write_message(b"")[0])
    with pytest.raises(LocalProtocolError):
        resp.write_message(b"")  # psk still unknown
    resp2 = HandshakeState(initiator=False, s=r_key, prologue=b"p", pattern="IKpsk2")
    init2 = HandshakeState(
        initiator=True, s=KeyPair.generate(), rs=r_key.public, prologue=b"p", psk=psk
    )
    resp2.read_message(init2.write_message(b"")[0])
    resp2.set_psk(psk)
    m1, _ = resp2.write_message(b"ok")
    assert init2.read_message(m1)[0] == b"ok"


def test_wrong_psk_fails() -> None:
    i_key, r_key = KeyPair.generate(), KeyPair.generate()
    init = HandshakeState(initiator=True, s=i_key, rs=r_key.public, psk=bytes(32))
    resp = HandshakeState(initiator=False, s=r_key, psk=b"\x01" * 32)
    resp.read_message(init.write_message(b"")[0])  # psk2: message 1 does not use the psk
    m1, _ = resp.write_message(b"")
    with pytest.raises(AuthenticationError):
        init.read_message(m1)


def test_wrong_responder_key_or_prologue_fails() -> None:
    i_key, r_key = KeyPair.generate(), KeyPair.generate()
    init = HandshakeState(initiator=True, s=i_key, rs=KeyPair.generate().public)
    resp = HandshakeState(initiator=False, s=r_key)
    with pytest.raises(AuthenticationError):
        resp.read_message(init.write_message(b"")[0])
    init = HandshakeState(initiator=True, s=i_key, rs=r_key.public, prologue=b"a")
    resp = HandshakeState(initiator=False, s=r_key, prologue=b"b")
    with pytest.raises(AuthenticationError):
        resp.read_message(init.write_message(b"")[0])


@pytest.mark.parametrize("cut", [0, 10, 31, 32, 50, 79, 80, 95])
def test_truncated_first_message(cut: int) -> None:
    init, resp, _, _ = _pair()
    m0, _ = init.write_message(b"")
    assert len(m0) == 96
    with pytest.raises(RemoteProtocolError):
        resp.read_message(m0[:cut])


def test_tampered_first_message_every_byte() -> None:
    init, _, _, r_key = _pair()
    m0, _ = init.write_message(b"payload")
    for pos in range(len(m0)):
        resp = HandshakeState(initiator=False, s=r_key, prologue=b"p")
        bad = bytearray(m0)
        bad[pos] ^= 0x40
        with pytest.raises(RemoteProtocolError):  # AuthenticationError is a subclass
            resp.read_message(bytes(bad))


def test_low_order_ephemeral_refused() -> None:
    _, resp, _, _ = _pair()
    with pytest.raises(AuthenticationError):
        resp.read_message(bytes(96))  # e = 0 is a low-order point


def test_turn_order_enforced() -> None:
    init, resp, _, _ = _pair()
    with pytest.raises(LocalProtocolError):
        resp.write_message(b"")
    with pytest.raises(LocalProtocolError):
        init.read_message(bytes(48))
    init.write_message(b"")
    with pytest.raises(LocalProtocolError):
        init.write_message(b"")


def test_cipherstate_rekey_and_nonce_limit() -> None:
    a, b = CipherState(bytes(32)), CipherState(bytes(32))
    c0 = a.encrypt_with_ad(b"", b"m")
    a.rekey()
    b.decrypt_with_ad(b"", c0)
    b.rekey()
    assert a.k == b.k and a.k != bytes(32)
    assert b.decrypt_with_ad(b"", a.encrypt_with_ad(b"", b"after")) == b"after"
    a.set_nonce(2**64 - 1)
    with pytest.raises(LocalProtocolError):
        a.encrypt_with_ad(b"", b"x")
    # A failed decryption does not advance the nonce.
    c = CipherState(bytes(32))
    d = CipherState(bytes(32))
    good = c.encrypt_with_ad(b"", b"m")
    with pytest.raises(AuthenticationError):
        d.decrypt_with_ad(b"", good[:-1] + bytes([good[-1] ^ 1]))
    assert d.n == 0 and d.decrypt_with_ad(b"", good) == b"m"


def test_hkdf_matches_rfc5869_shape() -> None:
    # HKDF with one output is HMAC(HMAC(ck, ikm), 0x01): check against hmac directly.
    out1, out2 = hkdf(b"k" * 32, b"ikm", 2)
    temp = hmac_hash(b"k" * 32, b"ikm")
    assert out1 == hmac_hash(temp, b"\x01")
    assert out2 == hmac_hash(temp, out1 + b"\x02")


def test_dh_rfc7748_vector() -> None:
    # RFC 7748 section 6.1.
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert dh(alice, bob_pub).hex() == shared
    assert KeyPair.from_private(alice).public.hex() == (
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    )
