"""Partition type names: GPT type GUIDs, MBR type bytes, and the short aliases the CLI takes.

Names follow util-linux ``fdisk``/``sfdisk`` so that ``burrow part list`` and ``fdisk -l``
read the same. GUIDs come from the UEFI spec, the Discoverable Partitions Specification and
the GPT fdisk type list.
"""

from __future__ import annotations

import re
import uuid

from burrow.errors import UsageError

__all__ = [
    "GPT_TYPES",
    "MBR_TYPES",
    "gpt_type_name",
    "mbr_type_name",
    "resolve_gpt_type",
    "resolve_mbr_type",
]

# Upper-case GUID -> name.
GPT_TYPES: dict[str, str] = {
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
    "024DEE41-33E7-11D3-9D69-0008C781F39F": "MBR partition scheme",
    "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
    "933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
    "3B8F8425-20E0-4F3B-907F-1A25A76F98E8": "Linux server data",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
    "44479540-F297-41B2-9AF7-D131D5F0458A": "Linux root (x86)",
    "B921B045-1DF0-41C3-AF44-4C6F280D3FAE": "Linux root (ARM-64)",
    "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3": "Linux root (ARM)",
    "72EC70A6-CF74-40E6-BD49-4BDA08E8F224": "Linux root (RISC-V-64)",
    "8484680C-9521-48C6-9C11-B0720656F69E": "Linux /usr (x86-64)",
    "B0E01050-EE5F-4390-949A-9101B17104E9": "Linux /usr (ARM-64)",
    "4D21B016-B534-45C2-A9FB-5C16E091FD2D": "Linux variable data",
    "7EC6F557-3BC5-4ACA-B293-16EF5DF639D1": "Linux temporary data",
    "BC13C2FF-59E6-4262-A352-B275FD6F7172": "Linux extended boot",
    "CA7D7CCB-63ED-4C53-861C-1742536059CC": "Linux LUKS",
    "7FFEC5C9-2D00-49B7-8941-3EA10A5586B7": "Linux dm-crypt",
    "8DA63339-0007-60C0-C436-083AC8230908": "Linux reserved",
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery environment",
    "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3": "Microsoft LDM metadata",
    "AF9B60A0-1431-4F62-BC68-3311714A69AD": "Microsoft LDM data",
    "E75CAF8F-F680-4CEE-AFA3-B001E56EFC2D": "Microsoft Storage Spaces",
    "FE3A2A5D-4F32-41A7-B725-ACCC3285A309": "ChromeOS kernel",
    "3CB8E202-3B7E-47DD-8A3C-7FF2A13CFCEC": "ChromeOS root fs",
    "2E0A753D-9E48-43B0-8337-B15192CB1B5E": "ChromeOS reserved",
    "CAB6E88E-ABF3-4102-A07A-D4BB9BE3C1D3": "ChromeOS firmware",
    "48465300-0000-11AA-AA11-00306543ECAC": "Apple HFS/HFS+",
    "7C3457EF-0000-11AA-AA11-00306543ECAC": "Apple APFS",
    "55465300-0000-11AA-AA11-00306543ECAC": "Apple UFS",
    "426F6F74-0000-11AA-AA11-00306543ECAC": "Apple boot",
    "52414944-0000-11AA-AA11-00306543ECAC": "Apple RAID",
    "6A898CC3-1DD2-11B2-99A6-080020736631": "Solaris /usr & Apple ZFS",
    "83BD6B9D-7F41-11DC-BE0B-001560B84F0F": "FreeBSD boot",
    "516E7CB4-6ECF-11D6-8FF8-00022D09712B": "FreeBSD data",
    "516E7CB5-6ECF-11D6-8FF8-00022D09712B": "FreeBSD swap",
    "516E7CB6-6ECF-11D6-8FF8-00022D09712B": "FreeBSD UFS",
    "516E7CBA-6ECF-11D6-8FF8-00022D09712B": "FreeBSD ZFS",
}

# MBR type byte -> name (fdisk's names).
MBR_TYPES: dict[int, str] = {
    0x00: "Empty",
    0x01: "FAT12",
    0x04: "FAT16 <32M",
    0x05: "Extended",
    0x06: "FAT16",
    0x07: "HPFS/NTFS/exFAT",
    0x0B: "W95 FAT32",
    0x0C: "W95 FAT32 (LBA)",
    0x0E: "W95 FAT16 (LBA)",
    0x0F: "W95 Ext'd (LBA)",
    0x11: "Hidden FAT12",
    0x12: "Compaq diagnostics",
    0x14: "Hidden FAT16 <32M",
    0x16: "Hidden FAT16",
    0x17: "Hidden HPFS/NTFS",
    0x1B: "Hidden W95 FAT32",
    0x1C: "Hidden W95 FAT32 (LBA)",
    0x1E: "Hidden W95 FAT16 (LBA)",
    0x27: "Hidden NTFS WinRE",
    0x42: "SFS",
    0x82: "Linux swap / Solaris",
    0x83: "Linux",
    0x85: "Linux extended",
    0x86: "NTFS volume set",
    0x87: "NTFS volume set",
    0x8E: "Linux LVM",
    0xA0: "IBM Thinkpad hibernation",
    0xA5: "FreeBSD",
    0xA6: "OpenBSD",
    0xA8: "Darwin UFS",
    0xA9: "NetBSD",
    0xAB: "Darwin boot",
    0xAF: "HFS / HFS+",
    0xBE: "Solaris boot",
    0xBF: "Solaris",
    0xDA: "Non-FS data",
    0xDE: "Dell Utility",
    0xEE: "GPT",
    0xEF: "EFI (FAT-12/16/32)",
    0xFB: "VMware VMFS",
    0xFC: "VMware VMKCORE",
    0xFD: "Linux raid autodetect",
}

