"""Key files, the server's peers file and the client's known-servers file.

Why WireGuard's habits: a private key is one line of base64 in a file only its owner can read,
a public key is one line of base64 you can paste anywhere, and the server's list of who may
connect is a small config file keyed by public key. Nothing here talks to the network.

* Private key file: ``base64(32 bytes)\\n``, mode 0600, never overwritten. Loading refuses a
  file that group or others can read (as ssh does), so a leaked key is noticed.
* Peers file (TOML)::

      [[peer]]
      name = "alice"
      key = "<base64 public key>"
      exports = { data = "rw", photos = "ro" }
      psk = "<base64 32 bytes>"        # optional: Noise IKpsk2 with this pre-shared key

* Known-servers file: one ``HOST:PORT BASE64KEY`` per line (``#`` comments), like ssh's
  ``known_hosts``. A server not listed is refused unless trust on first use is asked for.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from burrow.errors import AuthenticationError, Exists, PermissionDenied, UsageError
from burrow.proto.noise import DHLEN, KeyPair

__all__ = [
    "KnownServers",
    "Peer",
    "Peers",
    "decode_key",
    "encode_key",
    "generate_key_file",
    "load_peers",
    "load_private_key",
    "resolve_private_key",
    "resolve_server_key",
]

MAX_KEY_FILE = 4096
MAX_PEERS_FILE = 4 << 20
ACCESS_MODES = ("ro", "rw")


def encode_key(raw: bytes) -> str:
    """32 raw bytes -> the base64 text WireGuard uses (44 characters)."""
    return base64.b64encode(raw).decode("ascii")


def decode_key(text: str, *, what: str = "key") -> bytes:
    """Base64 text -> 32 raw bytes; anything else is a :class:`UsageError`."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UsageError(f"{what} is not valid base64") from exc
    if len(raw) != DHLEN:
        raise UsageError(f"{what} must decode to {DHLEN} bytes, not {len(raw)}")
    return raw


