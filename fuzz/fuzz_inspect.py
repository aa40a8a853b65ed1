"""Fuzz ``burrow inspect``'s parsers of files found inside an image: os-release, hostname,
fstab (matched against partitions), the ELF header of ``/bin/sh``, ``/boot`` and
``/lib/modules`` names, and the dpkg/apk package databases.

Input: fields, each a ``u16`` length and that many bytes, in this order: os-release,
hostname, fstab, the head of ``/bin/sh``, the package database, then kernel names (one per
line). A leading selector byte picks the package format (even: dpkg, odd: apk). The files go
into an in-memory filesystem and ``_inspect_root`` runs over it with a GPT-like list of
partitions, as ``inspect_disk`` does for every root it finds.

Seeds: this machine's own files (``/etc/os-release``, ``/etc/fstab``, ``/bin/sh``'s ELF
header, the head of ``/var/lib/dpkg/status``, ``/boot`` names) when present, plus fixed
samples of an fstab using every spec form.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from burrow.disk import FilesystemEntry
from burrow.errors import BurrowError
from burrow.fs.memfs import MemoryFilesystem
from burrow.fs.paths import PathFS
from burrow.inspect import _inspect_root
from burrow.volume.table import Partition

U16 = struct.Struct("<H")
FIELDS = ("/etc/os-release", "/etc/hostname", "/etc/fstab", "/bin/sh")
DATABASES = ("/var/lib/dpkg/status", "/lib/apk/db/installed")

_UUID = "0b4f6a2e-8c1d-4e5f-9a0b-1c2d3e4f5a6b"
_PARTUUID = "5D3C2B1A-0F9E-4D8C-B7A6-958473625140"
ENTRIES = [
    FilesystemEntry(
        number=1,
        partition=Partition(
            1,
            1 << 20,
            256 << 20,
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            "EFI System",
            name="EFI",
            uuid=_PARTUUID,
        ),
        size=256 << 20,
        fstype="vfat",
        label="ESP",
        uuid="1234-ABCD",
    ),
    FilesystemEntry(
        number=2,
        partition=Partition(
            2,
            257 << 20,
            1 << 30,
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "Linux filesystem",
            name="root",
        ),
        size=1 << 30,
        fstype="ext4",
        label="rootfs",
        uuid=_UUID,
        is_root=True,
    ),
]
FSTAB = f"""# <file system> <mount point> <type> <options> <dump> <pass>
UUID={_UUID} / ext4 errors=remount-ro 0 1
LABEL=ESP /boot/efi vfat umask=0077 0 1
PARTUUID={_PARTUUID.lower()} /efi vfat defaults 0 2
PARTLABEL=root /mnt/root ext4 defaults 0 0
/dev/disk/by-uuid/{_UUID} /srv ext4 defaults 0 0
/dev/disk/by-label/rootfs /x ext4 defaults 0 0
/dev/disk/by-partuuid/{_PARTUUID} /y vfat defaults 0 0
/dev/vda2 /home ext4 defaults 0 2
/dev/nvme0n1p1 /z vfat defaults 0 0
/swapfile none swap sw 0 0
proc /proc proc defaults 0 0
/my\\040dir /with\\011tab ext4 defaults
"""


def _pack(selector: int, fields: list[bytes]) -> bytes:
    return bytes([selector]) + b"".join(U16.pack(len(f)) + f for f in fields)


def _host(path: str, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def seeds(tmp_path: Path) -> list[bytes]:
    boot = "\n".join(
        sorted(n for n in os.listdir("/boot") if n.startswith("vmlinuz-"))
        if os.path.isdir("/boot")
        else []
    )
    kernels = (boot or "vmlinuz-6.1.0-13-amd64") + "\n6.1.0-13-amd64"
    dpkg = _host("/var/lib/dpkg/status", 4096) or (
        b"Package: bash\nStatus: install ok installed\nVersion: 5.2\n\n"
        b"Package: gone\nStatus: deinstall ok config-files\n"
    )
    host = [
        _host("/etc/os-release", 2048) or b'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n',
        _host("/etc/hostname", 256) or b"host\n",
        FSTAB.encode(),
        _host("/bin/sh", 64),
        dpkg,
        kernels.encode(),
    ]
    apk = b"C:Q1abc=\nP:musl\nV:1.2.4\n\nP:busybox\nV:1.36\n"
    alpine = b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.0\nPRETTY_NAME="Alpine"\n'
    big_endian_elf = b"\x7fELF\x02\x02\x01" + bytes(11) + b"\x00\x16" + bytes(44)
    return [
        _pack(0, host),
        _pack(1, [alpine, b"alpine", b"/dev/sda1 / ext4 rw 0 1\n", big_endian_elf, apk, b""]),
    ]


def _fields(data: bytes) -> list[bytes]:
    out: list[bytes] = []
    pos = 1
    while pos + 2 <= len(data) and len(out) < 6:
        (n,) = U16.unpack_from(data, pos)
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def _put(pfs: PathFS, path: str, data: bytes) -> None:
    pfs.makedirs(os.path.dirname(path), exist_ok=True)
    pfs.write_bytes(path, data)


def one_input(data: bytes) -> None:
    if not data:
        return
    fields = _fields(data)
    pfs = PathFS(MemoryFilesystem(capacity=1 << 20))
    for path, content in zip(FIELDS, fields, strict=False):
        _put(pfs, path, content)
    if len(fields) > 4:
        _put(pfs, DATABASES[data[0] & 1], fields[4])
    if len(fields) > 5:
        pfs.makedirs("/boot", exist_ok=True)
        for line in fields[5].decode("utf-8", "surrogateescape").splitlines()[:16]:
            try:
                if line.startswith("vmlinuz-"):
                    pfs.write_bytes("/boot/" + line, b"")
                else:
                    pfs.makedirs("/lib/modules/" + line, exist_ok=True)
            except BurrowError:
                pass  # not a valid name: the image could not hold it either
    report = _inspect_root(pfs, ENTRIES[1], ENTRIES)
    assert isinstance(report["fstab"], list)
