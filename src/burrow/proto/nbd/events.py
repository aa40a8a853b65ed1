"""Events the NBD state machines hand to their pumps, and the export description they share."""

from __future__ import annotations

from dataclasses import dataclass

from burrow.proto.nbd.constants import (
    DEFAULT_MAX_PAYLOAD,
    NBD_FLAG_CAN_MULTI_CONN,
    NBD_FLAG_HAS_FLAGS,
    NBD_FLAG_READ_ONLY,
    NBD_FLAG_SEND_CACHE,
    NBD_FLAG_SEND_FAST_ZERO,
    NBD_FLAG_SEND_FLUSH,
    NBD_FLAG_SEND_FUA,
    NBD_FLAG_SEND_TRIM,
    NBD_FLAG_SEND_WRITE_ZEROES,
)

__all__ = [
    "Disconnect",
    "Event",
    "ExportInfo",
    "Request",
    "StartTLS",
    "TransmissionStarted",
    "transmission_flags",
]


def transmission_flags(
    *,
    readonly: bool,
    can_flush: bool = True,
    can_fua: bool = True,
    can_trim: bool = False,
    can_zero: bool = True,
    can_fast_zero: bool = False,
    can_multi_conn: bool = False,
    can_cache: bool = True,
) -> int:
    """Transmission flags for an export with these capabilities (NBD_FLAG_SEND_DF is added by
    the server only when structured replies were negotiated)."""
    flags = NBD_FLAG_HAS_FLAGS
    if readonly:
        flags |= NBD_FLAG_READ_ONLY
    else:
        if can_flush:
            flags |= NBD_FLAG_SEND_FLUSH
        if can_fua:
            flags |= NBD_FLAG_SEND_FUA
        if can_trim:
            flags |= NBD_FLAG_SEND_TRIM
        if can_zero:
            flags |= NBD_FLAG_SEND_WRITE_ZEROES
            if can_fast_zero:
                flags |= NBD_FLAG_SEND_FAST_ZERO
    if can_multi_conn:
        flags |= NBD_FLAG_CAN_MULTI_CONN
    if can_cache:
        flags |= NBD_FLAG_SEND_CACHE
    return flags


@dataclass(frozen=True)
class ExportInfo:
    """What the protocol needs to know about one export (the device stays with the pump)."""

    name: str
    size: int
    flags: int  # transmission flags from transmission_flags()
    description: str = ""
    min_block: int = 1
    preferred_block: int = 4096
    max_payload: int = DEFAULT_MAX_PAYLOAD
    tls_only: bool = False

    @property
    def readonly(self) -> bool:
        return bool(self.flags & NBD_FLAG_READ_ONLY)


class Event:
    """Base class of everything ``receive_data`` returns."""

    __slots__ = ()


class Request(Event):
    """A valid transmission request the pump must execute and answer.

    ``data`` is the payload of ``NBD_CMD_WRITE`` (``None`` for other commands). Requests that
    break the rules never become events: the state machine answers them with an error itself.
    """

    __slots__ = ("command", "cookie", "data", "flags", "length", "offset")

    def __init__(
        self,
        command: int,
        flags: int,
        cookie: int,
        offset: int,
        length: int,
        data: bytes | bytearray | None = None,
    ) -> None:
        self.command = command
        self.flags = flags
        self.cookie = cookie
        self.offset = offset
        self.length = length
        self.data = data

    def __repr__(self) -> str:
        return (
            f"Request(command={self.command}, flags={self.flags:#x}, cookie={self.cookie}, "
            f"offset={self.offset}, length={self.length})"
        )


@dataclass(frozen=True)
class TransmissionStarted(Event):
    """Option haggling finished; requests for ``export`` follow."""

    export: ExportInfo
    structured_replies: bool
    meta_context_id: int  # 0: no base:allocation context selected


@dataclass(frozen=True)
class StartTLS(Event):
    """The server acknowledged NBD_OPT_STARTTLS: the pump must send the pending bytes, then run
    the TLS handshake, then call ``tls_established()``. No plaintext may follow."""


@dataclass(frozen=True)
class Disconnect(Event):
    """The client ended the session cleanly (NBD_OPT_ABORT or NBD_CMD_DISC). The pump answers
    every outstanding request, sends what is queued and closes."""

    reason: str = ""
