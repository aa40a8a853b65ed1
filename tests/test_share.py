"""Shares end to end on loopback: a real server (worker processes) and the client as a
vfs.Filesystem, checked against the host tree with diff -r and stat fields."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from burrow.errors import NotFound, PermissionDenied, ReadOnly
from burrow.fs.copy import copy_in, copy_out
from burrow.fs.paths import PathFS
from burrow.proto.noise import KeyPair
from burrow.share.client import connect
from share_helpers import peers_of, running_server


def _tree(root: Path) -> None:
    (root / "docs" / "deep" / "er").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("hello share\n")
    (root / "docs" / "deep" / "big.bin").write_bytes(os.urandom(1_000_003))
    (root / "docs" / "deep" / "er" / "empty").write_bytes(b"")
    (root / "link").symlink_to("docs/a.txt")
    for i in range(300):
        (root / "docs" / f"f{i:03}").write_text(str(i))


def test_read_tree_both_ways_and_write(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    _tree(export)
    alice = KeyPair.generate()
    with running_server({"data": export}, peers_of(("alice", alice, {"data": "rw"}))) as srv:
        fs = connect(srv.url("data"), key=alice, server_key=srv.server_pub, readonly=False)
        pfs = PathFS(fs)
        assert sorted(pfs.listdir("/")) == sorted(os.listdir(export))
        assert pfs.read_bytes("/docs/deep/big.bin") == (export / "docs/deep/big.bin").read_bytes()
        st = pfs.lstat("/docs/a.txt")
        host = os.lstat(export / "docs/a.txt")
        assert (st.st_ino, st.st_size, st.st_mode, st.st_mtime_ns) == (
            host.st_ino,
            host.st_size,
            host.st_mode,
            host.st_mtime_ns,
        )
        assert pfs.readlink("/link") == "docs/a.txt"
        # copy out and compare with diff -r
        out = tmp_path / "out"
        out.mkdir()
        copy_out(pfs, "/", out, archive=True, contents=True)
        assert (
            subprocess.run(["diff", "-r", "--no-dereference", str(export), str(out)]).returncode
            == 0
        )
        # copy a tree in
        src = tmp_path / "src"
        src.mkdir()
        _tree(src)
        pfs.mkdir("/incoming")
        copy_in(src, pfs, "/incoming", archive=True, contents=True)
        assert (
            subprocess.run(
                ["diff", "-r", "--no-dereference", str(src), str(export / "incoming")]
            ).returncode
            == 0
        )
        # special files travel too (MKNOD), set-ID bits do not
        fifo = fs.mknod(fs.root_ino, "fifo", 0o010640)
        assert stat.S_ISFIFO(os.lstat(export / "fifo").st_mode) and fs.getattr(fifo).st_nlink == 1
        prog = fs.create(fs.root_ino, "prog", 0o4755)
        assert fs.getattr(prog).st_mode & 0o4000 == 0
        fs.unlink(fs.root_ino, "fifo")
        fs.unlink(fs.root_ino, "prog")
        pfs.rename("/incoming/docs/a.txt", "/incoming/renamed")
        pfs.rmtree("/incoming/docs")
        assert sorted(os.listdir(export / "incoming")) == ["link", "renamed"]
        pfs.close()


def test_concurrent_clients_write_different_files(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    keys = [KeyPair.generate() for _ in range(4)]
    peers = peers_of(*[(f"p{i}", k, {"data": "rw"}) for i, k in enumerate(keys)])
    blobs = {i: os.urandom(200_000 + i) for i in range(4)}
    errors: list[BaseException] = []
    with running_server({"data": export}, peers) as srv:

        def worker(i: int) -> None:
            try:
                with PathFS(
                    connect(srv.url("data"), key=keys[i], server_key=srv.server_pub, readonly=False)
                ) as pfs:
                    for j in range(5):
                        pfs.write_bytes(f"/c{i}-{j}", blobs[i])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    for i in range(4):
        for j in range(5):
            assert (export / f"c{i}-{j}").read_bytes() == blobs[i]


def test_read_only_access_and_no_access(tmp_path: Path) -> None:
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "f").write_text("x")
    alice = KeyPair.generate()
    peers = peers_of(("alice", alice, {"a": "ro"}))
    with running_server({"a": a, "b": b}, peers) as srv:
        fs = connect(srv.url("a"), key=alice, server_key=srv.server_pub, readonly=False)
        assert fs.readonly  # the server said ro
        with pytest.raises(ReadOnly):
            PathFS(fs).write_bytes("/g", b"x")
        # bypass the client-side check: the server refuses too
        with pytest.raises(ReadOnly):
            fs._run(fs.client.create(fs.root_ino, "g", 0o644))
        with pytest.raises(NotFound):
            PathFS(fs).read_bytes("/missing")
        fs.close()
        with pytest.raises(PermissionDenied):
            connect(srv.url("b"), key=alice, server_key=srv.server_pub)
        with pytest.raises(PermissionDenied):
            connect(srv.url("nonexistent"), key=alice, server_key=srv.server_pub)
        assert srv.stats()["refused_calls"] == 1
    assert sorted(os.listdir(a)) == ["f"]


@pytest.mark.tool("mkfs.ext4", "debugfs", "e2fsck")
def test_share_an_ext4_image(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "motd").write_text("inside the image\n")
    img = tmp_path / "disk.img"
    subprocess.run(["mkfs.ext4", "-q", "-d", str(src), str(img), "16M"], check=True)
    alice = KeyPair.generate()
    with running_server({"img": img}, peers_of(("alice", alice, {"img": "rw"}))) as srv:
        pfs = PathFS(connect(srv.url("img"), key=alice, server_key=srv.server_pub))
        assert pfs.read_text("/etc/motd") == "inside the image\n"
        assert "lost+found" in pfs.listdir("/")
        assert not pfs.readonly  # a writable image and an rw peer
        pfs.write_bytes("/etc/added", b"written over the share\n")
        pfs.close()
    # the worker committed on shutdown: e2fsck is clean and debugfs sees the new file
    res = subprocess.run(["debugfs", "-R", "cat /etc/added", str(img)], capture_output=True)
    assert res.stdout == b"written over the share\n"
    assert subprocess.run(["e2fsck", "-fn", str(img)], capture_output=True).returncode == 0


def test_trust_on_first_use_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from burrow.errors import UsageError
    from burrow.share.keys import KnownServers

    monkeypatch.delenv("BURROW_SERVER_KEY", raising=False)
    export = tmp_path / "export"
    export.mkdir()
    (export / "f").write_text("tofu")
    known = tmp_path / "known_servers"
    alice = KeyPair.generate()
    with running_server({"data": export}, peers_of(("alice", alice, {"data": "ro"}))) as srv:
        with pytest.raises(UsageError, match="no public key"):
            connect(srv.url("data"), key=alice, known_servers=known)
        assert not known.exists()
        with PathFS(connect(srv.url("data"), key=alice, known_servers=known, tofu=True)) as pfs:
            assert pfs.read_text("/f") == "tofu"
        hostport = f"127.0.0.1:{srv.port}"
        assert KnownServers(known).lookup(hostport) == srv.server_key.public
        with PathFS(connect(srv.url("data"), key=alice, known_servers=known)) as pfs:
            assert pfs.read_text("/f") == "tofu"  # pinned now, no flag needed
        port = srv.port
    # another server (another key) on the same address is refused, even with tofu=True
    other = tmp_path / "other"
    other.mkdir()
    with running_server({"data": other}, peers_of(("alice", alice, {"data": "ro"}))) as srv2:
        KnownServers(known).path.write_text(
            KnownServers(known).path.read_text().replace(str(port), str(srv2.port))
        )
        from burrow.errors import ConnectionLost

        with pytest.raises(ConnectionLost):
            connect(srv2.url("data"), key=alice, known_servers=known, tofu=True, retries=0)


def test_sync_lookups_answered_from_cache_then_refreshed(tmp_path: Path) -> None:
    """The sync wrapper answers lookup/getattr from fresh cache entries in the caller's
    thread (no server call), and asks the server again once they are older than the TTL."""
    from burrow.share.client import ATTR_TTL

    export = tmp_path / "export"
    (export / "d").mkdir(parents=True)
    (export / "d" / "f").write_bytes(b"12345")
    key = KeyPair.generate()
    with (
        running_server({"data": export}, peers_of(("alice", key, {"data": "rw"}))) as srv,
        PathFS(connect(srv.url("data"), key=key, server_key=srv.server_pub)) as pfs,
    ):
        t0 = time.monotonic()
        assert pfs.lstat("/d/f").st_size == 5
        calls = srv.stats()["calls"]
        (export / "d" / "f").write_bytes(b"1234567")  # changed behind the client's back
        (export / "d" / "g").write_bytes(b"")
        for _ in range(50):
            size = pfs.lstat("/d/f").st_size
            assert pfs.stat("/d").st_mode & stat.S_IFDIR
        if time.monotonic() - t0 < ATTR_TTL * 0.8:  # (a stalled, loaded machine: skip)
            assert size == 5  # still cached: the TTL has not passed
            assert srv.stats()["calls"] == calls  # all from the cache, no server call
        time.sleep(ATTR_TTL + 0.1)
        assert pfs.lstat("/d/f").st_size == 7
        assert srv.stats()["calls"] > calls
        assert pfs.lstat("/d/g").st_size == 0


def test_sequential_reads_with_readahead(tmp_path: Path) -> None:
    """Large sequential reads are served partly from the read-ahead: the bytes must be the
    file's, at every size and offset pattern, and a write or truncate through the client is
    never hidden by data fetched ahead of it."""
    from burrow.proto.shareproto import MAX_CHUNK

    export = tmp_path / "export"
    export.mkdir()
    blob = os.urandom(17 * MAX_CHUNK + 12345)
    (export / "big").write_bytes(blob)
    key = KeyPair.generate()
    with (
        running_server({"data": export}, peers_of(("alice", key, {"data": "rw"}))) as srv,
        PathFS(connect(srv.url("data"), key=key, server_key=srv.server_pub, readonly=False)) as pfs,
    ):
        fs = pfs.fs
        ino = pfs.resolve("/big")
        for step in (MAX_CHUNK + 1, 2 * MAX_CHUNK, 1 << 20, 3 * MAX_CHUNK - 7):
            got = b"".join(fs.read(ino, off, step) for off in range(0, len(blob), step))
            assert got == blob, step
        assert fs.read(ino, len(blob) - 10, 1 << 20) == blob[-10:]  # short read at the end
        # A read-ahead is pending for the next megabyte: change it through the client.
        assert fs.read(ino, 0, 1 << 20) == blob[: 1 << 20]
        fs.write(ino, 1 << 20, b"X" * 1000)
        assert fs.read(ino, 1 << 20, 1 << 20) == b"X" * 1000 + blob[(1 << 20) + 1000 : 2 << 20]
        assert fs.read(ino, 2 << 20, 1 << 20) == blob[2 << 20 : 3 << 20]
        fs.setattr(ino, size=(3 << 20) + 5)  # truncate while the next read-ahead is pending
        assert fs.read(ino, 3 << 20, 1 << 20) == blob[3 << 20 : (3 << 20) + 5]
        # Other readers' interleaved offsets never get another offset's data.
        assert fs.read(ino, 0, 1 << 20) == b"".join([blob[: 1 << 20]])
        assert fs.read(ino, 5, 1 << 20) == (blob[5 : 1 << 20] + b"X" * 5)
