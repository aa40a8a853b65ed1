"""Find operating systems in a disk image, like ``virt-inspector`` (without booting anything).

For each filesystem that holds ``/etc/os-release`` (or ``/usr/lib/os-release``) we report:
the os-release fields (name, version, id...), the hostname, the architecture (from the ELF
header of ``/bin/sh``), the ``/etc/fstab`` mount map with each entry matched to a partition
of this disk (by UUID, LABEL, PARTUUID, PARTLABEL or device name), the installed kernels
(``/boot/vmlinuz-*`` and ``/lib/modules/*``) and the package format (dpkg, rpm, apk, pacman).

Everything is read through the same read-only path layer as ``burrow cat``; a damaged file
is reported as missing information, never as a crash.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any

from burrow.disk import Disk, FilesystemEntry
from burrow.errors import BurrowError
from burrow.fs.paths import PathFS

__all__ = ["inspect_disk", "parse_fstab", "parse_os_release"]

_ELF_MACHINES = {
    0x03: "i386",
    0x08: "mips",
    0x14: "ppc",
    0x15: "ppc64",
    0x16: "s390x",
    0x28: "arm",
    0x2B: "sparc64",
    0x32: "ia64",
    0x3E: "x86_64",
    0xB7: "aarch64",
    0xF3: "riscv64",
    0x102: "loongarch64",
}

_PACKAGE_FORMATS = [
    ("dpkg", "apt", "/var/lib/dpkg/status"),
    ("rpm", "dnf", "/var/lib/rpm"),
    ("rpm", "dnf", "/usr/lib/sysimage/rpm"),
    ("apk", "apk", "/lib/apk/db/installed"),
    ("pacman", "pacman", "/var/lib/pacman/local"),
]

MAX_TEXT = 1 << 20  # never read more than this of a config file
MAX_DATABASE = 64 << 20  # package databases larger than this (a hostile sparse file) are skipped


def parse_os_release(text: str) -> dict[str, str]:
    """``KEY=value`` lines with shell quoting, as os-release(5) describes."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value, posix=True)
        except ValueError:
            parts = [value.strip("\"'")]
        out[key.strip()] = parts[0] if parts else ""
    return out


