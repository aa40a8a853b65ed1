"""``burrow stat [--json] [-L] IMAGE[@PART]:PATH...``: a file's attributes, like GNU stat."""

from __future__ import annotations

import argparse
import stat as _stat
import time
from typing import Any

from burrow.fs.vfs import Stat


def configure(parser: argparse.ArgumentParser) -> None:
    from burrow.cli.common import add_json

    parser.add_argument("paths", nargs="+", metavar="IMAGE[@PART]:PATH")
    parser.add_argument("-L", "--dereference", action="store_true", help="follow symlinks")
    add_json(parser)


KINDS = {
    _stat.S_IFREG: "regular file",
    _stat.S_IFDIR: "directory",
    _stat.S_IFLNK: "symbolic link",
    _stat.S_IFCHR: "character special file",
    _stat.S_IFBLK: "block special file",
    _stat.S_IFIFO: "fifo",
    _stat.S_IFSOCK: "socket",
}


def kind_of(mode: int) -> str:
    return KINDS.get(_stat.S_IFMT(mode), "unknown")


def stat_dict(st: Stat) -> dict[str, Any]:
    return {
        "ino": st.st_ino,
        "type": kind_of(st.st_mode),
        "mode": st.st_mode,
        "mode_octal": f"{_stat.S_IMODE(st.st_mode):04o}",
        "mode_string": _stat.filemode(st.st_mode),
        "nlink": st.st_nlink,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "size": st.st_size,
        "blocks": st.st_blocks,
        "blksize": st.st_blksize,
        "rdev": st.st_rdev,
        "atime_ns": st.st_atime_ns,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "birthtime_ns": st.st_birthtime_ns,
    }


def fmt_time(ns: int | None) -> str:
    if ns is None:
        return "-"
    secs, frac = divmod(ns, 1_000_000_000)
    t = time.localtime(secs)
    return time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{frac:09d} " + time.strftime("%z", t)


def run(args: argparse.Namespace) -> int:
    from burrow.cli.common import Session, display, emit_json, fs_address

    results: list[dict[str, Any]] = []
    with Session() as session:
        for text in args.paths:
            addr = fs_address(text)
            pfs = session.fs(addr)
            st = pfs.stat(addr.path, follow_symlinks=args.dereference)
            entry = {"path": text, **stat_dict(st)}
            if st.is_symlink():
                entry["target"] = pfs.readlink(addr.path)
            results.append(entry)
    if args.json:
        emit_json(results if len(results) > 1 else results[0])
        return 0
    for e in results:
        name = display(f"{e['path']} -> {e['target']}" if "target" in e else e["path"])
        print(f"  File: {name}")
        print(
            f"  Size: {e['size']:<15} Blocks: {e['blocks']:<10} IO Block: {e['blksize']:<6} "
            f"{e['type']}"
        )
        dev = ""
        if e["rdev"]:
            rdev = int(e["rdev"])
            dev = f" Device type: {rdev >> 8 & 0xFFF},{(rdev & 0xFF) | (rdev >> 12 & 0xFFF00)}"
        print(f"Inode: {e['ino']:<15} Links: {e['nlink']}{dev}")
        print(
            f"Access: ({e['mode_octal']}/{e['mode_string']})  Uid: {e['uid']:>5}   Gid: {e['gid']:>5}"
        )
        print(f"Access: {fmt_time(e['atime_ns'])}")
        print(f"Modify: {fmt_time(e['mtime_ns'])}")
        print(f"Change: {fmt_time(e['ctime_ns'])}")
        print(f" Birth: {fmt_time(e['birthtime_ns'])}")
    return 0
