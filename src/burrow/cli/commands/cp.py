"""``burrow cp [-r] [-a] [-p] SRC... DST``: copy between the host and images (either way) and
between images.

Each operand is a host path or ``IMAGE[@PART]:PATH``. Like ``cp``: with several sources, or
when DST is an existing directory, each source goes *into* DST under its own name. A source
that is a filesystem's root (``IMAGE:/``) or ends in ``/.`` has its *contents* copied into DST
(created if missing). The destination image is opened through an overlay and committed only
if the whole command succeeds; on any error no image is changed.
"""

from __future__ import annotations

import argparse
import os
import posixpath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from burrow.cli.common import Session
    from burrow.disk import Address
    from burrow.fs.paths import PathFS


def configure(parser: argparse.ArgumentParser) -> None:
    from burrow.cli.common import add_format

    parser.add_argument("operands", nargs="+", metavar="SRC... DST")
    parser.add_argument("-r", "-R", "--recursive", dest="recursive", action="store_true",
                        help="copy directories recursively")  # fmt: skip
    parser.add_argument("-a", "--archive", action="store_true",
                        help="keep modes, owners, times, xattrs, hard links, symlinks, devices")  # fmt: skip
    parser.add_argument("-p", dest="preserve", action="store_true",
                        help="keep modes, owners and times")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="name each source")
    add_format(parser)


def _is_contents(path: str, kind: str) -> bool:
    stripped = path.rstrip("/")
    if kind == "image":
        return posixpath.normpath("/" + path) == "/" or path.endswith("/.")
    return path.endswith("/.") or stripped in ("", ".")


def run(args: argparse.Namespace) -> int:
    from burrow import errors
    from burrow.cli.common import Session
    from burrow.disk import parse_address
    from burrow.errors import NotADirectory, UsageError

    if len(args.operands) < 2:
        raise UsageError("cp needs a source and a destination (see 'burrow cp --help')")
    *src_texts, dst_text = args.operands
    dst = parse_address(dst_text)
    srcs = [parse_address(t) for t in src_texts]
    if dst.kind == "host" and all(s.kind == "host" for s in srcs):
        raise UsageError("no operand is inside an image (IMAGE[@PART]:PATH); use cp(1)")
    reader = Session(image_format=args.format)
    writer = Session(writable=True, image_format=args.format)
    ok = False
    try:
        dfs = writer.fs(dst) if dst.kind != "host" else None
        dst_is_dir = dfs.is_dir(dst.path) if dfs is not None else os.path.isdir(dst.path)
        if len(srcs) > 1 and not dst_is_dir:
            raise NotADirectory(f"target {dst_text!r} is not a directory", path=dst_text)
        failures: list[BaseException] = []
        for src in srcs:
            if src.kind != "host" and dst.kind != "host" and src.target == dst.target:
                sfs = dfs
            elif src.kind != "host":
                sfs = reader.fs(src)
            else:
                sfs = None
            _copy_one(args, src, sfs, dst, dfs, dst_is_dir, writer, failures)
        ok = True
    finally:
        try:
            reader.close(commit=False)
        finally:
            writer.close(commit=ok)
    if failures:  # copy-out went on past these, as cp does; the exit status says so
        code = getattr(failures[0], "exit_code", errors.EXIT_FILESYSTEM)
        return int(code)
    return 0


def _copy_one(
    args: argparse.Namespace,
    src: Address,
    sfs: PathFS | None,
    dst: Address,
    dfs: PathFS | None,
    dst_is_dir: bool,
    writer: Session,
    failures: list[BaseException],
) -> None:
    import sys

    from burrow.cli.common import Progress, tree_bytes
    from burrow.errors import BurrowError
    from burrow.fs.copy import copy_between, copy_in, copy_out

    contents = _is_contents(src.path, src.kind)
    if contents:
        target = dst.path
        exists = dst_is_dir
        if not exists:
            if dfs is not None:
                dfs.mkdir(target, parents=False)
            else:
                os.mkdir(target)
    else:
        if src.kind == "host":
            base = os.path.basename(os.path.normpath(src.path))
        else:
            base = posixpath.basename(posixpath.normpath("/" + src.path))
        if dst_is_dir:
            target = (posixpath if dfs is not None else os.path).join(dst.path, base)
        else:
            target = dst.path
    total = None
    if sys.stderr.isatty():  # the total only matters for a bar on a terminal
        try:
            total = tree_bytes(sfs, src.path) if sfs is not None else _host_bytes(src.path)
        except OSError:
            total = None
    kw = {
        "archive": args.archive,
        "recursive": args.recursive,
        "preserve": args.preserve,
        "contents": contents,
    }
    if args.verbose:
        print(f"{src} -> {target}")

    def report(exc: BaseException) -> None:
        """Copy-out to the host goes on past a file it cannot make (a device node as a
        normal user...), printing one line each, like cp. Into an image, the first error
        stops the command and nothing is committed."""
        failures.append(exc)
        path = getattr(exc, "path", None) or getattr(exc, "filename", None)
        text = (
            str(exc)
            if isinstance(exc, BurrowError)
            else (getattr(exc, "strerror", None) or str(exc))
        )
        print(f"burrow: {path}: {text}" if path else f"burrow: {text}", file=sys.stderr)

    with Progress(total, f"copying {src}") as bar:
        if sfs is None:
            assert dfs is not None
            copy_in(src.path, dfs, target, progress=bar.update, **kw)
        elif dfs is None:
            copy_out(sfs, src.path, target, progress=bar.update, on_error=report, **kw)
        else:
            copy_between(sfs, src.path, dfs, target, progress=bar.update, **kw)


def _host_bytes(path: str) -> int:
    if not os.path.isdir(path):
        return os.path.getsize(path)
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if st.st_mode & 0o170000 == 0o100000:
                total += st.st_size
    return total
