"""``burrow mkdir [-p] [-m MODE] IMAGE[@PART]:PATH...``: make directories (0777 & ~umask)."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="IMAGE[@PART]:PATH")
    parser.add_argument("-p", "--parents", action="store_true",
                        help="make parents as needed; no error if existing")  # fmt: skip
    parser.add_argument("-m", "--mode", help="set mode (octal or symbolic), not a=rwx - umask")


def run(args: argparse.Namespace) -> int:
    from burrow.cli.common import Session, fs_address, parse_mode

    addrs = [fs_address(p) for p in args.paths]
    with Session(writable=True) as session:
        for addr in addrs:
            pfs = session.fs(addr)
            pfs.mkdir(addr.path, parents=args.parents, exist_ok=args.parents)
            if args.mode:
                old = pfs.stat(addr.path).st_mode
                pfs.chmod(addr.path, parse_mode(args.mode, old | 0o777, is_dir=True))
    return 0
