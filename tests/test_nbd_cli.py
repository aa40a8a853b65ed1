"""``burrow nbd serve``: images, partitions, Python classes (the SQLite example), TLS, signals."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.images import run
from tests.nbd_helpers import make_cert

ROOT = Path(__file__).resolve().parent.parent
BURROW = [sys.executable, "-m", "burrow"]
MiB = 1 << 20


@contextmanager
def burrow_serve(
    *args: str, cwd: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Start ``burrow nbd serve ARGS``; yield (URI printed on stdout, process)."""
    proc = subprocess.Popen(
        [*BURROW, "nbd", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    try:
        assert proc.stdout is not None
        uri = proc.stdout.readline().strip()
        if not uri:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"burrow nbd serve printed no URI: {err}")
        yield uri, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=20)


@pytest.mark.tool("qemu-img")
def test_serve_image_prints_uri_when_ready(tmp_path: Path) -> None:
    img = tmp_path / "disk.raw"
    img.write_bytes(os.urandom(2 * MiB))
    sock = tmp_path / "s.sock"
    with burrow_serve(str(img), "--socket", str(sock), "--read-only") as (uri, proc):
        assert uri == f"nbd+unix:///?socket={sock}"
        assert sock.exists()  # ready when printed
        run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(img), uri])
        proc2 = subprocess.run(
            ["qemu-io", "-f", "raw", "-c", "write 0 512", uri], capture_output=True, text=True
        )
        assert proc2.returncode != 0
        assert stop(proc, signal.SIGINT) == 0
    assert not sock.exists()


@pytest.mark.tool("qemu-io")
def test_serve_tcp_writes_reach_the_image(tmp_path: Path) -> None:
    img = tmp_path / "disk.raw"
    img.write_bytes(bytes(MiB))
    with burrow_serve(str(img), "--listen", "127.0.0.1:0", "--export", "d") as (uri, proc):
        assert uri.startswith("nbd://127.0.0.1:") and uri.endswith("/d")
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x33 4096 8192", uri])
        assert stop(proc) == 0
    data = img.read_bytes()
    assert data[4096 : 4096 + 8192] == b"\x33" * 8192 and data[:4096] == bytes(4096)


@pytest.mark.tool("nbdcopy", "qemu-img")
def test_sqlite_example_device_persists(tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    with open(src, "wb") as f:
        f.truncate(8 * MiB)
        for off in (0, 3 * MiB + 512, 7 * MiB):
            f.seek(off)
            f.write(os.urandom(100_000))
    db = tmp_path / "blocks.sqlite"
    sock = tmp_path / "sq.sock"
    target = f"{ROOT / 'examples' / 'sqlite_device.py'}:SQLiteDevice"
    with burrow_serve(target, str(db), "size=8M", "--socket", str(sock)) as (uri, proc):
        run(["nbdcopy", str(src), uri])
        assert stop(proc) == 0
    # a new server on the same database serves the same bytes, holes where nothing was written
    with burrow_serve(target, str(db), "--socket", str(sock)) as (uri, proc):
        run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(src), uri])
        out = run(["nbdinfo", "--map", uri]).stdout if shutil.which("nbdinfo") else ""
        assert stop(proc) == 0
    if out:
        assert "hole" in out and "data" in out


