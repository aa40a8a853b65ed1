"""Copy files and trees between the host and filesystems, with ``cp``'s rules.

One engine, three directions: ``copy_in`` (host -> filesystem), ``copy_out`` (filesystem ->
host) and ``copy_between`` (filesystem -> filesystem). A *side* adapts each end: the host side
uses ``os`` calls, the filesystem side works on inodes (one ``readdir``/``getattr`` per entry,
no path walk per file), so a 10k-file tree costs no more lookups than it has entries.

Rules, as GNU ``cp``:

* Without ``archive``: new files and directories belong to the invoking user (the host
  process, or ``PathFS.uid/gid`` on a filesystem) with the source's permission bits minus the
  umask (set-id and sticky bits dropped); times are new. An existing destination file is
  overwritten in place and keeps its mode and owner. With ``recursive``, symlinks are copied
  as symlinks and device nodes, fifos and sockets are recreated; without it, the source is
  followed and must be a regular file.
* With ``archive`` (``cp -a``): modes (set-id bits included), owners, atime/mtime, xattrs,
  hard links, symlinks and device nodes are kept. Owners that the host refuses (not root) and
  xattrs the host refuses (``trusted.*`` as a user) are skipped silently, as ``cp -a`` does.
  Directory attributes are applied after their contents, so read-only directories still fill.
* ``contents=True`` copies the entries of a source directory into an existing destination
  directory (``cp -a SRC/. DST``); with ``archive`` the source directory's own attributes go
  onto the destination directory too (that is what ``burrow cp -a IMAGE:/ DIR`` means).
* Data moves in 1 MiB pieces. Aligned 4 KiB blocks that are entirely zero are not written
  (the destination stays sparse there, as ``cp --sparse=auto``); the size is set at the end.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat as _stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from burrow.errors import (
    BurrowError,
    CorruptImage,
    FilesystemError,
    InvalidArgument,
    InvalidOperation,
    IsADirectory,
    NotADirectory,
    NotFound,
    NotPermitted,
    NotSupported,
)
from burrow.fs.paths import CHUNK, PathFS, _at, tag_error
from burrow.fs.vfs import Stat

__all__ = ["CopyOptions", "CopyStats", "copy_between", "copy_in", "copy_out", "host_stat"]

_ZEROS = bytes(CHUNK)
HOLE_BLOCK = 4096  # zero runs this size and aligned to it are left as holes
_ZERO_BLOCK = bytes(HOLE_BLOCK)


def data_runs(data: bytes | bytearray | memoryview) -> list[tuple[int, int]]:
    """``(start, end)`` runs of ``data`` that hold something other than aligned all-zero
    4 KiB blocks: the parts to write, so that zeros become holes (as ``cp --sparse=auto``).

    The common cases cost one C-level search: no zero block at all (write everything) or
    all zeros (write nothing); only mixed chunks are split block by block."""
    n = len(data)
    view = memoryview(data).cast("B")
    if n == CHUNK and view == _ZEROS:
        return []
    hay = (
        view.obj if isinstance(view.obj, bytes | bytearray) and len(view.obj) == n else bytes(view)
    )
    if _ZERO_BLOCK not in hay:
        return [(0, n)] if n else []
    runs: list[tuple[int, int]] = []
    start = -1
    for off in range(0, n, HOLE_BLOCK):
        end = min(off + HOLE_BLOCK, n)
        zero = end - off == HOLE_BLOCK and view[off:end] == _ZERO_BLOCK
        if zero:
            if start >= 0:
                runs.append((start, off))
                start = -1
        elif start < 0:
            start = off
    if start >= 0:
        runs.append((start, n))
    return runs


_SPECIAL_KINDS = (_stat.S_IFCHR, _stat.S_IFBLK, _stat.S_IFIFO, _stat.S_IFSOCK)
# host errors that mean "this metadata cannot be kept here" (cp -a ignores them)
_SOFT_ERRNOS = {errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL}


@dataclass
class CopyStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    specials: int = 0
    hardlinks: int = 0
    bytes: int = 0
    errors: int = 0


@dataclass
class CopyOptions:
    archive: bool = False
    recursive: bool = False
    contents: bool = False
    # follow a symlink given as the source itself (None: cp's default, follow unless -r/-a)
    follow_top: bool | None = None
    progress: Callable[[int], object] | None = None
    on_error: Callable[[BaseException], object] | None = None


def host_stat(st: os.stat_result) -> Stat:
    """A host ``os.stat_result`` as a ``vfs.Stat``."""
    return Stat(
        st_ino=st.st_ino, st_mode=st.st_mode, st_nlink=st.st_nlink, st_uid=st.st_uid,
        st_gid=st.st_gid, st_size=st.st_size, st_atime_ns=st.st_atime_ns,
        st_mtime_ns=st.st_mtime_ns, st_ctime_ns=st.st_ctime_ns, st_rdev=st.st_rdev,
        st_blocks=st.st_blocks, st_blksize=st.st_blksize, st_dev=st.st_dev,
    )  # fmt: skip


def _join(directory: str, name: str) -> str:
    """``os.path.join`` for a name without slashes, without its generality (hot path).

    Names come from images: a directory entry named ``../x`` (or holding NUL, or ``.``/``..``)
    would write outside the destination, so it is refused (the copy reports it and goes on).
    """
    if "/" in name or "\0" in name or name in ("", ".", ".."):
        raise CorruptImage("directory entry", None, f"unusable file name {name!r}")
    return directory + name if directory.endswith("/") else directory + "/" + name


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- sides ------------------------------------------------------------------------------
class _HostSource:
    """Reads from host paths; handles are path strings."""

    def top(self, path: str, follow: bool) -> tuple[Any, Stat]:
        return path, host_stat(os.stat(path, follow_symlinks=follow))

    def children(self, handle: Any) -> Iterator[tuple[str, Any, Stat]]:
        with os.scandir(handle) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            yield e.name, e.path, host_stat(e.stat(follow_symlinks=False))

    def chunks(self, handle: Any, st: Stat) -> Iterator[bytes]:
        with open(handle, "rb", buffering=0) as f:
            while True:
                data = f.read(CHUNK)
                if not data:
                    return
                yield data

    def readlink(self, handle: Any) -> str:
        return str(os.readlink(handle))

    def xattrs(self, handle: Any) -> list[tuple[str, bytes]]:
        try:
            names = os.listxattr(handle, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _SOFT_ERRNOS:
                return []
            raise
        out = []
        for name in names:
            try:
                out.append((name, os.getxattr(handle, name, follow_symlinks=False)))
            except OSError as exc:
                if exc.errno not in (*_SOFT_ERRNOS, errno.ENODATA):
                    raise
        return out

    def key(self, st: Stat) -> tuple[int, int]:
        return st.st_dev, st.st_ino

    def display(self, handle: Any) -> str:
        return str(handle)


class _FsSource:
    """Reads from a filesystem by inode; handles are ``(ino, path)``."""

    def __init__(self, pfs: PathFS) -> None:
        self.pfs = pfs
        self.fs = pfs.fs

    def top(self, path: str, follow: bool) -> tuple[Any, Stat]:
        ino = self.pfs.resolve(path, follow_symlinks=follow)
        with _at(path):
            return (ino, path), self.fs.getattr(ino)

    def children(self, handle: Any) -> Iterator[tuple[str, Any, Stat]]:
        ino, path = handle
        with _at(path):
            entries = sorted(self.fs.readdir(ino), key=lambda e: e.name)
        prefix = path if path.endswith("/") else path + "/"
        getattr_ = self.fs.getattr
        for e in entries:
            sub = prefix + e.name
            try:
                st = getattr_(e.ino)
            except BurrowError as exc:
                tag_error(exc, sub)
                raise
            yield e.name, (e.ino, sub), st

    def chunks(self, handle: Any, st: Stat) -> Iterator[bytes]:
        ino, path = handle
        read = self.fs.read
        size = st.st_size
        pos = 0
        try:
            while True:
                data = read(ino, pos, CHUNK if size - pos >= CHUNK else max(size - pos + 1, 1))
                if not data:
                    return
                yield data
                pos += len(data)
                if len(data) < CHUNK and pos >= size:
                    return
        except BurrowError as exc:
            tag_error(exc, path)
            raise

    def readlink(self, handle: Any) -> str:
        ino, path = handle
        with _at(path):
            return self.fs.readlink(ino)

    def xattrs(self, handle: Any) -> list[tuple[str, bytes]]:
        ino, path = handle
        with _at(path):
            return [(n, self.fs.getxattr(ino, n)) for n in self.fs.listxattr(ino)]

    def key(self, st: Stat) -> tuple[int, int]:
        return 0, st.st_ino

    def display(self, handle: Any) -> str:
        return str(handle[1])


class _HostSink:
    """Writes host paths; handles are path strings. The kernel applies the umask and owner."""

    def __init__(self) -> None:
        self.umask = _current_umask()
        self.can_chown = os.geteuid() == 0
        self._fds: dict[str, int] = {}

    def top_dir(self, path: str) -> Any:
        if not os.path.isdir(path):
            raise NotADirectory(path=path)
        return path

    def lookup(self, dirh: Any, name: str) -> tuple[Any, Stat] | None:
        path = _join(dirh, name)
        try:
            return path, host_stat(os.lstat(path))
        except FileNotFoundError:
            return None

    def mkdir(self, dirh: Any, name: str, mode: int, uid: int | None, gid: int | None) -> Any:
        path = _join(dirh, name)
        os.mkdir(path, 0o700)  # final mode set after the contents
        return path

    def create(
        self, dirh: Any, name: str, mode: int, uid: int | None, gid: int | None, exists: bool
    ) -> Any:
        return _join(dirh, name)

    def write_file(self, handle: Any, chunks: Iterator[bytes], size: int, mode: int) -> int:
        """Write the data; the descriptor stays open for ``set_attrs`` (fchown, fchmod,
        futimens on the fd: no second path lookup), and ``release`` closes it."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(handle, flags, mode & 0o777)
        self._fds[handle] = fd
        pos = 0
        written_to = 0
        for data in chunks:
            view = memoryview(data).cast("B")
            for start, end in data_runs(view):
                part = view[start:end]
                at = pos + start
                while part:
                    k = os.pwrite(fd, part, at)
                    part = part[k:]
                    at += k
                written_to = pos + end
            pos += len(view)
        if written_to < pos:  # the file ends in a hole: give it its size
            os.ftruncate(fd, pos)
        return pos

    def release(self, handle: Any) -> None:
        fd = self._fds.pop(handle, None)
        if fd is not None:
            os.close(fd)

    def symlink(self, dirh: Any, name: str, target: str, uid: int | None, gid: int | None) -> Any:
        path = _join(dirh, name)
        if "\0" in target:  # os.symlink would raise ValueError
            raise CorruptImage("symlink", None, f"NUL in the target of {name!r}")
        os.symlink(target, path)
        return path

    def link(self, first: Any, dirh: Any, name: str) -> Any:
        path = _join(dirh, name)
        os.link(first, path, follow_symlinks=False)
        return path

    def mknod(
        self, dirh: Any, name: str, mode: int, rdev: int, uid: int | None, gid: int | None
    ) -> Any:
        path = _join(dirh, name)
        if _stat.S_ISFIFO(mode):
            os.mkfifo(path, _stat.S_IMODE(mode))
        else:
            os.mknod(path, mode, rdev)
        return path

    def remove(self, dirh: Any, name: str) -> None:
        os.unlink(_join(dirh, name))

    def set_attrs(
        self,
        handle: Any,
        st: Stat,
        *,
        mode: int | None,
        owner: bool,
        times: bool,
        xattrs: list[tuple[str, bytes]],
    ) -> None:
        link = _stat.S_ISLNK(st.st_mode)
        fd = self._fds.get(handle)
        target: Any = handle if fd is None else fd
        nofollow = fd is None  # calls on an fd take no follow_symlinks
        if owner:
            try:
                if nofollow:
                    os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
                else:
                    os.fchown(fd, st.st_uid, st.st_gid)  # type: ignore[arg-type]
            except OSError as exc:
                if exc.errno not in _SOFT_ERRNOS:
                    raise
        for name, value in xattrs:
            try:
                if nofollow:
                    os.setxattr(target, name, value, follow_symlinks=False)
                else:
                    os.setxattr(target, name, value)
            except OSError as exc:
                if exc.errno not in _SOFT_ERRNOS:
                    raise
        if mode is not None and not link:
            os.chmod(target, mode)
        if times:
            if nofollow:
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            else:
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))

    def display(self, handle: Any) -> str:
        return str(handle)


