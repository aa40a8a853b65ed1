"""burrow's NBD server checked by real NBD clients: qemu-img, qemu-io, nbdinfo, nbdcopy,
python3-libnbd and fio."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from tests.images import run
from tests.nbd_helpers import ServerThread, make_cert, run_libnbd, serving

from burrow.block.memory import MemoryDevice
from burrow.block.raw import RawDevice

MiB = 1 << 20


def random_image(path: Path, size: int = 8 * MiB, *, sparse: bool = True) -> bytes:
    """A raw image with random data in some places and holes elsewhere."""
    data = bytearray(size)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, 1 * MiB if sparse else 64 * 1024):
            chunk = os.urandom(64 * 1024)
            f.seek(off)
            f.write(chunk)
            data[off : off + len(chunk)] = chunk
    return bytes(data)


@pytest.mark.tool("qemu-img")
def test_qemu_img_info_compare_convert(tmp_path: Path) -> None:
    img = tmp_path / "disk.raw"
    random_image(img)
    with RawDevice(img) as dev, serving(dev, tmp_path) as srv:
        info = json.loads(run(["qemu-img", "info", "--output=json", srv.uri]).stdout)
        assert info["virtual-size"] == img.stat().st_size
        run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(img), srv.uri])
        out = tmp_path / "copy.qcow2"
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", srv.uri, str(out)])
        run(["qemu-img", "compare", "-F", "qcow2", str(img), str(out)])
        # a different image must not compare equal (the oracle can fail)
        other = tmp_path / "other.raw"
        random_image(other)
        proc = subprocess.run(
            ["qemu-img", "compare", "-f", "raw", "-F", "raw", str(other), srv.uri],
            capture_output=True,
        )
        assert proc.returncode == 1


@pytest.mark.tool("qemu-io")
def test_qemu_io_patterns_land_in_the_device(tmp_path: Path) -> None:
    dev = MemoryDevice(16 * MiB)
    with serving(dev, tmp_path) as srv:
        run(
            [
                "qemu-io",
                "-f",
                "raw",
                "-c",
                "write -P 0xab 1M 64k",
                "-c",
                "write -P 0x11 4097 3000",
                "-c",
                "write -z 1M 4k",
                "-c",
                "write -f -P 0xcd 2M 8k",  # FUA
                "-c",
                "discard 3M 1M",
                "-c",
                "flush",
                "-c",
                "read -P 0xab 1052672 61440",
                srv.uri,
            ]
        )
    assert dev.pread(4096, MiB) == bytes(4096)
    assert dev.pread(61440, MiB + 4096) == b"\xab" * 61440
    assert dev.pread(3000, 4097) == b"\x11" * 3000
    assert dev.pread(2, 4095) == b"\0\0"
    assert dev.pread(8192, 2 * MiB) == b"\xcd" * 8192
    assert dev.pread(MiB, 3 * MiB) == bytes(MiB)


@pytest.mark.tool("qemu-io")
def test_read_only_export_refuses_writes(tmp_path: Path) -> None:
    img = tmp_path / "ro.raw"
    data = random_image(img, 2 * MiB)
    with RawDevice(img) as dev, serving(dev, tmp_path) as srv:
        proc = subprocess.run(
            ["qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", srv.uri],
            capture_output=True,
            text=True,
        )
        assert proc.returncode != 0 and "permission denied" in proc.stderr.lower()
    assert img.read_bytes() == data


@pytest.mark.tool("nbdinfo")
def test_nbdinfo_list_and_map(tmp_path: Path) -> None:
    img = tmp_path / "sparse.raw"
    random_image(img)
    from burrow.nbd.server import Export

    with RawDevice(img) as dev:
        exports = [
            Export(dev, name="", description="the disk"),
            Export(MemoryDevice(MiB), name="scratch", description="scratch space"),
        ]
        with serving(exports, tmp_path) as srv:
            listing = json.loads(run(["nbdinfo", "--json", "--list", srv.uri]).stdout)
            names = {e["export-name"]: e for e in listing["exports"]}
            assert set(names) == {"", "scratch"}
            assert names["scratch"]["description"] == "scratch space"
            assert names["scratch"]["export-size"] == MiB
            assert names[""]["is_read_only"] is True
            assert names["scratch"]["is_read_only"] is False
            mapping = json.loads(run(["nbdinfo", "--json", "--map", srv.uri]).stdout)
    # the map must agree with the host's SEEK_DATA/SEEK_HOLE view of the file
    fd = os.open(img, os.O_RDONLY)
    try:
        for ext in mapping:
            start, length = ext["offset"], ext["length"]
            if ext["type"] & 1:  # hole: no data anywhere inside
                try:
                    nxt = os.lseek(fd, start, os.SEEK_DATA)
                except OSError:
                    nxt = img.stat().st_size
                assert nxt >= start + length
            else:
                assert os.lseek(fd, start, os.SEEK_DATA) == start
    finally:
        os.close(fd)
    assert sum(e["length"] for e in mapping) == img.stat().st_size
    assert any(e["type"] == 0 for e in mapping) and any(e["type"] == 3 for e in mapping)


@pytest.mark.tool("nbdinfo", "mkfs.ext4")
def test_nbdinfo_content_sees_the_filesystem(tmp_path: Path) -> None:
    img = tmp_path / "fs.img"
    run(["mkfs.ext4", "-q", "-F", str(img), "16M"])
    with RawDevice(img) as dev, serving(dev, tmp_path) as srv:
        proc = subprocess.run(["nbdinfo", "--content", srv.uri], capture_output=True, text=True)
    if proc.returncode != 0 and "file" in proc.stderr:
        pytest.skip("nbdinfo --content needs file(1)")
    assert "ext4" in proc.stdout


@pytest.mark.tool("nbdcopy")
@pytest.mark.parametrize("threads", [0, 3])
def test_nbdcopy_in_and_out_with_several_connections(tmp_path: Path, threads: int) -> None:
    img = tmp_path / "src.raw"
    data = random_image(img, 16 * MiB)
    dev = MemoryDevice(16 * MiB)
    with serving(dev, tmp_path, threads=threads) as srv:
        assert len(srv.server._workers) == threads
        run(["nbdcopy", "--connections=4", "--requests=16", str(img), srv.uri])
        assert dev.pread(dev.size, 0) == data
        back = tmp_path / "back.raw"
        run(["nbdcopy", "--connections=2", srv.uri, str(back)])
    assert back.read_bytes() == data


LIBNBD_SCRIPT = r"""
import json, sys, nbd
uri = sys.argv[1]
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.set_strict_mode(0)  # let bad requests reach the server instead of failing in libnbd
h.connect_uri(uri)
out = {}
out["structured"] = h.get_structured_replies_negotiated()
out["flags"] = dict(
    flush=h.can_flush(), fua=h.can_fua(), trim=h.can_trim(), zero=h.can_zero(),
    fast_zero=h.can_fast_zero(), df=h.can_df(), cache=h.can_cache(),
    multi_conn=h.can_multi_conn(), meta=h.can_meta_context("base:allocation"),
    ro=h.is_read_only())
