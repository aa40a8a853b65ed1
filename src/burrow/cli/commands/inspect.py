"""``burrow inspect IMAGE [--json]``: find operating systems in an image (like virt-inspector)."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    from burrow.cli.common import add_format, add_json

    parser.add_argument("image", metavar="IMAGE")
    add_json(parser)
    add_format(parser)


def run(args: argparse.Namespace) -> int:
    import os

    from burrow.cli.common import emit_json
    from burrow.disk import Disk
    from burrow.errors import NotFound
    from burrow.inspect import inspect_disk

    if not os.path.lexists(args.image) and "://" not in args.image:
        raise NotFound(path=args.image)
    with Disk(args.image, format=args.format) as disk:
        report = inspect_disk(disk)
    if args.json:
        emit_json(report)
        return 0
    systems = report["operating_systems"]
    if not systems:
        print("no operating system found")
        return 0
    for osinfo in systems:
        where = "whole disk" if osinfo["root"] == 0 else f"partition {osinfo['root']}"
        print(f"root:       {where} ({osinfo['root_fstype']}, uuid {osinfo['root_uuid']})")
        print(f"name:       {osinfo['pretty_name'] or osinfo['name']}")
        print(f"id:         {osinfo['id']}  version {osinfo['version_id'] or '-'}")
        print(f"hostname:   {osinfo['hostname'] or '-'}")
        print(f"arch:       {osinfo['arch'] or '-'}")
        pk = osinfo["packages"]
        if pk:
            count = f", {pk['count']} installed" if "count" in pk else ""
            print(f"packages:   {pk['format']} ({pk['management']}{count})")
        else:
            print("packages:   -")
        for k in osinfo["kernels"]:
            print(f"kernel:     {k['version']}  {k['image'] or '(no image)'}")
        for m in osinfo["fstab"]:
            part = (
                f"partition {m['partition']}" if m["partition"] is not None else "not on this disk"
            )
            print(f"fstab:      {m['mountpoint']:<12} {m['spec']}  ({m['fstype']}, {part})")
    return 0
