"""``burrow mount SOURCE MOUNTPOINT``: mount a filesystem (or expose a device) through FUSE.

SOURCE is ``IMAGE[@PART]`` (a filesystem inside an image; read-write unless ``--ro``) or
``memory:`` (an empty in-memory filesystem, gone at unmount). With ``--block`` the device
itself (the raw view of a qcow2 image or of one partition) appears as the regular file
MOUNTPOINT.
"""

from __future__ import annotations

import argparse
import os


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="IMAGE[@PART]|memory:")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument("--ro", action="store_true", help="mount read-only")
    parser.add_argument("--block", action="store_true", help="expose the block device as a file")
    parser.add_argument("--allow-other", action="store_true", help="let other users in")
    parser.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground")
    parser.add_argument("--format", choices=["raw", "qcow2"], help="image format (default: detect)")
    parser.add_argument(
        "--cache-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long the kernel may cache attributes and names (default 60; 0: never)",
    )


def run(args: argparse.Namespace) -> int:
    from burrow.errors import UsageError
    from burrow.fuse.source import open_source

    if not os.path.exists(args.mountpoint):
        raise UsageError(f"mount point {args.mountpoint} does not exist")
    if args.block and os.path.isdir(args.mountpoint):
        raise UsageError("--block needs a regular file as the mount point")
    if not args.block and not os.path.isdir(args.mountpoint):
        raise UsageError(f"mount point {args.mountpoint} is not a directory")
    if args.cache_timeout is not None and args.cache_timeout < 0:
        raise UsageError("--cache-timeout must be >= 0")
    served = open_source(args.source, block=args.block, readonly=args.ro, image_format=args.format)
    if args.cache_timeout is not None and hasattr(served.ops, "timeout"):
        served.ops.timeout = args.cache_timeout
    from burrow.fuse.mount import mount

    return mount(
        served.ops,
        args.mountpoint,
        close=served.close,
        fsname=args.source,
        readonly=args.ro,
        allow_other=args.allow_other,
        foreground=args.foreground,
        default_permissions=not args.block,
    )