class _FsSink:
    """Writes into a filesystem by inode; handles are ``(ino, path)``."""

    def __init__(self, pfs: PathFS) -> None:
        self.pfs = pfs
        self.fs = pfs.fs
        self.umask = pfs.umask

    def top_dir(self, path: str) -> Any:
        ino = self.pfs.resolve(path)
        with _at(path):
            if not self.fs.getattr(ino).is_dir():
                raise NotADirectory(path=path)
        return ino, path

    def lookup(self, dirh: Any, name: str) -> tuple[Any, Stat] | None:
        dino, dpath = dirh
        path = posixpath.join(dpath, name)
        try:
            ino = self.fs.lookup(dino, name)
        except NotFound:
            return None
        with _at(path):
            return (ino, path), self.fs.getattr(ino)

    def _ids(self, uid: int | None, gid: int | None) -> tuple[int, int]:
        return (self.pfs.uid if uid is None else uid), (self.pfs.gid if gid is None else gid)

    def mkdir(self, dirh: Any, name: str, mode: int, uid: int | None, gid: int | None) -> Any:
        dino, dpath = dirh
        path = posixpath.join(dpath, name)
        with _at(path):
            return self.fs.mkdir(dino, name, mode, *self._ids(uid, gid)), path

    def create(
        self, dirh: Any, name: str, mode: int, uid: int | None, gid: int | None, exists: bool
    ) -> Any:
        dino, dpath = dirh
        path = posixpath.join(dpath, name)
        with _at(path):
            if exists:
                ino = self.fs.lookup(dino, name)
                self.fs.setattr(ino, size=0)
                return ino, path
            return self.fs.create(dino, name, mode, *self._ids(uid, gid)), path

    def write_file(self, handle: Any, chunks: Iterator[bytes], size: int, mode: int) -> int:
        ino, path = handle
        pos = 0
        with _at(path):
            for data in chunks:
                view = memoryview(data).cast("B")
                for start, end in data_runs(view):
                    done = start
                    while done < end:
                        k = self.fs.write(ino, pos + done, view[done:end])
                        if k <= 0:
                            raise FilesystemError("short write", path=path)
                        done += k
                pos += len(view)
            if self.fs.getattr(ino).st_size != pos:
                self.fs.setattr(ino, size=pos)
        return pos

    def release(self, handle: Any) -> None:
        return None

    def symlink(self, dirh: Any, name: str, target: str, uid: int | None, gid: int | None) -> Any:
        dino, dpath = dirh
        path = posixpath.join(dpath, name)
        with _at(path):
            return self.fs.symlink(dino, name, target, *self._ids(uid, gid)), path

    def link(self, first: Any, dirh: Any, name: str) -> Any:
        dino, dpath = dirh
        path = posixpath.join(dpath, name)
        with _at(path):
            self.fs.link(first[0], dino, name)
        return first[0], path

    def mknod(
        self, dirh: Any, name: str, mode: int, rdev: int, uid: int | None, gid: int | None
    ) -> Any:
        dino, dpath = dirh
        path = posixpath.join(dpath, name)
        with _at(path):
            return self.fs.mknod(dino, name, mode, rdev, *self._ids(uid, gid)), path

    def remove(self, dirh: Any, name: str) -> None:
        dino, dpath = dirh
        with _at(posixpath.join(dpath, name)):
            self.fs.unlink(dino, name)

    def set_attrs(
        self,
        handle: Any,
        st: Stat,
        *,
        mode: int | None,
        owner: bool,
        times: bool,
        xattrs: list[tuple[str, bytes]],
    ) -> None:
        ino, path = handle
        with _at(path):
            for name, value in xattrs:
                try:
                    self.fs.setxattr(ino, name, value, 0)
                except (NotSupported, NotPermitted):
                    pass  # as cp -a onto a filesystem without xattrs (FAT): skipped
            kw: dict[str, int] = {}
            if mode is not None and not _stat.S_ISLNK(st.st_mode):
                kw["mode"] = mode
            if times:
                kw["atime_ns"], kw["mtime_ns"] = st.st_atime_ns, st.st_mtime_ns
            if owner:
                try:
                    self.fs.setattr(ino, uid=st.st_uid, gid=st.st_gid)
                except (NotSupported, NotPermitted):
                    pass  # FAT stores no owners: kept as the filesystem's, like cp -a to vfat
            if kw:
                self.fs.setattr(ino, **kw)

    def display(self, handle: Any) -> str:
        return str(handle[1])


