"""``burrow create IMAGE --size SIZE [--format qcow2|raw] [--spec SPEC.toml]``.

Without ``--spec``: an empty (sparse) image. With it: a complete image — partition table,
partitions, filesystems, contents, ownership — built in userspace (see docs/create.md). The
image file must not exist; a failed build leaves no file behind.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("--size", "-s", help="virtual size (64M, 2G...; a spec may give it)")
    parser.add_argument("--format", "-f", choices=["qcow2", "raw"],
                        help="image format (default: the spec's, else qcow2)")  # fmt: skip
    parser.add_argument("--spec", metavar="SPEC.toml", help="build from a declarative spec")


def run(args: argparse.Namespace) -> int:
    import os

    from burrow.cli.common import Progress, parse_size
    from burrow.errors import Exists, UsageError

    size = parse_size(args.size) if args.size else None
    if args.spec:
        from burrow.spec import build, load_spec

        spec = load_spec(args.spec)
        with Progress(None, f"building {args.image}") as bar:
            build(args.image, spec, size=size, format=args.format, progress=bar.update)
        return 0
    if size is None:
        raise UsageError("--size is required without --spec")
    if os.path.lexists(args.image):
        raise Exists("the image already exists; refusing to overwrite it", path=args.image)
    from burrow import block

    block.create(args.image, size, format=args.format or "qcow2").close()
    return 0
