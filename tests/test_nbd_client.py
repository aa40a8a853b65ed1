"""burrow's NBD client engine against real servers: nbdkit and qemu-nbd."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import require_tool
from tests.images import run
from tests.nbd_helpers import ServerThread, serving, unix_uri

import burrow.block
from burrow.block.device import BlockDevice, ExtentFlags
from burrow.block.nbd_client import open_nbd_uri, parse_nbd_uri
from burrow.errors import ConnectionLost, InvalidArgument, NotFound, ReadOnly, UsageError

MiB = 1 << 20


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if path.exists():
            return
        if proc.poll() is not None:
            pytest.fail(f"server exited early with status {proc.returncode}")
        time.sleep(0.02)
    pytest.fail("server socket never appeared")


@pytest.fixture
def nbdkit_memory(tmp_path: Path) -> Iterator[Path]:
    require_tool("nbdkit")
    sock = tmp_path / "kit.sock"
    proc = subprocess.Popen(
        ["nbdkit", "-f", "-U", str(sock), "memory", "64M"], stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(sock, proc)
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def qemu_nbd(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    require_tool("qemu-nbd", "qemu-img")
    img = tmp_path / "disk.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "32M"])
    run(
        [
            "qemu-io",
            "-f",
            "qcow2",
            "-c",
            "write -P 0x61 1M 1M",
            "-c",
            "write -P 0x62 8M 64k",
            str(img),
        ]
    )
    sock = tmp_path / "qemu.sock"
    proc = subprocess.Popen(
        ["qemu-nbd", "-f", "qcow2", "--socket", str(sock), "--persistent", "--shared=4", str(img)],
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(sock, proc)
        yield sock, img
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_parse_uris() -> None:
    assert parse_nbd_uri("nbd://example.com:1234/disk%201") == {
        "tls": False,
        "socket": None,
        "host": "example.com",
        "port": 1234,
        "export": "disk 1",
    }
    assert parse_nbd_uri("nbd://h")["port"] == 10809
    assert parse_nbd_uri("nbds+unix:///x?socket=/run/s") == {
        "tls": True,
        "socket": "/run/s",
        "host": None,
        "port": None,
        "export": "x",
    }
    with pytest.raises(UsageError):
        parse_nbd_uri("nbd+unix:///x")
    with pytest.raises(UsageError):
        parse_nbd_uri("http://x/")


def test_against_nbdkit_memory(nbdkit_memory: Path) -> None:
    uri = unix_uri(nbdkit_memory)
    with burrow.block.open(uri, readonly=False) as dev:
        assert dev.size == 64 * MiB
        assert dev.can_extents and dev.can_discard and dev.can_write_zeroes
        data = os.urandom(3 * MiB + 123)
        dev.pwrite(data, 5 * MiB + 7, fua=True)
        assert dev.pread(len(data), 5 * MiB + 7) == data
        dev.flush()
        runs = list(dev.extents(dev.size, 0))
        assert sum(e.length for e in runs) == dev.size
        assert runs[0].flags == ExtentFlags.HOLE | ExtentFlags.ZERO
        assert any(e.flags == ExtentFlags.DATA for e in runs)
        dev.write_zeroes(MiB, 5 * MiB, may_unmap=True, fast=True)
        assert dev.pread(MiB, 5 * MiB) == bytes(MiB)
        dev.discard(MiB, 7 * MiB)
        with pytest.raises(InvalidArgument):
            dev.pread(10, dev.size - 5)
    # nbdinfo (libnbd) sees what we wrote: compare its map with ours
    require_tool("nbdinfo")
    mapping = json.loads(run(["nbdinfo", "--json", "--map", uri]).stdout)
    with burrow.block.open(uri) as dev:
        ours = [(e.offset, e.length, int(e.flags)) for e in dev.extents(dev.size, 0)]
        assert dev.readonly
        with pytest.raises(ReadOnly):
            dev.pwrite(b"x", 0)
    theirs = [(e["offset"], e["length"], e["type"]) for e in mapping]
    assert ours == theirs


def test_against_qemu_nbd(qemu_nbd: tuple[Path, Path], tmp_path: Path) -> None:
    sock, img = qemu_nbd
    uri = unix_uri(sock)
    with open_nbd_uri(uri, readonly=False) as dev:
        assert dev.size == 32 * MiB
        assert dev.pread(MiB, MiB) == b"a" * MiB
        assert dev.pread(65536, 8 * MiB) == b"b" * 65536
        data = {e.offset: e for e in dev.extents(dev.size, 0) if e.is_data}
        assert MiB in data and 8 * MiB in data
        dev.pwrite(b"Z" * 70000, 20 * MiB + 3)
        dev.flush()
    # the qcow2 file itself, read by qemu, holds our write
    run(
        ["qemu-io", "-r", "-f", "qcow2", "-U", "-c", f"read -P 0x5a {20 * MiB + 3} 70000", str(img)]
    )


def test_missing_export_and_dead_socket(qemu_nbd: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        open_nbd_uri(unix_uri(qemu_nbd[0], "nope"))
    with pytest.raises(ConnectionLost):
        open_nbd_uri(unix_uri(tmp_path / "missing.sock"))


class NeedsTwoInFlight:
    """Async device: a read only completes once another read is in flight too, so it can
    only succeed if the client really pipelines requests from several threads."""

    size = 1 << 20

    def __init__(self) -> None:
        self.waiting = 0
        self.other: asyncio.Event | None = None
        self.max_in_flight = 0

    async def pread(self, n: int, offset: int) -> bytes:
        if self.other is None:
            self.other = asyncio.Event()
        self.waiting += 1
        self.max_in_flight = max(self.max_in_flight, self.waiting)
        if self.waiting >= 2:
            self.other.set()
        try:
            await asyncio.wait_for(self.other.wait(), 5)
        finally:
            self.waiting -= 1
        return bytes([offset // 4096]) * n


def test_client_pipelines_requests_from_several_threads(tmp_path: Path) -> None:
    import concurrent.futures

    dev = NeedsTwoInFlight()
    with (
        serving(dev, tmp_path) as srv,
        open_nbd_uri(srv.uri) as remote,
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        futs = [pool.submit(remote.pread, 4096, i * 4096) for i in range(8)]
        results = [f.result(timeout=30) for f in futs]
    assert results == [bytes([i]) * 4096 for i in range(8)]
    assert dev.max_in_flight >= 2


def test_client_fails_every_waiter_when_the_server_goes_away(tmp_path: Path) -> None:
    import concurrent.futures

    class Hang:
        size = 1 << 20

        async def pread(self, n: int, offset: int) -> bytes:
            await asyncio.sleep(30)
            return bytes(n)

    srv = ServerThread(Hang(), socket=str(tmp_path / "h.sock"))
    remote = open_nbd_uri(srv.uri)
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futs = [pool.submit(remote.pread, 512, i * 512) for i in range(3)]
            (conn,) = list(srv.server.connections)
            srv.loop.call_soon_threadsafe(conn._abort)  # the server drops the connection
            for f in futs:
                with pytest.raises(ConnectionLost):
                    f.result(timeout=30)
    finally:
        remote.close()
        srv.loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks()])
        srv.close()


def test_random_operations_match_a_bytearray_model(tmp_path: Path) -> None:
    """Hypothesis drives writes, zeroes, trims, FUA and reads through burrow's client and
    server onto a MemoryDevice; every read must match a plain bytearray model, and the
    allocation map must never claim zeros where the model has data."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from burrow.block.memory import MemoryDevice

    size = 256 * 1024
    dev = MemoryDevice(size, page_size=4096)
    model = bytearray(size)
    op = st.tuples(
        st.sampled_from(["write", "zero", "trim", "read"]),
        st.integers(0, size - 1),
        st.integers(1, 70_000),
        st.booleans(),
        st.integers(0, 255),
    )
    with serving(dev, tmp_path) as srv, open_nbd_uri(srv.uri, readonly=False) as remote:

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(st.lists(op, min_size=1, max_size=12))
        def run_ops(ops: list[tuple[str, int, int, bool, int]]) -> None:
            for kind, off, n, flag, byte in ops:
                n = min(n, size - off)
                if kind == "write":
                    data = bytes([byte]) * n
                    remote.pwrite(data, off, fua=flag)
                    model[off : off + n] = data
                elif kind in ("zero", "trim"):
                    if kind == "zero":
                        remote.write_zeroes(n, off, may_unmap=flag)
                    else:
                        remote.discard(n, off)  # MemoryDevice: trimmed ranges read as zeros
                    model[off : off + n] = bytes(n)
                else:
                    assert remote.pread(n, off) == bytes(model[off : off + n])
            assert remote.pread(size, 0) == bytes(model)
            for ext in remote.extents(size, 0):
                if ext.flags & 2:
                    assert not any(model[ext.offset : ext.offset + ext.length])

        run_ops()


