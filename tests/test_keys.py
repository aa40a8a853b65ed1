"""Key files, the key CLI, the peers file and the known-servers file."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from burrow.errors import AuthenticationError, Exists, PermissionDenied, UsageError
from burrow.share.keys import (
    KnownServers,
    decode_key,
    encode_key,
    generate_key_file,
    load_peers,
    load_private_key,
    resolve_private_key,
    resolve_server_key,
)


def _burrow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "burrow", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _openssl_public(private: bytes, tmp_path: Path) -> bytes | None:
    """The public key as OpenSSL computes it (an independent oracle)."""
    # PKCS#8 DER prefix for an X25519 private key (RFC 8410).
    der = bytes.fromhex("302e020100300506032b656e04220420") + private
    src = tmp_path / "k.der"
    src.write_bytes(der)
    res = subprocess.run(
        ["openssl", "pkey", "-inform", "DER", "-in", str(src), "-pubout", "-outform", "DER"],
        capture_output=True,
    )
    src.unlink()
    if res.returncode:
        return None
    return res.stdout[-32:]


@pytest.mark.tool("openssl")
def test_key_gen_cli(tmp_path: Path) -> None:
    path = tmp_path / "server.key"
    res = _burrow("key", "gen", str(path))
    assert res.returncode == 0, res.stderr
    public_b64 = res.stdout.strip().splitlines()[-1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    private = base64.b64decode(path.read_text().strip(), validate=True)
    assert len(private) == 32
    assert _openssl_public(private, tmp_path) == base64.b64decode(public_b64)
    # pub prints the same key
    res = _burrow("key", "pub", str(path))
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1] == public_b64
    # refuse to overwrite
    before = path.read_bytes()
    res = _burrow("key", "gen", str(path))
    assert res.returncode == 3 and "exists" in res.stderr
    assert path.read_bytes() == before


def test_key_gen_refuses_symlink_and_keeps_umask_out(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(Exists):
        generate_key_file(tmp_path / "link")
    assert not target.exists()
    old = os.umask(0)
    try:
        generate_key_file(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_load_private_key_checks(tmp_path: Path) -> None:
    path = tmp_path / "k"
    pair = generate_key_file(path)
    assert load_private_key(path) == pair
    path.chmod(0o644)
    with pytest.raises(PermissionDenied):
        load_private_key(path)
    path.chmod(0o600)
    path.write_text("not base64!\n")
    with pytest.raises(UsageError):
        load_private_key(path)
    path.write_text(encode_key(bytes(31)) + "\n")
    with pytest.raises(UsageError):
        load_private_key(path)
    with pytest.raises(UsageError):
        load_private_key(tmp_path / "missing")


def test_resolve_private_key_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pair = generate_key_file(tmp_path / "k")
    monkeypatch.setenv("BURROW_KEY", str(tmp_path / "k"))
    assert resolve_private_key(None) == pair
    monkeypatch.delenv("BURROW_KEY")
    with pytest.raises(UsageError):
        resolve_private_key(None)


def test_peers_file(tmp_path: Path) -> None:
    a, b = os.urandom(32), os.urandom(32)
    path = tmp_path / "peers.toml"
    path.write_text(
        f"""
[[peer]]
name = "alice"
key = "{encode_key(a)}"
exports = {{ data = "rw", photos = "ro" }}

[[peer]]
name = "bob"
key = "{encode_key(b)}"
psk = "{encode_key(bytes(32))}"
"""
    )
    peers = load_peers(path)
    assert len(peers) == 2
    alice = peers.get(a)
    assert alice is not None and alice.access("data") == "rw" and alice.access("photos") == "ro"
    assert alice.access("other") is None and alice.psk is None
    bob = peers.get(b)
    assert bob is not None and bob.exports == {} and bob.psk == bytes(32)
    assert peers.get(os.urandom(32)) is None


@pytest.mark.parametrize(
    "body",
    [
        '[[peer]]\nname = "a"\nkey = "short"\n',
        '[[peer]]\nname = "a"\nkey = "{k}"\nexports = {{ d = "rwx" }}\n',
        '[[peer]]\nname = "a"\nkey = "{k}"\n[[peer]]\nname = "b"\nkey = "{k}"\n',
        '[[peer]]\nname = "a"\nkey = "{k}"\ncolour = "red"\n',
        '[[peer]]\nkey = "{k}"\n',
        "peer = 3\n",
        "[[peer]\n",
    ],
)
def test_bad_peers_file(tmp_path: Path, body: str) -> None:
    path = tmp_path / "peers.toml"
    path.write_text(body.format(k=encode_key(os.urandom(32))))
    with pytest.raises(UsageError):
        load_peers(path)


def test_known_servers_pinning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BURROW_SERVER_KEY", raising=False)
    known = KnownServers(tmp_path / "cfg" / "known_servers")
    k1, k2 = os.urandom(32), os.urandom(32)
    assert resolve_server_key("h:1", known=known) is None
    known.add("h:1", k1)
    known.add("h:1", k1)  # idempotent
    assert resolve_server_key("h:1", known=known) == k1
    with pytest.raises(AuthenticationError):
        known.add("h:1", k2)  # a changed key is never silently accepted
    assert resolve_server_key("h:1", encode_key(k2), known=known) == k2  # explicit wins
    monkeypatch.setenv("BURROW_SERVER_KEY", encode_key(k2))
    assert resolve_server_key("h:1", known=known) == k2
    assert (tmp_path / "cfg" / "known_servers").read_text().count("\n") == 1


def test_decode_key_rejects_garbage() -> None:
    for text in ["", "====", "a" * 44, encode_key(bytes(33))]:
        with pytest.raises(UsageError):
            decode_key(text)
