"""Tar streams to and from a ``PathFS``: used by ``burrow tar-out``/``tar-in`` and by
``burrow create --spec`` (contents from tar files).

Why here and not in the commands: the spec builder unpacks tar files into new filesystems
with the same rules as ``tar-in``, so the rules exist once.

Written streams look like ``tar -C DIR -cf - .`` on a loop mount: members ``./...``, numeric
owners (no names, so extraction as root restores the image's ids), modes, mtimes with
nanoseconds (pax), symlinks, hard links, device nodes, fifos and xattrs as
``SCHILY.xattr.*`` pax records (GNU tar ``--xattrs``). Sockets are skipped, as tar does.

Extraction keeps owners, modes, mtimes, links, devices and xattrs exactly (no root needed:
burrow writes the image itself). Names containing ``..`` are refused (skipped with a
warning), absolute names are taken relative to the destination. Symlinks in the archive
can never redirect extraction outside the filesystem, since every path resolves inside it.
"""

from __future__ import annotations

import gzip
import lzma
import os
import posixpath
import stat as _stat
import tarfile
import zlib
from collections.abc import Callable
from typing import IO

from burrow.errors import CorruptImage, IsADirectory, NotADirectory, NotFound
from burrow.fs.copy import data_runs
from burrow.fs.paths import CHUNK, PathFS
from burrow.fs.vfs import Stat

__all__ = ["extract_tar", "write_tar"]

Warn = Callable[[str], object]


def _noop(message: str) -> None:
    return None


def _member(pfs: PathFS, path: str, name: str, st: Stat, xattrs: bool) -> tarfile.TarInfo | None:
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


def write_tar(
    pfs: PathFS, top: str, out: IO[bytes], *, xattrs: bool = True, warn: Warn = _noop
) -> int:
    """Write ``top`` (a directory's tree, or one file) as a pax tar stream; returns members."""
    st = pfs.stat(top)
    seen: dict[int, str] = {}
    count = 0
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:

        def add(path: str, name: str, st: Stat) -> None:
            nonlocal count
            if not st.is_dir() and st.st_nlink > 1:
                first = seen.get(st.st_ino)
                if first is not None:
                    ti = tarfile.TarInfo(name)
                    ti.type, ti.linkname = tarfile.LNKTYPE, first
                    ti.mode, ti.uid, ti.gid = _stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
                    ti.mtime = st.st_mtime_ns // 1_000_000_000
                    tar.addfile(ti)
                    count += 1
                    return
                seen[st.st_ino] = name
            info = _member(pfs, path, name, st, xattrs)
            if info is None:
                warn(f"{path}: socket ignored")
                return
            if info.type == tarfile.REGTYPE:
                with pfs.open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
            count += 1

        if not st.is_dir():
            add(top, posixpath.basename(top.rstrip("/")), st)
            return count
        # Depth-first pre-order (a directory, then everything in it, then its siblings), as
        # tar writes: extractors fix a directory's mtime once they leave it.
        for dirpath, dirs, files in pfs.walk(top):
            rel = posixpath.relpath(dirpath, top)
            add(
                dirpath, "." if rel == "." else f"./{rel}", pfs.lstat(dirpath) if rel != "." else st
            )
            prefix = "./" if rel == "." else f"./{rel}/"
            links = [d for d in dirs if pfs.is_symlink(posixpath.join(dirpath, d))]
            for name in sorted(files + links):
                p = posixpath.join(dirpath, name)
                add(p, prefix + name, pfs.lstat(p))
            dirs.sort()
    return count


def _clean(name: str) -> str | None:
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        return None
    return "/".join(parts)


