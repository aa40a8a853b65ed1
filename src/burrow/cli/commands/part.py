"""``burrow part``: list and edit MBR/GPT partition tables of an image.

Subcommands: ``list`` (read-only), ``init``, ``add``, ``rm``, ``resize``, ``rename``, ``fix``.
IMAGE is anything ``burrow.block.open`` opens (raw, qcow2, nbd:// URIs). Write commands read
the whole table first and write nothing when it is corrupt or the request does not fit.
Sizes take binary suffixes (``512K``, ``100M``, ``2G``, ``1T``) or plain bytes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from burrow.block.device import BlockDevice
    from burrow.volume.table import Partition, PartitionTable

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"512M"`` -> 536870912. Binary suffixes K/M/G/T/P (optionally ``KiB``/``KB``), or
    plain bytes. ``UsageError`` for anything else or a result that is not whole bytes."""
    from burrow.errors import UsageError

    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"bad size {text!r} (examples: 1048576, 512K, 100M, 2G, 1T)")
    value = Fraction(m.group(1)) * _UNITS[m.group(2).upper()]
    if value.denominator != 1 or value <= 0:
        raise UsageError(f"size {text!r} must be a positive whole number of bytes")
    return int(value)


def human(n: int) -> str:
    """Bytes as ``"10.0 MiB"``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["raw", "qcow2"], help="image format (default: detect)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("list", help="show the partition table")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("init", help="write a new empty table (gpt or mbr)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("kind", choices=["gpt", "mbr"])
    p.add_argument(
        "--sector-size", type=int, choices=[512, 4096], help="GPT logical sector size (512)"
    )
    p.add_argument("--force", action="store_true", help="replace an existing or damaged table")

    p = sub.add_parser("add", help="add a partition (no --size: the largest free area)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--size", help="size, e.g. 512M (default: the largest free area)")
    p.add_argument("--start", help="start offset in bytes or with a suffix (default: aligned)")
    p.add_argument(
        "--type",
        default="linux",
        help="esp, linux, swap, home, lvm, raid, bios, msdata, a GUID, an sgdisk code or an "
        "MBR hex byte (default: linux)",
    )
    p.add_argument("--name", default="", help="GPT partition name")
    p.add_argument("--logical", action="store_true", help="MBR: make a logical partition")
    p.add_argument("--bootable", action="store_true", help="set the active/legacy-boot flag")

    p = sub.add_parser("rm", help="remove partition N")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("number", metavar="N", type=int)

    p = sub.add_parser("resize", help="set partition N's size (max: grow into free space)")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("number", metavar="N", type=int)
    p.add_argument("size", metavar="SIZE|max")

    p = sub.add_parser("rename", help="set GPT partition N's name")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("number", metavar="N", type=int)
    p.add_argument("name", metavar="NAME")

    p = sub.add_parser("fix", help="rewrite a damaged table from its good copy, move the backup")
    p.add_argument("image", metavar="IMAGE")


def _open(args: argparse.Namespace, *, write: bool) -> BlockDevice:
    import burrow.block

    return burrow.block.open(args.image, format=args.format, readonly=not write)


def _warn(table: PartitionTable | None) -> None:
    for text in table.warnings if table else ():
        print(f"burrow: warning: {text}", file=sys.stderr)


def _print_table(image: str, table: PartitionTable) -> None:
    print(
        f"{image}: {table.kind.upper()}, {table.sector_size}-byte sectors, disk id {table.disk_id}"
    )
    if not table.partitions:
        print("no partitions")
        return
    gpt = table.kind == "gpt"
    rows = [["#", "Start", "End", "Size", "Type", *(["Name"] if gpt else []), "Flags"]]
    for p in sorted(table.partitions, key=lambda q: q.number):
        flags = "boot" if p.bootable else ""
        kind = p.type_name if p.type_name != "Unknown" else p.type
        name = [p.name] if gpt else []
        rows.append(
            [str(p.number), str(p.start), str(p.end - 1), human(p.size), kind, *name, flags]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {0, 1, 2, 3}
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


def _describe(action: str, p: Partition) -> str:
    return f"{action} partition {p.number}: start {p.start}, size {p.size} ({human(p.size)})"


def run(args: argparse.Namespace) -> int:
    from burrow import volume
    from burrow.errors import CorruptImage, Exists

    if args.action == "list":
        with _open(args, write=False) as dev:
            table = volume.read_table(dev)
        if table is None:
            if args.json:
                print(json.dumps({"table": None, "sector_size": None, "partitions": []}))
            else:
                print(f"{args.image}: no partition table")
            return 0
        _warn(table)
        if args.json:
            print(json.dumps(table.to_dict()))
        else:
            _print_table(args.image, table)
        return 0

    with _open(args, write=True) as dev:
        if args.action == "init":
            if not args.force:
                try:
                    old = volume.read_table(dev)
                except CorruptImage as exc:
                    raise CorruptImage(
                        exc.structure, exc.offset, exc.detail + " (use --force to replace it)"
                    ) from None
                if old is not None and old.partitions:
                    raise Exists(
                        f"{args.image} already has a {old.kind.upper()} table with "
                        f"{len(old.partitions)} partition(s); use --force to replace it"
                    )
            table = volume.init_table(dev, args.kind, sector_size=args.sector_size)
            print(f"wrote an empty {table.kind.upper()} ({table.sector_size}-byte sectors)")
        elif args.action == "add":
            part = volume.add_partition(
                dev,
                size=None if args.size is None else parse_size(args.size),
                start=None if args.start is None else _parse_offset(args.start),
                type=args.type,
                name=args.name,
                logical=True if args.logical else None,
                bootable=args.bootable,
            )
            print(_describe("added", part))
        elif args.action == "rm":
            volume.remove_partition(dev, args.number)
            print(f"removed partition {args.number}")
        elif args.action == "resize":
            size = None if args.size.lower() == "max" else parse_size(args.size)
            part = volume.resize_partition(dev, args.number, size)
            print(_describe("resized", part))
        elif args.action == "rename":
            part = volume.rename_partition(dev, args.number, args.name)
            print(f"renamed partition {part.number} to {part.name!r}")
        elif args.action == "fix":
            fixed = volume.repair_table(dev)
            for text in fixed:
                print(f"fixed: {text}")
            print("table rewritten" if fixed else "table rewritten (no problems found)")
    return 0


def _parse_offset(text: str) -> int:
    """Like :func:`parse_size` but 0 is allowed."""
    if text.strip() == "0":
        return 0
    return parse_size(text)