size = h.get_size()
h.pwrite(b"A" * 65536, 65536, nbd.CMD_FLAG_FUA)
h.pwrite(b"B" * 4096, 1 << 20)
h.flush()
out["read"] = h.pread(65536, 65536) == b"A" * 65536
chunks = []
def chunk(buf, offset, status, err):
    chunks.append((offset, len(buf), status))
    return 0
df = h.pread_structured(65536 * 2, 1 << 20, chunk, nbd.CMD_FLAG_DF)
out["read_df"] = df[:4096] == b"B" * 4096 and df[4096:] == bytes(65536 * 2 - 4096)
out["df_chunks"] = len(chunks)
chunks.clear()
buf = h.pread_structured(4 << 20, 0, chunk)
out["sparse_read_ok"] = buf[65536:131072] == b"A" * 65536 and buf[:65536] == bytes(65536)
out["chunk_types"] = sorted({c[2] for c in chunks})
h.zero(4096, 65536, nbd.CMD_FLAG_NO_HOLE)
out["zeroed"] = h.pread(4096, 65536) == bytes(4096)
try:
    h.zero(65536, 2 << 20, nbd.CMD_FLAG_FAST_ZERO)
    out["fast_zero"] = "ok"
except nbd.Error as e:
    out["fast_zero"] = e.errnum
