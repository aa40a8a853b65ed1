"""``burrow truncate -s [+-]SIZE [-c] IMAGE[@PART]:PATH...``: set a file's size (creating it
unless ``-c``)."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="IMAGE[@PART]:PATH")
    parser.add_argument("-s", "--size", required=True, help="SIZE, +SIZE or -SIZE (K, M, G...)")
    parser.add_argument("-c", "--no-create", action="store_true", help="do not create files")


def run(args: argparse.Namespace) -> int:
    from burrow.cli.common import Session, fs_address, parse_size
    from burrow.errors import NotFound

    text = args.size
    rel = text[0] if text[:1] in "+-" else ""
    amount = parse_size(text[1:] if rel else text)
    addrs = [fs_address(p) for p in args.paths]
    with Session(writable=True) as session:
        for addr in addrs:
            pfs = session.fs(addr)
            try:
                cur = pfs.stat(addr.path).st_size
            except NotFound:
                if args.no_create:
                    continue
                with pfs.open(addr.path, "ab"):
                    pass
                cur = 0
            size = cur + amount if rel == "+" else max(0, cur - amount) if rel == "-" else amount
            pfs.truncate(addr.path, size)
    return 0
