"""``burrow umount MOUNTPOINT``: unmount a burrow FUSE mount and wait for its commit."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", metavar="MOUNTPOINT")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for commit")


def run(args: argparse.Namespace) -> int:
    from burrow.fuse.mount import unmount

    unmount(args.mountpoint, timeout=args.timeout)
    return 0