h.trim(65536, 3 << 20)
h.cache(65536, 0)
extents = []
def ext(meta, offset, entries, err):
    extents.append((meta, list(entries)))
    return 0
h.block_status(size, 0, ext)
out["extents"] = extents
one = []
h.block_status(size, 0, lambda *a: one.append(list(a[2])) or 0, nbd.CMD_FLAG_REQ_ONE)
out["req_one"] = one
errors = {}
for name, fn in [
    ("read_past_end", lambda: h.pread(4096, size)),
    ("write_past_end", lambda: h.pwrite(b"x" * 512, size - 256)),
    ("zero_past_end", lambda: h.zero(4096, size)),
    ("trim_past_end", lambda: h.trim(4096, size)),
]:
    try:
        fn()
        errors[name] = 0
    except nbd.Error as e:
        errors[name] = e.errnum
out["errors"] = errors
out["still_works"] = h.pread(4096, 65536 + 4096) == b"A" * 4096
h.shutdown()
print(json.dumps(out))
"""


def test_libnbd_every_command_and_flag(tmp_path: Path) -> None:
    dev = MemoryDevice(8 * MiB, page_size=65536)
    with serving(dev, tmp_path) as srv:
        out = run_libnbd(LIBNBD_SCRIPT, srv.uri)
    assert out["structured"] is True
    flags = out["flags"]
    assert flags == {
        "flush": True,
        "fua": True,
        "trim": True,
        "zero": True,
        "fast_zero": True,
        "df": True,
        "cache": True,
        "multi_conn": True,
        "meta": True,
        "ro": False,
    }
    assert out["read"] and out["read_df"] and out["sparse_read_ok"] and out["zeroed"]
    assert out["df_chunks"] == 1  # DF: a single data chunk even across a hole
    # a 4 MiB read of a mostly empty device comes back with hole chunks (type 2)
    assert out["chunk_types"] == [1, 2]
    assert out["fast_zero"] == "ok"  # MemoryDevice zeroes natively
    ((meta, entries),) = out["extents"]
    assert meta == "base:allocation"
    pairs = list(zip(entries[::2], entries[1::2], strict=True))
    assert sum(n for n, _ in pairs) == dev.size
    # page 1 (64 KiB) holds data, page 0 is a hole; 3 MiB was trimmed
    assert pairs[0] == (65536, 3) and pairs[1][1] == 0
    assert len(out["req_one"]) == 1 and len(out["req_one"][0]) == 2
    assert out["req_one"][0][0] == 65536
    errors = out["errors"]
    assert errors["read_past_end"] == 22 and errors["trim_past_end"] == 22
    assert errors["write_past_end"] == 28 and errors["zero_past_end"] == 28
    assert out["still_works"]
    assert dev.pread(4096, MiB) == b"B" * 4096


def test_libnbd_sparse_reads_return_hole_chunks(tmp_path: Path) -> None:
    img = tmp_path / "holes.raw"
    data = random_image(img, 4 * MiB)
    script = r"""