def generate_key_file(path: str | os.PathLike[str]) -> KeyPair:
    """Write a new private key to ``path`` (mode 0600, refusing to overwrite anything)."""
    pair = KeyPair.generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError as exc:
        raise Exists(
            f"{os.fspath(path)} exists; refusing to overwrite a key", path=str(path)
        ) from exc
    try:
        os.fchmod(fd, 0o600)  # the umask cannot widen it, but make sure
        os.write(fd, (encode_key(pair.private) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return pair


def load_private_key(path: str | os.PathLike[str], *, check_mode: bool = True) -> KeyPair:
    """Read a private key file written by :func:`generate_key_file` (or ``wg genkey``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise UsageError(f"no key file at {os.fspath(path)}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{os.fspath(path)} is not a regular file")
        if check_mode and st.st_mode & 0o077:
            raise PermissionDenied(
                f"private key {os.fspath(path)} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it",
                path=str(path),
            )
        data = os.read(fd, MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE:
        raise UsageError(f"{os.fspath(path)} is too large to be a key file")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{os.fspath(path)} is not a base64 key file") from exc
    return KeyPair.from_private(decode_key(text, what=f"private key in {os.fspath(path)}"))


def resolve_private_key(key: str | os.PathLike[str] | KeyPair | None) -> KeyPair:
    """The client's key: an explicit file (``--key``) or the file named by ``BURROW_KEY``."""
    if isinstance(key, KeyPair):
        return key
    if key is None:
        key = os.environ.get("BURROW_KEY")
        if not key:
            raise UsageError("no private key: pass --key FILE or set BURROW_KEY")
    return load_private_key(key)


# -- peers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    name: str
    key: bytes
    exports: Mapping[str, str] = field(default_factory=dict)  # export name -> "ro" | "rw"
    psk: bytes | None = None

    def access(self, export: str) -> str | None:
        """``"ro"``, ``"rw"`` or ``None`` (no access) for ``export``."""
        return self.exports.get(export)


@dataclass(frozen=True)
class Peers:
    by_key: Mapping[bytes, Peer]

    def get(self, key: bytes) -> Peer | None:
        return self.by_key.get(key)

    def __len__(self) -> int:
        return len(self.by_key)


def load_peers(path: str | os.PathLike[str]) -> Peers:
    """Parse and validate the peers file; every mistake is a :class:`UsageError` naming it."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as exc:
        raise UsageError(f"no peers file at {p}") from exc
    if len(data) > MAX_PEERS_FILE:
        raise UsageError(f"peers file {p} is too large")
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"peers file {p}: {exc}") from exc
    unknown = set(doc) - {"peer"}
    if unknown:
        raise UsageError(f"peers file {p}: unknown top-level keys {sorted(unknown)}")
    entries = doc.get("peer", [])
    if not isinstance(entries, list):
        raise UsageError(f"peers file {p}: 'peer' must be an array of tables ([[peer]])")
    by_key: dict[bytes, Peer] = {}
    names: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"peers file {p}, peer #{i + 1}"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: not a table")
        extra = set(entry) - {"name", "key", "exports", "psk"}
        if extra:
            raise UsageError(f"{where}: unknown keys {sorted(extra)}")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise UsageError(f"{where}: 'name' must be a non-empty string")
        key_text = entry.get("key")
        if not isinstance(key_text, str):
            raise UsageError(f"{where} ({name}): 'key' must be a base64 string")
        key = decode_key(key_text, what=f"{where} ({name}) key")
        exports = entry.get("exports", {})
        if not isinstance(exports, dict):
            raise UsageError(f"{where} ({name}): 'exports' must be a table")
        for export, mode in exports.items():
            if mode not in ACCESS_MODES:
                raise UsageError(f"{where} ({name}): export {export!r} must be 'ro' or 'rw'")
        psk_text = entry.get("psk")
        psk = None
        if psk_text is not None:
            if not isinstance(psk_text, str):
                raise UsageError(f"{where} ({name}): 'psk' must be a base64 string")
            psk = decode_key(psk_text, what=f"{where} ({name}) psk")
        if key in by_key:
            raise UsageError(f"{where}: key already listed for peer {by_key[key].name!r}")
        if name in names:
            raise UsageError(f"{where}: duplicate peer name {name!r}")
        names.add(name)
        by_key[key] = Peer(name, key, dict(exports), psk)
    return Peers(by_key)


# -- known servers ---------------------------------------------------------------------------


def default_known_servers_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "burrow" / "known_servers"


class KnownServers:
    """Pinned server keys: ``HOST:PORT BASE64KEY`` per line."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_known_servers_path()

    def _entries(self) -> list[tuple[str, bytes]]:
        try:
            text = self.path.read_text("utf-8")
        except FileNotFoundError:
            return []
        except UnicodeDecodeError as exc:
            raise UsageError(f"known-servers file {self.path} is not UTF-8 text") from exc
        out = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise UsageError(f"{self.path}:{lineno}: expected 'HOST:PORT KEY'")
            out.append((parts[0], decode_key(parts[1], what=f"{self.path}:{lineno} key")))
        return out

    def lookup(self, hostport: str) -> bytes | None:
        for name, key in self._entries():
            if name == hostport:
                return key
        return None

    def add(self, hostport: str, key: bytes) -> None:
        """Pin ``key`` for ``hostport``; refuses to replace a different pinned key."""
        if any(c.isspace() for c in hostport) or not hostport:
            raise UsageError(f"bad server address {hostport!r}")
        old = self.lookup(hostport)
        if old is not None:
            if old != key:
                raise AuthenticationError(
                    f"{hostport} is pinned to a different key in {self.path}; "
                    "remove the line yourself if the server's key really changed"
                )
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{hostport} {encode_key(key)}\n")


def resolve_server_key(
    hostport: str,
    server_key: str | bytes | None = None,
    *,
    known: KnownServers | None = None,
) -> bytes | None:
    """The server's public key: explicit (``--server-key``), ``BURROW_SERVER_KEY``, or the
    known-servers file. ``None`` when none of them has it (the caller may then do TOFU)."""
    if isinstance(server_key, bytes):
        if len(server_key) != DHLEN:
            raise UsageError("server key must be 32 bytes")
        return server_key
    if server_key:
        return decode_key(server_key, what="server key")
    env = os.environ.get("BURROW_SERVER_KEY")
    if env:
        return decode_key(env, what="BURROW_SERVER_KEY")
    return (known or KnownServers()).lookup(hostport)
