"""Sans-IO secure channel: a Noise IK / IKpsk2 handshake and an encrypted record layer over a
byte stream (TCP), with WireGuard's defences against handshake floods.

Why this shape: WireGuard shows how little a secure transport needs once both ends know each
other's static keys — one round trip (Noise IK), a counter per direction as the nonce, rekeying
on a timer, and a cheap MAC on the first packet so a server does no Diffie-Hellman work for
packets from anyone who does not even know its public key. We keep all of that and swap UDP
datagrams for length-prefixed records on a stream. Wire format: ``docs/secure-channel.md``.

Record (all integers little-endian)::

    type u8 | reserved u8[3] (zero) | length u32 | body[length]

=====  ==================  =======================================================
type   name                body
=====  ==================  =======================================================
1      INITIATION_IK       Noise message 1 | mac1[16] | mac2[16]
2      INITIATION_IKPSK2   Noise message 1 | mac1[16] | mac2[16]
3      RESPONSE            Noise message 2 | mac1[16] | mac2[16]
4      COOKIE_REPLY        nonce[24] | XChaCha20-Poly1305(cookie[16])[32]
5      DATA                counter u64 | ChaChaPoly(payload)
6      KEY_UPDATE          counter u64 | ChaChaPoly(empty); sender then Rekey()s
7      CLOSE               counter u64 | ChaChaPoly(empty); nothing follows
8      KEY_QUERY           empty (a client doing trust on first use asks for the key)
9      KEY_INFO            the server's static public key (32 bytes, unauthenticated)
10     DATA_MORE           like DATA; the message continues in the next record
=====  ==================  =======================================================

Transport records are authenticated with the 16 header bytes (type, length, counter) as
associated data; the counter must equal the receiver's next nonce, so a replayed, dropped or
reordered record is refused before decryption.

The sans-IO objects take bytes in (``receive_data``), give events out and bytes to send
(``data_to_send``); time comes in as an argument (``now``, seconds, any monotonic origin).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from burrow.errors import (
    AuthenticationError,
    ConnectionLost,
    LocalProtocolError,
    RemoteProtocolError,
)
from burrow.proto.noise import (
    DHLEN,
    MAX_MESSAGE_LEN,
    TAGLEN,
    CipherState,
    HandshakeState,
    KeyPair,
    hash_,
)

__all__ = [
    "MAX_PAYLOAD",
    "PROLOGUE",
    "ChannelConfig",
    "CloseReceived",
    "CookieChecker",
    "Event",
    "HandshakeComplete",
    "InitiationReceived",
    "Message",
    "PeerInfo",
    "RateLimiter",
    "SecureChannel",
    "hchacha20",
    "key_query_record",
    "parse_key_info",
    "xchacha20poly1305_decrypt",
    "xchacha20poly1305_encrypt",
]

PROLOGUE = b"burrow secure channel v1"

# Record types.
INITIATION_IK = 1
INITIATION_IKPSK2 = 2
RESPONSE = 3
COOKIE_REPLY = 4
DATA = 5
KEY_UPDATE = 6
CLOSE = 7
KEY_QUERY = 8  # client -> server, empty: "what is your public key?" (trust on first use)
KEY_INFO = 9  # server -> client: the 32-byte static public key, unauthenticated
DATA_MORE = 10  # like DATA, and the message continues in the next record

RECORD_HEADER = struct.Struct("<B3xI")  # type, reserved, length
TRANSPORT_HEADER = struct.Struct("<B3xIQ")  # type, reserved, length, counter
HEADER_LEN = RECORD_HEADER.size  # 8
TRANSPORT_HEADER_LEN = TRANSPORT_HEADER.size  # 16
MAC_LEN = 16
COOKIE_LEN = 16
COOKIE_NONCE_LEN = 24
COOKIE_REPLY_LEN = COOKIE_NONCE_LEN + COOKIE_LEN + TAGLEN  # 56

#: Largest application payload in one DATA record: a Noise transport message is at most
#: 65535 bytes including the 16-byte tag.
MAX_PAYLOAD = MAX_MESSAGE_LEN - TAGLEN
#: Largest handshake payload we send or accept (the share protocol's hello fits easily).
MAX_HANDSHAKE_PAYLOAD = 1024
_MAX_INITIATION_BODY = DHLEN + (DHLEN + TAGLEN) + MAX_HANDSHAKE_PAYLOAD + TAGLEN + 2 * MAC_LEN
_MAX_RESPONSE_BODY = DHLEN + MAX_HANDSHAKE_PAYLOAD + TAGLEN + 2 * MAC_LEN
_MAX_TRANSPORT_BODY = 8 + MAX_MESSAGE_LEN

# WireGuard's labels (whitepaper section 5.4.4), used the same way.
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

# WireGuard's timers (whitepaper section 6.1), message counts scaled to a stream.
REKEY_AFTER_MESSAGES = 2**20
REJECT_AFTER_MESSAGES = 2**21
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
COOKIE_SECRET_LIFETIME = 120.0
MAX_COOKIE_ROUNDS = 3
#: Multi-record messages up to this size get their whole buffer at the first record.
_PREALLOCATE_MAX = 1 << 20


def _mac(key: bytes, data: bytes | memoryview) -> bytes:
    """WireGuard's MAC(key, input): keyed BLAKE2s with a 16-byte output."""
    return hashlib.blake2s(data, key=key, digest_size=MAC_LEN).digest()