import json, sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
kinds = []
buf = h.pread_structured(4 << 20, 0, lambda b, o, s, e: kinds.append(s) or 0)
sys.stdout.buffer.write(json.dumps({"kinds": kinds}).encode() + b"\n")
open(sys.argv[2], "wb").write(buf)
"""
    out_file = tmp_path / "read.bin"
    with RawDevice(img) as dev, serving(dev, tmp_path) as srv:
        out = run_libnbd(script, srv.uri, str(out_file))
    assert out_file.read_bytes() == data
    assert 2 in out["kinds"] and 1 in out["kinds"]  # OFFSET_HOLE and OFFSET_DATA


@pytest.mark.tool("fio")
@pytest.mark.parametrize("kind", ["memory", "raw"])
def test_fio_random_writes_verify(tmp_path: Path, kind: str) -> None:
    dev: MemoryDevice | RawDevice
    if kind == "raw":  # inline reads in the event loop, writes in the thread pool
        img = tmp_path / "fio.raw"
        img.write_bytes(b"")
        os.truncate(img, 16 * MiB)
        dev = RawDevice(img, readonly=False)
    else:
        dev = MemoryDevice(16 * MiB)
    with serving(dev, tmp_path) as srv:
        sock = srv.server._unix_paths[0]
        proc = subprocess.run(
            [
                "fio",
                "--name=verify",
                "--ioengine=nbd",
                f"--uri=nbd+unix:///?socket={sock}",
                "--rw=randwrite",
                "--bs=4k",
                "--size=16M",
                "--iodepth=16",
                "--verify=crc32c",
                "--do_verify=1",
                "--verify_fatal=1",
                "--verify_state_save=0",
                "--output-format=json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,  # fio may leave state files in its working directory
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = json.loads(proc.stdout[proc.stdout.index("{") :])["jobs"][0]
    assert job["error"] == 0
    assert job["write"]["io_bytes"] == 16 * MiB
    assert job["read"]["io_bytes"] == 16 * MiB  # the verify pass
    dev.close()


def test_disconnect_mid_request_leaves_the_export_consistent(tmp_path: Path) -> None:
    dev = MemoryDevice(MiB)
    dev.pwrite(b"\x77" * 65536, 0)
    with serving(dev, tmp_path) as srv:
        path = srv.server._unix_paths[0]
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        assert s.recv(18)[:8] == b"NBDMAGIC"
        s.sendall(struct.pack(">I", 3))
        name = b""
        body = struct.pack(">I", 0) + name + struct.pack(">H", 0)
        s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(body)) + body)
        got = b""
        while not got.endswith(struct.pack(">QIII", 0x3E889045565A9, 7, 1, 0)):
            got += s.recv(4096)
        # a WRITE whose payload never fully arrives
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 1, 0, 65536) + b"\x01" * 30000)
        s.close()
        # the server still serves other clients, and the half write never happened
        from burrow.block import open as open_dev

        with open_dev(srv.uri) as remote:
            assert remote.pread(65536, 0) == b"\x77" * 65536
    assert dev.pread(65536, 0) == b"\x77" * 65536


class AsyncDict:
    """An async user class: blocks in a dict, methods are coroutines."""

    size = 4 * MiB
    block_size = 4096

    def __init__(self) -> None:
        self.blocks: dict[int, bytearray] = {}

    async def pread(self, n: int, offset: int) -> bytes:
        await asyncio.sleep(0)
        out = bytearray(n)
        for i in range(n):  # tiny test device: clarity over speed
            blk = self.blocks.get((offset + i) // 4096)
            if blk is not None:
                out[i] = blk[(offset + i) % 4096]
        return bytes(out)

    async def pwrite(self, data: bytes, offset: int) -> None:
        for i, b in enumerate(bytes(data)):
            blk = self.blocks.setdefault((offset + i) // 4096, bytearray(4096))
            blk[(offset + i) % 4096] = b


class PlainBytes:
    """A plain synchronous class with only size and pread: served read-only."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def pread(self, n: int, offset: int) -> bytes:
        return self.data[offset : offset + n]


@pytest.mark.tool("qemu-io")
def test_user_classes_sync_and_async(tmp_path: Path) -> None:
    adev = AsyncDict()
    with serving(adev, tmp_path) as srv:
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x42 5000 3000", srv.uri])
        run(["qemu-io", "-f", "raw", "-c", "read -P 0x42 5000 3000", srv.uri])
    assert bytes(adev.blocks[1][5000 - 4096 : 5000 - 4096 + 3000]) == b"\x42" * 3000
    data = os.urandom(MiB)
    with serving(PlainBytes(data), tmp_path, "p.sock") as srv:
        out = tmp_path / "out.raw"
        run(["qemu-img", "convert", "-f", "raw", "-O", "raw", srv.uri, str(out)])
        assert out.read_bytes() == data
        proc = subprocess.run(
            ["qemu-io", "-f", "raw", "-c", "write 0 512", srv.uri], capture_output=True, text=True
        )
        # qemu sees NBD_FLAG_READ_ONLY and refuses to open the export for writing
        assert proc.returncode != 0 and "permission denied" in proc.stderr.lower()