def test_threads_sharing_one_client_see_their_own_writes(tmp_path: Path) -> None:
    """Eight threads share one pipelined NBDDevice, each writing and reading back its own
    region; replies come back interleaved and must reach the right caller."""
    import concurrent.futures
    import random

    from burrow.block.raw import RawDevice

    img = tmp_path / "shared.raw"
    img.write_bytes(bytes(8 * MiB))
    region = MiB

    def worker(remote: BlockDevice, index: int) -> bool:
        rng = random.Random(index)
        base = index * region
        mine = bytearray(region)
        for _ in range(60):
            off = rng.randrange(0, region - 1)
            n = rng.randrange(1, min(region - off, 200_000) + 1)
            if rng.random() < 0.5:
                data = rng.randbytes(n)
                remote.pwrite(data, base + off)
                mine[off : off + n] = data
            elif remote.pread(n, base + off) != bytes(mine[off : off + n]):
                return False
        return remote.pread(region, base) == bytes(mine)

    with (
        RawDevice(img, readonly=False) as dev,
        serving(dev, tmp_path) as srv,
        open_nbd_uri(srv.uri, readonly=False) as remote,
        concurrent.futures.ThreadPoolExecutor(8) as pool,
    ):
        assert all(pool.map(lambda i: worker(remote, i), range(8)))


