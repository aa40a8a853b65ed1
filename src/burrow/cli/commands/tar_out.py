"""``burrow tar-out IMAGE[@PART]:DIR > out.tar``: a directory of an image as a tar stream.

The stream looks like ``tar -C DIR -cf - .`` run on a loop mount: members ``./...``, numeric
owners kept (no names, so extraction as root restores the image's ids), modes, mtimes with
nanoseconds, symlinks, hard links, device nodes and fifos, and xattrs as
``SCHILY.xattr.*`` pax records (GNU tar ``--xattrs``). Sockets are skipped, as tar does.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import stat as _stat
import sys
import tarfile

from burrow.fs.paths import PathFS
from burrow.fs.vfs import Stat


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="IMAGE[@PART]:DIR")
    parser.add_argument("--no-xattrs", action="store_true", help="leave out extended attributes")


def _info(pfs: PathFS, path: str, name: str, st: Stat, xattrs: bool) -> tarfile.TarInfo | None:
    ti = tarfile.TarInfo(name)
    ti.mode = _stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    pax: dict[str, str] = {}
    sec, frac = divmod(st.st_mtime_ns, 1_000_000_000)
    ti.mtime = sec
    if frac:
        pax["mtime"] = f"{sec}.{frac:09d}"
    kind = _stat.S_IFMT(st.st_mode)
    if kind == _stat.S_IFREG:
        ti.type, ti.size = tarfile.REGTYPE, st.st_size
    elif kind == _stat.S_IFDIR:
        ti.type = tarfile.DIRTYPE
    elif kind == _stat.S_IFLNK:
        ti.type, ti.linkname = tarfile.SYMTYPE, pfs.readlink(path)
    elif kind in (_stat.S_IFCHR, _stat.S_IFBLK):
        ti.type = tarfile.CHRTYPE if kind == _stat.S_IFCHR else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    elif kind == _stat.S_IFIFO:
        ti.type = tarfile.FIFOTYPE
    else:
        return None
    if xattrs:
        try:
            names = pfs.listxattr(path, follow_symlinks=False)
        except OSError:
            names = []
        for n in names:
            value = pfs.getxattr(path, n, follow_symlinks=False)
            pax["SCHILY.xattr." + n] = value.decode("utf-8", "surrogateescape")
    ti.pax_headers = pax
    return ti


def run(args: argparse.Namespace) -> int:
    from burrow.cli.common import Session, fs_address
    from burrow.errors import UsageError

    if sys.stdout.isatty():
        raise UsageError("refusing to write a tar stream to a terminal; redirect stdout")
    addr = fs_address(args.path)
    out = sys.stdout.buffer
    xattrs = not args.no_xattrs
    with Session() as session:
        pfs = session.fs(addr)
        top = addr.path
        st = pfs.stat(top)
        seen: dict[int, str] = {}
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:

            def add(path: str, name: str, st: Stat) -> None:
                if not st.is_dir() and st.st_nlink > 1:
                    first = seen.get(st.st_ino)
                    if first is not None:
                        ti = tarfile.TarInfo(name)
                        ti.type, ti.linkname = tarfile.LNKTYPE, first
                        ti.mode, ti.uid, ti.gid = _stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
                        ti.mtime = st.st_mtime_ns // 1_000_000_000
                        tar.addfile(ti)
                        return
                    seen[st.st_ino] = name
                info = _info(pfs, path, name, st, xattrs)
                if info is None:
                    print(f"burrow: {path}: socket ignored", file=sys.stderr)
                    return
                if info.type == tarfile.REGTYPE:
                    with pfs.open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)

            if not st.is_dir():
                add(top, posixpath.basename(top.rstrip("/")), st)
                return 0
            add(top, ".", st)
            for dirpath, dirs, files in pfs.walk(top):
                rel = posixpath.relpath(dirpath, top)
                prefix = "./" if rel == "." else f"./{rel}/"
                for name in sorted(dirs + files):
                    p = posixpath.join(dirpath, name)
                    add(p, prefix + name, pfs.lstat(p))
                dirs.sort()
    out.flush()
    return 0
