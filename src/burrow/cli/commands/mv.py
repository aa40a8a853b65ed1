"""``burrow mv SRC... DST``: rename or move inside one image filesystem."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("operands", nargs="+", metavar="SRC... DST")
    parser.add_argument("-n", "--no-clobber", action="store_true", help="do not replace")


def run(args: argparse.Namespace) -> int:
    import posixpath

    from burrow.cli.common import Session, fs_address
    from burrow.errors import Exists, NotADirectory, UsageError

    if len(args.operands) < 2:
        raise UsageError("mv needs a source and a destination")
    *srcs, dst_text = args.operands
    dst = fs_address(dst_text)
    addrs = [fs_address(s) for s in srcs]
    for a in addrs:
        if a.target != dst.target:
            raise UsageError(
                f"{a}: mv works inside one filesystem; use 'burrow cp -a' then 'burrow rm -r'"
            )
    with Session(writable=True) as session:
        pfs = session.fs(dst)
        dst_is_dir = pfs.is_dir(dst.path)
        if len(addrs) > 1 and not dst_is_dir:
            raise NotADirectory(f"target {dst_text!r} is not a directory", path=dst_text)
        for a in addrs:
            target = dst.path
            if dst_is_dir:
                target = posixpath.join(dst.path, posixpath.basename(a.path.rstrip("/")))
            if args.no_clobber and pfs.lexists(target):
                continue
            if pfs.lexists(target) and pfs.lstat(target).st_ino == pfs.lstat(a.path).st_ino:
                raise Exists(f"{a} and {target} are the same file", path=str(a))
            pfs.rename(a.path, target)
    return 0