# -- XChaCha20-Poly1305 for the cookie reply (draft-irtf-cfrg-xchacha) ----------------------

_SIGMA = struct.unpack("<4I", b"expand 32-byte k")


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20(key, nonce): the ChaCha20 rounds without the final feed-forward, keeping
    words 0-3 and 12-15.

    Computed from one ChaCha20 keystream block (OpenSSL) by subtracting the initial state
    words again, which undoes the feed-forward: the same result as running the rounds here.
    """
    if len(key) != 32 or len(nonce16) != 16:
        raise LocalProtocolError("HChaCha20 takes a 32-byte key and a 16-byte nonce")
    block = Cipher(algorithms.ChaCha20(key, nonce16), mode=None).encryptor().update(bytes(64))
    words = struct.unpack("<16I", block)
    initial = (*_SIGMA, *struct.unpack("<4I", nonce16))
    out = [(w - i) & 0xFFFFFFFF for w, i in zip(words[:4] + words[12:], initial, strict=True)]
    return struct.pack("<8I", *out)


def xchacha20poly1305_encrypt(key: bytes, nonce24: bytes, plaintext: bytes, ad: bytes) -> bytes:
    sub = hchacha20(key, nonce24[:16])
    return ChaCha20Poly1305(sub).encrypt(b"\x00" * 4 + nonce24[16:], plaintext, ad)


def xchacha20poly1305_decrypt(key: bytes, nonce24: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    sub = hchacha20(key, nonce24[:16])
    try:
        return ChaCha20Poly1305(sub).decrypt(b"\x00" * 4 + nonce24[16:], ciphertext, ad)
    except InvalidTag as exc:
        raise AuthenticationError("cookie reply failed authentication") from exc


# -- flood defences (shared by all connections of one server) -----------------------------


class CookieChecker:
    """mac1/mac2 and cookies for one responder static key (WireGuard section 5.4.7).

    ``mac1`` proves the sender knows the server's public key: checked with one BLAKE2s call,
    before any Diffie-Hellman. Under load the server additionally wants ``mac2``, keyed with a
    cookie that only someone receiving at the claimed source address can learn; without it the
    server answers with a cookie reply and does no further work.
    """

    def __init__(self, static_public: bytes, *, rng: Callable[[int], bytes] = os.urandom) -> None:
        self.mac1_key = hash_(LABEL_MAC1 + static_public)
        self.cookie_key = hash_(LABEL_COOKIE + static_public)
        self._rng = rng
        self._secret = rng(32)
        self._secret_time: float | None = None

    def _current_secret(self, now: float) -> bytes:
        if self._secret_time is None:
            self._secret_time = now
        elif now - self._secret_time >= COOKIE_SECRET_LIFETIME:
            self._secret = self._rng(32)
            self._secret_time = now
        return self._secret

    def cookie_for(self, source: bytes, now: float) -> bytes:
        """Cookie = MAC(R_m, A_m): the changing secret over the source address."""
        return _mac(self._current_secret(now), source)

    def check_mac1(self, msg_alpha: bytes | memoryview, mac1: bytes | memoryview) -> bool:
        return hmac.compare_digest(_mac(self.mac1_key, msg_alpha), bytes(mac1))

    def check_mac2(
        self, msg_beta: bytes | memoryview, mac2: bytes | memoryview, source: bytes, now: float
    ) -> bool:
        return hmac.compare_digest(_mac(self.cookie_for(source, now), msg_beta), bytes(mac2))

    def make_reply(self, mac1: bytes, source: bytes, now: float) -> bytes:
        """The COOKIE_REPLY body: a random 24-byte nonce and the encrypted cookie, bound to
        the initiation's mac1 as associated data."""
        nonce = self._rng(COOKIE_NONCE_LEN)
        sealed = xchacha20poly1305_encrypt(
            self.cookie_key, nonce, self.cookie_for(source, now), mac1
        )
        return nonce + sealed


