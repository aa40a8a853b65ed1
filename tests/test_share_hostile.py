"""A hostile-client suite against a real ``burrow serve`` stack: unknown keys, keys without
access, ``..``/absolute names/symlinks pointing out, forged handles and handles from another
export or peer, oversized and malformed messages, calls after close — all refused, and a
canary directory next to the exports is never read or touched."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from burrow.errors import (
    ConnectionLost,
    FilesystemError,
    PermissionDenied,
)
from burrow.proto import shareproto as sp
from burrow.proto.noise import KeyPair
from burrow.proto.shareproto import Op
from burrow.share.client import ShareFilesystem, connect
from share_helpers import Running, peers_of, running_server


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    a, b, canary = tmp_path / "a", tmp_path / "b", tmp_path / "canary"
    for d in (a, b, canary):
        d.mkdir()
    (canary / "secret").write_text("canary")
    (a / "file").write_text("in a")
    (a / "out-rel").symlink_to("../canary/secret")
    (a / "out-abs").symlink_to(str(canary))
    (a / "sub").mkdir()
    (b / "file").write_text("in b")
    old = 1_000_000_000_000_000_000  # 2001: relatime would bump atime on any read
    os.utime(canary / "secret", ns=(old, old))
    os.utime(canary, ns=(old, old))
    before = [os.stat(p) for p in (canary, canary / "secret")]
    yield a, b, canary
    after = [os.stat(p) for p in (canary, canary / "secret")]
    for x, y in zip(before, after, strict=True):
        assert (x.st_atime_ns, x.st_mtime_ns, x.st_ctime_ns) == (
            y.st_atime_ns,
            y.st_mtime_ns,
            y.st_ctime_ns,
        ), "the canary was read or touched"
    assert sorted(os.listdir(canary)) == ["secret"]
    assert (canary / "secret").read_text() == "canary"


ALICE, BOB, MALLORY = KeyPair.generate(), KeyPair.generate(), KeyPair.generate()


@pytest.fixture
def srv(world: tuple[Path, Path, Path]) -> Iterator[Running]:
    a, b, _ = world
    peers = peers_of(("alice", ALICE, {"a": "rw", "b": "ro"}), ("bob", BOB, {"a": "ro"}))
    with running_server({"a": a, "b": b}, peers) as running:
        yield running


def _raw(fs: ShareFilesystem, op: Op, *fields: object) -> tuple[object, ...]:
    return fs._run(fs.client.call(op, *fields))


def _root(fs: ShareFilesystem) -> bytes:
    return fs.client._h(fs.root_ino)


def test_unknown_key_refused(srv: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "burrow.share.audit")
    with pytest.raises(ConnectionLost):
        connect(srv.url("a"), key=MALLORY, server_key=srv.server_pub, retries=0)
    assert srv.stats()["refused"] >= 1
    assert any("unknown client key" in r.getMessage() for r in caplog.records)


def test_wrong_server_key_refused(srv: Running) -> None:
    with pytest.raises(ConnectionLost):
        connect(srv.url("a"), key=ALICE, server_key=KeyPair.generate().public, retries=0)


def test_known_key_without_access(srv: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "burrow.share.audit")
    with pytest.raises(PermissionDenied):
        connect(srv.url("b"), key=BOB, server_key=srv.server_pub)
    with pytest.raises(PermissionDenied):
        connect(srv.url("canary"), key=ALICE, server_key=srv.server_pub)
    assert sum("refused-export" in r.getMessage() for r in caplog.records) == 2


def test_ro_peer_cannot_write_even_with_raw_calls(srv: Running, world: tuple[Path, ...]) -> None:
    fs = connect(srv.url("a"), key=BOB, server_key=srv.server_pub)
    root = _root(fs)
    h, _ = _raw(fs, Op.LOOKUP, root, "file")
    for op, fields in [
        (Op.CREATE, (root, "x", 0o644)),
        (Op.MKDIR, (root, "x", 0o755)),
        (Op.WRITE, (h, 0, b"pwned")),
        (Op.SETATTR, (h, sp.SET_SIZE, 0, 0, 0, 0, 0, 0)),
        (Op.UNLINK, (root, "file")),
        (Op.RENAME, (root, "file", root, "moved", 0)),
        (Op.SYMLINK, (root, "l", "/etc")),
        (Op.SETXATTR, (h, "user.x", b"1", 0)),
    ]:
        with pytest.raises(FilesystemError) as info:
            _raw(fs, op, *fields)
        assert info.value.errno == errno.EROFS
    assert (world[0] / "file").read_text() == "in a"
    fs.close()


@pytest.mark.parametrize("name", ["..", ".", "", "/", "/etc", "../canary", "sub/../..", "a\0b"])
def test_bad_names_refused(srv: Running, name: str) -> None:
    fs = connect(srv.url("a"), key=ALICE, server_key=srv.server_pub, readonly=False)
    root = _root(fs)
    for op, fields in [
        (Op.LOOKUP, (root, name)),
        (Op.CREATE, (root, name, 0o644)),
        (Op.MKDIR, (root, name, 0o755)),
        (Op.UNLINK, (root, name)),
        (Op.RENAME, (root, "file", root, name, 0)),
    ]:
        with pytest.raises(FilesystemError) as info:
            _raw(fs, op, *fields)
        assert info.value.errno in (errno.EINVAL, errno.ENOENT, errno.EEXIST, errno.EISDIR)
    fs.close()


def test_symlinks_pointing_out(srv: Running, world: tuple[Path, Path, Path]) -> None:
    fs = connect(srv.url("a"), key=ALICE, server_key=srv.server_pub, readonly=False)
    root = _root(fs)
    for link in ("out-rel", "out-abs"):
        h, attr = _raw(fs, Op.LOOKUP, root, link)
        assert (attr[1] & 0o170000) == 0o120000  # returned as a symlink
        expected = "../canary/secret" if link == "out-rel" else str(world[2])
        assert _raw(fs, Op.READLINK, h)[0] == expected  # the target, never followed
        with pytest.raises(FilesystemError):
            _raw(fs, Op.READ, h, 0, 100)
        with pytest.raises(FilesystemError):
            _raw(fs, Op.LOOKUP, h, "secret")
        with pytest.raises(FilesystemError):
            _raw(fs, Op.READDIR, h, 0)
        with pytest.raises(FilesystemError):
            _raw(fs, Op.CREATE, h, "planted", 0o644)
        with pytest.raises(FilesystemError):
            _raw(fs, Op.WRITE, h, 0, b"x")
        with pytest.raises(FilesystemError):
            _raw(fs, Op.SETATTR, h, sp.SET_SIZE, 0, 0, 0, 0, 0, 0)
    # the path layer resolves links on the client, inside the export: out-rel dangles there
    from burrow.fs.paths import PathFS

    with pytest.raises(FilesystemError):
        PathFS(fs).read_bytes("/out-rel")
    fs.close()


def test_forged_and_foreign_handles(srv: Running, world: tuple[Path, Path, Path]) -> None:
    _, b, canary = world
    fa = connect(srv.url("a"), key=ALICE, server_key=srv.server_pub, readonly=False)
    fb = connect(srv.url("b"), key=ALICE, server_key=srv.server_pub)
    bob = connect(srv.url("a"), key=BOB, server_key=srv.server_pub)
    b_file, _ = _raw(fb, Op.LOOKUP, _root(fb), "file")
    a_file, _ = _raw(fa, Op.LOOKUP, _root(fa), "file")
    forged = [
        struct.pack("<Q", os.stat(canary / "secret").st_ino) + os.urandom(16),
        struct.pack("<Q", os.stat(canary).st_ino) + bytes(16),
        b_file,  # valid, but for export b
        _root(fb),
        a_file[:8] + bytes(a_file[8] ^ 1 for _ in range(1)) + a_file[9:],
    ]
    for handle in forged:
        for op, fields in [
            (Op.GETATTR, (handle,)),
            (Op.READ, (handle, 0, 10)),
            (Op.LOOKUP, (handle, "secret")),
            (Op.READDIR, (handle, 0)),
            (Op.WRITE, (handle, 0, b"x")),
        ]:
            with pytest.raises(FilesystemError) as info:
                _raw(fa, op, *fields)
            assert info.value.errno == errno.ESTALE
    # alice's valid handle is useless to bob (handles are bound to the peer's key)
    with pytest.raises(FilesystemError) as info:
        _raw(bob, Op.READ, a_file, 0, 10)
    assert info.value.errno == errno.ESTALE
    assert _raw(fa, Op.READ, a_file, 0, 10)[0] == b"in a"
    assert srv.stats()["refused_calls"] >= len(forged) * 5 + 1
    for fs in (fa, fb, bob):
        fs.close()
    assert (b / "file").read_text() == "in b"


def test_malformed_and_oversized_messages_drop_the_connection(
    srv: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "burrow.share.audit")
    fs = connect(srv.url("a"), key=ALICE, server_key=srv.server_pub)
    client = fs.client
    bad_frames = [
        b"",  # shorter than a header
        struct.pack("<BBHI", 1, 99, 0, 1),  # unknown op
        struct.pack("<BBHI", 2, 2, 0, 1) + bytes(200),  # a reply sent to the server
        struct.pack("<BBHI", 1, 4, 0, 1) + bytes(24) + struct.pack("<QI", 0, 1) + b"x",  # trailing
        struct.pack("<BBHI", 1, 5, 0, 1) + bytes(32) + struct.pack("<I", 1 << 30),  # huge blob
        struct.pack("<BBHI", 1, 1, 0, 1) + bytes(24) + struct.pack("<H", 60000),  # huge name
    ]
    for frame in bad_frames:

        async def send_raw(data: bytes = frame) -> None:
            ch = await client._ensure()
            await ch.send(data)
            for _ in range(100):
                if client._ch is None:
                    return
                await asyncio.sleep(0.01)

        fs._run(send_raw())
        assert client._ch is None, f"server kept the connection after {frame[:12]!r}"

    # an oversized record at the channel level
    async def oversized() -> None:
        ch = await client._ensure()
        ch.sc.config.max_payload = 1 << 20  # lift our own limit; the server keeps its own
        await ch.send(bytes(70000))
        for _ in range(100):
            if client._ch is None:
                return
            await asyncio.sleep(0.01)

    fs._run(oversized())
    assert client._ch is None
    messages = [r.getMessage() for r in caplog.records]
    assert sum("malformed-call" in m for m in messages) == len(bad_frames)
    assert any("protocol-error" in m and "oversized" in m for m in messages)
    # the client reconnects and works again
    assert fs.read(fs.lookup(fs.root_ino, "file"), 0, 10) == b"in a"
    fs.close()


def test_calls_after_close(srv: Running) -> None:
    fs = connect(srv.url("a"), key=ALICE, server_key=srv.server_pub)
    ino = fs.lookup(fs.root_ino, "file")
    fs.close()
    with pytest.raises(ConnectionLost):
        fs.read(ino, 0, 10)
    with pytest.raises(ConnectionLost):
        fs.lookup(fs.root_ino, "file")


def test_reconnect_after_dropped_connection(srv: Running) -> None:
    fs = connect(srv.url("a"), key=ALICE, server_key=srv.server_pub)
    ino = fs.lookup(fs.root_ino, "file")

    async def drop() -> None:
        ch = await fs.client._ensure()
        ch.abort()
        await asyncio.sleep(0.05)

    fs._run(drop())
    assert fs.read(ino, 0, 10) == b"in a"  # handle still valid after the new handshake
    assert fs.client.reconnects == 1
    fs.close()


def test_server_gone_fails_clearly(world: tuple[Path, Path, Path]) -> None:
    a, _, _ = world
    peers = peers_of(("alice", ALICE, {"a": "ro"}))
    with running_server({"a": a}, peers) as running:
        fs = connect(running.url("a"), key=ALICE, server_key=running.server_pub, retries=1)
        ino = fs.lookup(fs.root_ino, "file")
    with pytest.raises(ConnectionLost, match="unreachable"):
        fs.read(ino, 0, 10)
    fs.close()


def test_client_that_never_reads_replies_is_bounded(srv: Running) -> None:
    """Pipelining READs without reading the answers must not grow the server's memory
    without bound: it stops reading the client once its send buffer is full."""
    fs = connect(srv.url("a"), key=ALICE, server_key=srv.server_pub, readonly=False)
    big = fs.create(fs.root_ino, "big", 0o644)
    fs.write(big, 0, os.urandom(sp.MAX_CHUNK))
    handle = fs.client._h(big)

    async def flood() -> int:
        ch = await fs.client._ensure()
        ch.transport.pause_reading()  # type: ignore[union-attr]
        sent = 0
        for i in range(3000):  # ~190 MiB of replies if the server kept answering
            ch.send_nowait(sp.encode_request(Op.READ, 100000 + i, handle, 0, sp.MAX_CHUNK))
            sent += 1
            if i % 50 == 0:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)
        return sent

    try:
        fs._run(flood())
        conns = [c for c in srv.server.channel.connections if c.transport is not None]
        buffered = max(c.transport.get_write_buffer_size() for c in conns)  # type: ignore[union-attr]
    finally:
        fs.client._ch.abort()  # type: ignore[union-attr]
        fs.close()
    # bound: the transport's high-water mark plus the calls in flight (64 x one chunk)
    limit = (4 << 20) + 64 * sp.MAX_MESSAGE + (1 << 20)
    assert buffered < limit, f"server buffered {buffered} bytes for a client that never reads"
