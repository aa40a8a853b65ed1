"""Sans-IO share RPC: the messages a client and ``burrow serve`` exchange over the secure
channel. Wire format: ``docs/formats/share-protocol.md``.

Why this shape (AFS/kAFS and NFSv4 as models): one connection carries many calls at once,
each tagged with a call id and answered in any order, so one slow call never holds up the
others; bulk data moves as many chunk-sized READ/WRITE calls in flight; the operations mirror
``burrow.fs.vfs.Filesystem`` one to one, on opaque file handles the server can check without
keeping state (a MAC binding inode, export and peer). Every field has a bound, checked before
anything is allocated; a malformed message is a :class:`RemoteProtocolError`.

Each channel message is one frame::

    kind u8 | op u8 | flags u16 | call_id u32 | body

``kind`` is REQUEST, REPLY or ERROR (body ``errno u32 | message str``). Bodies are sequences
of fields whose types each op declares in :data:`REQUESTS` / :data:`REPLIES`:

======  ===============================================================
code    field
======  ===============================================================
``H``   handle: 24 bytes (``ino u64 | mac[16]``)
``S``   name: ``u16`` length + UTF-8 (surrogateescape) bytes, at most 255
``T``   text (symlink target, error message): ``u16`` length, at most 4096
``B``   blob (file data, xattr value): ``u32`` length, at most :data:`MAX_CHUNK`
``I``   u32 ; ``Q`` u64 ; ``q`` i64
``A``   attributes: :data:`ATTR` (13 fixed fields)
``D``   directory entries: ``u16`` count, then (``S`` name, ``H`` handle, ``A`` attributes)
``L``   name list: ``u16`` count, then ``S`` names
======  ===============================================================
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from burrow.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ATTR",
    "FRAME",
    "HANDLE_LEN",
    "MAX_CHUNK",
    "PROTOCOL_VERSION",
    "Frame",
    "Kind",
    "Op",
    "decode_frame",
    "decode_hello",
    "decode_welcome",
    "encode_error",
    "encode_hello",
    "encode_reply",
    "encode_request",
    "encode_welcome",
]

PROTOCOL_VERSION = 1
MAGIC = b"BURROW-SHARE"
FRAME = struct.Struct("<BBHI")  # kind, op, flags, call_id
HANDLE_LEN = 24
MAX_NAME = 255
MAX_TEXT = 4096
#: File data per READ/WRITE call. A frame larger than one secure-channel record (65519 bytes)
#: travels as DATA_MORE records plus a final DATA record; fewer, larger calls cost less
#: per byte in every process on the way.
MAX_CHUNK = (256 << 10) - 1024
MAX_MESSAGE = (256 << 10) + 4096  # the largest frame; the channel's max_message
MAX_ENTRIES = 4096

#: ino, mode, nlink, uid, gid, size, atime_ns, mtime_ns, ctime_ns, rdev, blocks, blksize, dev
ATTR = struct.Struct("<QIIIIQqqqQQIQ")
_STATFS = struct.Struct("<QQQQQQQQ")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")


class Kind(IntEnum):
    REQUEST = 1
    REPLY = 2
    ERROR = 3


class Op(IntEnum):
    LOOKUP = 1
    GETATTR = 2
    READDIR = 3
    READ = 4
    WRITE = 5
    CREATE = 6
    MKDIR = 7
    UNLINK = 8
    RMDIR = 9
    RENAME = 10
    SYMLINK = 11
    READLINK = 12
    LINK = 13
    SETATTR = 14
    LISTXATTR = 15
    GETXATTR = 16
    SETXATTR = 17
    REMOVEXATTR = 18
    STATFS = 19
    SYNC = 20
    MKNOD = 21


#: Operations that change the filesystem (refused on read-only exports and for "ro" peers).
WRITE_OPS = frozenset(
    {
        Op.WRITE,
        Op.CREATE,
        Op.MKDIR,
        Op.UNLINK,
        Op.RMDIR,
        Op.RENAME,
        Op.SYMLINK,
        Op.LINK,
        Op.SETATTR,
        Op.SETXATTR,
        Op.REMOVEXATTR,
        Op.MKNOD,
    }
)

# SETATTR valid-mask bits.
SET_MODE, SET_UID, SET_GID, SET_SIZE, SET_ATIME, SET_MTIME = (1 << i for i in range(6))

REQUESTS: dict[Op, str] = {
    Op.LOOKUP: "HS",
    Op.GETATTR: "H",
    Op.READDIR: "HI",  # handle, start index
    Op.READ: "HQI",  # handle, offset, length
    Op.WRITE: "HQB",
    Op.CREATE: "HSI",  # parent, name, mode
    Op.MKDIR: "HSI",
    Op.UNLINK: "HS",
    Op.RMDIR: "HS",
    Op.RENAME: "HSHSI",
    Op.SYMLINK: "HST",
    Op.READLINK: "H",
    Op.LINK: "HHS",  # inode, new parent, new name
    Op.SETATTR: "HIIIIQqq",  # handle, mask, mode, uid, gid, size, atime, mtime
    Op.LISTXATTR: "H",
    Op.GETXATTR: "HS",
    Op.SETXATTR: "HSBI",
    Op.REMOVEXATTR: "HS",
    Op.STATFS: "",
    Op.SYNC: "",
    Op.MKNOD: "HSIQ",  # parent, name, mode (with type bits), rdev
}
REPLIES: dict[Op, str] = {
    Op.LOOKUP: "HA",
    Op.GETATTR: "A",
    Op.READDIR: "DI",  # entries, next index (0 = end)
    Op.READ: "B",
    Op.WRITE: "I",
    Op.CREATE: "HA",
    Op.MKDIR: "HA",
    Op.UNLINK: "",
    Op.RMDIR: "",
    Op.RENAME: "",
    Op.SYMLINK: "HA",
    Op.READLINK: "T",
    Op.LINK: "A",
    Op.SETATTR: "A",
    Op.LISTXATTR: "L",
    Op.GETXATTR: "B",
    Op.SETXATTR: "",
    Op.REMOVEXATTR: "",
    Op.STATFS: "F",
    Op.SYNC: "",
    Op.MKNOD: "HA",
}


@dataclass(frozen=True, slots=True)
class Frame:
    kind: Kind
    op: Op
    call_id: int
    fields: tuple[Any, ...]
    flags: int = 0


# -- encoding ------------------------------------------------------------------------------


def _enc_str(out: bytearray, value: str, limit: int) -> None:
    raw = value.encode("utf-8", "surrogateescape")
    if len(raw) > limit:
        raise LocalProtocolError(f"string of {len(raw)} bytes exceeds {limit}")
    out += _U16.pack(len(raw))
    out += raw


def _encode_fields(out: bytearray, types: str, values: Sequence[Any]) -> None:
    if len(types) != len(values):
        raise LocalProtocolError(f"expected {len(types)} fields, got {len(values)}")
    for code, value in zip(types, values, strict=True):
        if code == "H":
            if len(value) != HANDLE_LEN:
                raise LocalProtocolError("a handle is 24 bytes")
            out += value
        elif code == "S":
            _enc_str(out, value, MAX_NAME)
        elif code == "T":
            _enc_str(out, value, MAX_TEXT)
        elif code == "B":
            if len(value) > MAX_CHUNK:
                raise LocalProtocolError("blob larger than a chunk")
            out += _U32.pack(len(value))
            out += value
        elif code == "I":
            out += _U32.pack(value)
        elif code == "Q":
            out += _U64.pack(value)
        elif code == "q":
            out += _I64.pack(value)
        elif code == "A":
            out += ATTR.pack(*value)
        elif code == "F":
            out += _STATFS.pack(*value)
        elif code == "D":
            if len(value) > MAX_ENTRIES:
                raise LocalProtocolError("too many directory entries in one reply")
            out += _U16.pack(len(value))
            for name, handle, attr in value:
                _enc_str(out, name, MAX_NAME)
                out += handle
                out += ATTR.pack(*attr)
        elif code == "L":
            if len(value) > MAX_ENTRIES:
                raise LocalProtocolError("too many names in one reply")
            out += _U16.pack(len(value))
            for name in value:
                _enc_str(out, name, MAX_NAME)
        else:  # pragma: no cover - schema typo
            raise LocalProtocolError(f"unknown field code {code}")
    if len(out) > MAX_MESSAGE:
        raise LocalProtocolError("message exceeds the record size")


def _encode(kind: Kind, op: Op, call_id: int, types: str, fields: Sequence[Any]) -> bytearray:
    try:
        out = bytearray(FRAME.pack(kind, op, 0, call_id))
        _encode_fields(out, types, fields)
    except (struct.error, TypeError) as exc:
        raise LocalProtocolError(f"cannot encode {op.name}: {exc}") from exc
    return out  # no final bytes() copy: every consumer takes a buffer


def encode_request(op: Op, call_id: int, *fields: Any) -> bytearray:
    return _encode(Kind.REQUEST, op, call_id, REQUESTS[op], fields)


_WRITE_HEAD = struct.Struct("<BBHI24sQI")  # frame header, handle, offset, blob length


def encode_write_head(call_id: int, handle: bytes, offset: int, length: int) -> bytes:
    """A WRITE request up to its data: ``encode_write_head(...) + data`` is exactly
    ``encode_request(Op.WRITE, call_id, handle, offset, data)``. Lets a sender hand the data
    to the channel as a separate buffer instead of copying it into the frame."""
    if len(handle) != HANDLE_LEN:
        raise LocalProtocolError("a handle is 24 bytes")
    if not 0 <= length <= MAX_CHUNK:
        raise LocalProtocolError("blob larger than a chunk")
    try:
        return _WRITE_HEAD.pack(Kind.REQUEST, Op.WRITE, 0, call_id, handle, offset, length)
    except struct.error as exc:
        raise LocalProtocolError(f"cannot encode WRITE: {exc}") from exc


def encode_reply(op: Op, call_id: int, *fields: Any) -> bytearray:
    return _encode(Kind.REPLY, op, call_id, REPLIES[op], fields)


def encode_error(op: int, call_id: int, errno_value: int, message: str = "") -> bytes:
    out = bytearray(FRAME.pack(Kind.ERROR, op & 0xFF, 0, call_id))
    out += _U32.pack(errno_value)
    raw = message.encode("utf-8", "replace")[:MAX_TEXT]
    _enc_str(out, raw.decode("utf-8", "ignore"), MAX_TEXT)
    return bytes(out)


# -- decoding ------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "pos", "view")

    def __init__(self, data: bytes | memoryview, pos: int, *, zero_copy: bool = False) -> None:
        self.data = data
        self.pos = pos
        self.view = memoryview(data) if zero_copy else None

    def blob(self, n: int) -> bytes | memoryview:
        """File data: a slice of the message without copying when ``zero_copy``."""
        if self.view is None:
            return self.take(n)
        end = self.pos + n
        if end > len(self.data):
            raise RemoteProtocolError("truncated share message")
        out = self.view[self.pos : end]
        self.pos = end
        return out

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise RemoteProtocolError("truncated share message")
        out = bytes(self.data[self.pos : end])
        self.pos = end
        return out

    def unpack(self, s: struct.Struct) -> tuple[Any, ...]:
        end = self.pos + s.size
        if end > len(self.data):
            raise RemoteProtocolError("truncated share message")
        out = s.unpack_from(self.data, self.pos)
        self.pos = end
        return out

    def string(self, limit: int) -> str:
        (n,) = self.unpack(_U16)
        if n > limit:
            raise RemoteProtocolError(f"string of {n} bytes exceeds {limit}")
        return self.take(n).decode("utf-8", "surrogateescape")


def _decode_fields(r: _Reader, types: str) -> tuple[Any, ...]:
    out: list[Any] = []
    for code in types:
        if code == "H":
            out.append(r.take(HANDLE_LEN))
        elif code == "S":
            out.append(r.string(MAX_NAME))
        elif code == "T":
            out.append(r.string(MAX_TEXT))
        elif code == "B":
            (n,) = r.unpack(_U32)
            if n > MAX_CHUNK:
                raise RemoteProtocolError(f"blob of {n} bytes exceeds {MAX_CHUNK}")
            out.append(r.blob(n))
        elif code == "I":
            out.append(r.unpack(_U32)[0])
        elif code == "Q":
            out.append(r.unpack(_U64)[0])
        elif code == "q":
            out.append(r.unpack(_I64)[0])
        elif code == "A":
            out.append(r.unpack(ATTR))
        elif code == "F":
            out.append(r.unpack(_STATFS))
        elif code == "D":
            (count,) = r.unpack(_U16)
            if count > MAX_ENTRIES:
                raise RemoteProtocolError("too many directory entries")
            entries = []
            for _ in range(count):
                name = r.string(MAX_NAME)
                handle = r.take(HANDLE_LEN)
                entries.append((name, handle, r.unpack(ATTR)))
            out.append(entries)
        elif code == "L":
            (count,) = r.unpack(_U16)
            if count > MAX_ENTRIES:
                raise RemoteProtocolError("too many names")
            out.append([r.string(MAX_NAME) for _ in range(count)])
        else:  # pragma: no cover
            raise LocalProtocolError(f"unknown field code {code}")
    return tuple(out)


def decode_frame(
    data: bytes | memoryview, *, expect: Kind | None = None, zero_copy: bool = False
) -> Frame:
    """Parse one frame. ``expect=Kind.REQUEST`` on the server refuses replies and vice versa.

    ``zero_copy``: blob fields (file data) are memoryview slices of ``data`` instead of
    copies — for bulk paths that only pass the data on."""
    if len(data) > MAX_MESSAGE:
        raise RemoteProtocolError("share message too large")
    if len(data) < FRAME.size:
        raise RemoteProtocolError("share message shorter than its header")
    kind_raw, op_raw, flags, call_id = FRAME.unpack_from(data, 0)
    try:
        kind = Kind(kind_raw)
    except ValueError:
        raise RemoteProtocolError(f"unknown message kind {kind_raw}") from None
    if expect is not None and kind != expect and not (expect == Kind.REPLY and kind == Kind.ERROR):
        raise RemoteProtocolError(f"unexpected message kind {kind.name}")
    if flags:
        raise RemoteProtocolError("unknown flags set")
    r = _Reader(data, FRAME.size, zero_copy=zero_copy)
    if kind == Kind.ERROR:
        (code,) = r.unpack(_U32)
        message = r.string(MAX_TEXT)
        op = Op(op_raw) if op_raw in Op._value2member_map_ else Op.GETATTR
        fields: tuple[Any, ...] = (code, message)
    else:
        try:
            op = Op(op_raw)
        except ValueError:
            raise RemoteProtocolError(f"unknown operation {op_raw}") from None
        fields = _decode_fields(r, (REQUESTS if kind == Kind.REQUEST else REPLIES)[op])
    if r.pos != len(data):
        raise RemoteProtocolError("trailing bytes after a share message")
    return Frame(kind, op, call_id, fields)


# -- hello (carried in the secure channel's handshake payloads) -----------------------------

_HELLO = struct.Struct("<12sHH")  # magic, min version, max version
_WELCOME = struct.Struct("<12sHBB")  # magic, version, status (0 ok, else errno), writable


def encode_hello(
    export: str, *, min_version: int = 1, max_version: int = PROTOCOL_VERSION
) -> bytes:
    out = bytearray(_HELLO.pack(MAGIC, min_version, max_version))
    _enc_str(out, export, MAX_NAME)
    return bytes(out)


def decode_hello(data: bytes) -> tuple[int, int, str]:
    """-> (min version, max version, export name)."""
    r = _Reader(data, 0)
    magic, lo, hi = r.unpack(_HELLO)
    if magic != MAGIC:
        raise RemoteProtocolError("not a burrow share client")
    export = r.string(MAX_NAME)
    if r.pos != len(data):
        raise RemoteProtocolError("trailing bytes after the hello")
    return lo, hi, export


def encode_welcome(
    version: int, *, status: int = 0, writable: bool = False, root: bytes = b"", message: str = ""
) -> bytes:
    """The server's reply: ``status`` 0 with the root handle, or an errno and a message."""
    out = bytearray(_WELCOME.pack(MAGIC, version, min(status, 255), int(writable)))
    if status == 0:
        if len(root) != HANDLE_LEN:
            raise LocalProtocolError("a welcome carries the root handle")
        out += root
    else:
        _enc_str(out, message, MAX_TEXT)
    return bytes(out)


def decode_welcome(data: bytes) -> tuple[int, int, bool, bytes, str]:
    """-> (version, status errno or 0, writable, root handle, message)."""
    r = _Reader(data, 0)
    magic, version, status, writable = r.unpack(_WELCOME)
    if magic != MAGIC:
        raise RemoteProtocolError("not a burrow share server")
    root, message = b"", ""
    if status == 0:
        root = r.take(HANDLE_LEN)
    else:
        message = r.string(MAX_TEXT)
    if r.pos != len(data):
        raise RemoteProtocolError("trailing bytes after the welcome")
    return version, status, bool(writable), root, message