@pytest.mark.parametrize("threads", [0, 2])
def test_tls_required_and_optional(tmp_path: Path, threads: int) -> None:
    cert, key = make_cert(tmp_path)
    from burrow.block.nbd_client import open_nbd_uri
    from burrow.errors import RemoteProtocolError

    dev = MemoryDevice(MiB)
    dev.pwrite(b"secret", 0)
    sock = tmp_path / "tls.sock"
    srv = ServerThread(dev, socket=str(sock), tls_cert=str(cert), tls_key=str(key), threads=threads)
    try:
        assert srv.uri.startswith("nbds+unix://")
        with open_nbd_uri(f"nbds+unix:///?socket={sock}", tls_ca=str(cert)) as remote:
            assert remote.pread(6, 0) == b"secret"
        with pytest.raises(RemoteProtocolError):  # plaintext clients are refused (FORCEDTLS)
            open_nbd_uri(f"nbd+unix:///?socket={sock}")
    finally:
        srv.close()
    sock2 = tmp_path / "tls2.sock"
    srv = ServerThread(dev, socket=str(sock2), tls_cert=str(cert), tls_key=str(key), tls="optional")
    try:
        with open_nbd_uri(f"nbd+unix:///?socket={sock2}") as plain:
            assert plain.pread(6, 0) == b"secret"
        with open_nbd_uri(f"nbds+unix:///?socket={sock2}", tls_ca=str(cert)) as secure:
            assert secure.pread(6, 0) == b"secret"
    finally:
        srv.close()


def test_many_connections_and_out_of_order_replies(tmp_path: Path) -> None:
    """Several clients at once, each with requests in flight; every reply matches its cookie."""
    from burrow.block import open as open_dev

    data = os.urandom(4 * MiB)
    dev = MemoryDevice(4 * MiB, data=data)
    import concurrent.futures

    with serving(dev, tmp_path) as srv:

        def worker(seed: int) -> bool:
            import random

            rng = random.Random(seed)
            with open_dev(srv.uri) as remote:
                for _ in range(50):
                    off = rng.randrange(0, 4 * MiB - 70000)
                    n = rng.randrange(1, 70000)
                    if remote.pread(n, off) != data[off : off + n]:
                        return False
            return True

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert all(pool.map(worker, range(8)))


@pytest.mark.tool("qemu-img", "qemu-io")
def test_sparse_qcow2_block_status_and_hole_reads(tmp_path: Path) -> None:
    """A sparse qcow2 made by qemu-img, served by burrow: libnbd's block status and structured
    reads must agree with ``qemu-img map`` and with qemu's own reading of the file."""
    import burrow.block

    img = tmp_path / "sparse.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "8M"])
    run(
        [
            "qemu-io",
            "-f",
            "qcow2",
            "-c",
            "write -P 0x11 0 64k",
            "-c",
            "write -P 0x22 3M 128k",
            "-c",
            "write -z 5M 64k",
            str(img),
        ]
    )
    qmap = json.loads(run(["qemu-img", "map", "--output=json", str(img)]).stdout)
    script = r"""
import json, sys, nbd
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.connect_uri(sys.argv[1])
size = h.get_size()
ext = []
h.block_status(size, 0, lambda m, o, e, err: ext.extend(e) or 0)
kinds = []
buf = h.pread_structured(size, 0, lambda b, o, s, e: kinds.append(s) or 0)
open(sys.argv[2], "wb").write(buf)
print(json.dumps({"extents": ext, "kinds": kinds}))
"""
    raw = tmp_path / "read.raw"
    with burrow.block.open(img) as dev, serving(dev, tmp_path) as srv:
        out = run_libnbd(script, srv.uri, str(raw))
    # qemu's own reading of the image, byte for byte
    run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(img)])
    assert 2 in out["kinds"]  # holes came back as hole chunks
    pairs = list(zip(out["extents"][::2], out["extents"][1::2], strict=True))
    pos = 0
    ours = []
    for length, flags in pairs:
        ours.append((pos, length, flags))
        pos += length
    assert pos == 8 * MiB

    def zero_at(offset: int) -> bool:
        for m in qmap:
            if m["start"] <= offset < m["start"] + m["length"]:
                return bool(m["zero"])
        raise AssertionError(offset)

    def data_at(offset: int) -> bool:
        for m in qmap:
            if m["start"] <= offset < m["start"] + m["length"]:
                return bool(m["data"])
        raise AssertionError(offset)

    for start, length, flags in ours:
        for probe in (start, start + length - 1):
            if flags & 2:  # burrow says zero: qemu must agree
                assert zero_at(probe) or not data_at(probe)
            else:  # burrow says data: qemu must see data there
                assert data_at(probe)
    assert any(f == 0 for _, _, f in ours) and any(f & 2 for _, _, f in ours)