class RateLimiter:
    """Token bucket per source address (WireGuard's ratelimiter), bounded in size.

    ``allow(source, now)`` spends one token; each source earns ``rate`` tokens per second up
    to ``burst``. The table holds at most ``max_sources`` entries (least recently used go).
    """

    def __init__(self, rate: float = 20.0, burst: float = 5.0, max_sources: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def allow(self, source: bytes, now: float) -> bool:
        tokens, last = self._buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        ok = tokens >= 1.0
        if ok:
            tokens -= 1.0
        self._buckets[source] = (tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return ok

    def __len__(self) -> int:
        return len(self._buckets)


# -- configuration and events -------------------------------------------------------------


@dataclass(frozen=True)
class PeerInfo:
    """What a responder's ``authorize`` callback returns for a known initiator key."""

    name: str
    psk: bytes | None = None


@dataclass
class ChannelConfig:
    """Settings for one end. ``remote_static`` is required for the initiator (IK).

    Responder only: ``authorize(public_key) -> PeerInfo | None`` decides who may connect
    (``None`` = unknown key: refused before any payload reaches the application);
    ``cookies`` and ``under_load(now)`` switch on WireGuard's cookie defence;
    ``limiter`` rate-limits handshakes per ``source`` while under load.
    """

    static: KeyPair
    remote_static: bytes | None = None
    psk: bytes | None = None
    prologue: bytes = PROLOGUE
    authorize: Callable[[bytes], PeerInfo | None] | None = None
    cookies: CookieChecker | None = None
    under_load: Callable[[float], bool] | None = None
    limiter: RateLimiter | None = None
    rekey_after_messages: int = REKEY_AFTER_MESSAGES
    reject_after_messages: int = REJECT_AFTER_MESSAGES
    rekey_after_time: float = REKEY_AFTER_TIME
    reject_after_time: float = REJECT_AFTER_TIME
    max_payload: int = MAX_PAYLOAD
    #: Largest message :meth:`SecureChannel.send` accepts and a receiver reassembles from
    #: DATA_MORE records; the default allows single-record messages only.
    max_message: int = MAX_PAYLOAD
    answer_key_query: bool = True


class Event:
    """Base class of what :meth:`SecureChannel.receive_data` reports."""


@dataclass(frozen=True)
class HandshakeComplete(Event):
    remote_static: bytes
    payload: bytes
    handshake_hash: bytes
    peer: PeerInfo | None = None


@dataclass(frozen=True)
class InitiationReceived(Event):
    """Responder: an authorized peer started a handshake; call :meth:`SecureChannel.accept`."""

    remote_static: bytes
    payload: bytes
    peer: PeerInfo


@dataclass(frozen=True)
class Message(Event):
    data: bytes


@dataclass(frozen=True)
class CloseReceived(Event):
    pass


@dataclass
class _Direction:
    cipher: CipherState
    since_rekey: int = 0
    key_time: float = 0.0


@dataclass
class _Stats:
    records_sent: int = 0
    records_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    rekeys_sent: int = 0
    rekeys_received: int = 0
    cookie_replies: int = field(default=0)


def key_query_record() -> bytes:
    """What a client sends to learn a server's public key (before pinning it)."""
    return RECORD_HEADER.pack(KEY_QUERY, 0)


def parse_key_info(data: bytes) -> bytes:
    """The public key from a KEY_INFO record (exactly 40 bytes)."""
    if len(data) != HEADER_LEN + DHLEN:
        raise RemoteProtocolError("bad key info record length")
    rtype, length = RECORD_HEADER.unpack_from(data, 0)
    if rtype != KEY_INFO or length != DHLEN or data[1:4] != b"\x00\x00\x00":
        raise RemoteProtocolError("not a key info record")
    return bytes(data[HEADER_LEN:])


# -- the channel ---------------------------------------------------------------------------

_HANDSHAKE, _OPEN, _CLOSING, _CLOSED, _FAILED = range(5)


class SecureChannel:
    """One end of a secure channel (``initiator=True`` for the client).

    Initiator: ``start(now, payload)`` queues the first message. Both: feed received bytes to
    :meth:`receive_data` (``b""`` for end of stream) and send what :meth:`data_to_send`
    returns. After :class:`HandshakeComplete`, :meth:`send` queues application messages and
    :meth:`close` a close record. Any error puts the channel in a failed state; every later
    call raises.
    """

    def __init__(self, config: ChannelConfig, *, initiator: bool, source: bytes = b"") -> None:
        self.config = config
        self.initiator = initiator
        self.source = source  # the peer's address as bytes (responder: for cookies/limits)
        if initiator and config.remote_static is None:
            raise LocalProtocolError("the initiator needs the server's public key")
        if not initiator and config.authorize is None:
            raise LocalProtocolError("the responder needs an authorize callback")
        self._state = _HANDSHAKE
        self._inbuf = bytearray()
        self._out: list[bytes | bytearray] = []
        self._hs: HandshakeState | None = None
        self._send: _Direction | None = None
        self._recv: _Direction | None = None
        self._last_mac1 = b""
        self._cookie: bytes | None = None
        self._cookie_time = 0.0
        self._cookie_rounds = 0
        self._hello = b""
        self._close_sent = False
        self._close_received = False
        self._key_queried = False
        # A message arriving as DATA_MORE records is decrypted straight into one buffer
        # (``_partial``, ``_partial_len`` bytes so far): no per-record plaintext and no join.
        self._partial: bytearray | None = None
        self._partial_len = 0
        self.remote_static: bytes | None = None
        self.peer: PeerInfo | None = None
        self.handshake_hash = b""
        self.stats = _Stats()

    # -- common -------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._state == _OPEN

    @property
    def closed(self) -> bool:
        return self._state in (_CLOSED, _FAILED)

    def _check_usable(self) -> None:
        if self._state == _FAILED:
            raise LocalProtocolError("the channel has failed")

    def _fail(self, exc: Exception) -> Exception:
        self._state = _FAILED
        self._inbuf = bytearray()
        return exc

    def data_to_send(self) -> bytes:
        """All queued bytes, joined (convenient; see :meth:`take_records` for bulk)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def take_records(self) -> list[bytes | bytearray]:
        """The queued records as separate buffers (no join copy), for ``writelines``."""
        out = self._out
        self._out = []
        return out

    def statistics(self) -> _Stats:
        return self.stats

    # -- handshake: initiator --------------------------------------------------------------
    def start(self, now: float, payload: bytes = b"") -> None:
        """Queue the initiation (the initiator's first flight)."""
        if not self.initiator or self._state != _HANDSHAKE or self._hs is not None:
            raise LocalProtocolError("start() is for a fresh initiator")
        if len(payload) > MAX_HANDSHAKE_PAYLOAD:
            raise LocalProtocolError("handshake payload too long")
        self._hello = payload
        self._send_initiation(now)

    def _send_initiation(self, now: float) -> None:
        cfg = self.config
        assert cfg.remote_static is not None
        self._hs = HandshakeState(
            initiator=True, s=cfg.static, rs=cfg.remote_static, prologue=cfg.prologue, psk=cfg.psk
        )
        message, _ = self._hs.write_message(self._hello)
        rtype = INITIATION_IKPSK2 if cfg.psk is not None else INITIATION_IK
        self._out.append(
            self._with_macs(rtype, message, cfg.remote_static, self._valid_cookie(now))
        )

    def _valid_cookie(self, now: float) -> bytes | None:
        if self._cookie is not None and now - self._cookie_time < COOKIE_SECRET_LIFETIME - 5:
            return self._cookie
        return None

    def _with_macs(self, rtype: int, message: bytes, mac_pub: bytes, cookie: bytes | None) -> bytes:
        body_len = len(message) + 2 * MAC_LEN
        alpha = RECORD_HEADER.pack(rtype, body_len) + message
        mac1 = _mac(hash_(LABEL_MAC1 + mac_pub), alpha)
        beta = alpha + mac1
        mac2 = _mac(cookie, beta) if cookie is not None else bytes(MAC_LEN)
        if rtype != RESPONSE:
            self._last_mac1 = mac1
        return beta + mac2

    # -- receiving ---------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview, now: float = 0.0) -> list[Event]:
        """Feed bytes from the peer (``b""`` = end of stream); returns the events.

        Raises :class:`RemoteProtocolError` (or its subclass :class:`AuthenticationError`)
        when the peer misbehaves, :class:`ConnectionLost` on an end of stream before the close
        record. After an error the channel is failed and stays so.
        """
        self._check_usable()
        events: list[Event] = []
        if not data:
            if self._state == _CLOSED or self._close_received:
                return events
            if self._inbuf:
                raise self._fail(RemoteProtocolError("stream ended inside a record (truncated)"))
            raise self._fail(ConnectionLost("stream ended without a close record"))
        if self._state == _CLOSED:
            raise self._fail(RemoteProtocolError("data after the close record"))
        try:
            with memoryview(data) as view:
                off = 0
                if self._inbuf:
                    # Complete the one record split across reads, copying only its tail.
                    off = self._complete_pending(view, now, events)
                    if off < 0:
                        return events
                if self._state == _CLOSED:
                    if off != len(view):
                        raise RemoteProtocolError("data after the close record")
                    return events
                # Whole records straight from the caller's buffer: no copy into ours.
                off += self._consume(view[off:], now, events)
                if off < len(view):
                    self._inbuf = bytearray(view[off:])
        except (RemoteProtocolError, LocalProtocolError) as exc:
            raise self._fail(exc) from None
        return events

    def _header(self, buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
        rtype, length = RECORD_HEADER.unpack_from(buf, pos)
        if buf[pos + 1 : pos + 4] != b"\x00\x00\x00":
            raise RemoteProtocolError("reserved header bytes are not zero")
        self._check_length(rtype, length)
        return rtype, length

    def _complete_pending(self, view: memoryview, now: float, events: list[Event]) -> int:
        """Add to the buffered partial record from ``view``; returns how much of ``view`` was
        used, or -1 when the record is still incomplete (everything was buffered)."""
        buf = self._inbuf
        off = 0
        if len(buf) < HEADER_LEN:
            off = min(HEADER_LEN - len(buf), len(view))
            buf += view[:off]
            if len(buf) < HEADER_LEN:
                return -1
        rtype, length = self._header(buf, 0)
        take = min(HEADER_LEN + length - len(buf), len(view) - off)
        buf += view[off : off + take]
        off += take
        if len(buf) < HEADER_LEN + length:
            return -1
        self._inbuf = bytearray()
        with memoryview(buf) as record:
            self._record(rtype, record, now, events)
        return off

    def _consume(self, view: memoryview, now: float, events: list[Event]) -> int:
        """Process every complete record at the start of ``view``; returns bytes used."""
        pos = 0
        n = len(view)
        while n - pos >= HEADER_LEN:
            rtype, length = self._header(view, pos)
            end = pos + HEADER_LEN + length
            if n < end:
                break
            with view[pos:end] as record:
                self._record(rtype, record, now, events)
            pos = end
            if self._state == _CLOSED:
                if pos != n:
                    raise RemoteProtocolError("data after the close record")
                break
        return pos

    def _check_length(self, rtype: int, length: int) -> None:
        if rtype in (INITIATION_IK, INITIATION_IKPSK2):
            ok = not self.initiator and length <= _MAX_INITIATION_BODY
        elif rtype == RESPONSE:
            ok = self.initiator and length <= _MAX_RESPONSE_BODY
        elif rtype == COOKIE_REPLY:
            ok = self.initiator and length == COOKIE_REPLY_LEN
        elif rtype in (DATA, DATA_MORE):
            ok = (rtype == DATA or self.config.max_message > self.config.max_payload) and (
                8 + TAGLEN
                <= length
                <= min(_MAX_TRANSPORT_BODY, 8 + self.config.max_payload + TAGLEN)
            )
        elif rtype in (KEY_UPDATE, CLOSE):
            ok = length == 8 + TAGLEN
        elif rtype == KEY_QUERY:
            ok = not self.initiator and length == 0
        else:
            raise RemoteProtocolError(f"unknown record type {rtype}")
        if not ok:
            raise RemoteProtocolError(f"record type {rtype} with bad or oversized length {length}")

    def _record(self, rtype: int, record: memoryview, now: float, events: list[Event]) -> None:
        if rtype == KEY_QUERY:
            self._key_query()
        elif rtype in (DATA, DATA_MORE, KEY_UPDATE, CLOSE):
            if self._state not in (_OPEN, _CLOSING) or self._recv is None:
                raise RemoteProtocolError("transport record before the handshake completed")
            self._transport_record(rtype, record, now, events)
        elif self._state != _HANDSHAKE or (not self.initiator and self._hs is not None):
            raise RemoteProtocolError("handshake record after the handshake")
        elif rtype == RESPONSE:
            self._response(record, now, events)
        elif rtype == COOKIE_REPLY:
            self._cookie_reply(record, now)
        else:
            self._initiation(rtype, record, now, events)

    # -- handshake: responder ------------------------------------------------------------
    def _key_query(self) -> None:
        """Answer a KEY_QUERY with our public key (for clients doing trust on first use).

        Only before any initiation and once per connection; costs no cryptography. A server
        can switch it off (``answer_key_query=False``) to stay silent to strangers."""
        if not self.config.answer_key_query:
            raise RemoteProtocolError("key queries are not answered by this server")
        if self._state != _HANDSHAKE or self._hs is not None or self._key_queried:
            raise RemoteProtocolError("key query out of order")
        self._key_queried = True
        pub = self.config.static.public
        self._out.append(RECORD_HEADER.pack(KEY_INFO, len(pub)) + pub)

    def _initiation(self, rtype: int, record: memoryview, now: float, events: list[Event]) -> None:
        cfg = self.config
        n = len(record)
        alpha, mac1, mac2 = record[: n - 32], record[n - 32 : n - 16], record[n - 16 :]
        checker = cfg.cookies
        mac1_key = checker.mac1_key if checker else hash_(LABEL_MAC1 + cfg.static.public)
        # 1. mac1: one keyed hash, no DH. Garbage and senders who do not know our key stop here.
        if not hmac.compare_digest(_mac(mac1_key, alpha), bytes(mac1)):
            raise AuthenticationError("initiation with a bad mac1 (not for this server's key)")
        # 2. Under load: demand mac2 (a cookie proving the source address), then rate-limit.
        if checker is not None and cfg.under_load is not None and cfg.under_load(now):
            if not checker.check_mac2(record[: n - 16], mac2, self.source, now):
                self._cookie_rounds += 1
                if self._cookie_rounds > MAX_COOKIE_ROUNDS:
                    raise RemoteProtocolError("too many initiations without a valid cookie")
                body = checker.make_reply(bytes(mac1), self.source, now)
                self._out.append(RECORD_HEADER.pack(COOKIE_REPLY, len(body)) + body)
                self.stats.cookie_replies += 1
                return
            if cfg.limiter is not None and not cfg.limiter.allow(self.source, now):
                raise RemoteProtocolError("handshake rate limit exceeded for this source")
        # 3. The Noise message: DH work, learns the initiator's static key.
        psk_mode = rtype == INITIATION_IKPSK2
        hs = HandshakeState(
            initiator=False,
            s=cfg.static,
            prologue=cfg.prologue,
            pattern="IKpsk2" if psk_mode else "IK",
        )
        payload = hs.read_message(bytes(alpha[HEADER_LEN:]))[0]
        remote = hs.rs
        assert remote is not None and cfg.authorize is not None
        # 4. Authorization before anything else: an unknown key gets no reply at all.
        peer = cfg.authorize(remote)
        if peer is None:
            raise AuthenticationError("unknown client key")
        if (peer.psk is not None) != psk_mode:
            raise AuthenticationError("client used the wrong handshake (pre-shared key mismatch)")
        if peer.psk is not None:
            hs.set_psk(peer.psk)
        if len(payload) > MAX_HANDSHAKE_PAYLOAD:
            raise RemoteProtocolError("handshake payload too long")
        self._hs = hs
        self.remote_static = remote
        self.peer = peer
        events.append(InitiationReceived(remote, payload, peer))

    def accept(self, now: float, payload: bytes = b"") -> None:
        """Responder: answer the initiation reported as :class:`InitiationReceived` with
        ``payload`` (e.g. a protocol hello); the channel is open afterwards."""
        self._check_usable()
        hs = self._hs
        if self.initiator or hs is None or self._state != _HANDSHAKE or self.remote_static is None:
            raise LocalProtocolError("accept() needs a responder with a pending initiation")
        if len(payload) > MAX_HANDSHAKE_PAYLOAD:
            raise LocalProtocolError("handshake payload too long")
        message, split = hs.write_message(payload)
        assert split is not None
        self._out.append(self._with_macs(RESPONSE, message, self.remote_static, None))
        self._open(split[1], split[0], now)

    # -- handshake: initiator receives ---------------------------------------------------
    def _response(self, record: memoryview, now: float, events: list[Event]) -> None:
        cfg = self.config
        if self._hs is None:
            raise RemoteProtocolError("response before an initiation")
        n = len(record)
        alpha, mac1 = record[: n - 32], record[n - 32 : n - 16]
        if not hmac.compare_digest(_mac(hash_(LABEL_MAC1 + cfg.static.public), alpha), bytes(mac1)):
            raise AuthenticationError("response with a bad mac1")
        payload, split = self._hs.read_message(bytes(alpha[HEADER_LEN:]))
        assert split is not None
        self._open(split[0], split[1], now)
        self.remote_static = cfg.remote_static
        events.append(HandshakeComplete(self.remote_static or b"", payload, self.handshake_hash))

    def _cookie_reply(self, record: memoryview, now: float) -> None:
        cfg = self.config
        assert cfg.remote_static is not None
        body = bytes(record[HEADER_LEN:])
        cookie = xchacha20poly1305_decrypt(
            hash_(LABEL_COOKIE + cfg.remote_static),
            body[:COOKIE_NONCE_LEN],
            body[COOKIE_NONCE_LEN:],
            self._last_mac1,
        )
        self._cookie_rounds += 1
        if self._cookie_rounds > MAX_COOKIE_ROUNDS:
            raise RemoteProtocolError("server keeps sending cookie replies")
        self._cookie, self._cookie_time = cookie, now
        self.stats.cookie_replies += 1
        self._send_initiation(now)  # a fresh initiation (new ephemeral) carrying mac2

    def _open(self, send: CipherState, recv: CipherState, now: float) -> None:
        assert self._hs is not None
        self.handshake_hash = self._hs.get_handshake_hash()
        self._hs = None
        self._send = _Direction(send, 0, now)
        self._recv = _Direction(recv, 0, now)
        self._state = _OPEN

    # -- transport ---------------------------------------------------------------------
    def _transport_record(
        self, rtype: int, record: memoryview, now: float, events: list[Event]
    ) -> None:
        recv = self._recv
        assert recv is not None
        if self._close_received:
            raise RemoteProtocolError("record after the close record")
        counter = int.from_bytes(record[8:16], "little")
        if counter != recv.cipher.n:
            kind = "replayed" if counter < recv.cipher.n else "reordered or dropped"
            raise RemoteProtocolError(f"{kind} record: counter {counter}, expected {recv.cipher.n}")
        cfg = self.config
        if recv.since_rekey >= cfg.reject_after_messages or (
            now - recv.key_time >= cfg.reject_after_time and rtype == DATA
        ):
            raise RemoteProtocolError("peer did not rekey in time")
        if rtype == DATA_MORE or (rtype == DATA and self._partial is not None):
            self._continued(rtype, record, events)
            return
        plaintext = recv.cipher.decrypt_with_ad(bytes(record[:16]), record[16:])
        recv.since_rekey += 1
        self.stats.records_received += 1
        if rtype == DATA:
            self.stats.bytes_received += len(plaintext)
            events.append(Message(plaintext))
        elif rtype == KEY_UPDATE:
            recv.cipher.rekey()
            recv.since_rekey = 0
            recv.key_time = now
            self.stats.rekeys_received += 1
        else:  # CLOSE
            if self._partial is not None:
                raise RemoteProtocolError("close record inside a multi-record message")
            self._close_received = True
            events.append(CloseReceived())
            if self._close_sent:
                self._state = _CLOSED

    def _continued(self, rtype: int, record: memoryview, events: list[Event]) -> None:
        """A record of a multi-record message: decrypt into the message's buffer; the final
        DATA record completes it. The total is checked before decrypting anything."""
        recv = self._recv
        assert recv is not None
        start = self._partial_len
        end = start + len(record) - TRANSPORT_HEADER_LEN - TAGLEN
        limit = self.config.max_message
        if (rtype == DATA_MORE and end + TAGLEN > limit) or end > limit:
            raise RemoteProtocolError("message longer than the agreed maximum")
        buf = self._partial
        if buf is None:
            # Room for the largest message up front (zeroing it is cheaper than joining
            # parts); beyond 1 MiB grow as records come instead.
            buf = self._partial = bytearray(limit if limit <= _PREALLOCATE_MAX else 0)
        if len(buf) < end:
            buf.extend(bytes(end - len(buf)))
        with memoryview(buf) as view:
            recv.cipher.decrypt_into(bytes(record[:16]), record[16:], view[start:end])
        recv.since_rekey += 1
        self.stats.records_received += 1
        self.stats.bytes_received += end - start
        self._partial_len = end
        if rtype == DATA:
            del buf[end:]
            self._partial = None
            self._partial_len = 0
            events.append(Message(buf))  # type: ignore[arg-type]

    def _seal(self, rtype: int, payload: bytes | bytearray | memoryview) -> bytearray:
        send = self._send
        assert send is not None
        n = len(payload)
        out = bytearray(TRANSPORT_HEADER_LEN + n + TAGLEN)
        TRANSPORT_HEADER.pack_into(out, 0, rtype, 8 + n + TAGLEN, send.cipher.n)
        with memoryview(out) as view:
            send.cipher.encrypt_into(bytes(view[:16]), payload, view[16:])
        send.since_rekey += 1
        self.stats.records_sent += 1
        return out

    def _seal_run(self, view: memoryview, more_type: int) -> bytearray:
        """Seal ``view`` as consecutive records in ONE buffer: every record but the last is
        ``more_type`` (DATA_MORE for one long message, DATA for a stream), the last is DATA.

        Why: one allocation and one transport write per batch instead of per 64 KiB record.
        Fresh 64 KiB buffers cost page faults each time (glibc trims the heap after every
        free), which measured as much as the encryption itself. Same bytes on the wire as
        sealing the records one by one; the caller has checked no rekey falls inside."""
        send = self._send
        assert send is not None
        cipher = send.cipher
        step = self.config.max_payload
        n = len(view)
        count = max(1, -(-n // step))
        overhead = TRANSPORT_HEADER_LEN + TAGLEN
        out = bytearray(n + count * overhead)
        pack_into = TRANSPORT_HEADER.pack_into
        pos = 0
        with memoryview(out) as ov:
            for off in range(0, max(n, 1), step):
                m = min(step, n - off)
                end = pos + overhead + m
                pack_into(ov, pos, DATA if off + step >= n else more_type, 8 + m + TAGLEN, cipher.n)
                cipher.encrypt_into(
                    bytes(ov[pos : pos + 16]), view[off : off + m], ov[pos + 16 : end]
                )
                pos = end
        send.since_rekey += count
        self.stats.records_sent += count
        return out

    def _rekey_free(self, count: int, now: float) -> bool:
        """True when sending ``count`` records from now on needs no KEY_UPDATE among them."""
        send = self._send
        assert send is not None
        cfg = self.config
        return (
            send.since_rekey + count <= cfg.rekey_after_messages
            and now - send.key_time < cfg.rekey_after_time
        )

    def _maybe_rekey(self, now: float) -> None:
        send = self._send
        assert send is not None
        cfg = self.config
        if (
            send.since_rekey >= cfg.rekey_after_messages
            or now - send.key_time >= cfg.rekey_after_time
        ):
            self._out.append(self._seal(KEY_UPDATE, b""))
            send.cipher.rekey()
            send.since_rekey = 0
            send.key_time = now
            self.stats.rekeys_sent += 1

    def send(self, data: bytes | bytearray | memoryview, now: float = 0.0) -> None:
        """Queue one application message: at most ``config.max_payload`` bytes in one DATA
        record, or up to ``config.max_message`` bytes as DATA_MORE records and a final DATA
        (both ends must allow it; the receiver checks the total)."""
        self._check_usable()
        if self._state != _OPEN or self._close_sent:
            raise LocalProtocolError("send() needs an open channel")
        n = len(data)
        step = self.config.max_payload
        if n <= step:
            self._maybe_rekey(now)
            self._out.append(self._seal(DATA, data))
        elif n <= self.config.max_message:
            with memoryview(data) as view:
                if self._rekey_free(-(-n // step), now):
                    self._out.append(self._seal_run(view, DATA_MORE))
                    self.stats.bytes_sent += n
                    return
                for off in range(0, n, step):
                    self._maybe_rekey(now)
                    last = off + step >= n
                    self._out.append(
                        self._seal(DATA if last else DATA_MORE, view[off : off + step])
                    )
        else:
            raise LocalProtocolError(f"message of {n} bytes exceeds the record limit")
        self.stats.bytes_sent += n

    def send_parts(
        self, head: bytes | bytearray, body: bytes | bytearray | memoryview, now: float = 0.0
    ) -> None:
        """Queue ONE message ``head + body`` without joining them: when it needs several
        records anyway, ``head`` travels in a record of its own (DATA_MORE) and ``body`` is
        sealed straight from the caller's buffer. The receiver sees the same message (record
        boundaries are not part of it); same limits as :meth:`send`."""
        self._check_usable()
        if self._state != _OPEN or self._close_sent:
            raise LocalProtocolError("send() needs an open channel")
        n = len(head) + len(body)
        step = self.config.max_payload
        if n > self.config.max_message:
            raise LocalProtocolError(f"message of {n} bytes exceeds the record limit")
        with memoryview(body) as view:
            if n <= step or not head or not self._rekey_free(2 + len(view) // step, now):
                self.send(bytes(head) + bytes(view), now)
                return
            self._out.append(self._seal(DATA_MORE, head))
            self._out.append(self._seal_run(view, DATA_MORE))
        self.stats.bytes_sent += n

    def send_stream(self, data: bytes | bytearray | memoryview, now: float = 0.0) -> None:
        """Queue ``data`` as consecutive full-size DATA records (bulk transfers), sealed into
        one buffer when no rekey falls inside."""
        self._check_usable()
        if self._state != _OPEN or self._close_sent:
            raise LocalProtocolError("send() needs an open channel")
        step = self.config.max_payload
        with memoryview(data) as view:
            n = len(view)
            if n > step and self._rekey_free(-(-n // step), now):
                self._out.append(self._seal_run(view, DATA))
                self.stats.bytes_sent += n
                return
            for off in range(0, n, step):
                self.send(view[off : off + step], now)

    def close(self) -> None:
        """Queue the close record; the peer answers with its own."""
        self._check_usable()
        if self._state not in (_OPEN, _CLOSING) or self._close_sent:
            if self._state == _HANDSHAKE:
                self._state = _CLOSED
            return
        self._out.append(self._seal(CLOSE, b""))
        self._close_sent = True
        self._state = _CLOSED if self._close_received else _CLOSING

    @property
    def close_received(self) -> bool:
        return self._close_received
