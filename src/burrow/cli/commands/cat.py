"""``burrow cat IMAGE[@PART]:PATH...``: write files from inside an image to stdout."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="IMAGE[@PART]:PATH")


def run(args: argparse.Namespace) -> int:
    from burrow.cli.common import Session, fs_address
    from burrow.errors import IsADirectory
    from burrow.fs.paths import CHUNK

    out = sys.stdout.buffer
    addrs = [fs_address(p) for p in args.paths]
    with Session() as session:
        for addr in addrs:
            pfs = session.fs(addr)
            ino = pfs.resolve(addr.path)
            st = pfs.fs.getattr(ino)
            if st.is_dir():
                raise IsADirectory(path=str(addr))
            pos = 0
            while True:
                data = pfs.fs.read(ino, pos, CHUNK)
                if not data:
                    break
                out.write(data)
                pos += len(data)
    out.flush()
    return 0