def test_server_errors_say_which_command_failed_and_why(tmp_path: Path) -> None:
    """An NBD error reply without a message (nbdkit's error filter sends none) still tells the
    user what failed: the errno's text and the command, not just "NBD server"."""
    require_tool("nbdkit")
    sock = tmp_path / "err.sock"
    proc = subprocess.Popen(
        [
            "nbdkit", "-f", "-U", str(sock), "--filter=error", "memory", "1M",
            "error=EIO", "error-pwrite-rate=100%", "error-pread-rate=0%",
        ],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(sock, proc)
        with open_nbd_uri(unix_uri(sock), readonly=False) as dev:
            assert dev.pread(4096, 0) == bytes(4096)
            with pytest.raises(OSError) as info:
                dev.pwrite(b"x" * 4096, 8192)
            assert info.value.errno == 5
            text = str(info.value)
            assert "Input/output error" in text, text
            assert "write" in text.lower() and "8192" in text, text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("minimum", [512, 4096])
def test_unaligned_requests_respect_the_servers_minimum_block_size(
    tmp_path: Path, minimum: int
) -> None:
    """The client asks for NBD_INFO_BLOCK_SIZE, so it must honour the minimum block size
    (qemu-nbd on a 4Kn disk, nbdkit's blocksize-policy): unaligned reads, writes, zeroes,
    trims, caches and block status become aligned requests (read-modify-write for partial
    blocks). nbdkit refuses any unaligned request with EINVAL; the result is checked against
    a bytearray model and against the export as nbdcopy reads it."""
    require_tool("nbdkit", "nbdcopy")
    sock = tmp_path / "bs.sock"
    size = 4 * MiB + 3 * minimum
    proc = subprocess.Popen(
        [
            "nbdkit", "-f", "-U", str(sock), "--filter=blocksize-policy", "memory", str(size),
            f"blocksize-minimum={minimum}", "blocksize-preferred=65536",
            "blocksize-maximum=1048576", "blocksize-error-policy=error",
        ],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(sock, proc)
        rng = __import__("random").Random(minimum)
        model = bytearray(size)
        with open_nbd_uri(unix_uri(sock), readonly=False) as dev:
            assert dev.block_size >= minimum
            for _ in range(150):
                off = rng.randrange(size)
                n = rng.randrange(1, min(3 * MiB, size - off) + 1)
                op = rng.random()
                if op < 0.5:
                    data = rng.randbytes(n)
                    dev.pwrite(data, off, fua=rng.random() < 0.2)
                    model[off : off + n] = data
                elif op < 0.7:
                    dev.write_zeroes(n, off, may_unmap=rng.random() < 0.5)
                    model[off : off + n] = bytes(n)
                elif op < 0.8:
                    dev.discard(n, off)
                    model[off : off + n] = dev.pread(n, off)  # advisory: whatever it reads now
                elif op < 0.9:
                    dev.cache(n, off)
                    assert dev.pread(n, off) == model[off : off + n]
                else:
                    ext = list(dev.extents(n, off))
                    assert ext[0].offset == off and sum(e.length for e in ext) == n
                    for e in ext:
                        if e.flags & ExtentFlags.ZERO:
                            assert not any(model[e.offset : e.offset + e.length])
            for off, n in [(1, 1), (minimum - 1, 2), (size - 1, 1), (size - minimum - 5, 10)]:
                assert dev.pread(n, off) == model[off : off + n]
            assert dev.pread(size, 0) == model
        out = tmp_path / "out.raw"
        run(["nbdcopy", unix_uri(sock), str(out)])
        assert out.read_bytes() == model
    finally:
        proc.terminate()
        proc.wait(timeout=10)
