"""Make test images with the real tools (mkfs.*, qemu-img, sgdisk, sfdisk, mtools).

Every helper writes into a directory the caller owns (normally pytest's ``tmp_path``) and
skips the test when its tool is missing. Images come from real tools so that tests check
burrow against what the world produces, not against burrow's own writer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest


def run(cmd: Sequence[str | os.PathLike[str]], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output when it fails."""
    tool = os.fspath(cmd[0])
    if shutil.which(tool) is None:
        pytest.skip(f"needs the external tool {tool!r} (see scripts/setup.sh)")
    proc = subprocess.run(
        [os.fspath(c) for c in cmd],
        capture_output=True,
        text=True,
        check=False,
        **kw,  # type: ignore[call-overload]
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def make_tree(root: Path) -> Path:
    """A small but varied host tree: nested dirs, a symlink, a hard link, a sparse file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "hostname").write_text("burrow-demo\n")
    (root / "etc" / "os-release").write_text('NAME="Burrow Demo"\nID=burrow\nVERSION_ID="1"\n')
    (root / "dir" / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    (root / "dir" / "sub" / "deeper" / "file.txt").write_text("deep\n")
    (root / "big.bin").write_bytes(os.urandom(300_000))
    with open(root / "sparse.bin", "wb") as f:
        f.seek(5_000_000)
        f.write(b"end")
    if not (root / "link").is_symlink():
        os.symlink("etc/hostname", root / "link")
        os.link(root / "etc" / "hostname", root / "hardlink")
    return root


def make_raw(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def make_ext4(
    path: Path,
    source: Path | None = None,
    *,
    size: str = "64M",
    fstype: str = "ext4",
    options: Sequence[str] = (),
) -> Path:
    """``mkfs.<fstype> -d source`` into a new image file."""
    cmd: list[str | os.PathLike[str]] = [f"mkfs.{fstype}", "-q", "-F", *options]
    if source is not None:
        cmd += ["-d", source]
    cmd += [path, size]
    run(cmd)
    return path


def make_fat(
    path: Path,
    source: Path | None = None,
    *,
    size_kib: int = 65536,
    fat_bits: int | None = None,
    label: str | None = None,
) -> Path:
    """``mkfs.fat`` then ``mcopy -s`` the source tree's contents in."""
    make_raw(path, size_kib * 1024)
    cmd: list[str | os.PathLike[str]] = ["mkfs.fat"]
    if fat_bits:
        cmd += ["-F", str(fat_bits)]
    if label:
        cmd += ["-n", label]
    run([*cmd, path])
    if source is not None:
        entries = sorted(source.iterdir())
        if entries:
            run(["mcopy", "-s", "-p", "-i", path, *entries, "::/"])
    return path


def qemu_img(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return run(["qemu-img", *args])


def make_gpt(path: Path, size: int, partitions: Sequence[Sequence[str]]) -> Path:
    """A raw image with a GPT written by ``sgdisk``.

    Each partition is a list of sgdisk option values for ``-n``, ``-t`` and ``-c``, e.g.
    ``("1:2048:+1M", "1:ef00", "1:ESP")``; empty strings are skipped.
    """
    make_raw(path, size)
    cmd: list[str | os.PathLike[str]] = ["sgdisk", "-o"]
    for part in partitions:
        for flag, value in zip(("-n", "-t", "-c"), part, strict=False):
            if value:
                cmd += [flag, value]
    run([*cmd, path])
    return path


def make_mbr(path: Path, size: int, script: str) -> Path:
    """A raw image with an MBR written by ``sfdisk`` from an sfdisk script (``label: dos``...)."""
    make_raw(path, size)
    run(["sfdisk", "-q", path], input=script)
    return path
