"""``burrow rm [-r] [-f] IMAGE[@PART]:PATH...``: remove files (and trees with ``-r``)."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="IMAGE[@PART]:PATH")
    parser.add_argument("-r", "-R", "--recursive", dest="recursive", action="store_true",
                        help="remove directories and their contents")  # fmt: skip
    parser.add_argument("-f", "--force", action="store_true", help="ignore missing files")
    parser.add_argument("-d", "--dir", action="store_true", help="remove empty directories")


def run(args: argparse.Namespace) -> int:
    import posixpath

    from burrow.cli.common import Session, fs_address
    from burrow.errors import InvalidOperation, IsADirectory, NotFound

    addrs = [fs_address(p) for p in args.paths]
    with Session(writable=True) as session:
        for addr in addrs:
            pfs = session.fs(addr)
            if posixpath.normpath("/" + addr.path) == "/":
                raise InvalidOperation("refusing to remove the root directory", path=str(addr))
            try:
                st = pfs.lstat(addr.path)
            except NotFound:
                if args.force:
                    continue
                raise
            if st.is_dir():
                if args.recursive:
                    pfs.rmtree(addr.path)
                elif args.dir:
                    pfs.rmdir(addr.path)
                else:
                    raise IsADirectory("cannot remove: Is a directory", path=str(addr))
            else:
                pfs.remove(addr.path)
    return 0
