"""``burrow info IMAGE [--json]``: format, size, backing chain, partitions and filesystems."""

from __future__ import annotations

import argparse
import os
from typing import Any


def configure(parser: argparse.ArgumentParser) -> None:
    from burrow.cli.common import add_format, add_json

    parser.add_argument("image", metavar="IMAGE")
    add_json(parser)
    add_format(parser)


def gather(image: str, image_format: str | None = None) -> dict[str, Any]:
    from burrow.disk import Disk, backing_chain
    from burrow.errors import NotFound

    if not os.path.lexists(image) and "://" not in image:
        raise NotFound(path=image)
    with Disk(image, format=image_format) as disk:
        data: dict[str, Any] = {"image": image, "format": disk.format, "virtual_size": disk.size}
        if os.path.exists(image):
            st = os.stat(image)
            data["file_size"] = st.st_size
            data["allocated"] = st.st_blocks * 512
        data["backing_chain"] = backing_chain(image) if disk.format == "qcow2" else []
        data["snapshots"] = [
            {
                "id": snap.id,
                "name": snap.name,
                "date": snap.date_sec,
                "vm_state_size": snap.vm_state_size,
                "disk_size": snap.disk_size,
            }
            for snap in getattr(disk.base, "snapshots", [])
        ]
        table = disk.table
        if table is None:
            data["table"] = None
        else:
            data["table"] = {
                "kind": table.kind,
                "disk_id": table.disk_id,
                "sector_size": table.sector_size,
                "warnings": list(table.warnings),
            }
        data["partitions"] = [p.to_dict() for p in disk.partitions]
        data["filesystems"] = [e.to_dict() | {"root": e.is_root} for e in disk.filesystems()]
    return data


def run(args: argparse.Namespace) -> int:
    from burrow.cli.common import emit_json, human_size

    data = gather(args.image, args.format)
    if args.json:
        emit_json(data)
        return 0
    print(f"image:        {data['image']}")
    print(f"format:       {data['format']}")
    vsize = int(data["virtual_size"])
    print(f"virtual size: {human_size(vsize)} ({vsize} bytes)")
    if "allocated" in data:
        print(f"disk usage:   {human_size(int(data['allocated']))}")
    for i, b in enumerate(data["backing_chain"]):
        fmt = f" (format {b['format']})" if b.get("format") else ""
        print(f"backing {i + 1}:    {b['filename']}{fmt}")
    for snap in data["snapshots"]:
        import time

        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(snap["date"]))
        print(f"snapshot:     {snap['id']} {snap['name']!r}  {when} UTC")
    table = data["table"]
    if table is None:
        print("partitions:   none (whole-disk)")
    else:
        print(f"partitions:   {table['kind']} (disk id {table['disk_id']})")
        for w in table["warnings"]:
            print(f"  warning: {w}")
    for fs in data["filesystems"]:
        part = fs["partition"]
        if part is None:
            head = "  whole disk"
        else:
            name = f" {part['name']!r}" if part["name"] else ""
            head = (
                f"  {part['number']:>2}  start {part['start']:>12}  size {human_size(part['size']):>10}"
                f"  {part['type_name']}{name}"
            )
        print(head)
        kind = fs["fstype"] or "unknown"
        line = f"      {kind}"
        if fs["label"]:
            line += f"  label {fs['label']!r}"
        if fs["uuid"]:
            line += f"  uuid {fs['uuid']}"
        if fs.get("root"):
            line += "  (root)"
        print(line)
        if fs["size"] is not None:
            print(
                f"      size {human_size(fs['size'])}  used {human_size(fs['used'])}"
                f"  free {human_size(fs['free'])}  block {fs['block_size']}"
            )
        if fs["features"]:
            print(f"      features: {' '.join(fs['features'])}")
        if fs["error"]:
            print(f"      error: {fs['error']}")
    return 0
