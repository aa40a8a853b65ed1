"""Oracles for partition-table tests: what sfdisk, sgdisk and parted say about an image.

Each helper turns a real tool's output into plain dicts in **bytes**, so tests compare them
with burrow's ``PartitionTable`` field by field.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from images import run

_ATTR_NAMES = {"RequiredPartition": 0, "NoBlockIOProtocol": 1, "LegacyBIOSBootable": 2}


def parse_sfdisk_attrs(text: str) -> int:
    """``"RequiredPartition LegacyBIOSBootable GUID:60,63"`` -> the attribute bit field."""
    value = 0
    for token in text.split():
        if token in _ATTR_NAMES:
            value |= 1 << _ATTR_NAMES[token]
        elif token.startswith("GUID:"):
            for bit in token[5:].split(","):
                value |= 1 << int(bit)
    return value


def sfdisk_table(path: Path, sector_size: int | None = None) -> dict[str, object]:
    """``sfdisk -J`` as {"label", "id", "sector_size", "partitions": [...]}, positions in
    bytes, numbers taken from the node names."""
    cmd: list[str | Path] = ["sfdisk", "-J"]
    if sector_size:
        cmd += ["--sector-size", str(sector_size)]
    data = json.loads(run([*cmd, path]).stdout)["partitiontable"]
    ss = int(data.get("sectorsize", sector_size or 512))
    parts = []
    for p in data.get("partitions", []):
        number = int(re.search(r"(\d+)$", p["node"]).group(1))  # type: ignore[union-attr]
        parts.append(
            {
                "number": number,
                "start": int(p["start"]) * ss,
                "size": int(p["size"]) * ss,
                "type": p["type"].upper(),
                "name": p.get("name", ""),
                "uuid": p.get("uuid", "").upper(),
                "attributes": parse_sfdisk_attrs(p.get("attrs", "")),
                # GPT has no active flag; burrow reports attribute bit 2 (legacy BIOS bootable).
                "bootable": bool(p.get("bootable", False))
                or bool(parse_sfdisk_attrs(p.get("attrs", "")) & 4),
            }
        )
    return {
        "label": data["label"],
        "id": data.get("id", ""),
        "sector_size": ss,
        "partitions": parts,
    }


def parted_table(path: Path) -> list[dict[str, object]]:
    """``parted -m -s IMG unit B print``: number, start, size, name for each partition."""
    out = run(["parted", "-m", "-s", path, "unit", "B", "print"]).stdout
    parts = []
    for line in out.splitlines()[2:]:
        fields = line.rstrip(";").split(":")
        if len(fields) < 5 or not fields[0].isdigit():
            continue
        parts.append(
            {
                "number": int(fields[0]),
                "start": int(fields[1].rstrip("B")),
                "size": int(fields[3].rstrip("B")),
                "name": fields[5] if len(fields) > 5 else "",
            }
        )
    return parts


_SGDISK_TROUBLE = ("corrupt", "ERROR", "Warning", "nvalid", "Problem:", "Identified")


def sgdisk_verify(path: Path) -> str:
    """``sgdisk -v`` output, stdout and stderr together."""
    proc = subprocess.run(["sgdisk", "-v", str(path)], capture_output=True, text=True)
    return proc.stdout + proc.stderr


def sgdisk_clean(path: Path) -> bool:
    """True when ``sgdisk -v`` says "No problems found" and complains about nothing (it
    also says "No problems found" after silently using a backup, so the warnings count)."""
    out = sgdisk_verify(path)
    # sfdisk-made GPTs start the usable area at 2048; sgdisk calls that gap "unusual" only.
    out = re.sub(
        r"Warning: There is a gap between the main partition table.*?this gap\.",
        "",
        out,
        flags=re.S,
    )
    return "No problems found" in out and not any(t in out for t in _SGDISK_TROUBLE)


def sgdisk_print(path: Path) -> list[dict[str, object]]:
    """``sgdisk -p``: number, first and last sector, name for each partition."""
    out = run(["sgdisk", "-p", path]).stdout
    rows = []
    started = False
    for line in out.splitlines():
        if line.startswith("Number"):
            started = True
            continue
        if started and line.strip():
            m = re.match(r"\s*(\d+)\s+(\d+)\s+(\d+)\s+\S+ \S+\s+(\S+)\s*(.*)$", line)
            assert m, line
            rows.append(
                {
                    "number": int(m.group(1)),
                    "first": int(m.group(2)),
                    "last": int(m.group(3)),
                    "code": m.group(4),
                    "name": m.group(5),
                }
            )
    return rows


def ours(table: object) -> list[dict[str, object]]:
    """burrow's partitions in the same shape as :func:`sfdisk_table`'s."""
    from burrow.volume import PartitionTable

    assert isinstance(table, PartitionTable)
    out = []
    for p in table.partitions:
        typ = p.type.upper()
        if table.kind == "mbr":
            typ = f"{int(p.type, 16):X}"
        out.append(
            {
                "number": p.number,
                "start": p.start,
                "size": p.size,
                "type": typ,
                "name": p.name,
                "uuid": p.uuid,
                "attributes": p.attributes,
                "bootable": p.bootable,
            }
        )
    return out


# Byte offsets of GPT header fields (UEFI spec table 5-5) and entry fields (table 5-6).
GPT_HEADER_FIELDS = {
    "my_lba": (24, "<Q"),
    "alternate_lba": (32, "<Q"),
    "first_usable": (40, "<Q"),
    "last_usable": (48, "<Q"),
    "entries_lba": (72, "<Q"),
    "num_entries": (80, "<I"),
    "entry_size": (84, "<I"),
}
GPT_ENTRY_FIELDS = {"first_lba": (32, "<Q"), "last_lba": (40, "<Q"), "attributes": (48, "<Q")}


def patch_gpt(
    path: Path,
    *,
    header: dict[str, int] | None = None,
    entries: dict[int, dict[str, int]] | None = None,
    copies: tuple[str, ...] = ("primary", "backup"),
    sector_size: int = 512,
) -> None:
    """Change GPT header/entry fields in place and recompute the CRCs, so that a test can
    build a *consistent-looking* but semantically bad table (overlaps, absurd counts...).
    ``entries`` maps a 1-based partition number to field overrides."""
    import struct
    import zlib

    data = bytearray(path.read_bytes())
    ss = sector_size
    for copy in copies:
        hoff = ss if copy == "primary" else len(data) - ss
        assert data[hoff : hoff + 8] == b"EFI PART"
        elba, count, esize = struct.unpack_from("<QII", data, hoff + 72)
        aoff = elba * ss
        for number, fields in (entries or {}).items():
            for name, value in fields.items():
                off, fmt = GPT_ENTRY_FIELDS[name]
                struct.pack_into(fmt, data, aoff + (number - 1) * esize + off, value)
        struct.pack_into("<I", data, hoff + 88, zlib.crc32(data[aoff : aoff + count * esize]))
        for name, value in (header or {}).items():
            off, fmt = GPT_HEADER_FIELDS[name]
            struct.pack_into(fmt, data, hoff + off, value)
        hsize = struct.unpack_from("<I", data, hoff + 12)[0]
        struct.pack_into("<I", data, hoff + 16, 0)
        struct.pack_into("<I", data, hoff + 16, zlib.crc32(data[hoff : hoff + hsize]))
    path.write_bytes(bytes(data))


def sgdisk_image(path: Path, size: int, *args: str) -> Path:
    """A raw image partitioned by one ``sgdisk -o ARGS`` call (each sgdisk write sleeps for
    a second, so tests pass everything at once)."""
    with open(path, "wb") as f:
        f.truncate(size)
    run(["sgdisk", "-o", *args, path])
    return path
