"""``PathFS``: path-level access (``open``, ``stat``, ``walk``, ``read_bytes``...) over any
``vfs.Filesystem``.

Why it exists once, here: the CLI, the Python API, fsspec, the share server and the web page
all want ``os``/``pathlib``-style calls, while drivers speak inodes. Writing the path walk,
symlink resolution and file objects once keeps their semantics identical everywhere.

Rules:

* Paths are POSIX strings *inside* the filesystem. Relative paths start at ``cwd`` (``/``
  unless changed with :meth:`PathFS.chdir`). Nothing ever touches the host.
* Symlinks resolve inside the filesystem's own namespace: an absolute target restarts at the
  filesystem's root, ``..`` never climbs above the root, and more than ``MAXSYMLINKS`` (40, as
  Linux) links in one resolution raise ``ELOOP``.
* ``..`` is resolved physically (the directory we actually came through), as the kernel does,
  not by trimming the string.
* New objects get ``uid``/``gid`` from the ``PathFS`` and modes masked with its ``umask``
  (like a process's umask); ``chmod``/``chown`` set exact values.
* Errors are ``burrow.errors`` classes with ``path`` set to the caller's path, so front ends
  print ``burrow: <path>: <message>``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import posixpath
import stat as _stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, Self

from burrow.errors import (
    BurrowError,
    Exists,
    FilesystemError,
    InvalidArgument,
    InvalidOperation,
    IsADirectory,
    NotADirectory,
    NotFound,
    NotPermitted,
    error_for_errno,
)
from burrow.fs.vfs import DirEntry, Filesystem, FsInfo, Stat, StatFS

__all__ = ["CHUNK", "MAXSYMLINKS", "PathEntry", "PathFS"]

MAXSYMLINKS = 40  # Linux's limit per resolution (fs/namei.c)
CHUNK = 1 << 20  # bulk data moves in 1 MiB pieces
_BUFFER = 256 << 10  # buffer size of the buffered file objects


def _eloop(path: str) -> FilesystemError:
    return error_for_errno(errno.ELOOP, "Too many levels of symbolic links", path=path)


def tag_error(exc: BurrowError, path: str) -> None:
    """Attach the caller's path to an error from a driver (drivers only know names)."""
    if isinstance(exc, FilesystemError):
        exc.path = path
        exc.filename = path
        # Drivers often put a bare name in the message ("a"); the path now says where, so
        # the message should say what, as the kernel's errno text does.
        if exc.errno_value == errno.ENOENT or " " not in exc.message.strip():
            exc.message = exc.strerror = os.strerror(exc.errno_value)
    elif exc.path is None:
        exc.path = path


@contextlib.contextmanager
def _at(path: str) -> Iterator[None]:
    """Run a block with :func:`tag_error` applied to any ``BurrowError`` it raises."""
    try:
        yield
    except BurrowError as exc:
        tag_error(exc, path)
        raise


@dataclass(frozen=True, slots=True)
class _Resolved:
    """Result of a path walk. ``ino`` is ``None`` when only the last component is missing;
    ``parent``/``name`` then say where it would be created. ``name`` is ``""`` for the root."""

    ino: int | None
    parent: int
    name: str


class PathEntry:
    """One entry from :meth:`PathFS.scandir`, shaped like ``os.DirEntry``."""

    __slots__ = ("_fs", "_lstat", "_mode", "_stat", "ino", "name", "path")

    def __init__(self, pfs: PathFS, path: str, entry: DirEntry) -> None:
        self._fs = pfs
        self.name = entry.name
        self.path = path
        self.ino = entry.ino
        self._mode = entry.mode
        self._lstat: Stat | None = None
        self._stat: Stat | None = None

    def inode(self) -> int:
        return self.ino

    def _type(self) -> int:
        if not self._mode:
            self._mode = _stat.S_IFMT(self.stat(follow_symlinks=False).st_mode)
        return self._mode

    def is_symlink(self) -> bool:
        return _stat.S_ISLNK(self._type())

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        if follow_symlinks and self.is_symlink():
            try:
                return self.stat().is_dir()
            except NotFound:  # as os.DirEntry: a dangling link is "not a directory"
                return False
        return _stat.S_ISDIR(self._type())

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        if follow_symlinks and self.is_symlink():
            try:
                return self.stat().is_file()
            except NotFound:
                return False
        return _stat.S_ISREG(self._type())

    def stat(self, *, follow_symlinks: bool = True) -> Stat:
        if self._lstat is None:
            with _at(self.path):
                self._lstat = self._fs.fs.getattr(self.ino)
        if not follow_symlinks or not self._lstat.is_symlink():
            return self._lstat
        if self._stat is None:
            self._stat = self._fs.stat(self.path)
        return self._stat

    def __repr__(self) -> str:
        return f"<PathEntry {self.name!r}>"