def parse_fstab(text: str) -> list[dict[str, str]]:
    """fstab(5) lines -> ``{spec, mountpoint, fstype, options}`` (octal escapes decoded)."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2:
            continue

        def unescape(s: str) -> str:
            return s.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")

        entries.append(
            {
                "spec": unescape(fields[0]),
                "mountpoint": unescape(fields[1]),
                "fstype": fields[2] if len(fields) > 2 else "",
                "options": fields[3] if len(fields) > 3 else "defaults",
            }
        )
    return entries


def _read_text(pfs: PathFS, path: str) -> str | None:
    try:
        st = pfs.stat(path)
        if not st.is_file():
            return None
        with pfs.open(path, "rb") as f:
            data = f.read(MAX_TEXT)
        return bytes(data).decode("utf-8", "replace")
    except (BurrowError, OSError):
        return None


def _listdir(pfs: PathFS, path: str) -> list[str]:
    try:
        return sorted(pfs.listdir(path))
    except (BurrowError, OSError):
        return []


def _arch(pfs: PathFS) -> str | None:
    for path in ("/bin/sh", "/usr/bin/sh", "/bin/bash", "/bin/busybox", "/usr/bin/env"):
        try:
            with pfs.open(path, "rb") as f:
                head = f.read(20)
        except (BurrowError, OSError):
            continue
        if len(head) >= 20 and head[:4] == b"\x7fELF":
            if head[5] == 1:
                machine = int.from_bytes(head[18:20], "little")
            else:
                machine = int.from_bytes(head[18:20], "big")
            return _ELF_MACHINES.get(machine, f"elf-machine-{machine:#x}")
    return None


def _kernels(pfs: PathFS) -> list[dict[str, Any]]:
    versions: dict[str, dict[str, Any]] = {}
    for name in _listdir(pfs, "/boot"):
        if name.startswith(("vmlinuz-", "vmlinux-")):
            v = name.split("-", 1)[1]
            versions.setdefault(v, {"version": v, "image": None, "modules": False})
            versions[v]["image"] = posixpath.join("/boot", name)
    for base in ("/lib/modules", "/usr/lib/modules"):
        for v in _listdir(pfs, base):
            if pfs.is_dir(posixpath.join(base, v)):
                versions.setdefault(v, {"version": v, "image": None, "modules": False})
                versions[v]["modules"] = True
                if versions[v]["image"] is None and pfs.exists(posixpath.join(base, v, "vmlinuz")):
                    versions[v]["image"] = posixpath.join(base, v, "vmlinuz")
    return [versions[k] for k in sorted(versions)]


def _packages(pfs: PathFS) -> dict[str, Any] | None:
    for fmt, tool, path in _PACKAGE_FORMATS:
        if pfs.lexists(path):
            info: dict[str, Any] = {"format": fmt, "management": tool, "database": path}
            if fmt == "dpkg":
                text = _read_text_whole(pfs, path)
                if text is not None:
                    info["count"] = sum(
                        1
                        for block in text.split("\n\n")
                        if "\nStatus: install ok installed" in "\n" + block
                    )
            elif fmt == "apk":
                text = _read_text_whole(pfs, path)
                if text is not None:
                    info["count"] = sum(1 for line in text.splitlines() if line.startswith("P:"))
            elif fmt == "pacman":
                info["count"] = len(_listdir(pfs, path))
            return info
    return None


def _read_text_whole(pfs: PathFS, path: str) -> str | None:
    try:
        if pfs.stat(path).st_size > MAX_DATABASE:
            return None  # i_size comes from the image: never allocate what it claims
        return pfs.read_bytes(path).decode("utf-8", "replace")
    except (BurrowError, OSError):
        return None


def _match(spec: str, entries: list[FilesystemEntry]) -> FilesystemEntry | None:
    key, _, value = spec.partition("=")
    for e in entries:
        p = e.partition
        if key == "UUID" and e.uuid and e.uuid.lower() == value.lower():
            return e
        if key == "LABEL" and e.label and e.label == value:
            return e
        if p is not None and key == "PARTUUID" and p.uuid and p.uuid.lower() == value.lower():
            return e
        if p is not None and key == "PARTLABEL" and p.name == value:
            return e
    if spec.startswith("/dev/disk/by-uuid/"):
        return _match("UUID=" + spec.rsplit("/", 1)[1], entries)
    if spec.startswith("/dev/disk/by-label/"):
        return _match("LABEL=" + spec.rsplit("/", 1)[1], entries)
    if spec.startswith("/dev/disk/by-partuuid/"):
        return _match("PARTUUID=" + spec.rsplit("/", 1)[1], entries)
    if spec.startswith("/dev/"):
        # /dev/sda2, /dev/vda2, /dev/nvme0n1p2, /dev/mmcblk0p2: trailing partition number
        digits = ""
        for ch in reversed(spec):
            if ch not in "0123456789":  # str.isdigit() accepts "²", which int() refuses
                break
            digits = ch + digits
        if digits:
            for e in entries:
                if e.partition is not None and e.number == int(digits):
                    return e
    return None


def _inspect_root(
    pfs: PathFS, entry: FilesystemEntry, entries: list[FilesystemEntry]
) -> dict[str, Any]:
    text = _read_text(pfs, "/etc/os-release") or _read_text(pfs, "/usr/lib/os-release") or ""
    rel = parse_os_release(text)
    hostname = None
    host_text = _read_text(pfs, "/etc/hostname")
    if host_text:
        first = host_text.strip().splitlines()
        hostname = first[0].strip() if first else None
    mounts = []
    fstab = _read_text(pfs, "/etc/fstab")
    for fe in parse_fstab(fstab or ""):
        if fe["fstype"] in ("swap", "proc", "sysfs", "tmpfs", "devpts") and fe["mountpoint"] != "/":
            target = None
        else:
            target = _match(fe["spec"], entries)
        mounts.append(
            {
                **fe,
                "partition": target.number if target is not None else None,
                "found": target is not None,
            }
        )
    return {
        "root": entry.number,
        "root_fstype": entry.fstype,
        "root_uuid": entry.uuid,
        "name": rel.get("NAME"),
        "pretty_name": rel.get("PRETTY_NAME"),
        "id": rel.get("ID"),
        "id_like": rel.get("ID_LIKE"),
        "version": rel.get("VERSION"),
        "version_id": rel.get("VERSION_ID"),
        "version_codename": rel.get("VERSION_CODENAME"),
        "hostname": hostname,
        "arch": _arch(pfs),
        "fstab": mounts,
        "kernels": _kernels(pfs),
        "packages": _packages(pfs),
    }


def inspect_disk(disk: Disk) -> dict[str, Any]:
    """Every operating system found on ``disk`` (usually one) plus the filesystems seen."""
    entries = disk.filesystems()
    systems = []
    from burrow.fs.probe import open_filesystem

    for e in entries:
        if e.fstype is None or e.error or e.fstype not in ("ext2", "ext3", "ext4", "vfat"):
            continue
        try:
            fs = open_filesystem(disk.device(e.number), readonly=True)
        except BurrowError:
            continue
        try:
            pfs = PathFS(fs)
            if pfs.lexists("/etc/os-release") or pfs.lexists("/usr/lib/os-release"):
                systems.append(_inspect_root(pfs, e, entries))
        finally:
            fs.close()
    return {
        "operating_systems": systems,
        "filesystems": [
            {"number": e.number, "fstype": e.fstype, "label": e.label, "uuid": e.uuid}
            for e in entries
        ],
    }
