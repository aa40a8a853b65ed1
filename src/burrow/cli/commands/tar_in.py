"""``burrow tar-in IMAGE[@PART]:DIR < in.tar``: unpack a tar stream into an image.

Owners (numeric), modes, mtimes, links, devices and xattrs are kept exactly without root;
names with ``..`` are skipped; gzip/bz2/xz streams are detected (see ``burrow.fs.tario``).
The image changes only if the whole stream unpacked cleanly.
"""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="IMAGE[@PART]:DIR")
    parser.add_argument("--no-same-owner", action="store_true",
                        help="files belong to you instead of the owners in the archive")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import tarfile

    from burrow.cli.common import Session, fs_address
    from burrow.errors import CorruptImage
    from burrow.fs.tario import extract_tar

    addr = fs_address(args.path)
    with Session(writable=True) as session:
        try:
            extract_tar(
                session.fs(addr),
                sys.stdin.buffer,
                addr.path,
                same_owner=not args.no_same_owner,
                warn=lambda m: print(f"burrow: {m}", file=sys.stderr),
            )
        except tarfile.TarError as exc:
            raise CorruptImage("tar stream", None, str(exc)) from None
    return 0