def test_serve_module_class_form(tmp_path: Path) -> None:
    (tmp_path / "mydev.py").write_text(
        "class Pattern:\n"
        "    def __init__(self, size='1048576', byte='7'):\n"
        "        self.size = int(size)\n"
        "        self.byte = int(byte)\n"
        "    def pread(self, n, offset):\n"
        "        return bytes([self.byte]) * n\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + str(ROOT / "src"))
    sock = tmp_path / "m.sock"
    proc = subprocess.Popen(
        [*BURROW, "nbd", "serve", "mydev:Pattern", "byte=9", "--socket", str(sock)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    try:
        assert proc.stdout is not None
        uri = proc.stdout.readline().strip()
        from burrow.block.nbd_client import open_nbd_uri

        with open_nbd_uri(uri) as dev:
            assert dev.size == MiB and dev.readonly
            assert dev.pread(10, 12345) == b"\x09" * 10
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


@pytest.mark.tool("sgdisk", "qemu-img")
def test_serve_one_partition(tmp_path: Path) -> None:
    img = tmp_path / "gpt.img"
    with open(img, "wb") as f:
        f.truncate(16 * MiB)
    run(["sgdisk", "-n", "1:2048:+4M", "-n", "2:0:+6M", str(img)])
    layout = run(["sgdisk", "-i", "2", str(img)]).stdout
    first = int(layout.split("First sector: ")[1].split()[0])
    payload = os.urandom(6 * MiB)
    with open(img, "r+b") as f:
        f.seek(first * 512)
        f.write(payload)
    part = tmp_path / "part2.raw"
    part.write_bytes(payload)
    sock = tmp_path / "p.sock"
    with burrow_serve(f"{img}@2", "--socket", str(sock), "--read-only") as (uri, _proc):
        run(["qemu-img", "compare", "-f", "raw", "-F", "raw", str(part), uri])
        info = run(["qemu-img", "info", "--output=json", uri]).stdout
        assert f'"virtual-size": {6 * MiB}' in info


@pytest.mark.skipif(
    importlib.util.find_spec("burrow.block.overlay") is None,
    reason="burrow.block.overlay not there",
)
@pytest.mark.tool("qemu-io")
def test_overlay_never_changes_the_image(tmp_path: Path) -> None:
    img = tmp_path / "base.raw"
    original = os.urandom(MiB)
    img.write_bytes(original)
    with burrow_serve(str(img), "--overlay", "--socket", str(tmp_path / "o.sock")) as (uri, proc):
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x44 0 64k", "-c", "read -P 0x44 0 64k", uri])
        assert stop(proc) == 0
    assert img.read_bytes() == original


def test_tls_from_the_command_line(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    img = tmp_path / "disk.raw"
    img.write_bytes(b"tls!" * 1024)
    sock = tmp_path / "t.sock"
    args = [str(img), "--socket", str(sock), "--tls-cert", str(cert), "--tls-key", str(key)]
    with burrow_serve(*args) as (uri, proc):
        assert uri.startswith("nbds+unix://")
        from burrow.block.nbd_client import open_nbd_uri

        with open_nbd_uri(uri, tls_ca=str(cert)) as dev:
            assert dev.pread(8, 0) == b"tls!tls!"
        if shutil.which("nbdinfo"):  # libnbd (GnuTLS) as a second, independent TLS client
            certs = tmp_path / "certs"
            certs.mkdir()
            shutil.copy(cert, certs / "ca-cert.pem")
            out = run(["nbdinfo", f"{uri}&tls-certificates={certs}&tls-hostname=localhost"]).stdout
            assert "with TLS" in out
            plain = subprocess.run(
                ["nbdinfo", f"nbd+unix:///?socket={sock}"], capture_output=True, text=True
            )
            assert plain.returncode != 0
        assert stop(proc) == 0


def test_bad_targets_and_options(tmp_path: Path) -> None:
    def burrow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BURROW, "nbd", "serve", *args], capture_output=True, text=True)

    assert burrow(str(tmp_path / "missing.img"), "--socket", str(tmp_path / "x")).returncode == 3
    img = tmp_path / "i.raw"
    img.write_bytes(bytes(4096))
    assert burrow(str(img)).returncode == 2  # no --socket/--listen
    assert burrow("nosuchmodule_xyz:Cls", "--socket", str(tmp_path / "y")).returncode == 2
    assert burrow(f"{img}@1", "--socket", str(tmp_path / "z")).returncode == 2  # no table


def test_listen_failures_name_the_address_in_one_line(tmp_path: Path) -> None:
    """A socket that cannot be bound is one line naming the path or address, never a traceback.

    docs/cli.md: ``burrow: <path>: <message>``; a user with two servers, or a typo in the
    socket's directory, must see which address failed.
    """
    img = tmp_path / "i.raw"
    img.write_bytes(bytes(4096))

    def burrow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*BURROW, "nbd", "serve", str(img), *args], capture_output=True, text=True, timeout=60
        )

    bad_dir = tmp_path / "no" / "such" / "dir" / "s.sock"
    for threads in ("0", "2"):
        res = burrow("--socket", str(bad_dir), "--threads", threads)
        assert res.returncode == 3, res.stderr
        assert res.stderr.strip() == f"burrow: {bad_dir}: No such file or directory"
    with burrow_serve(str(img), "--listen", "127.0.0.1:0") as (uri, _proc):
        port = uri.rsplit(":", 1)[1].strip("/")
        for threads in ("0", "2"):
            res = burrow("--listen", f"127.0.0.1:{port}", "--threads", threads)
            assert res.returncode == 3, res.stderr
            assert res.stderr.strip() == f"burrow: 127.0.0.1:{port}: Address already in use"
    res = burrow("--listen", "no.such.host.invalid:10809")
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("burrow: no.such.host.invalid:10809: ")
    assert len(res.stderr.strip().splitlines()) == 1
    res = burrow("--socket", str(tmp_path / "s"), "--threads", "-1")
    assert res.returncode == 2 and "--threads" in res.stderr
    bare = subprocess.run([*BURROW, "nbd", "serve"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2
    assert bare.stderr.rstrip().endswith("required: IMAGE[@PART]|module:Class"), bare.stderr


@pytest.mark.tool("nbdinfo")
def test_tls_client_certificates(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    img = tmp_path / "disk.raw"
    img.write_bytes(bytes(65536))
    sock = tmp_path / "c.sock"
    args = [str(img), "--socket", str(sock), "--tls-cert", str(cert), "--tls-key", str(key)]
    with burrow_serve(*args, "--tls-ca", str(cert)) as (uri, proc):
        with_client = tmp_path / "with"
        without = tmp_path / "without"
        for d in (with_client, without):
            d.mkdir()
            shutil.copy(cert, d / "ca-cert.pem")
        shutil.copy(cert, with_client / "client-cert.pem")
        shutil.copy(key, with_client / "client-key.pem")
        good = run(["nbdinfo", f"{uri}&tls-certificates={with_client}&tls-hostname=localhost"])
        assert "with TLS" in good.stdout
        bad = subprocess.run(
            ["nbdinfo", f"{uri}&tls-certificates={without}&tls-hostname=localhost"],
            capture_output=True,
            text=True,
        )
        assert bad.returncode != 0
        assert stop(proc) == 0


@pytest.mark.tool("mkfs.ext4")
def test_burrow_tools_work_on_an_nbd_export(tmp_path: Path) -> None:
    """End to end: an ext4 image served by ``burrow nbd serve`` and read back through the
    NBD client engine by ``burrow ls`` and ``burrow cat``."""
    if importlib.util.find_spec("burrow.cli.commands.cat") is None:
        pytest.skip("burrow cat is not available")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("served-over-nbd\n")
    img = tmp_path / "fs.img"
    run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(img), "16M"])
    sock = tmp_path / "fs.sock"
    with burrow_serve(str(img), "--read-only", "--socket", str(sock)) as (uri, proc):
        cat = subprocess.run(
            [*BURROW, "cat", f"{uri}:/etc/hostname"], capture_output=True, text=True, timeout=60
        )
        assert cat.returncode == 0, cat.stderr
        assert cat.stdout == "served-over-nbd\n"
        ls = subprocess.run(
            [*BURROW, "ls", f"{uri}:/etc"], capture_output=True, text=True, timeout=60
        )
        assert ls.returncode == 0 and "hostname" in ls.stdout
        assert stop(proc) == 0


@pytest.mark.tool("qemu-img", "qemu-io")
def test_writes_into_a_served_qcow2_leave_a_clean_image(tmp_path: Path) -> None:
    img = tmp_path / "disk.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "16M"])
    with burrow_serve(str(img), "--socket", str(tmp_path / "q.sock")) as (uri, proc):
        run(["qemu-io", "-f", "raw", "-c", "write -P 0x77 1M 3M", "-c", "write -z 2M 64k", uri])
        assert stop(proc) == 0  # SIGTERM: flush and close the qcow2 engine
    run(["qemu-img", "check", str(img)])
    run(
        [
            "qemu-io",
            "-r",
            "-f",
            "qcow2",
            "-c",
            "read -P 0x77 1M 1M",
            "-c",
            "read -P 0 2M 64k",
            "-c",
            "read -P 0x77 2162688 1982464",
            str(img),
        ]
    )