# Short names accepted by the CLI and by ``add_partition(type=...)``: alias -> (GPT, MBR).
_ALIASES: dict[str, tuple[str, int | None]] = {
    "esp": ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", 0xEF),
    "efi": ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", 0xEF),
    "linux": ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", 0x83),
    "swap": ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", 0x82),
    "lvm": ("E6D6D379-F507-44C2-A23C-238F2A3DF928", 0x8E),
    "raid": ("A19D880F-05FC-4D3B-A006-743F0F84911E", 0xFD),
    "home": ("933AC7E1-2EB4-4F13-B844-0E14E2AEF915", 0x83),
    "srv": ("3B8F8425-20E0-4F3B-907F-1A25A76F98E8", 0x83),
    "var": ("4D21B016-B534-45C2-A9FB-5C16E091FD2D", 0x83),
    "root": ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", 0x83),
    "root-x86-64": ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", 0x83),
    "root-aarch64": ("B921B045-1DF0-41C3-AF44-4C6F280D3FAE", 0x83),
    "root-arm64": ("B921B045-1DF0-41C3-AF44-4C6F280D3FAE", 0x83),
    "usr": ("8484680C-9521-48C6-9C11-B0720656F69E", 0x83),
    "xbootldr": ("BC13C2FF-59E6-4262-A352-B275FD6F7172", 0xEA),
    "luks": ("CA7D7CCB-63ED-4C53-861C-1742536059CC", 0x83),
    "bios": ("21686148-6449-6E6F-744E-656564454649", None),
    "bios-boot": ("21686148-6449-6E6F-744E-656564454649", None),
    "msdata": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 0x07),
    "basic-data": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 0x07),
    "ntfs": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 0x07),
    "fat32": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 0x0C),
    "fat": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 0x0C),
    "msr": ("E3C9E316-0B5C-4DB8-817D-F92DF00215AE", None),
    "recovery": ("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", 0x27),
    "extended": ("", 0x05),
}

# GPT fdisk's 4-hex-digit codes for the common types (``sgdisk -t 1:ef00``).
_SGDISK_CODES: dict[str, str] = {
    "ef00": "esp",
    "ef02": "bios",
    "8300": "linux",
    "8200": "swap",
    "8e00": "lvm",
    "fd00": "raid",
    "8302": "home",
    "8304": "root-x86-64",
    "8305": "root-aarch64",
    "0700": "msdata",
    "0c01": "msr",
    "2700": "recovery",
    "ea00": "xbootldr",
    "8309": "luks",
}

_HEX_BYTE = re.compile(r"^(0x)?[0-9a-fA-F]{1,2}$")


def gpt_type_name(guid: str) -> str:
    """Human name of a GPT type GUID (upper case), ``"Unknown"`` when not in the table."""
    return GPT_TYPES.get(guid.upper(), "Unknown")


def mbr_type_name(type_byte: int) -> str:
    """Human name of an MBR type byte, ``"Unknown"`` when not in the table."""
    return MBR_TYPES.get(type_byte, "Unknown")


def resolve_gpt_type(spec: str) -> str:
    """Turn an alias (``esp``, ``linux``...), an sgdisk code (``8300``) or a GUID into the
    upper-case type GUID; an MBR hex byte maps to the matching GPT type when there is one."""
    key = spec.strip().lower()
    if key in _SGDISK_CODES:
        key = _SGDISK_CODES[key]
    if key in _ALIASES and _ALIASES[key][0]:
        return _ALIASES[key][0]
    try:
        return str(uuid.UUID(key)).upper()
    except ValueError:
        pass
    if _HEX_BYTE.match(key):
        value = int(key, 16)
        for gpt, mbr in _ALIASES.values():
            if mbr == value and gpt:
                return gpt
    raise UsageError(
        f"unknown GPT partition type {spec!r} (use a GUID or one of: {', '.join(_gpt_aliases())})"
    )


def resolve_mbr_type(spec: str) -> int:
    """Turn an alias (``esp``, ``linux``...) or a hex byte (``83``, ``0x0c``) into the MBR
    type byte."""
    key = spec.strip().lower()
    if key in _SGDISK_CODES:
        key = _SGDISK_CODES[key]
    if key in _ALIASES and _ALIASES[key][1] is not None:
        value = _ALIASES[key][1]
        assert value is not None
        return value
    if _HEX_BYTE.match(key):
        value = int(key, 16)
        if value == 0:
            raise UsageError("MBR type 0x00 means an empty slot")
        return value
    raise UsageError(
        f"unknown MBR partition type {spec!r} (use a hex byte such as 83 or one of: "
        f"{', '.join(a for a, (_, m) in _ALIASES.items() if m is not None)})"
    )


def _gpt_aliases() -> list[str]:
    return [a for a, (g, _) in _ALIASES.items() if g]