def extract_tar(
    pfs: PathFS,
    source: IO[bytes],
    dest_dir: str = "/",
    *,
    same_owner: bool = True,
    warn: Warn = _noop,
) -> int:
    """Unpack a (possibly compressed) tar stream under ``dest_dir``; returns members written.

    ``same_owner=False`` gives new files ``pfs.uid/gid`` instead of the archive's owners.
    """
    base = dest_dir
    if not pfs.is_dir(base):
        raise NotADirectory(path=base)
    try:
        return _extract(pfs, source, base, same_owner, warn)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as exc:
        raise CorruptImage("tar stream", None, str(exc) or type(exc).__name__) from None
    except (ValueError, OverflowError) as exc:  # out-of-range numbers in a damaged header
        raise CorruptImage("tar stream", None, str(exc)) from None


MAX_HEADER_RECORD = 1 << 20  # pax and GNU long-name records hold names and xattrs, not MiBs
_HEADER_RECORDS = (
    tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK,
)  # fmt: skip


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a pax or long-name record into memory whole, at the size its header
    claims: a 500 KiB .tar.gz could make it allocate gigabytes. Refuse big ones first."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _HEADER_RECORDS and self.size > MAX_HEADER_RECORD:
            raise tarfile.ReadError(f"{self.size}-byte extended header record")
        return super()._proc_member(tarfile_)  # type: ignore[misc,no-any-return]


def _open_stream(source: IO[bytes]) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=source, mode="r|*", tarinfo=_BoundedTarInfo)
    except TypeError as exc:  # tarfile reads a gzip header cut short with ord(b"")
        raise CorruptImage("tar stream", None, f"truncated gzip header ({exc})") from None


def _extract(pfs: PathFS, source: IO[bytes], base: str, same_owner: bool, warn: Warn) -> int:
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    count = 0
    with _open_stream(source) as tar:
        for m in tar:
            rel = _clean(m.name)
            if rel is None:
                warn(f"{m.name}: member name contains '..', skipped")
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
                count += 1
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
                    pos = 0
                    while f is not None:
                        data = f.read(CHUNK)
                        if not data:
                            break
                        for start, end in data_runs(data):  # zeros stay holes
                            out.seek(pos + start)
                            out.write(data[start:end])
                        pos += len(data)
                    out.truncate(pos)
            elif m.issym():
                pfs.symlink(m.linkname, dest)
            elif m.islnk():
                target = _clean(m.linkname)
                if target is None:
                    warn(f"{m.name}: link target contains '..', skipped")
                    continue
                pfs.link(posixpath.join(base, target), dest, follow_symlinks=False)
                count += 1
                continue  # a hard link shares the first member's attributes
            elif m.ischr() or m.isblk() or m.isfifo():
                if m.ischr():
                    kind = _stat.S_IFCHR
                elif m.isblk():
                    kind = _stat.S_IFBLK
                else:
                    kind = _stat.S_IFIFO
                pfs.mknod(dest, kind | 0o600, os.makedev(m.devmajor, m.devminor))
            else:
                warn(f"{m.name}: unsupported member type, skipped")
                continue
            _apply(pfs, dest, m, same_owner)
            count += 1
    for dest, m in reversed(dirs):  # directories last, deepest first, so mtimes stay put
        _apply(pfs, dest, m, same_owner)
    return count


def _apply(pfs: PathFS, dest: str, m: tarfile.TarInfo, same_owner: bool) -> None:
    for key, value in m.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            pfs.setxattr(dest, key[len("SCHILY.xattr.") :], raw, follow_symlinks=False)
    if same_owner:
        pfs.chown(dest, m.uid, m.gid, follow_symlinks=False)
    if not m.issym():
        pfs.chmod(dest, m.mode & 0o7777)
    mtime_ns = round(float(m.mtime) * 1e9)
    text = m.pax_headers.get("mtime")
    if text:
        sec, _, frac = str(text).partition(".")
        try:
            whole = int(sec)
            mtime_ns = whole * 1_000_000_000 + (-1 if whole < 0 else 1) * int((frac + "0" * 9)[:9])
        except ValueError:
            pass
    pfs.utime(dest, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
