"""``burrow ls [-l] [-R] [-a] [--json] IMAGE[@PART]:PATH...``: list directories in an image."""

from __future__ import annotations

import argparse
import posixpath
import stat as _stat
import sys
import time
from typing import Any

from burrow.fs.paths import PathFS
from burrow.fs.vfs import Stat


def configure(parser: argparse.ArgumentParser) -> None:
    from burrow.cli.common import add_json

    parser.add_argument("paths", nargs="+", metavar="IMAGE[@PART]:PATH")
    parser.add_argument("-l", dest="long", action="store_true", help="long listing (numeric ids)")
    parser.add_argument("-R", dest="recursive", action="store_true", help="list subdirectories")
    parser.add_argument("-a", dest="all", action="store_true", help="include names starting with .")
    parser.add_argument(
        "-d", dest="directory", action="store_true", help="list directories themselves"
    )
    add_json(parser)


def _mtime(ns: int, now: float) -> str:
    secs = ns / 1e9
    t = time.localtime(secs)
    if abs(now - secs) > 182 * 86400:
        return time.strftime("%b %e  %Y", t)
    return time.strftime("%b %e %H:%M", t)


def _entry(pfs: PathFS, path: str, name: str, st: Stat) -> dict[str, Any]:
    from burrow.cli.commands.stat import kind_of

    e: dict[str, Any] = {
        "name": name,
        "type": kind_of(st.st_mode),
        "mode": _stat.filemode(st.st_mode),
        "nlink": st.st_nlink,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ino": st.st_ino,
    }
    if st.is_symlink():
        try:
            e["target"] = pfs.readlink(path)
        except OSError:
            e["target"] = "?"
    if _stat.S_ISCHR(st.st_mode) or _stat.S_ISBLK(st.st_mode):
        e["rdev"] = st.st_rdev
    return e


def _listing(pfs: PathFS, path: str, show_all: bool) -> list[dict[str, Any]]:
    out = []
    if show_all:
        for dot in (".", ".."):
            out.append(_entry(pfs, path, dot, pfs.stat(posixpath.join(path, dot))))
    for entry in sorted(pfs.scandir(path), key=lambda e: e.name.encode("utf-8", "surrogateescape")):
        if not show_all and entry.name.startswith("."):
            continue
        out.append(_entry(pfs, entry.path, entry.name, entry.stat(follow_symlinks=False)))
    return out


def _print(entries: list[dict[str, Any]], long: bool) -> None:
    from burrow.cli.common import display

    write = sys.stdout.write
    if not long:
        for e in entries:
            write(display(e["name"]) + "\n")
        return
    now = time.time()
    w_links = max((len(str(e["nlink"])) for e in entries), default=1)
    w_uid = max((len(str(e["uid"])) for e in entries), default=1)
    w_gid = max((len(str(e["gid"])) for e in entries), default=1)
    sizes = []
    for e in entries:
        if "rdev" in e:
            r = e["rdev"]
            sizes.append(f"{r >> 8 & 0xFFF}, {(r & 0xFF) | (r >> 12 & 0xFFF00)}")
        else:
            sizes.append(str(e["size"]))
    w_size = max((len(s) for s in sizes), default=1)
    for e, size in zip(entries, sizes, strict=True):
        name = display(e["name"] + (f" -> {e['target']}" if "target" in e else ""))
        write(
            f"{e['mode']} {e['nlink']:>{w_links}} {e['uid']:<{w_uid}} {e['gid']:<{w_gid}} "
            f"{size:>{w_size}} {_mtime(e['mtime_ns'], now)} {name}\n"
        )


def run(args: argparse.Namespace) -> int:
    from burrow.cli.common import Session, emit_json, fs_address

    result: list[dict[str, Any]] = []
    with Session() as session:
        addrs = [fs_address(p) for p in args.paths]
        for n, addr in enumerate(addrs):
            pfs = session.fs(addr)
            st = pfs.stat(addr.path)
            if not st.is_dir() or args.directory:
                lst = pfs.lstat(addr.path)
                entries = [_entry(pfs, addr.path, addr.path, lst)]
                result.append({"path": str(addr), "entries": entries})
                if not args.json:
                    _print(entries, args.long)
                continue
            todo = [addr.path]
            first = True
            seen: set[int] = set()
            while todo:
                path = todo.pop(0)
                ino = pfs.resolve(path)
                if ino in seen:  # a directory loop in a corrupt image: list it once
                    continue
                seen.add(ino)
                entries = _listing(pfs, path, args.all)
                result.append({"path": f"{addr.target}:{path}", "entries": entries})
                if not args.json:
                    if len(addrs) > 1 or args.recursive:
                        if not (first and n == 0):
                            sys.stdout.write("\n")
                        sys.stdout.write(f"{addr.target}:{path}:\n")
                    if args.long:
                        blocks = sum(
                            pfs.lstat(posixpath.join(path, e["name"])).st_blocks
                            for e in entries
                            if e["name"] not in (".", "..")
                        )
                        sys.stdout.write(f"total {blocks // 2}\n")
                    _print(entries, args.long)
                first = False
                if args.recursive:
                    subs = [
                        posixpath.join(path, e["name"])
                        for e in entries
                        if e["type"] == "directory" and e["name"] not in (".", "..")
                    ]
                    todo[0:0] = subs
    if args.json:
        emit_json(result)
    return 0
