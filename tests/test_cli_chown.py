"""``burrow chown`` drops privileges as chown(2) does in the kernel: set-user-ID, group-
executable set-group-ID and file capabilities go; checked against a kernel loop mount."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from images import make_ext4

CAP = bytes.fromhex("01000002" + "00200000" + "00000000" + "00000000" + "00000000")


def _make(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir(parents=True)
    for name, mode in (("suid", 0o4755), ("sgid", 0o2755), ("sgid-nox", 0o2745), ("cap", 0o755)):
        (tree / name).write_bytes(b"#!/bin/true\n")
        os.chmod(tree / name, mode)
    (tree / "dir").mkdir()
    os.chmod(tree / "dir", 0o2775)
    image = make_ext4(tmp_path / "img", tree, size="16M")
    subprocess.run(
        ["debugfs", "-w", "-R", f"ea_set -r /cap security.capability {CAP.hex()}", str(image)],
        capture_output=True,
        check=False,
    )
    return image


def _state(image: Path) -> dict[str, tuple[int, bool]]:
    import burrow

    out = {}
    with burrow.open(image) as disk:
        fs = disk.mount()
        for name in ("suid", "sgid", "sgid-nox", "cap", "dir"):
            st = fs.lstat("/" + name)
            out[name] = (
                stat.S_IMODE(st.st_mode),
                "security.capability" in fs.listxattr("/" + name),
            )
    return out


@pytest.mark.tool("mkfs.ext4", "debugfs", "e2fsck")
def test_chown_drops_setid_bits_and_capabilities(tmp_path: Path) -> None:
    image = _make(tmp_path)
    before = _state(image)
    if not before["cap"][1]:
        pytest.skip("debugfs could not set security.capability (needs ea_set -r)")
    args = [f"{image}:/{n}" for n in ("suid", "sgid", "sgid-nox", "cap", "dir")]
    proc = subprocess.run(
        [sys.executable, "-m", "burrow", "chown", "1000:1000", *args],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    after = _state(image)
    assert after == {
        "suid": (0o755, False),
        "sgid": (0o755, False),
        "sgid-nox": (0o2745, False),  # not group-executable: mandatory-locking style, kept
        "cap": (0o755, False),
        "dir": (0o2775, False),  # directories keep set-group-ID
    }
    subprocess.run(["e2fsck", "-fn", str(image)], check=True, capture_output=True)


@pytest.mark.root
@pytest.mark.tool("mkfs.ext4", "debugfs")
def test_same_result_as_the_kernel(tmp_path: Path) -> None:
    ours = _make(tmp_path / "a")
    theirs = tmp_path / "kernel.img"
    shutil.copy(ours, theirs)
    args = [f"{ours}:/{n}" for n in ("suid", "sgid", "sgid-nox", "cap", "dir")]
    subprocess.run([sys.executable, "-m", "burrow", "chown", "1000:1000", *args], check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(theirs), str(mnt)], check=True)
    try:
        for n in ("suid", "sgid", "sgid-nox", "cap", "dir"):
            os.chown(mnt / n, 1000, 1000)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert _state(ours) == _state(theirs)
