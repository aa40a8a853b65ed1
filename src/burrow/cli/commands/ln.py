"""``burrow ln [-s] [-f] TARGET IMAGE[@PART]:LINK``: make hard or symbolic links.

With ``-s`` TARGET is stored as given (it is resolved inside the image when used). Without it,
TARGET is a path in the same filesystem (``IMAGE:PATH`` or just ``PATH``).
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET")
    parser.add_argument("link", metavar="IMAGE[@PART]:LINK")
    parser.add_argument("-s", "--symbolic", action="store_true", help="make a symbolic link")
    parser.add_argument("-f", "--force", action="store_true", help="replace an existing link")


def run(args: argparse.Namespace) -> int:
    import posixpath

    from burrow.cli.common import Session, fs_address
    from burrow.disk import parse_address
    from burrow.errors import UsageError

    link = fs_address(args.link)
    with Session(writable=True) as session:
        pfs = session.fs(link)
        path = link.path
        if pfs.is_dir(path) and not pfs.is_symlink(path):
            source = args.target.rstrip("/") or "/"
            path = posixpath.join(path, posixpath.basename(source) or "root")
        if args.force and pfs.lexists(path) and not pfs.lstat(path).is_dir():
            pfs.remove(path)
        if args.symbolic:
            pfs.symlink(args.target, path)
        else:
            target = parse_address(args.target)
            if target.kind == "image" and target.target != link.target:
                raise UsageError("hard links must stay inside one filesystem")
            src = target.path if target.kind == "image" else args.target
            pfs.link(src, path, follow_symlinks=False)
    return 0
