"""Test support for the NBD area: run burrow's NBD server in a background event loop thread."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from burrow.nbd.server import NBDServer, start_server

SYSTEM_PYTHON = "/usr/bin/python3"


class ServerThread:
    """An event loop in a thread running one NBDServer; ``uri`` is its first URI."""

    def __init__(self, device: Any, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        fut = asyncio.run_coroutine_threadsafe(start_server(device, **kwargs), self.loop)
        self.server: NBDServer = fut.result(timeout=10)
        self.uri = self.server.uris[0]

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    def close(self) -> None:
        try:
            self.call(self.server.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@contextmanager
def serving(
    device: Any, tmp_path: Path, name: str = "nbd.sock", **kwargs: Any
) -> Iterator[ServerThread]:
    kwargs.setdefault("socket", str(tmp_path / name))
    srv = ServerThread(device, **kwargs)
    try:
        yield srv
    finally:
        srv.close()


def unix_uri(sock: Path | str, export: str = "") -> str:
    return f"nbd+unix:///{export}?socket={sock}"


def have_libnbd() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    proc = subprocess.run([SYSTEM_PYTHON, "-c", "import nbd"], capture_output=True)
    return proc.returncode == 0


def run_libnbd(script: str, *args: str, timeout: float = 60) -> Any:
    """Run ``script`` under the system Python (where python3-libnbd lives); it prints JSON."""
    if not have_libnbd():
        pytest.skip("needs python3-libnbd (import nbd) under /usr/bin/python3")
    proc = subprocess.run(
        [SYSTEM_PYTHON, "-c", script, *args], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(f"libnbd script failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout)


def make_cert(tmp_path: Path, cn: str = "localhost") -> tuple[Path, Path]:
    """A self-signed x509 certificate and key (PEM) for TLS tests, made with cryptography."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
