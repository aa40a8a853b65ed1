"""Fuzz the share export worker with hostile sessions of requests.

``fuzz_shareproto`` covers the decoders; this harness covers what happens after a request
decodes: the worker (``burrow.share.worker.WorkerServer.execute``) runs it against a real
filesystem. Input: a sequence of messages, each a ``u16`` length and that many bytes; every
message goes to ``decode_frame(expect=REQUEST)`` (as the server receives it from the network)
and every request that decodes is executed on one in-memory filesystem, so a session
(create, write, rename, setattr, xattrs, readdir cookies...) runs for real. Only
``BurrowError`` may escape ``execute`` (the worker turns those into error replies), and every
reply must decode as the reply to the same call.

Seeds: a session of every operation encoded by burrow's own request encoder (no other
implementation of this protocol exists).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from burrow.errors import BurrowError

U16 = struct.Struct("<H")
MAX_MESSAGES = 64


def _modules() -> tuple[Any, Any, Any]:
    from burrow.fs.memfs import MemoryFilesystem
    from burrow.proto import shareproto as sp
    from burrow.share import worker

    return sp, worker, MemoryFilesystem


def _pack(messages: list[bytes]) -> bytes:
    return b"".join(U16.pack(len(m)) + m for m in messages)


def _handle(ino: int) -> bytes:
    return struct.pack("<Q", ino) + bytes(16)


def _requests() -> list[bytes]:
    sp, _worker, _mem = _modules()
    op = sp.Op
    root = _handle(1)
    f = _handle(2)  # the first inode the in-memory filesystem hands out after the root
    d = _handle(3)
    calls: list[tuple[Any, tuple[Any, ...]]] = [
        (op.CREATE, (root, "file.txt", 0o100644)),
        (op.MKDIR, (root, "dir", 0o40755)),
        (op.WRITE, (f, 0, b"hello share\n" * 20)),
        (op.READ, (f, 3, 100)),
        (op.LOOKUP, (root, "file.txt")),
        (op.GETATTR, (f,)),
        (op.SETXATTR, (f, "user.k", b"value", 0)),
        (op.GETXATTR, (f, "user.k")),
        (op.LISTXATTR, (f,)),
        (op.REMOVEXATTR, (f, "user.k")),
        (op.SYMLINK, (d, "link", "../file.txt")),
        (op.READLINK, (_handle(4),)),
        (op.LINK, (f, d, "hard")),
        (op.SETATTR, (f, 0x3F, 0o600, 1000, 1000, 5, 10**18, 2 * 10**18)),
        (op.RENAME, (root, "file.txt", d, "moved", 0)),
        (op.READDIR, (d, 0)),
        (op.READDIR, (root, 1)),
        (op.UNLINK, (d, "hard")),
        (op.RMDIR, (root, "dir")),
        (op.STATFS, ()),
        (op.SYNC, ()),
    ]
    return [sp.encode_request(o, i + 1, *args) for i, (o, args) in enumerate(calls)]


def seeds(tmp_path: Path) -> list[bytes]:
    reqs = _requests()
    return [_pack(reqs), _pack(reqs[:4]), _pack(reqs[:2] + reqs[10:16])]


def _messages(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    while pos + 2 <= len(data) and len(out) < MAX_MESSAGES:
        (n,) = U16.unpack_from(data, pos)
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def one_input(data: bytes) -> None:
    sp, worker, memfs = _modules()
    fs = memfs(capacity=1 << 20)
    server = worker.WorkerServer(fs, None, threads=1)  # execute() never touches the socket
    try:
        for msg in _messages(data):
            try:
                frame = sp.decode_frame(msg, expect=sp.Kind.REQUEST)
            except BurrowError:
                continue
            try:
                reply = server.execute(frame)
            except BurrowError:
                continue
            back = sp.decode_frame(reply, expect=sp.Kind.REPLY)
            assert back.call_id == frame.call_id and back.op == frame.op, "reply of another call"
    finally:
        server._pool.shutdown(wait=False)
