"""Names from a hostile image cannot drive the user's terminal: on a terminal, control
characters print as ``?`` (as ``ls -q``); through a pipe the real name comes out."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from images import make_ext4

EVIL = "a\x1b[31mred\x07"


def _on_a_terminal(*args: str) -> tuple[bytes, bytes]:
    """Run burrow with stdout and stderr on a pseudo-terminal; returns (output, exit code)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "burrow", *args], stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO once the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    proc.wait(timeout=60)
    return b"".join(chunks), str(proc.returncode).encode()


@pytest.mark.tool("mkfs.ext4")
def test_listing_escapes_on_a_terminal_and_not_in_a_pipe(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / EVIL).write_text("x")
    image = make_ext4(tmp_path / "img", tree, size="16M")
    for args in (["ls", f"{image}:/d"], ["ls", "-l", f"{image}:/d"], ["tree", f"{image}:/"]):
        out, code = _on_a_terminal(*args)
        assert code == b"0", out
        assert b"\x1b" not in out and b"\x07" not in out, (args, out)
        assert b"a?[31mred?" in out, (args, out)
    out, code = _on_a_terminal("stat", f"{image}:/d/{EVIL}")
    assert b"\x1b" not in out and b"a?[31mred?" in out
    # errors name the path safely too
    out, code = _on_a_terminal("cat", f"{image}:/d/{EVIL}x")
    assert code == b"3" and b"\x1b" not in out
    piped = subprocess.run(
        [sys.executable, "-m", "burrow", "ls", f"{image}:/d"],
        capture_output=True,
        check=True,
    ).stdout
    assert piped == EVIL.encode() + b"\n"
