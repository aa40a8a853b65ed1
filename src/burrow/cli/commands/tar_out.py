"""``burrow tar-out IMAGE[@PART]:DIR > out.tar``: a directory of an image as a tar stream.

The stream matches ``tar -C DIR -cf - .`` on a loop mount, with numeric owners, nanosecond
mtimes, hard links, devices and xattrs kept (see ``burrow.fs.tario``).
"""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="IMAGE[@PART]:DIR")
    parser.add_argument("--no-xattrs", action="store_true", help="leave out extended attributes")


def run(args: argparse.Namespace) -> int:
    from burrow.cli.common import Session, fs_address
    from burrow.errors import UsageError
    from burrow.fs.tario import write_tar

    if sys.stdout.isatty():
        raise UsageError("refusing to write a tar stream to a terminal; redirect stdout")
    addr = fs_address(args.path)
    out = sys.stdout.buffer
    with Session() as session:
        write_tar(
            session.fs(addr),
            addr.path,
            out,
            xattrs=not args.no_xattrs,
            warn=lambda m: print(f"burrow: {m}", file=sys.stderr),
        )
    out.flush()
    return 0
