"""Fuzz the share RPC decoder (frames, hello, welcome) and the server's per-call checks.

Seeds: one real request and reply frame per operation, as the client and the worker encode
them, plus a hello and welcome. Only BurrowError may come out, and decoding must be fast.
"""

from __future__ import annotations

from pathlib import Path

from burrow.errors import BurrowError
from burrow.proto import shareproto as sp
from burrow.proto.shareproto import Kind, Op

_H = bytes(range(24))
_ATTR = (12, 0o100644, 1, 0, 0, 5, 1, 2, 3, 0, 8, 4096, 2049)
_REQUESTS = {
    Op.LOOKUP: (_H, "name"),
    Op.GETATTR: (_H,),
    Op.READDIR: (_H, 0),
    Op.READ: (_H, 0, 65536),
    Op.WRITE: (_H, 10, b"data" * 100),
    Op.CREATE: (_H, "f", 0o644),
    Op.MKDIR: (_H, "d", 0o755),
    Op.UNLINK: (_H, "f"),
    Op.RMDIR: (_H, "d"),
    Op.RENAME: (_H, "a", _H, "b", 1),
    Op.SYMLINK: (_H, "l", "../target"),
    Op.READLINK: (_H,),
    Op.LINK: (_H, _H, "hard"),
    Op.SETATTR: (_H, 63, 0o600, 1, 2, 3, 4, 5),
    Op.LISTXATTR: (_H,),
    Op.GETXATTR: (_H, "user.a"),
    Op.SETXATTR: (_H, "user.a", b"v", 0),
    Op.REMOVEXATTR: (_H, "user.a"),
    Op.STATFS: (),
    Op.SYNC: (),
    Op.MKNOD: (_H, "fifo", 0o010644, 0),
}
_REPLIES = {
    Op.LOOKUP: (_H, _ATTR),
    Op.READDIR: ([("a", _H, _ATTR), ("b", _H, _ATTR)], 7),
    Op.READ: (b"x" * 1000,),
    Op.READLINK: ("target",),
    Op.LISTXATTR: (["user.a", "user.b"],),
    Op.STATFS: ((4096, 4096, 100, 50, 50, 1000, 900, 255),),
}


def seeds(tmp_path: Path) -> list[bytes]:
    out = [sp.encode_request(op, i, *f) for i, (op, f) in enumerate(_REQUESTS.items())]
    out += [sp.encode_reply(op, 99, *f) for op, f in _REPLIES.items()]
    out.append(sp.encode_error(Op.READ, 5, 2, "No such file"))
    out.append(sp.encode_hello("data"))
    out.append(sp.encode_welcome(1, writable=True, root=_H))
    out.append(sp.encode_welcome(1, status=13, message="no access"))
    return out


def one_input(data: bytes) -> None:
    for kind in (Kind.REQUEST, Kind.REPLY, None):
        try:
            frame = sp.decode_frame(data, expect=kind)
        except BurrowError:
            continue
        if frame.kind == Kind.REQUEST:  # what decodes must re-encode identically
            assert sp.encode_request(frame.op, frame.call_id, *frame.fields) == data
    for decoder in (sp.decode_hello, sp.decode_welcome):
        try:
            decoder(data)
        except BurrowError:
            pass
