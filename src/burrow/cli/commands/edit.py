"""``burrow edit IMAGE[@PART]:PATH``: edit a file inside an image with ``$VISUAL``/``$EDITOR``.

The file is copied to a private temporary file, the editor runs on it, and the new contents
are written back (same inode: mode, owner and links are kept) only if they changed and the
editor exited with status 0. A new file is created when PATH does not exist.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="IMAGE[@PART]:PATH")


def run(args: argparse.Namespace) -> int:
    import os
    import posixpath
    import shlex
    import subprocess
    import tempfile

    from burrow.cli.common import Session, fs_address
    from burrow.errors import BurrowError, NotFound

    addr = fs_address(args.path)
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with Session(writable=True) as session:
        pfs = session.fs(addr)
        try:
            old = pfs.read_bytes(addr.path)
        except NotFound:
            old = None
        suffix = "-" + posixpath.basename(addr.path.rstrip("/"))
        with tempfile.TemporaryDirectory(prefix="burrow-edit-") as tmp:
            local = os.path.join(tmp, "file" + suffix)
            with open(local, "wb") as f:
                f.write(old or b"")
            code = subprocess.call([*shlex.split(editor), local])
            if code != 0:
                raise BurrowError(f"editor {editor!r} exited with status {code}; nothing written")
            with open(local, "rb") as f:
                new = f.read()
        if new != old:
            pfs.write_bytes(addr.path, new)
    return 0