def _handshake_raw(path: str) -> socket.socket:
    """A raw client: fixed newstyle, NBD_OPT_GO on the default export, simple replies."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    assert s.recv(18)[:8] == b"NBDMAGIC"
    s.sendall(struct.pack(">I", 3))
    body = struct.pack(">I", 0) + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(body)) + body)
    got = b""
    while not got.endswith(struct.pack(">QIII", 0x3E889045565A9, 7, 1, 0)):
        chunk = s.recv(4096)
        assert chunk
        got += chunk
    return s


def test_memory_stays_bounded_when_the_client_does_not_read(tmp_path: Path) -> None:
    import time

    dev = MemoryDevice(64 * MiB)
    with serving(dev, tmp_path, max_inflight=8 * MiB) as srv:
        s = _handshake_raw(srv.server._unix_paths[0])
        s.setblocking(False)
        reqs = b"".join(
            struct.pack(">IHHQQI", 0x25609513, 0, 0, i, (i % 60) * MiB, 4 * MiB)
            for i in range(400)  # 1.6 GB of replies asked for, none read
        )
        sent = 0
        deadline = time.monotonic() + 5
        while sent < len(reqs) and time.monotonic() < deadline:
            try:
                sent += s.send(reqs[sent:])
            except BlockingIOError:
                time.sleep(0.05)
        (conn,) = list(srv.server.connections)
        while not conn.read_paused and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        assert conn.read_paused  # the server stopped reading our requests
        assert len(conn.backlog) > 300  # and stopped starting the ones it had parsed
        queued = srv.call(_queued(conn))
        assert queued < 64 * MiB, queued
        s.close()


async def _queued(conn: object) -> int:
    transport = conn.transport  # type: ignore[attr-defined]
    return int(transport.get_write_buffer_size()) + int(conn.inflight)  # type: ignore[attr-defined]


class SlowDevice:
    """Async device whose writes take a while: shutdown must wait for them."""

    size = MiB

    def __init__(self) -> None:
        self.data = bytearray(MiB)
        self.started = asyncio.Event()

    async def pread(self, n: int, offset: int) -> bytes:
        return bytes(self.data[offset : offset + n])

    async def pwrite(self, data: bytes, offset: int) -> None:
        self.started.set()
        await asyncio.sleep(0.5)
        self.data[offset : offset + len(data)] = data


class SlowSyncDevice(MemoryDevice):
    """A synchronous device whose writes take a while (served from worker loops)."""

    def __init__(self) -> None:
        super().__init__(MiB)
        self.started = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.started.set)
        import time

        time.sleep(0.5)
        super()._pwrite(data, offset, fua)

    @property
    def data(self) -> bytes:
        return self.pread(MiB, 0)


@pytest.mark.parametrize("kind", ["async", "sync-threads"])
def test_shutdown_finishes_requests_in_flight(tmp_path: Path, kind: str) -> None:
    dev: SlowDevice | SlowSyncDevice
    if kind == "async":
        dev = SlowDevice()
        srv = ServerThread(dev, socket=str(tmp_path / "slow.sock"))
    else:
        dev = SlowSyncDevice()
        srv = ServerThread(dev, socket=str(tmp_path / "slow.sock"), threads=2)
        dev.loop = srv.loop
    try:
        s = _handshake_raw(srv.server._unix_paths[0])
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 42, 100, 5) + b"hello")
        srv.call(dev.started.wait())
        srv.call(srv.server.aclose())  # while the write sleeps
        reply = s.recv(16)
        assert struct.unpack(">IIQ", reply) == (0x67446698, 0, 42)
        assert s.recv(16) == b""  # then the server closed the connection
        s.close()
    finally:
        srv.close()
    assert dev.data[100:105] == b"hello"


def test_a_client_that_never_finishes_the_handshake_is_dropped(tmp_path: Path) -> None:
    with serving(MemoryDevice(MiB), tmp_path, handshake_timeout=0.3) as srv:
        idle = socket.socket(socket.AF_UNIX)
        idle.connect(srv.server._unix_paths[0])
        idle.settimeout(5)
        assert idle.recv(18)[:8] == b"NBDMAGIC"
        assert idle.recv(1) == b""  # closed by the server after the timeout
        idle.close()
        ok = _handshake_raw(srv.server._unix_paths[0])  # a prompt client is unaffected
        import time

        time.sleep(0.5)
        ok.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 3, 9, 0, 0))  # FLUSH
        assert struct.unpack(">IIQ", ok.recv(16)) == (0x67446698, 0, 9)
        ok.close()


class OddExtents:
    """A user class whose extents() overshoots the range asked for: the server must clip."""

    size = 8 * MiB

    def pread(self, n: int, offset: int) -> bytes:
        return bytes(n)

    def extents(self, n: int, offset: int) -> list[tuple[int, int, int]]:
        return [(0, 4 * MiB, 3), (4 * MiB, 1 << 40, 0)]  # far past the end of the device


def test_user_extents_are_clipped_to_the_request(tmp_path: Path) -> None:
    from burrow.block import open as open_dev

    with serving(OddExtents(), tmp_path) as srv, open_dev(srv.uri) as remote:
        runs = [(e.offset, e.length, int(e.flags)) for e in remote.extents(6 * MiB, MiB)]
    assert runs == [(MiB, 3 * MiB, 3), (4 * MiB, 3 * MiB, 0)]


def test_serve_inside_a_user_asyncio_program(tmp_path: Path) -> None:
    """The documented pattern: ``serve()`` as a task of the user's own program, cancelled to
    stop; the device is flushed and the socket removed."""
    import burrow.nbd
    from burrow.block.nbd_client import open_nbd_uri

    flushed: list[bool] = []

    class Dev(MemoryDevice):
        def _flush(self) -> None:
            flushed.append(True)

    dev = Dev(MiB)
    sock = tmp_path / "user.sock"

    async def program() -> bytes:
        ready = asyncio.Event()
        task = asyncio.create_task(
            burrow.nbd.serve(dev, socket=str(sock), ready=lambda srv: ready.set())
        )
        await ready.wait()

        def client() -> bytes:
            with open_nbd_uri(f"nbd+unix:///?socket={sock}", readonly=False) as remote:
                remote.pwrite(b"from the user program", 10)
                return remote.pread(21, 10)

        got = await asyncio.to_thread(client)
        flushed.clear()  # the client's own FLUSH at close does not count
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return got

    assert asyncio.run(program()) == b"from the user program"
    assert flushed and not sock.exists()
    assert dev.pread(21, 10) == b"from the user program"


@pytest.mark.tool("qemu-img", "qemu-io")
def test_qemu_img_convert_into_the_server(tmp_path: Path) -> None:
    """qemu writes a sparse qcow2 into a burrow export (writes, zeroes, trims); qemu-img
    compare then reads both and must find them identical."""
    src = tmp_path / "src.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "8M"])
    run(
        [
            "qemu-io",
            "-f",
            "qcow2",
            "-c",
            "write -P 0x61 512k 1M",
            "-c",
            "write -P 0x62 6M 4k",
            str(src),
        ]
    )
    img = tmp_path / "dst.raw"
    with open(img, "wb") as f:
        f.write(os.urandom(8 * MiB))  # old contents must be overwritten, holes included
    with RawDevice(img, readonly=False) as dev, serving(dev, tmp_path) as srv:
        run(["qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw", str(src), srv.uri])
        run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(src), srv.uri])
    run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(src), str(img)])


class SlowFirstBlock:
    """Async device: reads of the first block take 0.5 s, other reads are immediate."""

    size = MiB

    async def pread(self, n: int, offset: int) -> bytes:
        if offset == 0:
            await asyncio.sleep(0.5)
        return bytes([offset // 4096 % 256]) * n


def test_replies_leave_out_of_order(tmp_path: Path) -> None:
    with serving(SlowFirstBlock(), tmp_path) as srv:
        s = _handshake_raw(srv.server._unix_paths[0])
        s.sendall(
            struct.pack(">IHHQQI", 0x25609513, 0, 0, 1, 0, 4096)  # slow
            + struct.pack(">IHHQQI", 0x25609513, 0, 0, 2, 8192, 4096)  # fast
        )
        s.settimeout(5)
        got = b""
        while len(got) < 2 * (16 + 4096):
            chunk = s.recv(65536)
            assert chunk
            got += chunk
        s.close()
    first = struct.unpack_from(">IIQ", got)
    second = struct.unpack_from(">IIQ", got, 16 + 4096)
    assert first == (0x67446698, 0, 2)  # the fast request was answered first
    assert got[16 : 16 + 4096] == b"\x02" * 4096
    assert second == (0x67446698, 0, 1)
    assert got[32 + 4096 :] == b"\x00" * 4096


@pytest.mark.root
@pytest.mark.fuse
@pytest.mark.tool("nbdfuse", "mkfs.ext4", "e2fsck", "fusermount3")
def test_kernel_reads_and_mkfs_writes_through_nbdfuse(tmp_path: Path) -> None:
    """libnbd's nbdfuse turns the export into a file: the kernel loop-mounts the ext4 inside
    it (reads), and mkfs.ext4 formats a second export through it (writes, checked by e2fsck
    on the image burrow wrote)."""
    import time

    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("kernel-read-me\n")
    fs = tmp_path / "fs.img"
    run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(fs), "16M"])
    blank = tmp_path / "blank.img"
    with open(blank, "wb") as f:
        f.truncate(32 * MiB)

    def fuse_file(uri: str, name: str, *, readonly: bool) -> tuple[subprocess.Popen[bytes], Path]:
        mnt = tmp_path / f"mnt-{name}"
        mnt.mkdir()
        pidfile = tmp_path / f"{name}.pid"
        cmd = ["nbdfuse", *(["-r"] if readonly else []), "-P", str(pidfile), f"{mnt}/disk", uri]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            if pidfile.exists() or proc.poll() is not None:
                break
            time.sleep(0.02)
        if not pidfile.exists():
            proc.kill()
            proc.wait()
            pytest.skip("nbdfuse could not mount here")
        return proc, mnt

    def unmount(proc: subprocess.Popen[bytes], mnt: Path) -> None:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    from burrow.nbd.server import Export

    with RawDevice(fs) as ro, RawDevice(blank, readonly=False) as rw:
        exports = [Export(ro, name="fs"), Export(rw, name="blank")]
        with serving(exports, tmp_path) as srv:
            sock = srv.server._unix_paths[0]
            proc, mnt = fuse_file(f"nbd+unix:///fs?socket={sock}", "fs", readonly=True)
            try:
                target = tmp_path / "kernel"
                target.mkdir()
                run(["mount", "-o", "ro,loop", str(mnt / "disk"), str(target)])
                try:
                    assert (target / "etc" / "hostname").read_text() == "kernel-read-me\n"
                finally:
                    subprocess.run(["umount", str(target)], capture_output=True)
            finally:
                unmount(proc, mnt)
            proc, mnt = fuse_file(f"nbd+unix:///blank?socket={sock}", "blank", readonly=False)
            try:
                run(["mkfs.ext4", "-q", "-F", "-L", "via-nbd", str(mnt / "disk")])
            finally:
                unmount(proc, mnt)
    run(["e2fsck", "-fn", str(blank)])
    label = run(["e2label", str(blank)]).stdout.strip() if shutil.which("e2label") else "via-nbd"
    assert label == "via-nbd"