class PathFS:
    """Path-level view of a filesystem. Owns nothing but ``fs`` (closed by :meth:`close`)."""

    def __init__(
        self,
        fs: Filesystem,
        *,
        uid: int = 0,
        gid: int = 0,
        umask: int = 0o022,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.fs = fs
        self.uid = uid
        self.gid = gid
        self.umask = umask
        self.cwd = "/"
        self._on_close = on_close

    # -- lifetime ----------------------------------------------------------------------
    @property
    def readonly(self) -> bool:
        return self.fs.readonly

    def info(self) -> FsInfo:
        return self.fs.info()

    def sync(self) -> None:
        self.fs.sync()

    def close(self) -> None:
        """Close the filesystem (syncing it when writable)."""
        try:
            self.fs.close()
        finally:
            if self._on_close is not None:
                callback, self._on_close = self._on_close, None
                callback()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PathFS {self.fs!r}>"

    # -- resolution ----------------------------------------------------------------------
    def abspath(self, path: str) -> str:
        """``path`` made absolute against ``cwd`` and lexically normalised (for display)."""
        full = posixpath.normpath(posixpath.join(self.cwd, path))
        return "/" + full.lstrip("/") if full.startswith("/") else full

    def chdir(self, path: str) -> None:
        st = self.stat(path)
        if not st.is_dir():
            raise NotADirectory(path=path)
        self.cwd = self.abspath(path)

    def _walk(self, path: str, follow_last: bool) -> _Resolved:
        if not isinstance(path, str):
            raise InvalidArgument(f"paths inside a filesystem are str, not {type(path).__name__}")
        if "\0" in path:
            raise InvalidArgument("embedded NUL in path", path=path)
        fs = self.fs
        root = fs.root_ino
        full = path if path.startswith("/") else posixpath.join(self.cwd, path)
        todo = [c for c in full.split("/") if c and c != "."]
        todo.reverse()  # a stack: the next component is at the end
        must_dir = full.endswith("/") or full.endswith("/.") or full.endswith("/..")
        follow = follow_last or must_dir
        stack = [root]  # directories we came through; stack[-1] is the current one
        names = [""]
        links = 0
        while todo:
            comp = todo.pop()
            if comp == "..":
                if len(stack) > 1:
                    stack.pop()
                    names.pop()
                continue
            cur = stack[-1]
            last = not todo
            try:
                ino = fs.lookup(cur, comp)
            except NotFound:
                if last and not must_dir:
                    return _Resolved(None, cur, comp)
                raise
            if last and not follow:
                return _Resolved(ino, cur, comp)
            st = fs.getattr(ino)
            if _stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAXSYMLINKS:
                    raise _eloop(path)
                target = fs.readlink(ino)
                if not target:
                    raise NotFound(path=path)
                if target.startswith("/"):
                    stack, names = [root], [""]
                todo.extend(reversed([c for c in target.split("/") if c and c != "."]))
                continue
            if _stat.S_ISDIR(st.st_mode):
                stack.append(ino)
                names.append(comp)
                continue
            if not last or must_dir:
                raise NotADirectory(path=path)
            return _Resolved(ino, cur, comp)
        # ended on a directory (the root, a name, "..", or a link to a directory)
        return _Resolved(stack[-1], stack[-2] if len(stack) > 1 else root, names[-1])

    def resolve(self, path: str, *, follow_symlinks: bool = True) -> int:
        """Inode number of ``path`` (``NotFound`` when it does not exist)."""
        with _at(path):
            r = self._walk(path, follow_symlinks)
            if r.ino is None:
                raise NotFound(path=path)
            return r.ino

    def _parent_and_name(
        self, path: str, *, dots: type[FilesystemError] = InvalidOperation
    ) -> tuple[int, str]:
        """Directory and name for creating or removing ``path``'s last component (not
        following a final symlink). Refuses the root, and a last component ``.``/``..`` with
        ``dots`` (the kernel's errno for the operation: EEXIST when creating, EISDIR for
        unlink, EINVAL otherwise) once the directories before it resolved, as the kernel."""
        stripped = path.rstrip("/")
        head, _, last = stripped.rpartition("/")
        if last in (".", "..") and path.strip("/"):
            if head or stripped.startswith("/"):
                self._dir_ino(head or "/")  # NotFound / NotADirectory first, as the kernel
            if dots is InvalidOperation:
                raise InvalidOperation(f"invalid last path component {last!r}", path=path)
            raise dots(path=path)
        r = self._walk(path.rstrip("/") or "/", False)
        if not r.name:
            raise InvalidOperation("cannot use the root directory here", path=path)
        return r.parent, r.name

    # -- metadata ------------------------------------------------------------------------
    def stat(self, path: str, *, follow_symlinks: bool = True) -> Stat:
        with _at(path):
            return self.fs.getattr(self.resolve(path, follow_symlinks=follow_symlinks))

    def lstat(self, path: str) -> Stat:
        return self.stat(path, follow_symlinks=False)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except FilesystemError:
            return False
        return True

    def lexists(self, path: str) -> bool:
        try:
            self.lstat(path)
        except FilesystemError:
            return False
        return True

    def is_dir(self, path: str) -> bool:
        try:
            return self.stat(path).is_dir()
        except FilesystemError:
            return False

    def is_file(self, path: str) -> bool:
        try:
            return self.stat(path).is_file()
        except FilesystemError:
            return False

    def is_symlink(self, path: str) -> bool:
        try:
            return self.lstat(path).is_symlink()
        except FilesystemError:
            return False

    def readlink(self, path: str) -> str:
        with _at(path):
            ino = self.resolve(path, follow_symlinks=False)
            if not self.fs.getattr(ino).is_symlink():
                raise InvalidOperation("not a symbolic link", path=path)
            return self.fs.readlink(ino)

    def statfs(self, path: str = "/") -> StatFS:
        with _at(path):
            return self.fs.statfs()

    # -- directories ---------------------------------------------------------------------
    def _dir_ino(self, path: str) -> int:
        ino = self.resolve(path)
        if not self.fs.getattr(ino).is_dir():
            raise NotADirectory(path=path)
        return ino

    def listdir(self, path: str = ".") -> list[str]:
        with _at(path):
            return [e.name for e in self.fs.readdir(self._dir_ino(path))]

    def scandir(self, path: str = ".") -> Iterator[PathEntry]:
        with _at(path):
            entries = list(self.fs.readdir(self._dir_ino(path)))
        for e in entries:
            yield PathEntry(self, posixpath.join(path, e.name), e)

    def _scan(self, dirpath: str, followlinks: bool) -> tuple[int, list[str], list[str], list[str]]:
        with _at(dirpath):
            ino = self._dir_ino(dirpath)
            entries = list(self.fs.readdir(ino))
        dirs: list[str] = []
        files: list[str] = []
        into: list[str] = []
        for e in entries:
            entry = PathEntry(self, posixpath.join(dirpath, e.name), e)
            try:
                is_dir = entry.is_dir()
            except FilesystemError:
                is_dir = False
            if is_dir:
                dirs.append(e.name)
                if followlinks or not entry.is_symlink():
                    into.append(e.name)
            else:
                files.append(e.name)
        return ino, dirs, files, into

    def walk(
        self,
        top: str = "/",
        topdown: bool = True,
        onerror: Callable[[FilesystemError], object] | None = None,
        followlinks: bool = False,
    ) -> Iterator[tuple[str, list[str], list[str]]]:
        """Like ``os.walk``: ``(dirpath, dirnames, filenames)``. Symlinks to directories are
        listed in ``dirnames`` but entered only with ``followlinks`` (and then each directory
        inode at most once, so link loops cannot recurse forever). Top-down, the caller may
        prune ``dirnames`` in place. Iterative, so depth is not bounded by Python's stack."""
        visited: set[int] = set()
        # frames: (dirpath, dirs, files, iterator over the children still to visit)
        frames: list[tuple[str, list[str], list[str], Iterator[str]]] = []

        def enter(path: str) -> bool:
            try:
                ino, dirs, files, into = self._scan(path, followlinks)
            except FilesystemError as exc:
                if onerror is not None:
                    onerror(exc)
                return False
            if ino in visited:
                return False
            visited.add(ino)
            frames.append((path, dirs, files, iter(into)))
            return True

        def pending(dirs: list[str], into: list[str]) -> Iterator[str]:
            for name in into:
                if name in dirs:  # honour pruning done by the caller
                    yield name

        if not enter(top):
            return
        if topdown:
            path, dirs, files, into_it = frames.pop()
            into = list(into_it)
            yield path, dirs, files
            frames.append((path, dirs, files, pending(dirs, into)))
        while frames:
            path, dirs, files, children = frames[-1]
            child = next(children, None)
            if child is None:
                frames.pop()
                if not topdown:
                    yield path, dirs, files
                continue
            if enter(posixpath.join(path, child)) and topdown:
                cpath, cdirs, cfiles, cit = frames.pop()
                cinto = list(cit)
                yield cpath, cdirs, cfiles
                frames.append((cpath, cdirs, cfiles, pending(cdirs, cinto)))

    def mkdir(
        self, path: str, mode: int = 0o777, *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        """Make a directory (``mode & ~umask``); ``parents`` makes missing parents (mode
        ``0o777 & ~umask``, as ``mkdir -p``)."""
        with _at(path):
            if parents:
                self._make_parents(path)
            try:
                parent, name = self._parent_and_name(path, dots=Exists)
            except InvalidOperation:  # the root
                if exist_ok:
                    return
                raise Exists(path=path) from None
            except Exists:  # "." or ".."
                if exist_ok and self.is_dir(path):
                    return
                raise
            try:
                self.fs.mkdir(parent, name, mode & 0o7777 & ~self.umask, self.uid, self.gid)
            except Exists:
                if exist_ok and self.is_dir(path):
                    return
                raise

    def _make_parents(self, path: str) -> None:
        """Make the missing directories before ``path``'s last component, walking the path
        as written (``a/../b`` makes ``a``), like ``os.makedirs``."""
        parts = path.rstrip("/").split("/")
        prefix = "/" if path.startswith("/") else ""
        for comp in parts[:-1]:
            if not comp:
                continue
            prefix = prefix + comp if prefix.endswith("/") or not prefix else prefix + "/" + comp
            if comp in (".", "..") or self.lexists(prefix):
                if not self.is_dir(prefix):
                    raise NotADirectory(path=prefix)
                continue
            try:
                parent, name = self._parent_and_name(prefix)
                self.fs.mkdir(parent, name, 0o777 & ~self.umask, self.uid, self.gid)
            except Exists:
                if not self.is_dir(prefix):
                    raise

    def makedirs(self, path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        self.mkdir(path, mode, parents=True, exist_ok=exist_ok)

    def rmdir(self, path: str) -> None:
        with _at(path):
            parent, name = self._parent_and_name(path)
            self.fs.rmdir(parent, name)

    def remove(self, path: str) -> None:
        """Remove a non-directory (``IsADirectory`` for a directory, as ``os.remove``)."""
        with _at(path):
            parent, name = self._parent_and_name(path, dots=IsADirectory)
            ino = self.fs.lookup(parent, name)
            if self.fs.getattr(ino).is_dir():
                raise IsADirectory(path=path)
            self.fs.unlink(parent, name)

    unlink = remove

    def rmtree(self, path: str) -> None:
        """Remove ``path`` and everything beneath it (refuses a symlink, as ``shutil``)."""
        with _at(path):
            parent, name = self._parent_and_name(path)
            ino = self.fs.lookup(parent, name)
            st = self.fs.getattr(ino)
            if st.is_symlink():
                raise NotADirectory("cannot call rmtree on a symbolic link", path=path)
            if not st.is_dir():
                raise NotADirectory(path=path)
            self._rmtree_ino(ino)
            self.fs.rmdir(parent, name)

    def _rmtree_ino(self, top: int) -> None:
        """Empty directory ``top`` depth-first, without recursion."""
        fs = self.fs
        stack: list[tuple[int, list[DirEntry]]] = [(top, list(fs.readdir(top)))]
        entered = {top}
        while stack:
            dino, entries = stack[-1]
            if not entries:
                stack.pop()
                continue
            e = entries[-1]
            mode = e.mode or _stat.S_IFMT(fs.getattr(e.ino).st_mode)
            if _stat.S_ISDIR(mode):
                children = list(fs.readdir(e.ino))
                if children:
                    if e.ino in entered:  # a directory inside itself: corrupt image
                        from burrow.errors import CorruptImage

                        raise CorruptImage("directory tree", None, f"loop at inode {e.ino}")
                    entered.add(e.ino)
                    stack.append((e.ino, children))
                    continue
                fs.rmdir(dino, e.name)
            else:
                fs.unlink(dino, e.name)
            entries.pop()

    # -- names ---------------------------------------------------------------------------
    def rename(self, src: str, dst: str) -> None:
        """POSIX ``rename``: replaces ``dst`` if it exists (and is compatible)."""
        with _at(src):
            sparent, sname = self._parent_and_name(src)
        with _at(dst):
            dparent, dname = self._parent_and_name(dst)
            self.fs.rename(sparent, sname, dparent, dname, 0)

    replace = rename

    def symlink(self, target: str, path: str) -> None:
        """Make ``path`` a symbolic link to ``target`` (argument order of ``os.symlink``)."""
        with _at(path):
            parent, name = self._parent_and_name(path, dots=Exists)
            self.fs.symlink(parent, name, target, self.uid, self.gid)

    def link(self, src: str, dst: str, *, follow_symlinks: bool = True) -> None:
        """Make ``dst`` a hard link to ``src`` (argument order of ``os.link``)."""
        with _at(src):
            ino = self.resolve(src, follow_symlinks=follow_symlinks)
            if self.fs.getattr(ino).is_dir():
                raise NotPermitted("hard links to directories are not allowed", path=src)
        with _at(dst):
            parent, name = self._parent_and_name(dst, dots=Exists)
            self.fs.link(ino, parent, name)

    def mknod(self, path: str, mode: int = 0o600 | _stat.S_IFREG, device: int = 0) -> None:
        """Make a device node, fifo, socket or empty file (``mode`` includes the type)."""
        with _at(path):
            parent, name = self._parent_and_name(path, dots=Exists)
            perm = _stat.S_IMODE(mode) & ~self.umask
            self.fs.mknod(parent, name, _stat.S_IFMT(mode) | perm, device, self.uid, self.gid)

    # -- attributes ----------------------------------------------------------------------
    def chmod(self, path: str, mode: int, *, follow_symlinks: bool = True) -> None:
        with _at(path):
            ino = self.resolve(path, follow_symlinks=follow_symlinks)
            self.fs.setattr(ino, mode=mode & 0o7777)

    def chown(self, path: str, uid: int, gid: int, *, follow_symlinks: bool = True) -> None:
        """Set owner and group; ``-1`` leaves one unchanged (as ``os.chown``)."""
        with _at(path):
            ino = self.resolve(path, follow_symlinks=follow_symlinks)
            self.fs.setattr(ino, uid=None if uid == -1 else uid, gid=None if gid == -1 else gid)

    def utime(
        self,
        path: str,
        times: tuple[float, float] | None = None,
        *,
        ns: tuple[int, int] | None = None,
        follow_symlinks: bool = True,
    ) -> None:
        """Set access and modification times (now when neither ``times`` nor ``ns``)."""
        if times is not None and ns is not None:
            raise InvalidArgument("utime: give times or ns, not both", path=path)
        if ns is None:
            if times is None:
                now = time.time_ns()
                ns = (now, now)
            else:
                ns = (int(times[0] * 1e9), int(times[1] * 1e9))
        with _at(path):
            ino = self.resolve(path, follow_symlinks=follow_symlinks)
            self.fs.setattr(ino, atime_ns=ns[0], mtime_ns=ns[1])

    def truncate(self, path: str, length: int) -> None:
        if length < 0:
            raise InvalidArgument("negative length", path=path)
        with _at(path):
            ino = self.resolve(path)
            if self.fs.getattr(ino).is_dir():
                raise IsADirectory(path=path)
            self.fs.setattr(ino, size=length)

    def getxattr(self, path: str, name: str, *, follow_symlinks: bool = True) -> bytes:
        with _at(path):
            return self.fs.getxattr(self.resolve(path, follow_symlinks=follow_symlinks), name)

    def listxattr(self, path: str, *, follow_symlinks: bool = True) -> list[str]:
        with _at(path):
            return self.fs.listxattr(self.resolve(path, follow_symlinks=follow_symlinks))

    def setxattr(
        self, path: str, name: str, value: bytes, flags: int = 0, *, follow_symlinks: bool = True
    ) -> None:
        with _at(path):
            ino = self.resolve(path, follow_symlinks=follow_symlinks)
            self.fs.setxattr(ino, name, value, flags)

    def removexattr(self, path: str, name: str, *, follow_symlinks: bool = True) -> None:
        with _at(path):
            self.fs.removexattr(self.resolve(path, follow_symlinks=follow_symlinks), name)

    # -- file contents -------------------------------------------------------------------
    def read_ino(self, ino: int, size: int | None = None) -> bytes:
        """Whole contents of inode ``ino``, read in pieces of up to ``CHUNK`` bytes."""
        fs = self.fs
        want = CHUNK if size is None else max(1, min(size + 1, CHUNK))
        parts: list[bytes] = []
        pos = 0
        while True:
            piece = fs.read(ino, pos, want)
            if piece:
                parts.append(piece)
                pos += len(piece)
            if len(piece) < want:
                break
            want = CHUNK
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_bytes(self, path: str) -> bytes:
        with _at(path):
            ino = self.resolve(path)
            st = self.fs.getattr(ino)
            if st.is_dir():
                raise IsADirectory(path=path)
            return self.read_ino(ino, st.st_size)

    def read_text(self, path: str, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.read_bytes(path).decode(encoding, errors)

    def _open_ino(self, path: str, *, create: bool, exclusive: bool, mode: int = 0o666) -> int:
        """Inode for opening ``path``: follows symlinks; creates the file (``mode &
        ~umask``) when asked and missing, also through a dangling symlink, as ``open(2)``."""
        r = self._walk(path, True)
        if r.ino is not None:
            if exclusive:
                raise Exists(path=path)
            return r.ino
        if not create:
            raise NotFound(path=path)
        if path.endswith("/"):
            raise IsADirectory(path=path)
        return self.fs.create(r.parent, r.name, mode & 0o7777 & ~self.umask, self.uid, self.gid)

    def write_bytes(self, path: str, data: bytes | bytearray | memoryview) -> int:
        """Create or replace the contents of ``path`` (like ``pathlib.Path.write_bytes``)."""
        with _at(path):
            ino = self._open_ino(path, create=True, exclusive=False)
            if self.fs.getattr(ino).is_dir():
                raise IsADirectory(path=path)
            self.fs.setattr(ino, size=0)
            return self.write_ino(ino, data)

    def write_ino(self, ino: int, data: bytes | bytearray | memoryview, offset: int = 0) -> int:
        mv = memoryview(data).cast("B")
        pos = 0
        while pos < len(mv):
            n = self.fs.write(ino, offset + pos, mv[pos : pos + CHUNK])
            if n <= 0:
                raise error_for_errno(errno.EIO, "short write")
            pos += n
        return pos

    def write_text(
        self, path: str, data: str, encoding: str = "utf-8", errors: str = "strict"
    ) -> int:
        self.write_bytes(path, data.encode(encoding, errors))
        return len(data)

    def open(
        self,
        path: str,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> IO[Any]:
        """Open a file like the built-in ``open``: ``r w a x`` with ``b``/``t`` and ``+``.

        Binary modes return ``io.BufferedReader``/``BufferedWriter``/``BufferedRandom`` over a
        ``RawIOBase`` (``buffering=0`` returns the raw object); text modes wrap that in
        ``io.TextIOWrapper`` (UTF-8 unless ``encoding`` says otherwise). The inode is pinned
        while open, so a file unlinked while open stays readable until closed.
        """
        chars = set(mode)
        kinds = chars & set("rwax")
        if len(kinds) != 1 or not chars <= set("rwaxbt+") or len(mode) != len(chars):
            raise InvalidArgument(f"invalid mode: {mode!r}")
        if "b" in chars and "t" in chars:
            raise InvalidArgument(f"invalid mode: {mode!r}")
        binary = "b" in chars
        if binary and (encoding or errors or newline is not None):
            raise InvalidArgument("binary mode takes no encoding, errors or newline")
        kind = kinds.pop()
        plus = "+" in chars
        readable = kind == "r" or plus
        writable = kind != "r" or plus
        with _at(path):
            ino = self._open_ino(path, create=kind != "r", exclusive=kind == "x")
            st = self.fs.getattr(ino)
            if st.is_dir():
                raise IsADirectory(path=path)
            if writable and self.fs.readonly:
                from burrow.errors import ReadOnly

                raise ReadOnly("filesystem is read-only", path=path)
            if kind == "w":
                self.fs.setattr(ino, size=0)
        raw = InodeIO(self.fs, ino, path, readable, writable, append=kind == "a", mode=mode)
        if buffering == 0:
            if not binary:
                raw.close()
                raise InvalidArgument("can't have unbuffered text I/O")
            return raw  # type: ignore[return-value]
        size = _BUFFER if buffering in (-1, 1) else buffering
        buffered: io.BufferedIOBase
        if readable and writable:
            buffered = io.BufferedRandom(raw, size)
        elif writable:
            buffered = io.BufferedWriter(raw, size)
        else:
            buffered = io.BufferedReader(raw, size)
        if binary:
            return buffered
        text = io.TextIOWrapper(
            buffered,
            encoding=encoding or "utf-8",
            errors=errors,
            newline=newline,
            line_buffering=buffering == 1,
        )
        text.mode = mode  # type: ignore[misc]
        return text


class InodeIO(io.RawIOBase):
    """A raw file object over one inode: positional reads and writes through the driver."""

    def __init__(
        self,
        fs: Filesystem,
        ino: int,
        name: str,
        readable: bool,
        writable: bool,
        *,
        append: bool = False,
        mode: str = "rb",
    ) -> None:
        super().__init__()
        self._fs = fs
        self.ino = ino
        self.name = name
        self.mode = mode
        self._readable = readable
        self._writable = writable
        self._append = append
        self._pos = fs.getattr(ino).st_size if append else 0
        fs.pin(ino)
        self._pinned = True

    def readable(self) -> bool:
        return self._readable

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        return True

    def _check(self, reading: bool) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if reading and not self._readable:
            raise io.UnsupportedOperation("not readable")
        if not reading and not self._writable:
            raise io.UnsupportedOperation("not writable")

    def readinto(self, b: Any) -> int:
        self._check(True)
        mv = memoryview(b).cast("B")
        with _at(self.name):
            data = self._fs.read(self.ino, self._pos, len(mv))
        n = len(data)
        mv[:n] = data
        self._pos += n
        return n

    def readall(self) -> bytes:
        self._check(True)
        parts = []
        with _at(self.name):
            while True:
                piece = self._fs.read(self.ino, self._pos, CHUNK)
                if not piece:
                    break
                parts.append(piece)
                self._pos += len(piece)
        return b"".join(parts)

    def write(self, b: Any) -> int:
        self._check(False)
        mv = memoryview(b).cast("B")
        with _at(self.name):
            if self._append:
                self._pos = self._fs.getattr(self.ino).st_size
            n = self._fs.write(self.ino, self._pos, mv)
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            with _at(self.name):
                pos = self._fs.getattr(self.ino).st_size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def truncate(self, size: int | None = None) -> int:
        self._check(False)
        size = self._pos if size is None else size
        with _at(self.name):
            self._fs.setattr(self.ino, size=size)
        return size

    def fileno(self) -> int:
        raise io.UnsupportedOperation("files inside an image have no host file descriptor")

    def close(self) -> None:
        if not self.closed:
            try:
                super().close()
            finally:
                if self._pinned:
                    self._pinned = False
                    self._fs.unpin(self.ino)
