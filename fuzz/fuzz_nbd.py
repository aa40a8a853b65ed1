"""Fuzz the sans-IO NBD state machines.

Input: one selector byte, then a byte stream. ``S`` (or anything but ``C``): the stream is what
a client sends; it goes to ``NBDServerConnection`` in uneven pieces and every request it lets
through is executed on a small ``MemoryDevice`` (asserting that no request ever reaches outside
the export). ``C``: the stream is what a server sends; it goes to ``NBDClientConnection``, which
asks for a fixed list of requests once the handshake is done.

Seeds: client streams recorded from real tools (nbdinfo, qemu-io, qemu-img) talking to burrow's
server through a recording proxy, plus streams of burrow's own client and server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

from burrow.block.memory import MemoryDevice
from burrow.errors import BurrowError
from burrow.proto.nbd import (
    Disconnect,
    ExportInfo,
    HandshakeDone,
    NBDClientConnection,
    NBDServerConnection,
    Request,
    StartTLS,
    TLSMode,
    transmission_flags,
)
from burrow.proto.nbd import constants as C  # noqa: N812

SIZE = 1 << 20
EXPORTS = {
    "": ExportInfo("", SIZE, transmission_flags(readonly=False, can_trim=True, can_fast_zero=True)),
    "ro": ExportInfo("ro", SIZE // 2, transmission_flags(readonly=True), description="ro"),
    "aligned": ExportInfo(
        "aligned", SIZE, transmission_flags(readonly=False), min_block=512, max_payload=65536
    ),
}
CLIENT_REQUESTS = [
    (C.NBD_CMD_READ, 1, 0, 4096, 0),
    (C.NBD_CMD_BLOCK_STATUS, 2, 0, SIZE, 0),
    (C.NBD_CMD_WRITE, 3, 512, 512, C.NBD_CMD_FLAG_FUA),
    (C.NBD_CMD_READ, 4, 65536, 131072, 0),
    (C.NBD_CMD_FLUSH, 5, 0, 0, 0),
]


def _execute(sm: NBDServerConnection, devs: dict[str, MemoryDevice], req: Request) -> None:
    export = sm.export
    assert export is not None
    if req.offset + req.length > export.size:
        raise AssertionError(f"request outside the export reached the device: {req!r}")
    if req.command == C.NBD_CMD_WRITE and export.readonly:
        raise AssertionError("write reached a read-only export")
    dev = devs[export.name]
    cmd, n, off = req.command, req.length, req.offset
    if cmd == C.NBD_CMD_READ:
        if sm.structured_replies and n >= 4096:
            chunks: list[tuple[int, int, bytes | None]] = []
            for ext in dev.extents(n, off):
                zero = bool(ext.flags & 2)
                chunks.append(
                    (ext.offset, ext.length, None if zero else dev.pread(ext.length, ext.offset))
                )
            sm.reply_read_chunks(req.cookie, chunks)
        else:
            sm.reply_read(req.cookie, off, dev.pread(n, off))
    elif cmd == C.NBD_CMD_WRITE:
        assert req.data is not None and len(req.data) == n
        dev.pwrite(req.data, off)
        sm.reply_ok(req.cookie)
    elif cmd == C.NBD_CMD_TRIM:
        dev.discard(n, off)
        sm.reply_ok(req.cookie)
    elif cmd == C.NBD_CMD_WRITE_ZEROES:
        dev.write_zeroes(n, off)
        sm.reply_ok(req.cookie)
    elif cmd == C.NBD_CMD_BLOCK_STATUS:
        runs = [(e.length, int(e.flags)) for e in dev.extents(n, off)] or [(1, 0)]
        sm.reply_block_status(req.cookie, runs)
    else:
        sm.reply_ok(req.cookie)


def _fuzz_server(data: bytes) -> None:
    devs = {name: MemoryDevice(info.size) for name, info in EXPORTS.items()}
    tls = TLSMode.SELECTIVE if data[:1] == b"T" else TLSMode.NOTLS
    sm = NBDServerConnection(EXPORTS, tls=tls)
    sm.data_to_send()
    pos, step = 0, 1
    while pos < len(data):
        piece = data[pos : pos + step]
        pos += step
        step = (step * 7 + 3) % 61 + 1  # uneven, deterministic piece sizes
        for ev in sm.receive_data(piece):
            if isinstance(ev, Request):
                _execute(sm, devs, ev)
            elif isinstance(ev, StartTLS):
                sm.tls_established()
            elif isinstance(ev, Disconnect):
                return
        out = sm.data_to_send()
        assert len(out) < 64 * 1024 * 1024


def _fuzz_client(data: bytes) -> None:
    client = NBDClientConnection("")
    sent = False
    for i in range(0, len(data), 97):
        for ev in client.receive_data(data[i : i + 97]):
            if isinstance(ev, StartTLS):
                client.tls_established()
            if isinstance(ev, HandshakeDone) and not sent:
                sent = True
                for cmd, cookie, off, n, flags in CLIENT_REQUESTS:
                    payload = bytes(n) if cmd == C.NBD_CMD_WRITE else None
                    client.send_request(cmd, cookie, off, n, flags, payload)
        client.data_to_send()


def one_input(data: bytes) -> None:
    if data[:1] == b"C":
        _fuzz_client(data[1:])
    else:
        _fuzz_server(data[1:])


# -- seeds ----------------------------------------------------------------------------------
def _own_streams() -> list[bytes]:
    """Our client and server talking in memory: the client's bytes and the server's bytes."""
    sm = NBDServerConnection(EXPORTS)
    client = NBDClientConnection("")
    devs = {name: MemoryDevice(info.size) for name, info in EXPORTS.items()}
    to_server = bytearray()
    to_client = bytearray()
    sent = False
    for _ in range(50):
        a = client.data_to_send()
        b = sm.data_to_send()
        if not a and not b:
            break
        to_server += a
        to_client += b
        for ev in sm.receive_data(a) if a else []:
            if isinstance(ev, Request):
                _execute(sm, devs, ev)
        for ev in client.receive_data(b) if b else []:
            if isinstance(ev, HandshakeDone) and not sent:
                sent = True
                for cmd, cookie, off, n, flags in CLIENT_REQUESTS:
                    payload = b"\x5a" * n if cmd == C.NBD_CMD_WRITE else None
                    client.send_request(cmd, cookie, off, n, flags, payload)
    return [b"S" + bytes(to_server), b"C" + bytes(to_client)]


def _record(tmp_path: Path) -> list[bytes]:
    """Client->server bytes of real tools, through a proxy in front of burrow's server."""
    tools = [
        ["nbdinfo", "--map", "{uri}"],
        ["nbdinfo", "--list", "{uri}"],
        ["qemu-io", "-f", "raw", "-c", "write -P 7 4096 8192", "-c", "read 0 64k", "{uri}"],
        ["qemu-img", "info", "{uri}"],
    ]
    tools = [t for t in tools if shutil.which(t[0])]
    if not tools:
        return []
    from tests.nbd_helpers import ServerThread  # test support: only when seeding

    backend = tmp_path / "fuzz-backend.sock"
    front = tmp_path / "fuzz-front.sock"
    srv = ServerThread(MemoryDevice(SIZE), socket=str(backend))
    recorded: list[bytes] = []
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(front))
    listener.listen(4)
    listener.settimeout(10)

    def proxy_one() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        up = socket.socket(socket.AF_UNIX)
        up.connect(str(backend))
        got = bytearray()

        def pipe(src: socket.socket, dst: socket.socket, keep: bytearray | None) -> None:
            try:
                while chunk := src.recv(65536):
                    if keep is not None:
                        keep += chunk
                    dst.sendall(chunk)
            except OSError:
                pass
            finally:
                for s in (dst,):
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass

        t = threading.Thread(target=pipe, args=(up, conn, None), daemon=True)
        t.start()
        pipe(conn, up, got)
        t.join(timeout=10)
        conn.close()
        up.close()
        recorded.append(b"S" + bytes(got))

    try:
        uri = f"nbd+unix:///?socket={front}"
        for tool in tools:
            th = threading.Thread(target=proxy_one, daemon=True)
            th.start()
            subprocess.run([a.replace("{uri}", uri) for a in tool], capture_output=True, timeout=30)
            th.join(timeout=10)
    finally:
        listener.close()
        srv.close()
        os.unlink(front)
    return recorded


def seeds(tmp_path: Path) -> list[bytes]:
    out = _own_streams()
    try:
        out += _record(tmp_path)
    except (OSError, ImportError, subprocess.SubprocessError, BurrowError):
        pass
    return [s for s in out if len(s) > 1]
