"""Sans-IO NBD (Network Block Device) protocol: server and client state machines.

Follows the NBD protocol spec (``doc/proto.md`` of the NetworkBlockDevice project): fixed
newstyle handshake, structured replies, ``base:allocation`` block status and STARTTLS.
See ``docs/nbd.md``.
"""

from __future__ import annotations

from burrow.proto.nbd.client import (
    BlockStatus,
    ExportList,
    HandshakeDone,
    NBDClientConnection,
    ReadData,
    ReadHole,
    ReplyDone,
)
from burrow.proto.nbd.events import (
    Disconnect,
    Event,
    ExportInfo,
    Request,
    StartTLS,
    TransmissionStarted,
    transmission_flags,
)
from burrow.proto.nbd.server import NBDServerConnection, TLSMode

__all__ = [
    "BlockStatus",
    "Disconnect",
    "Event",
    "ExportInfo",
    "ExportList",
    "HandshakeDone",
    "NBDClientConnection",
    "NBDServerConnection",
    "ReadData",
    "ReadHole",
    "ReplyDone",
    "Request",
    "StartTLS",
    "TLSMode",
    "TransmissionStarted",
    "transmission_flags",
]
