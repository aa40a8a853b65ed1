"""``HostDirFilesystem``: a host directory as a ``vfs.Filesystem``, confined beneath its root.

Why: ``burrow serve`` exports host directories to untrusted network peers, so every path is
resolved relative to a directory file descriptor of the export root and may never leave it —
no ``..``, no absolute names, no symlink followed on the server, no crossing into another
mount. Where the kernel has ``openat2(2)`` (Linux 5.6+) resolution uses
``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV``; elsewhere
it walks component by component with ``O_NOFOLLOW | O_DIRECTORY``. A symlink is an inode like
any other: ``readlink`` returns its target for the *client* to resolve in its own namespace.

Inode numbers are the host's ``st_ino`` (one device only), so they are stable across restarts.
The driver remembers for each inode number it has handed out one (parent, name) under which
it was seen, and re-resolves that path on use, checking that the inode number still matches:
an inode number it never handed out (a forged handle) is ``NotFound``. The table grows with
the number of distinct inodes looked up (about 150 bytes each).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from burrow.errors import (
    FilesystemError,
    InvalidArgument,
    NameTooLong,
    NotFound,
    NotSupported,
    ReadOnly,
    error_for_errno,
)
from burrow.fs.vfs import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    XATTR_CREATE,
    XATTR_REPLACE,
    DirEntry,
    Filesystem,
    FsInfo,
    Stat,
    StatFS,
    encode_name,
)

__all__ = ["HostDirFilesystem", "openat2_available"]

MAX_NAME = 255
ENODATA = 61
MAX_PATH_DEPTH = 2048

# openat2(2): struct open_how and RESOLVE_* flags (include/uapi/linux/openat2.h).
_SYS_OPENAT2 = 437  # same number on every architecture (generic syscall table)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276}.get(os.uname().machine)
_AT_FDCWD = -100


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def _openat2(dirfd: int, path: str, flags: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE)
    fd = _syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def _probe_openat2() -> bool:
    try:
        fd = _openat2(_AT_FDCWD, ".", os.O_PATH)
    except OSError:
        return False  # ENOSYS (old kernel), EPERM (seccomp)...
    os.close(fd)
    return True


_OPENAT2: bool | None = None


def openat2_available() -> bool:
    global _OPENAT2
    if _OPENAT2 is None:
        _OPENAT2 = _probe_openat2()
    return _OPENAT2


def _err(exc: OSError, path: str | None = None) -> FilesystemError:
    code = exc.errno or errno.EIO
    if code == errno.ELOOP and path is not None:
        # A symlink on the way: the path does not exist *inside* the export.
        return error_for_errno(errno.ELOOP, "symlink in the path refused", path=path)
    if code == errno.EXDEV:
        return error_for_errno(errno.EXDEV, "crossing a mount point refused", path=path)
    return error_for_errno(code, exc.strerror or "", path=path)


def _check_name(name: str) -> None:
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise InvalidArgument(f"invalid file name {name!r}")
    if len(encode_name(name)) > MAX_NAME:
        raise NameTooLong(path=name)


@dataclass
class _Fd:
    fd: int
    users: int = 0
    evicted: bool = False


@dataclass
class _Node:
    parent: int  # 0 for the root
    name: str


def _to_stat(st: os.stat_result) -> Stat:
    return Stat(
        st_ino=st.st_ino,
        st_mode=st.st_mode,
        st_nlink=st.st_nlink,
        st_uid=st.st_uid,
        st_gid=st.st_gid,
        st_size=st.st_size,
        st_atime_ns=st.st_atime_ns,
        st_mtime_ns=st.st_mtime_ns,
        st_ctime_ns=st.st_ctime_ns,
        st_rdev=st.st_rdev,
        st_blocks=st.st_blocks,
        st_blksize=st.st_blksize,
        st_dev=st.st_dev,
    )


class HostDirFilesystem(Filesystem):
    """A host directory tree. ``readonly=True`` (the default) refuses every change.

    ``preserve_owner``: apply the ``uid``/``gid`` callers pass to ``create``/``mkdir``/...
    (off by default: new files belong to the process, which a share worker runs as an
    unprivileged user). ``allow_setid``: keep set-user/group-ID bits in modes set through
    this driver (off by default, so a remote peer cannot plant a set-ID program on the
    server). ``use_openat2=False`` forces the component walk (for tests).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        readonly: bool = True,
        preserve_owner: bool = False,
        allow_setid: bool = False,
        use_openat2: bool | None = None,
        max_open_files: int = 64,
    ) -> None:
        self.readonly = readonly
        self.preserve_owner = preserve_owner
        self._mode_mask = 0o7777 if allow_setid else 0o1777
        self._openat2 = openat2_available() if use_openat2 is None else use_openat2
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        self._root_fd = os.open(root, flags)
        st = os.fstat(self._root_fd)
        self._dev = st.st_dev
        self.root_ino = st.st_ino
        self._nodes: dict[int, _Node] = {self.root_ino: _Node(0, "")}
        self._lock = threading.RLock()
        self._files: OrderedDict[tuple[int, bool], _Fd] = OrderedDict()
        self._max_files = max_open_files
        self.root = os.fspath(root)

    # -- resolution --------------------------------------------------------------------
    def _path(self, ino: int) -> str:
        with self._lock:
            node = self._nodes.get(ino)
            if node is None:
                raise NotFound(f"unknown inode {ino}")
            parts: list[str] = []
            depth = 0
            while node.parent:
                parts.append(node.name)
                node = self._nodes[node.parent]
                depth += 1
                if depth > MAX_PATH_DEPTH:
                    raise error_for_errno(errno.ELOOP, "directory chain too deep")
        return "/".join(reversed(parts))

    def _open_path(self, path: str, flags: int, mode: int = 0) -> int:
        """Open ``path`` (relative to the root, "" = root) without leaving the root and
        without following any symlink. The last component is opened with ``flags``."""
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC
        if not path:
            return os.open(".", flags & ~os.O_NOFOLLOW, mode, dir_fd=self._root_fd)
        try:
            if self._openat2:
                return _openat2(self._root_fd, path, flags, mode)
            parts = path.split("/")
            fd = os.dup(self._root_fd)
            try:
                for part in parts[:-1]:
                    nfd = os.open(
                        part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                    )
                    os.close(fd)
                    fd = nfd
                    if os.fstat(fd).st_dev != self._dev:
                        raise OSError(errno.EXDEV, "crossing a mount point")
                last = os.open(parts[-1], flags, mode, dir_fd=fd)
                if os.fstat(last).st_dev != self._dev:
                    os.close(last)
                    raise OSError(errno.EXDEV, "crossing a mount point")
                return last
            finally:
                os.close(fd)
        except OSError as exc:
            raise _err(exc, path) from None

    def _open_ino(self, ino: int, flags: int) -> int:
        """An fd for ``ino``, checking the path still leads to the same inode."""
        fd = self._open_path(self._path(ino), flags)
        st = os.fstat(fd)
        if st.st_ino != ino:
            os.close(fd)
            self._forget(ino)
            raise NotFound(f"inode {ino} is gone (stale handle)")
        return fd

    @contextlib.contextmanager
    def _dirfd(self, ino: int) -> Iterator[int]:
        fd = self._open_ino(ino, os.O_PATH | os.O_DIRECTORY)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _file(self, ino: int, write: bool) -> Iterator[int]:
        """A cached read (or read-write) fd of a regular file, held for the ``with`` block.

        The cache is shared by threads (the share worker runs several): an fd evicted or
        forgotten while in use is closed by its last user, never under it."""
        key = (ino, write)
        with self._lock:
            entry = self._files.get(key)
            if entry is not None:
                self._files.move_to_end(key)
                entry.users += 1
        if entry is None:
            fd = self._open_ino(ino, os.O_RDWR if write else os.O_RDONLY)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise error_for_errno(errno.EISDIR, "not a regular file")
            with self._lock:
                entry = self._files.get(key)
                if entry is not None:  # another thread won the race: use its fd
                    os.close(fd)
                    entry.users += 1
                else:
                    entry = _Fd(fd, 1)
                    self._files[key] = entry
                    while len(self._files) > self._max_files:
                        _, victim = self._files.popitem(last=False)
                        self._drop(victim)
        try:
            yield entry.fd
        finally:
            with self._lock:
                entry.users -= 1
                if entry.evicted and entry.users == 0:
                    os.close(entry.fd)

    @staticmethod
    def _drop(entry: _Fd) -> None:
        entry.evicted = True
        if entry.users == 0:
            os.close(entry.fd)

    def _forget(self, ino: int, parent: int | None = None, name: str | None = None) -> None:
        with self._lock:
            node = self._nodes.get(ino)
            if (
                node is not None
                and ino != self.root_ino
                and (parent is None or (node.parent == parent and node.name == name))
            ):
                del self._nodes[ino]
            for key in [(ino, False), (ino, True)]:
                entry = self._files.pop(key, None)
                if entry is not None:
                    self._drop(entry)

    def _remember(self, st: os.stat_result, parent: int, name: str) -> int:
        if st.st_dev != self._dev:
            raise error_for_errno(errno.EXDEV, "crossing a mount point refused", path=name)
        with self._lock:
            self._nodes[st.st_ino] = _Node(parent, name)  # the latest name seen wins
        return st.st_ino

    def _writable(self) -> None:
        if self.readonly:
            raise ReadOnly("filesystem is read-only")

    # -- reading --------------------------------------------------------------------
    def lookup(self, parent: int, name: str) -> int:
        _check_name(name)
        with self._dirfd(parent) as pfd:
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except OSError as exc:
                raise _err(exc, name) from None
        return self._remember(st, parent, name)

    def getattr(self, ino: int) -> Stat:
        fd = self._open_ino(ino, os.O_PATH)
        try:
            return _to_stat(os.fstat(fd))
        finally:
            os.close(fd)

    def readdir(self, ino: int) -> Iterator[DirEntry]:
        fd = self._open_ino(ino, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with os.scandir(fd) as it:
                entries = []
                for entry in it:
                    # d_type from the directory itself: no stat call per entry.
                    if entry.is_symlink():
                        kind = stat.S_IFLNK
                    elif entry.is_dir(follow_symlinks=False):
                        kind = stat.S_IFDIR
                    elif entry.is_file(follow_symlinks=False):
                        kind = stat.S_IFREG
                    else:
                        kind = 0
                    with self._lock:
                        if entry.inode() not in self._nodes:
                            self._nodes[entry.inode()] = _Node(ino, entry.name)
                    entries.append(DirEntry(entry.name, entry.inode(), kind))
        except OSError as exc:
            raise _err(exc) from None
        finally:
            os.close(fd)
        return iter(entries)

    def read(self, ino: int, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0:
            raise InvalidArgument("negative offset or length")
        with self._file(ino, False) as fd:
            try:
                return os.pread(fd, n, offset)
            except OSError as exc:
                raise _err(exc) from None

    def readlink(self, ino: int) -> str:
        path = self._path(ino)
        if not path:
            raise error_for_errno(errno.EINVAL, "not a symlink")
        parent_path, _, name = path.rpartition("/")
        pfd = self._open_path(parent_path, os.O_PATH | os.O_DIRECTORY)
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if st.st_ino != ino:
                raise NotFound(f"inode {ino} is gone (stale handle)")
            return os.readlink(name, dir_fd=pfd)
        except OSError as exc:
            raise _err(exc) from None
        finally:
            os.close(pfd)

    @contextlib.contextmanager
    def _xattr_fd(self, ino: int) -> Iterator[int | str | None]:
        """What to hand os.*xattr for ``ino``, or ``None`` for a symlink (Linux keeps no user
        xattrs on symlinks).

        Regular files and directories are opened read-only. Anything else (device nodes,
        fifos, sockets) is never opened — opening a device node can fail (ENXIO) or act on
        the device — so its xattrs are reached through the ``/proc/self/fd`` link of an
        ``O_PATH`` descriptor, which names the inode without opening it.
        """
        fd = self._open_ino(ino, os.O_PATH)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                yield None
                return
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                yield f"/proc/self/fd/{fd}"
                return
            os.close(fd)
            fd = -1
            fd = self._open_ino(ino, os.O_RDONLY | os.O_NONBLOCK)
            yield fd
        finally:
            if fd >= 0:
                os.close(fd)

    def listxattr(self, ino: int) -> list[str]:
        with self._xattr_fd(ino) as fd:
            if fd is None:
                return []
            try:
                return sorted(os.listxattr(fd))
            except OSError as exc:
                raise _err(exc) from None

    def getxattr(self, ino: int, name: str) -> bytes:
        with self._xattr_fd(ino) as fd:
            if fd is None:
                raise error_for_errno(ENODATA, f"no such attribute: {name}")
            try:
                return os.getxattr(fd, name)
            except OSError as exc:
                raise _err(exc) from None

    def statfs(self) -> StatFS:
        st = os.statvfs(self._root_fd)
        return StatFS(
            st.f_bsize,
            st.f_frsize,
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_namemax,
        )

    def info(self) -> FsInfo:
        return FsInfo(
            fstype="hostdir",
            features=("openat2",) if self._openat2 else ("nofollow-walk",),
            extra={"root": self.root},
        )

    # -- writing --------------------------------------------------------------------
    def write(self, ino: int, offset: int, data: bytes | bytearray | memoryview) -> int:
        self._writable()
        if offset < 0:
            raise InvalidArgument("negative offset")
        with self._file(ino, True) as fd:
            try:
                return os.pwrite(fd, data, offset)
            except OSError as exc:
                raise _err(exc) from None

    def _owner(self, name: str, pfd: int, uid: int, gid: int) -> None:
        if self.preserve_owner:
            os.chown(name, uid, gid, dir_fd=pfd, follow_symlinks=False)

    def _make(self, parent: int, name: str, uid: int, gid: int, op: str, arg: object) -> int:
        self._writable()
        _check_name(name)
        with self._dirfd(parent) as pfd:
            try:
                if op == "create":
                    assert isinstance(arg, int)
                    fd = os.open(
                        name,
                        os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        stat.S_IMODE(arg) & self._mode_mask,
                        dir_fd=pfd,
                    )
                    os.close(fd)
                elif op == "mkdir":
                    assert isinstance(arg, int)
                    os.mkdir(name, stat.S_IMODE(arg) & self._mode_mask, dir_fd=pfd)
                elif op == "mknod":
                    assert isinstance(arg, tuple)
                    os.mknod(name, arg[0], arg[1], dir_fd=pfd)
                else:
                    assert isinstance(arg, str)
                    os.symlink(arg, name, dir_fd=pfd)
                self._owner(name, pfd, uid, gid)
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except OSError as exc:
                raise _err(exc, name) from None
        return self._remember(st, parent, name)

    def create(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0) -> int:
        return self._make(parent, name, uid, gid, "create", mode)

    def mkdir(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0) -> int:
        return self._make(parent, name, uid, gid, "mkdir", mode)

    def mknod(
        self, parent: int, name: str, mode: int, rdev: int = 0, uid: int = 0, gid: int = 0
    ) -> int:
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISREG(mode)):
            raise NotSupported("device nodes are not created in shared host directories")
        kind = stat.S_IFMT(mode)
        return self._make(parent, name, uid, gid, "mknod", (kind | (mode & self._mode_mask), 0))

    def symlink(self, parent: int, name: str, target: str, uid: int = 0, gid: int = 0) -> int:
        if not target or "\0" in target or len(encode_name(target)) > 4095:
            raise InvalidArgument("invalid symlink target")
        return self._make(parent, name, uid, gid, "symlink", target)

    def link(self, ino: int, new_parent: int, new_name: str) -> None:
        self._writable()
        _check_name(new_name)
        path = self._path(ino)
        if not path:
            raise error_for_errno(errno.EPERM, "cannot link the root")
        src_parent, _, src_name = path.rpartition("/")
        spfd = self._open_path(src_parent, os.O_PATH | os.O_DIRECTORY)
        try:
            with self._dirfd(new_parent) as dpfd:
                if os.stat(src_name, dir_fd=spfd, follow_symlinks=False).st_ino != ino:
                    raise NotFound("stale handle")
                os.link(src_name, new_name, src_dir_fd=spfd, dst_dir_fd=dpfd, follow_symlinks=False)
        except OSError as exc:
            raise _err(exc, new_name) from None
        finally:
            os.close(spfd)

    def _remove(self, parent: int, name: str, rmdir: bool) -> None:
        self._writable()
        _check_name(name)
        with self._dirfd(parent) as pfd:
            try:
                ino = os.stat(name, dir_fd=pfd, follow_symlinks=False).st_ino
                if rmdir:
                    os.rmdir(name, dir_fd=pfd)
                else:
                    os.unlink(name, dir_fd=pfd)
            except OSError as exc:
                raise _err(exc, name) from None
        self._forget(ino, parent, name)

    def unlink(self, parent: int, name: str) -> None:
        self._remove(parent, name, False)

    def rmdir(self, parent: int, name: str) -> None:
        self._remove(parent, name, True)

    def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        self._writable()
        _check_name(old_name)
        _check_name(new_name)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise InvalidArgument("unknown rename flags")
        with self._dirfd(old_parent) as ofd, self._dirfd(new_parent) as nfd:
            try:
                moved = os.stat(old_name, dir_fd=ofd, follow_symlinks=False).st_ino
                try:
                    replaced: int | None = os.stat(
                        new_name, dir_fd=nfd, follow_symlinks=False
                    ).st_ino
                except FileNotFoundError:
                    replaced = None
                if flags:
                    self._renameat2(ofd, old_name, nfd, new_name, flags)
                else:
                    os.rename(old_name, new_name, src_dir_fd=ofd, dst_dir_fd=nfd)
            except OSError as exc:
                raise _err(exc, new_name) from None
        with self._lock:
            if flags & RENAME_EXCHANGE and replaced is not None:
                self._nodes[replaced] = _Node(old_parent, old_name)
            elif replaced is not None and replaced != moved:
                self._forget(replaced, new_parent, new_name)
            self._nodes[moved] = _Node(new_parent, new_name)

    @staticmethod
    def _renameat2(ofd: int, old: str, nfd: int, new: str, flags: int) -> None:
        if _SYS_RENAMEAT2 is None:
            raise NotSupported("rename flags need renameat2")
        res = _syscall(
            ctypes.c_long(_SYS_RENAMEAT2),
            ctypes.c_int(ofd),
            ctypes.c_char_p(encode_name(old)),
            ctypes.c_int(nfd),
            ctypes.c_char_p(encode_name(new)),
            ctypes.c_uint(flags),
        )
        if res < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def setattr(
        self,
        ino: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> Stat:
        self._writable()
        fd = self._open_ino(ino, os.O_PATH)
        try:
            st = os.fstat(fd)
            is_link = stat.S_ISLNK(st.st_mode)
            if size is not None:
                if size < 0:
                    raise InvalidArgument("negative size")
                with self._file(ino, True) as wfd:
                    os.truncate(wfd, size)
            if mode is not None and not is_link:
                rfd = self._open_ino(ino, os.O_RDONLY | os.O_NONBLOCK)
                try:
                    os.fchmod(rfd, stat.S_IMODE(mode) & self._mode_mask)
                finally:
                    os.close(rfd)
            path = self._path(ino)
            parent_path, _, name = path.rpartition("/")
            pfd = self._open_path(parent_path, os.O_PATH | os.O_DIRECTORY) if path else None
            try:
                # the root itself is addressed by its fd; anything else by (parent, name)
                # without following a symlink
                where: dict[str, object] = (
                    {"dir_fd": pfd, "follow_symlinks": False} if pfd is not None else {}
                )
                target: str | int = name if pfd is not None else self._root_fd
                if uid is not None or gid is not None:
                    os.chown(
                        target,
                        -1 if uid is None else uid,
                        -1 if gid is None else gid,
                        **where,  # type: ignore[arg-type]
                    )
                if atime_ns is not None or mtime_ns is not None:
                    cur = os.stat(target, **where)  # type: ignore[arg-type]
                    times = (
                        cur.st_atime_ns if atime_ns is None else atime_ns,
                        cur.st_mtime_ns if mtime_ns is None else mtime_ns,
                    )
                    os.utime(target, ns=times, **where)  # type: ignore[arg-type]
            finally:
                if pfd is not None:
                    os.close(pfd)
            return _to_stat(os.fstat(fd))
        except OSError as exc:
            raise _err(exc) from None
        finally:
            os.close(fd)

    def setxattr(self, ino: int, name: str, value: bytes, flags: int = 0) -> None:
        self._writable()
        xflags = (os.XATTR_CREATE if flags & XATTR_CREATE else 0) | (
            os.XATTR_REPLACE if flags & XATTR_REPLACE else 0
        )
        with self._xattr_fd(ino) as fd:
            if fd is None:
                raise NotSupported("xattrs on symlinks are not supported")
            try:
                os.setxattr(fd, name, value, xflags)
            except OSError as exc:
                raise _err(exc) from None

    def removexattr(self, ino: int, name: str) -> None:
        self._writable()
        with self._xattr_fd(ino) as fd:
            if fd is None:
                raise NotSupported("xattrs on symlinks are not supported")
            try:
                os.removexattr(fd, name)
            except OSError as exc:
                raise _err(exc) from None

    # -- lifetime -------------------------------------------------------------------
    def sync(self) -> None:
        with self._lock:
            keys = [k for k in self._files if k[1]]
        for ino, _ in keys:
            with contextlib.suppress(OSError, FilesystemError), self._file(ino, True) as fd:
                os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            for entry in self._files.values():
                self._drop(entry)
            self._files.clear()
            if self._root_fd >= 0:
                os.close(self._root_fd)
                self._root_fd = -1
