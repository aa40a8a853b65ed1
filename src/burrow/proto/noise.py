"""Sans-IO Noise protocol framework (revision 34): ``Noise_IK`` and ``Noise_IKpsk2`` with
``25519``, ``ChaChaPoly`` and ``BLAKE2s``.

Why our own and this small: burrow's secure channel needs exactly the pattern WireGuard uses
(IK: the initiator knows the responder's static key in advance, and its own static key travels
encrypted, so it is hidden from passive observers), optionally with WireGuard's pre-shared key
(``psk2``). Every object here follows the spec's section of the same name — ``CipherState``
(5.1), ``SymmetricState`` (5.2), ``HandshakeState`` (5.3), the psk modifier (9) — and uses its
function names, so the code can be read against https://noiseprotocol.org/noise.html. Nothing
is added beyond the spec; the framing, rekey timers and cookies live in
:mod:`burrow.proto.securechannel`.

Primitives: X25519 and ChaCha20-Poly1305 from ``cryptography`` (OpenSSL), BLAKE2s from
:mod:`hashlib`, HMAC and HKDF as defined in section 4.3 of the spec.

Errors: a message that fails authentication raises :class:`~burrow.errors.AuthenticationError`;
a malformed one (wrong length, out of order) raises
:class:`~burrow.errors.RemoteProtocolError`; misuse by the caller raises
:class:`~burrow.errors.LocalProtocolError`.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac_mod
from dataclasses import dataclass
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from burrow.errors import AuthenticationError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "DHLEN",
    "HASHLEN",
    "MAX_MESSAGE_LEN",
    "MAX_NONCE",
    "PSKLEN",
    "TAGLEN",
    "CipherState",
    "HandshakeState",
    "KeyPair",
    "SymmetricState",
    "dh",
    "hash_",
    "hkdf",
    "hmac_hash",
    "protocol_name",
]

DHLEN = 32  # 25519
HASHLEN = 32  # BLAKE2s
BLOCKLEN = 64  # BLAKE2s
TAGLEN = 16  # Poly1305
PSKLEN = 32  # section 9.1
MAX_MESSAGE_LEN = 65535  # section 3
MAX_NONCE = 2**64 - 1  # reserved (section 5.1)
_ZEROS32 = bytes(32)
_T = TypeVar("_T")
_EMPTY = b""


# -- crypto functions (section 4) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A Curve25519 key pair as raw 32-byte strings."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        """GENERATE_KEYPAIR()."""
        return cls.from_private(
            X25519PrivateKey.generate().private_bytes(
                Encoding.Raw, PrivateFormat.Raw, NoEncryption()
            )
        )

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        if len(private) != DHLEN:
            raise LocalProtocolError(f"a 25519 private key is {DHLEN} bytes, not {len(private)}")
        key = X25519PrivateKey.from_private_bytes(private)
        return cls(bytes(private), key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def dh(private: bytes, public: bytes) -> bytes:
    """DH(key_pair, public_key) for 25519.

    An invalid public key (one whose result is all zeros: a low-order point) raises
    :class:`AuthenticationError`; the spec (section 12.1) allows either that or returning the
    zero output, and refusing is what WireGuard does.
    """
    if len(public) != DHLEN:
        raise RemoteProtocolError(f"a 25519 public key is {DHLEN} bytes, not {len(public)}")
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public)
        )
    except ValueError as exc:  # cryptography refuses an all-zero shared secret
        raise AuthenticationError("invalid (low-order) 25519 public key") from exc


def hash_(data: bytes) -> bytes:
    """HASH(data): BLAKE2s with a 32-byte output."""
    return hashlib.blake2s(data).digest()


def hmac_hash(key: bytes, data: bytes) -> bytes:
    """HMAC-HASH(key, data), RFC 2104 with BLAKE2s (section 4.3)."""
    return _hmac_mod.new(key, data, hashlib.blake2s).digest()


def hkdf(chaining_key: bytes, input_key_material: bytes, num_outputs: int) -> tuple[bytes, ...]:
    """HKDF(chaining_key, input_key_material, num_outputs) as section 4.3 defines it."""
    if num_outputs not in (2, 3):
        raise LocalProtocolError("HKDF yields two or three outputs")
    temp_key = hmac_hash(chaining_key, input_key_material)
    output1 = hmac_hash(temp_key, b"\x01")
    output2 = hmac_hash(temp_key, output1 + b"\x02")
    if num_outputs == 2:
        return output1, output2
    output3 = hmac_hash(temp_key, output2 + b"\x03")
    return output1, output2, output3


def _nonce(n: int) -> bytes:
    """ChaChaPoly nonce: 32 bits of zeros then the 64-bit little-endian counter."""
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


# -- CipherState (section 5.1) -------------------------------------------------------------


class CipherState:
    """A key ``k`` (or none) and a nonce counter ``n``."""

    __slots__ = ("_aead", "k", "n")

    def __init__(self, key: bytes | None = None) -> None:
        self.k: bytes | None = None
        self.n = 0
        self._aead: ChaCha20Poly1305 | None = None
        self.initialize_key(key)

    def initialize_key(self, key: bytes | None) -> None:
        """InitializeKey(key): set ``k`` (``None`` = empty) and reset ``n`` to 0."""
        if key is not None and len(key) != 32:
            raise LocalProtocolError("a ChaChaPoly key is 32 bytes")
        self.k = key
        self.n = 0
        self._aead = ChaCha20Poly1305(key) if key is not None else None

    def has_key(self) -> bool:
        return self.k is not None

    def set_nonce(self, nonce: int) -> None:
        if not 0 <= nonce <= MAX_NONCE:
            raise LocalProtocolError("nonce out of range")
        self.n = nonce

    def _next_nonce(self) -> bytes:
        if self.n >= MAX_NONCE:
            # 2^64-1 is reserved; the spec requires an error once nonces are used up.
            raise LocalProtocolError("nonce space exhausted: rekey with a new handshake")
        nonce = _nonce(self.n)
        return nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes | bytearray | memoryview) -> bytes:
        """EncryptWithAd(ad, plaintext); plaintext passes through unchanged without a key."""
        if self._aead is None:
            return bytes(plaintext)
        out = self._aead.encrypt(self._next_nonce(), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes | memoryview) -> bytes:
        """DecryptWithAd(ad, ciphertext). On failure ``n`` is not advanced (as the spec says)."""
        if self._aead is None:
            return bytes(ciphertext)
        try:
            out = self._aead.decrypt(self._next_nonce(), ciphertext, ad)
        except InvalidTag as exc:
            raise AuthenticationError("message failed authentication") from exc
        self.n += 1
        return out

    def encrypt_into(
        self, ad: bytes, plaintext: bytes | bytearray | memoryview, out: memoryview
    ) -> int:
        """EncryptWithAd writing ``len(plaintext) + 16`` bytes into ``out`` (no extra copy).

        Same semantics as :meth:`encrypt_with_ad`; used by the record layer's bulk path.
        """
        if self._aead is None:
            raise LocalProtocolError("encrypt_into needs a key")
        n = self._aead.encrypt_into(self._next_nonce(), plaintext, ad, out)
        self.n += 1
        return n

    def decrypt_into(self, ad: bytes, ciphertext: bytes | memoryview, out: memoryview) -> int:
        """DecryptWithAd writing the plaintext into ``out``."""
        if self._aead is None:
            raise LocalProtocolError("decrypt_into needs a key")
        try:
            n = self._aead.decrypt_into(self._next_nonce(), ciphertext, ad, out)
        except InvalidTag as exc:
            raise AuthenticationError("message failed authentication") from exc
        self.n += 1
        return n

    def rekey(self) -> None:
        """Rekey(): ``k = REKEY(k)`` (section 4.2 default), ``n`` unchanged."""
        if self._aead is None:
            raise LocalProtocolError("cannot rekey without a key")
        new = self._aead.encrypt(_nonce(MAX_NONCE), _ZEROS32, _EMPTY)[:32]
        self.k = new
        self._aead = ChaCha20Poly1305(new)


# -- SymmetricState (section 5.2) ----------------------------------------------------------


class SymmetricState:
    """The chaining key ``ck``, the handshake hash ``h`` and a CipherState."""

    __slots__ = ("cipher", "ck", "h")

    def __init__(self, protocol_name: bytes) -> None:
        """InitializeSymmetric(protocol_name)."""
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name + bytes(HASHLEN - len(protocol_name))
        else:
            self.h = hash_(protocol_name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_k = hkdf(self.ck, input_key_material, 2)
        self.cipher.initialize_key(temp_k)  # HASHLEN is 32: no truncation

    def mix_hash(self, data: bytes) -> None:
        self.h = hash_(self.h + data)

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        self.ck, temp_h, temp_k = hkdf(self.ck, input_key_material, 3)
        self.mix_hash(temp_h)
        self.cipher.initialize_key(temp_k)

    def get_handshake_hash(self) -> bytes:
        return self.h

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = hkdf(self.ck, _EMPTY, 2)
        return CipherState(temp_k1), CipherState(temp_k2)


# -- HandshakeState (section 5.3) for IK / IKpsk2 -----------------------------------------

# Section 7.5: IK.  <- s / ... / -> e, es, s, ss / <- e, ee, se
# Section 9.2: IKpsk2 appends "psk" to the second message pattern.
_PRE_MESSAGES_RESPONDER = ("s",)
_PATTERNS: dict[str, tuple[tuple[str, ...], ...]] = {
    "IK": (("e", "es", "s", "ss"), ("e", "ee", "se")),
    "IKpsk2": (("e", "es", "s", "ss"), ("e", "ee", "se", "psk")),
}
_SUFFIX = "_25519_ChaChaPoly_BLAKE2s"


def protocol_name(pattern: str) -> bytes:
    """``Noise_IK_25519_ChaChaPoly_BLAKE2s`` or ``Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s``."""
    if pattern not in _PATTERNS:
        raise LocalProtocolError(f"unsupported handshake pattern {pattern!r}")
    return f"Noise_{pattern}{_SUFFIX}".encode("ascii")


class HandshakeState:
    """One side of an IK or IKpsk2 handshake.

    ``write_message``/``read_message`` are called alternately starting with the initiator's
    write. After the second message both return the pair ``(c1, c2)`` from ``Split()``:
    the initiator sends with ``c1`` and receives with ``c2``; the responder the reverse.

    ``e`` (a fixed ephemeral private key) exists for test vectors only; leave it ``None``.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        s: KeyPair,
        rs: bytes | None = None,
        prologue: bytes = b"",
        psk: bytes | None = None,
        pattern: str | None = None,
        e: bytes | None = None,
    ) -> None:
        self.pattern = pattern or ("IKpsk2" if psk is not None else "IK")
        if self.pattern not in _PATTERNS:
            raise LocalProtocolError(f"unsupported handshake pattern {self.pattern!r}")
        if psk is not None and len(psk) != PSKLEN:
            raise LocalProtocolError(f"a pre-shared key is {PSKLEN} bytes")
        self._psk_mode = self.pattern.endswith("psk2")
        if initiator and (rs is None or len(rs) != DHLEN):
            raise LocalProtocolError("an IK initiator needs the responder's static public key")
        self.initiator = initiator
        self.symmetric = SymmetricState(protocol_name(self.pattern))
        self.s = s
        self.e: KeyPair | None = KeyPair.from_private(e) if e is not None else None
        self.rs = rs if initiator else None
        self.re: bytes | None = None
        self.psk = psk
        self._messages = list(_PATTERNS[self.pattern])
        self._index = 0
        self.symmetric.mix_hash(prologue)
        # Pre-message "<- s": the responder's static public key.
        for _token in _PRE_MESSAGES_RESPONDER:
            self.symmetric.mix_hash(rs if initiator and rs is not None else s.public)

    @property
    def finished(self) -> bool:
        return self._index >= len(self._messages)

    def _my_turn(self) -> bool:
        return (self._index % 2 == 0) == self.initiator

    def _dh_token(self, token: str) -> bytes:
        # es/se/ee/ss: the first letter is the initiator's key, the second the responder's.
        mine, theirs = (token[0], token[1]) if self.initiator else (token[1], token[0])
        priv = self.s.private if mine == "s" else self._need(self.e).private
        pub = self.rs if theirs == "s" else self.re
        return dh(priv, self._need(pub))

    @staticmethod
    def _need(value: _T | None) -> _T:
        if value is None:
            raise LocalProtocolError("handshake state is missing a key (or the psk)")
        return value

    def set_psk(self, psk: bytes) -> None:
        """Supply the pre-shared key late: an IKpsk2 responder learns who the initiator is
        from the first message and only then knows which peer's psk to use."""
        if not self._psk_mode or len(psk) != PSKLEN:
            raise LocalProtocolError(f"set_psk needs an IKpsk2 handshake and a {PSKLEN}-byte key")
        self.psk = psk

    def write_message(
        self, payload: bytes = b""
    ) -> tuple[bytes, tuple[CipherState, CipherState] | None]:
        """WriteMessage(payload, message_buffer) -> (message, Split() result or None)."""
        if self.finished or not self._my_turn():
            raise LocalProtocolError("not this side's turn to write a handshake message")
        sym = self.symmetric
        out = bytearray()
        for token in self._messages[self._index]:
            if token == "e":
                if self.e is None:
                    self.e = KeyPair.generate()
                out += self.e.public
                sym.mix_hash(self.e.public)
                if self._psk_mode:
                    sym.mix_key(self.e.public)
            elif token == "s":
                out += sym.encrypt_and_hash(self.s.public)
            elif token == "psk":
                sym.mix_key_and_hash(self._need(self.psk))
            else:
                sym.mix_key(self._dh_token(token))
        out += sym.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE_LEN:
            raise LocalProtocolError("handshake message longer than 65535 bytes")
        self._index += 1
        return bytes(out), (sym.split() if self.finished else None)

    def read_message(self, message: bytes) -> tuple[bytes, tuple[CipherState, CipherState] | None]:
        """ReadMessage(message, payload_buffer) -> (payload, Split() result or None)."""
        if self.finished or self._my_turn():
            raise LocalProtocolError("not this side's turn to read a handshake message")
        if len(message) > MAX_MESSAGE_LEN:
            raise RemoteProtocolError("handshake message longer than 65535 bytes")
        sym = self.symmetric
        view = bytes(message)
        pos = 0
        for token in self._messages[self._index]:
            if token == "e":
                if len(view) - pos < DHLEN:
                    raise RemoteProtocolError("handshake message too short (e)")
                self.re = view[pos : pos + DHLEN]
                pos += DHLEN
                sym.mix_hash(self.re)
                if self._psk_mode:
                    sym.mix_key(self.re)
            elif token == "s":
                n = DHLEN + (TAGLEN if sym.cipher.has_key() else 0)
                if len(view) - pos < n:
                    raise RemoteProtocolError("handshake message too short (s)")
                self.rs = sym.decrypt_and_hash(view[pos : pos + n])
                pos += n
            elif token == "psk":
                sym.mix_key_and_hash(self._need(self.psk))
            else:
                sym.mix_key(self._dh_token(token))
        rest = view[pos:]
        if sym.cipher.has_key() and len(rest) < TAGLEN:
            raise RemoteProtocolError("handshake message too short (payload tag)")
        payload = sym.decrypt_and_hash(rest)
        self._index += 1
        return payload, (sym.split() if self.finished else None)

    def get_handshake_hash(self) -> bytes:
        return self.symmetric.get_handshake_hash()
