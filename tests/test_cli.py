"""The CLI starts light, reports errors as one line with the documented exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from burrow import errors

HEAVY = ("burrow.fs.ext4", "burrow.fs.fat", "cryptography", "pyfuse3", "trio", "rich", "fsspec")


def _imported_modules(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "burrow", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    mods = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            mods.add(line.rsplit("|", 1)[1].strip())
    assert "burrow.cli.main" in mods, "importtime output not understood"
    return mods


@pytest.mark.parametrize("args", [("--help",), ("--version",)])
def test_help_and_version_start_light(args: tuple[str, ...]) -> None:
    mods = _imported_modules(*args)
    heavy = sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert not heavy, f"burrow {' '.join(args)} imported heavy modules: {heavy}"


def test_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "burrow", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "version" in out and "exit codes" in out


def test_version_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "burrow", "version", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out)
    import burrow

    assert data["version"] == burrow.__version__


def test_unknown_command_is_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "burrow", "no-such-command"], capture_output=True, text=True
    )
    assert proc.returncode == errors.EXIT_USAGE
    assert "unknown command" in proc.stderr


def test_errors_subclass_builtins() -> None:
    e = errors.NotFound(path="/etc/x")
    assert isinstance(e, FileNotFoundError) and isinstance(e, errors.BurrowError)
    assert e.errno == 2 and e.filename == "/etc/x"
    assert isinstance(errors.Exists(), FileExistsError)
    assert isinstance(errors.IsADirectory(), IsADirectoryError)
    assert isinstance(errors.NotADirectory(), NotADirectoryError)
    assert isinstance(errors.PermissionDenied(), PermissionError)
    c = errors.CorruptImage("ext4 superblock", 1024, "bad magic")
    assert c.structure == "ext4 superblock" and c.offset == 1024
    assert "1024" in str(c) and "bad magic" in str(c)
    assert errors.Unsupported("encrypt").feature == "encrypt"
    assert issubclass(errors.RemoteProtocolError, errors.ProtocolError)
    assert issubclass(errors.LocalProtocolError, errors.ProtocolError)
    assert type(errors.error_for_errno(39)) is errors.NotEmpty
    assert errors.error_for_errno(39).errno == 39
