"""``burrow chmod [-R] MODE IMAGE[@PART]:PATH...``: change permission bits (octal or
symbolic, as chmod(1))."""

from __future__ import annotations

import argparse

from burrow.fs.paths import PathFS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mode", metavar="MODE")
    parser.add_argument("paths", nargs="+", metavar="IMAGE[@PART]:PATH")
    parser.add_argument("-R", "--recursive", action="store_true", help="change trees")


def run(args: argparse.Namespace) -> int:
    import posixpath

    from burrow.cli.common import Session, current_umask, fs_address, parse_mode

    parse_mode(args.mode, 0)  # reject a bad mode before opening anything
    umask = current_umask()
    addrs = [fs_address(p) for p in args.paths]
    with Session(writable=True) as session:
        for addr in addrs:
            pfs = session.fs(addr)

            def apply(path: str, pfs: PathFS = pfs) -> None:
                st = pfs.stat(path)
                pfs.chmod(path, parse_mode(args.mode, st.st_mode, is_dir=st.is_dir(), umask=umask))

            apply(addr.path)
            if args.recursive and pfs.lstat(addr.path).is_dir():
                for dirpath, dirs, files in pfs.walk(addr.path):
                    for name in [*dirs, *files]:
                        p = posixpath.join(dirpath, name)
                        if not pfs.is_symlink(p):  # chmod -R never follows links
                            apply(p)
    return 0
