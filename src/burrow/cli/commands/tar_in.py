"""``burrow tar-in IMAGE[@PART]:DIR < in.tar``: unpack a tar stream into an image.

Owners (numeric uid/gid), modes, mtimes, symlinks, hard links, device nodes, fifos and
``SCHILY.xattr.*`` xattrs are kept exactly — no root needed, since burrow writes the image
itself. Members whose names contain ``..`` are skipped with a warning (as GNU tar refuses
them); absolute names are taken relative to DIR. Compressed streams (gzip, bz2, xz) are
detected.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import sys
import tarfile


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="IMAGE[@PART]:DIR")
    parser.add_argument("--no-same-owner", action="store_true",
                        help="files belong to you instead of the owners in the archive")  # fmt: skip


def _clean(name: str) -> str | None:
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        return None
    return "/".join(parts)


def run(args: argparse.Namespace) -> int:
    from burrow.cli.common import Session, fs_address
    from burrow.errors import IsADirectory, NotADirectory, NotFound
    from burrow.fs.paths import CHUNK

    addr = fs_address(args.path)
    source = sys.stdin.buffer
    with Session(writable=True) as session:
        pfs = session.fs(addr)
        base = addr.path
        if not pfs.is_dir(base):
            raise NotADirectory(path=str(addr))
        dirs: list[tuple[str, tarfile.TarInfo]] = []
        with tarfile.open(fileobj=source, mode="r|*") as tar:
            for m in tar:
                rel = _clean(m.name)
                if rel is None:
                    print(f"burrow: {m.name}: member name contains '..', skipped", file=sys.stderr)
                    continue
                dest = posixpath.join(base, rel) if rel else base
                parent = posixpath.dirname(dest)
                if rel and not pfs.is_dir(parent):
                    pfs.makedirs(parent, exist_ok=True)
                if m.isdir():
                    if not pfs.lexists(dest):
                        pfs.mkdir(dest, 0o700)
                    elif not pfs.is_dir(dest):
                        raise NotADirectory(f"{m.name}: exists and is not a directory", path=dest)
                    dirs.append((dest, m))
                    continue
                if not rel:
                    continue
                try:
                    old = pfs.lstat(dest)
                except NotFound:
                    old = None
                if old is not None:
                    if old.is_dir():
                        raise IsADirectory(f"{m.name}: a directory is in the way", path=dest)
                    pfs.remove(dest)
                if m.isreg():
                    f = tar.extractfile(m)
                    with pfs.open(dest, "wb") as out:
                        assert f is not None
                        while True:
                            data = f.read(CHUNK)
                            if not data:
                                break
                            out.write(data)
                elif m.issym():
                    pfs.symlink(m.linkname, dest)
                elif m.islnk():
                    target = _clean(m.linkname)
                    if target is None:
                        print(
                            f"burrow: {m.name}: link target contains '..', skipped", file=sys.stderr
                        )
                        continue
                    pfs.link(posixpath.join(base, target), dest, follow_symlinks=False)
                    continue  # a hard link shares the first member's attributes
                elif m.ischr() or m.isblk() or m.isfifo():
                    import stat as _stat

                    kind = (
                        _stat.S_IFCHR
                        if m.ischr()
                        else _stat.S_IFBLK
                        if m.isblk()
                        else _stat.S_IFIFO
                    )
                    pfs.mknod(dest, kind | 0o600, os.makedev(m.devmajor, m.devminor))
                else:
                    print(f"burrow: {m.name}: unsupported member type, skipped", file=sys.stderr)
                    continue
                _apply(pfs, dest, m, args.no_same_owner)
        for dest, m in reversed(dirs):  # directories last, deepest first: mtimes stay put
            _apply(pfs, dest, m, args.no_same_owner)
    return 0


def _apply(pfs: object, dest: str, m: tarfile.TarInfo, no_same_owner: bool) -> None:
    from burrow.fs.paths import PathFS

    assert isinstance(pfs, PathFS)
    link = m.issym()
    for key, value in m.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            pfs.setxattr(dest, key[len("SCHILY.xattr.") :], raw, follow_symlinks=False)
    if not no_same_owner:
        pfs.chown(dest, m.uid, m.gid, follow_symlinks=False)
    if not link:
        pfs.chmod(dest, m.mode & 0o7777)
    mtime_ns = round(float(m.mtime) * 1e9)
    if "mtime" in m.pax_headers:
        sec, _, frac = str(m.pax_headers["mtime"]).partition(".")
        mtime_ns = int(sec) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    pfs.utime(dest, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
