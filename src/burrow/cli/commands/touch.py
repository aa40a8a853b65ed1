"""``burrow touch [-c] [-a] [-m] [-d DATE] IMAGE[@PART]:PATH...``: create files (0666 &
~umask, owned by you) or set their times."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="IMAGE[@PART]:PATH")
    parser.add_argument("-c", "--no-create", action="store_true", help="do not create files")
    parser.add_argument("-a", dest="atime", action="store_true", help="change only the access time")
    parser.add_argument(
        "-m", dest="mtime", action="store_true", help="change only the modification time"
    )
    parser.add_argument("-d", "--date", help="use this time (ISO 8601, or @SECONDS)")


def parse_date(text: str) -> int:
    from datetime import datetime

    from burrow.errors import UsageError

    if text.startswith("@"):
        try:
            return int(float(text[1:]) * 1e9)
        except ValueError:
            raise UsageError(f"invalid date {text!r}") from None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"invalid date {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def run(args: argparse.Namespace) -> int:
    import time

    from burrow.cli.common import Session, fs_address
    from burrow.errors import NotFound

    when = parse_date(args.date) if args.date else time.time_ns()
    addrs = [fs_address(p) for p in args.paths]
    with Session(writable=True) as session:
        for addr in addrs:
            pfs = session.fs(addr)
            try:
                st = pfs.stat(addr.path)
            except NotFound:
                if args.no_create:
                    continue
                with pfs.open(addr.path, "ab"):
                    pass
                st = pfs.stat(addr.path)
            both = not (args.atime or args.mtime)
            atime = when if (both or args.atime) else st.st_atime_ns
            mtime = when if (both or args.mtime) else st.st_mtime_ns
            pfs.utime(addr.path, ns=(atime, mtime))
    return 0