# -- the engine -------------------------------------------------------------------------
class _Copier:
    def __init__(self, src: Any, dst: Any, opts: CopyOptions) -> None:
        self.src = src
        self.dst = dst
        self.opts = opts
        self.stats = CopyStats()
        self.links: dict[tuple[int, int], Any] = {}
        # source directories already copied: a directory cannot legitimately appear twice,
        # so a repeat means a loop in a corrupt image and must not be followed forever
        self.dirs_seen: set[tuple[int, int]] = set()
        self.dir_attrs: list[tuple[Any, Stat, bool, Any]] = []
        self.fresh: set[Any] = set()  # destination directories made by this copy

    def finish(self) -> None:
        """Set directory attributes at the end, deepest first, so creating entries can no
        longer change a directory's mtime afterwards (and read-only directories still fill)."""
        for handle, dir_st, new, dir_sh in self.dir_attrs:
            try:
                self.finish_attrs(handle, dir_st, new=new, sh=dir_sh)
            except (BurrowError, OSError) as exc:
                self.fail(exc)
        self.dir_attrs.clear()

    def enter_dir(self, sh: Any, st: Stat) -> None:
        key = self.src.key(st)
        if key in self.dirs_seen:
            raise CorruptImage(
                "directory tree", None, f"{self.src.display(sh)} is reached twice (a loop)"
            )
        self.dirs_seen.add(key)

    def fail(self, exc: BaseException) -> None:
        self.stats.errors += 1
        if self.opts.on_error is None:
            raise exc
        self.opts.on_error(exc)

    def mode_for(self, st: Stat) -> int:
        if self.opts.archive:
            return _stat.S_IMODE(st.st_mode)
        umask: int = self.dst.umask
        return _stat.S_IMODE(st.st_mode) & 0o777 & ~umask

    def ids(self, st: Stat) -> tuple[int | None, int | None]:
        return (st.st_uid, st.st_gid) if self.opts.archive else (None, None)

    def attr_mode(self, st: Stat, *, new: bool) -> int | None:
        if self.opts.archive:
            return _stat.S_IMODE(st.st_mode)
        # a new object gets the source's bits minus the umask; an existing one keeps its own
        return self.mode_for(st) if new else None

    def finish_attrs(self, handle: Any, st: Stat, *, new: bool, sh: Any) -> None:
        archive = self.opts.archive
        xattrs = self.src.xattrs(sh) if archive else []
        mode = self.attr_mode(st, new=new)
        self.dst.set_attrs(handle, st, mode=mode, owner=archive, times=archive, xattrs=xattrs)

    def copy_entry(self, sh: Any, st: Stat, dirh: Any, name: str) -> None:
        """Copy one source object (and, for a directory, its subtree) to ``dirh/name``."""
        # Depth-first with an explicit stack; directories' attributes are set post-order.
        stack: list[tuple[Any, Stat, Any, str]] = [(sh, st, dirh, name)]
        while stack:
            sh, st, dirh, name = stack.pop()
            if sh is None:  # marker: a directory's contents are done; its attributes are
                # applied by finish() at the end (post-order kept)
                self.dir_attrs.append(dirh)
                continue
            try:
                children = self.copy_one(sh, st, dirh, name)
            except (BurrowError, OSError) as exc:
                self.fail(exc)
                continue
            if children is not None:
                handle, new, kids = children
                stack.append((None, st, (handle, st, new, sh), ""))
                for cname, ch, cst in reversed(kids):
                    stack.append((ch, cst, handle, cname))

    def copy_one(
        self, sh: Any, st: Stat, dirh: Any, name: str
    ) -> tuple[Any, bool, list[tuple[str, Any, Stat]]] | None:
        kind = _stat.S_IFMT(st.st_mode)
        # inside a directory this run created, nothing can exist yet: skip the lookup
        existing = None if dirh in self.fresh else self.dst.lookup(dirh, name)
        if kind == _stat.S_IFDIR:
            if not self.opts.recursive:
                raise IsADirectory(
                    f"-r not specified; omitting directory {self.src.display(sh)}",
                    path=self.src.display(sh),
                )
            if existing is not None:
                handle, est = existing
                if not est.is_dir():
                    raise NotADirectory(
                        "cannot overwrite non-directory with directory",
                        path=self.dst.display(handle),
                    )
                new = False
            else:
                uid, gid = self.ids(st)
                handle = self.dst.mkdir(dirh, name, self.mode_for(st) | 0o700, uid, gid)
                self.fresh.add(handle)
                new = True
                self.stats.dirs += 1
            self.enter_dir(sh, st)
            kids = list(self.src.children(sh))
            return handle, new, kids
        if existing is not None and existing[1].is_dir():
            raise IsADirectory(
                "cannot overwrite directory with non-directory",
                path=self.dst.display(existing[0]),
            )
        # hard links (kept with -a)
        key = None
        if self.opts.archive and st.st_nlink > 1:
            key = self.src.key(st)
            first = self.links.get(key)
            if first is not None:
                if existing is not None:
                    self.dst.remove(dirh, name)
                self.dst.link(first, dirh, name)
                self.stats.hardlinks += 1
                return None
        uid, gid = self.ids(st)
        if kind == _stat.S_IFREG:
            overwrite = existing is not None and existing[1].is_file() and not self.opts.archive
            if existing is not None and not overwrite:
                self.dst.remove(dirh, name)
            handle = self.dst.create(dirh, name, self.mode_for(st), uid, gid, overwrite)
            try:
                n = self.dst.write_file(
                    handle, self._progress(self.src.chunks(sh, st)), st.st_size, self.mode_for(st)
                )
                self.stats.files += 1
                self.stats.bytes += n
                self.finish_attrs(handle, st, new=not overwrite, sh=sh)
            finally:
                self.dst.release(handle)
        elif kind == _stat.S_IFLNK:
            if existing is not None:
                self.dst.remove(dirh, name)
            handle = self.dst.symlink(dirh, name, self.src.readlink(sh), uid, gid)
            self.stats.symlinks += 1
            if self.opts.archive:
                self.finish_attrs(handle, st, new=True, sh=sh)
        elif kind in _SPECIAL_KINDS:
            if existing is not None:
                self.dst.remove(dirh, name)
            mode = kind | self.mode_for(st)
            handle = self.dst.mknod(dirh, name, mode, st.st_rdev, uid, gid)
            self.stats.specials += 1
            self.finish_attrs(handle, st, new=True, sh=sh)
        else:
            raise InvalidOperation(f"cannot copy file type {kind:o}", path=self.src.display(sh))
        if key is not None:
            self.links[key] = handle
        return None

    def _progress(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        cb = self.opts.progress
        if cb is None:
            yield from chunks
            return
        for data in chunks:
            yield data
            cb(len(data))


def _run(
    src: Any, src_path: str, dst: Any, dst_path: str, split: Callable[[str], tuple[str, str]],
    opts: CopyOptions,
) -> CopyStats:  # fmt: skip
    follow = opts.follow_top
    if follow is None:
        follow = not (opts.recursive or opts.archive)
    if opts.contents:
        sh, st = src.top(src_path, True)
        if not st.is_dir():
            raise NotADirectory(path=src_path)
        if not opts.recursive:
            raise IsADirectory(f"-r not specified; omitting directory {src_path}", path=src_path)
        dirh = dst.top_dir(dst_path)
        copier = _Copier(src, dst, opts)
        copier.enter_dir(sh, st)
        for name, ch, cst in src.children(sh):
            copier.copy_entry(ch, cst, dirh, name)
        copier.finish()
        if opts.archive:
            try:
                copier.finish_attrs(dirh, st, new=False, sh=sh)
            except (BurrowError, OSError) as exc:
                copier.fail(exc)
        return copier.stats
    sh, st = src.top(src_path, follow)
    parent, name = split(dst_path)
    if not name:
        raise InvalidArgument("destination has no name", path=dst_path)
    dirh = dst.top_dir(parent)
    copier = _Copier(src, dst, opts)
    copier.copy_entry(sh, st, dirh, name)
    copier.finish()
    return copier.stats


def _split_posix(path: str) -> tuple[str, str]:
    path = path.rstrip("/") or "/"
    head, tail = posixpath.split(path)
    return head or ".", tail


def _split_host(path: str) -> tuple[str, str]:
    path = os.path.normpath(path)
    head, tail = os.path.split(path)
    return head or ".", tail


def _check_not_inside(pfs: PathFS, src: str, dst: str) -> None:
    """Refuse copying a directory into itself (``cp: cannot copy a directory into itself``)."""
    try:
        top = pfs.resolve(src)
    except FilesystemError:
        return
    if not pfs.fs.getattr(top).is_dir():
        return
    # walk up from the destination's parent by path, comparing inode numbers
    path = pfs.abspath(dst)
    while True:
        try:
            if pfs.resolve(path) == top:
                raise InvalidOperation("cannot copy a directory into itself", path=dst)
        except NotFound:
            pass
        if path == "/":
            return
        path = posixpath.dirname(path)


def _options(
    archive: bool,
    recursive: bool,
    preserve: bool,
    contents: bool,
    follow_top: bool | None,
    progress: Callable[[int], object] | None,
    on_error: Callable[[BaseException], object] | None,
) -> CopyOptions:
    """``archive`` = ``-a`` (recursive, keep everything, never follow); ``preserve`` = ``-p``
    (keep modes, owners, times and xattrs; follows a top-level symlink unless recursive)."""
    if follow_top is None:
        follow_top = not (recursive or archive)
    return CopyOptions(
        archive or preserve, recursive or archive, contents, follow_top, progress, on_error
    )


def copy_in(
    src: str | os.PathLike[str],
    pfs: PathFS,
    dst: str,
    *,
    archive: bool = False,
    recursive: bool = False,
    preserve: bool = False,
    contents: bool = False,
    follow_top: bool | None = None,
    progress: Callable[[int], object] | None = None,
    on_error: Callable[[BaseException], object] | None = None,
) -> CopyStats:
    """Copy host ``src`` to ``dst`` inside ``pfs`` (``dst`` is the new name; with
    ``contents`` an existing directory receiving ``src``'s entries)."""
    opts = _options(archive, recursive, preserve, contents, follow_top, progress, on_error)
    return _run(_HostSource(), os.fspath(src), _FsSink(pfs), dst, _split_posix, opts)


def copy_out(
    pfs: PathFS,
    src: str,
    dst: str | os.PathLike[str],
    *,
    archive: bool = False,
    recursive: bool = False,
    preserve: bool = False,
    contents: bool = False,
    follow_top: bool | None = None,
    progress: Callable[[int], object] | None = None,
    on_error: Callable[[BaseException], object] | None = None,
) -> CopyStats:
    """Copy ``src`` inside ``pfs`` to host path ``dst`` (same conventions as ``copy_in``)."""
    opts = _options(archive, recursive, preserve, contents, follow_top, progress, on_error)
    return _run(_FsSource(pfs), src, _HostSink(), os.fspath(dst), _split_host, opts)


def copy_between(
    src_fs: PathFS,
    src: str,
    dst_fs: PathFS,
    dst: str,
    *,
    archive: bool = False,
    recursive: bool = False,
    preserve: bool = False,
    contents: bool = False,
    follow_top: bool | None = None,
    progress: Callable[[int], object] | None = None,
    on_error: Callable[[BaseException], object] | None = None,
) -> CopyStats:
    """Copy between two filesystems (or within one)."""
    if src_fs is dst_fs or src_fs.fs is dst_fs.fs:
        _check_not_inside(src_fs, src, dst if not contents else dst + "/x")
    opts = _options(archive, recursive, preserve, contents, follow_top, progress, on_error)
    return _run(_FsSource(src_fs), src, _FsSink(dst_fs), dst, _split_posix, opts)
