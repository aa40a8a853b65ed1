"""Fuzz the whole-disk path a user takes on an unknown image: ``burrow.open`` (format
detection), the partition table, filesystem probing on every partition
(``Disk.filesystems``: each driver's probe, label, UUID, usage), ``burrow inspect``
(``inspect_disk``: mounts every ext/FAT root and reads os-release, fstab, ``/bin/sh``...),
and a mount of the default filesystem with a short walk.

Input (as in ``fuzz_partitions``, so mutations land on metadata, not on zeros): a u32 disk
size in 512-byte sectors, then records of a u32 sector number and the 512 bytes to put
there. Seeds are the non-zero sectors of small disks made by the real tools: an ``sgdisk``
GPT disk holding a ``mkfs.fat`` ESP and an ``mkfs.ext4 -d`` root with os-release and fstab,
and an ``sfdisk`` DOS disk holding a FAT12 volume filled by ``mcopy``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import burrow
from burrow.errors import BurrowError
from burrow.inspect import inspect_disk

SECTOR = 512
RECORD = 4 + SECTOR
MAX_SECTORS = 1 << 15  # 16 MiB, sparse
REGIONS = [(0, 4), (8 + 446, 66), (4 + RECORD + 4, 96), (4 + 2 * RECORD + 4, 256)]
_DIR: str | None = None


def _workfile() -> str:
    global _DIR
    if _DIR is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        _DIR = tempfile.mkdtemp(prefix="burrow-fuzz-disk-", dir=base)
        atexit.register(shutil.rmtree, _DIR, True)
    return os.path.join(_DIR, "disk.img")


def encode(image: bytes) -> bytes:
    out = [struct.pack("<I", len(image) // SECTOR)]
    view = memoryview(image)
    zero = bytes(SECTOR)
    for n in range(len(image) // SECTOR):
        chunk = view[n * SECTOR : (n + 1) * SECTOR]
        if chunk != zero:
            out.append(struct.pack("<I", n) + bytes(chunk))
    return b"".join(out)


def _run(*argv: str | Path, **kw: object) -> None:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC", "E2FSPROGS_FAKE_TIME": "1700000000"}
    subprocess.run([os.fspath(a) for a in argv], check=True, capture_output=True, env=env, **kw)  # type: ignore[call-overload]


def seeds(tmp_path: Path) -> list[bytes]:
    tools = ("sgdisk", "sfdisk", "mkfs.fat", "mcopy", "mkfs.ext4")
    if any(shutil.which(t) is None for t in tools):
        import pytest

        pytest.skip(f"needs {', '.join(tools)}")
    src = tmp_path / "root"
    (src / "etc").mkdir(parents=True, exist_ok=True)
    (src / "etc" / "os-release").write_text('NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n')
    (src / "etc" / "hostname").write_text("fuzzhost\n")
    (src / "etc" / "fstab").write_text(
        "LABEL=root / ext4 defaults 0 1\nPARTLABEL=ESP /boot/efi vfat umask=0077 0 2\n"
        "/dev/sda3 /srv ext4 defaults 0 0\n"
    )
    (src / "bin").mkdir(exist_ok=True)
    (src / "bin" / "sh").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + b"\x3e\x00" + bytes(44))
    gpt = tmp_path / "gpt.img"
    with open(gpt, "wb") as f:
        f.truncate(8 << 20)
    _run("sgdisk", "-o", "-n", "1:2048:+2M", "-t", "1:ef00", "-c", "1:ESP",
         "-n", "2:0:+4M", "-t", "2:8300", "-c", "2:root", gpt)  # fmt: skip
    _run("mkfs.fat", "-F", "12", "-n", "ESP", "--offset", "2048", gpt, "2048")
    (tmp_path / "boot.cfg").write_text("timeout 3\n")
    _run("mcopy", "-i", f"{gpt}@@{2048 * SECTOR}", tmp_path / "boot.cfg", "::/boot.cfg")
    _run("mkfs.ext4", "-q", "-F", "-b", "1024", "-N", "32", "-O", "^has_journal", "-L", "root",
         "-E", f"offset={6144 * SECTOR}", "-d", src, gpt, "4M")  # fmt: skip
    dos = tmp_path / "dos.img"
    with open(dos, "wb") as f:
        f.truncate(4 << 20)
    _run("sfdisk", "-q", dos, input=b"label: dos\nstart=2048, size=3M, type=c, bootable\n")
    _run("mkfs.fat", "-F", "12", "-n", "DOSVOL", "--offset", "2048", dos, "3072")
    _run("mcopy", "-s", "-i", f"{dos}@@{2048 * SECTOR}", src / "etc", "::/")
    return [encode(gpt.read_bytes()), encode(dos.read_bytes())]


def _write(data: bytes) -> str | None:
    if len(data) < 4:
        return None
    (sectors,) = struct.unpack_from("<I", data)
    sectors = max(1, min(sectors, MAX_SECTORS))
    path = _workfile()
    with open(path, "wb") as f:
        f.truncate(sectors * SECTOR)
        for pos in range(4, len(data) - RECORD + 1, RECORD):
            (n,) = struct.unpack_from("<I", data, pos)
            if n < sectors:
                f.seek(n * SECTOR)
                f.write(data[pos + 4 : pos + RECORD])
    return path


def one_input(data: bytes) -> None:
    path = _write(data)
    if path is None:
        return
    with burrow.open(path) as disk:
        for step in (lambda: disk.partitions, disk.filesystems, lambda: inspect_disk(disk)):
            try:
                step()
            except BurrowError:
                pass
        pfs = disk.mount()
        for name in pfs.listdir("/")[:32]:
            try:
                st = pfs.lstat("/" + name)
                if st.is_file():
                    with pfs.open("/" + name, "rb") as f:
                        f.read(4096)
            except BurrowError:
                pass
