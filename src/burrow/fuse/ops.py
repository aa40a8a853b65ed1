"""pyfuse3 ``Operations`` over any ``burrow.fs.vfs.Filesystem``.

Translation rules:

* Node ids: FUSE's root node is always 1. The filesystem's ``root_ino`` and node 1 swap places
  (a bijection), so every other node id is the on-disk inode number. The ``st_ino`` programs
  see is always the on-disk number, the root's included (see :func:`_attr_ino_setter`), so a
  read-only mount shows what the kernel's own driver shows.
* Lookup counts: every reply that creates a kernel reference (lookup, create, mkdir, mknod,
  symlink, link, and each readdirplus entry) adds one; ``forget`` removes them. While an inode
  has references or open handles it is pinned in the filesystem, so open-then-unlinked files
  keep their data until the last release, as POSIX requires, and inode numbers the kernel
  still knows are never reused.
* Errors: every handler runs under :func:`_handler`, the only place where exceptions become
  errnos. ``BurrowError``\\s become their errno (corruption: EIO, logged with the structure
  and offset); an unexpected exception is logged with its traceback and reported as EIO. No
  exception ever leaves a handler, because pyfuse3 would end the session on it: a corrupt
  image never kills the mount.
* Caching: the kernel keeps attributes, names and negative lookups for ``timeout`` seconds
  (60 by default) and file pages across opens (``keep_cache``). That is safe because the
  daemon is the only writer of the image while it is mounted and every change through the
  mount goes through the kernel, which invalidates what it changed. docs/fuse.md says what
  happens when the image is changed underneath.
* Reads go straight into one reusable buffer (``readinto`` when the driver has it), which
  pyfuse3 copies to the kernel: one copy per request instead of three.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import stat
import struct
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pyfuse3

from burrow.errors import BurrowError, NotFound, errno_of
from burrow.fs.vfs import Filesystem, Stat

log = logging.getLogger("burrow.fuse")

__all__ = ["DEFAULT_TIMEOUT", "FilesystemOperations"]

DEFAULT_TIMEOUT = 60.0  # seconds the kernel may cache attributes, names and negative lookups

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def _attr_ino_setter() -> Callable[[pyfuse3.EntryAttributes, int], None] | None:
    """A function that sets only ``attr.st_ino`` of an ``EntryAttributes``, or ``None``.

    Why: pyfuse3's ``st_ino`` property sets both the FUSE node id and the ``st_ino`` the
    kernel reports, but the root's node id must be 1 while ext4's root is inode 2, and a
    readdirplus entry that carries no attributes (node id 0) still needs its ``d_ino``. The
    object is a Cython struct (``PyObject_HEAD`` then ``fuse_entry_param``: ino, generation,
    ``struct stat`` whose second field is ``st_ino``); the layout is checked here with marker
    values before it is ever written, and a mismatch disables the setter (the root then
    shows node id 1 as its inode number).
    """
    if sys.implementation.name != "cpython" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    head = object.__basicsize__  # PyObject_HEAD
    probe = pyfuse3.EntryAttributes()
    try:
        base = id(probe)
        probe.st_ino = 0x0123456789ABCDEF
        probe.generation = 0x1122334455667788
        words = (ctypes.c_uint64 * 4).from_address(base + head)
        if list(words) != [0x0123456789ABCDEF, 0x1122334455667788, 0, 0x0123456789ABCDEF]:
            return None
        offset = head + 24
        ctypes.c_uint64.from_address(base + offset).value = 0x0FEDCBA987654321
        if probe.st_ino != 0x0123456789ABCDEF or words[3] != 0x0FEDCBA987654321:
            return None
    except Exception:  # pragma: no cover - a pyfuse3 we do not know
        return None

    def set_attr_ino(attrs: pyfuse3.EntryAttributes, ino: int) -> None:
        ctypes.c_uint64.from_address(id(attrs) + offset).value = ino

    return set_attr_ino


_set_attr_ino = _attr_ino_setter()


def _handler(fn: _F) -> _F:
    """Run a request handler; turn every exception into a FUSE errno (and log the bad ones)."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(self: FilesystemOperations, *args: Any) -> Any:
        if self.after_init is not None:
            _run_after_init(self)
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except BurrowError as exc:
            code = errno_of(exc)
            if code == errno.EIO:
                log.error("%s%r: %s", name, _short(args), exc)
            raise pyfuse3.FUSEError(code) from None
        except OSError as exc:
            code = exc.errno or errno.EIO
            if code == errno.EIO:
                log.error("%s%r: %s", name, _short(args), exc)
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("%s%r failed; answering EIO", name, _short(args))
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


def _run_after_init(ops: Any) -> None:
    """Run the mount's one-shot hook at the first request: by then the kernel has processed
    the INIT reply (which would undo settings made earlier, such as the readahead)."""
    hook, ops.after_init = ops.after_init, None
    try:
        hook()
    except Exception:
        log.exception("after-init hook failed")


def _short(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Request arguments for a log line (no file data, no request context)."""
    out: list[Any] = []
    for a in args:
        if isinstance(a, (bytes, bytearray, memoryview)) and len(a) > 64:
            out.append(f"<{len(a)} bytes>")
        elif isinstance(a, (int, bytes, str)):
            out.append(a)
    return tuple(out)


class FilesystemOperations(pyfuse3.Operations):
    """Serve ``fs`` through FUSE. All filesystem calls run on the trio thread, in order."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, fs: Filesystem, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.after_init: Callable[[], None] | None = None  # run once, at the first request
        self.fs = fs
        self.timeout = timeout
        self._root = fs.root_ino
        self._lookups: dict[int, int] = {}  # fs inode -> kernel lookup count
        self._open: dict[int, int] = {}  # fh -> fs inode
        self._next_fh = 1
        # fh -> snapshot of (name, fs inode, type bits) taken at opendir, "." and ".." first
        self._dirs: dict[int, list[tuple[bytes, int, int]]] = {}
        self._readinto: Callable[[int, int, memoryview], int] | None = getattr(fs, "readinto", None)
        self._rbuf = bytearray(1 << 20)

    # -- numbering --------------------------------------------------------------------
    def _to_fs(self, ino: int) -> int:
        if ino == pyfuse3.ROOT_INODE:
            return self._root
        if ino == self._root:
            return pyfuse3.ROOT_INODE
        return ino

    _to_fuse = _to_fs  # the swap is its own inverse

    @property
    def lookup_counts(self) -> dict[int, int]:
        """fs inode -> references the kernel holds (for tests and the unmount log)."""
        return dict(self._lookups)

    @property
    def open_handles(self) -> int:
        return len(self._open) + len(self._dirs)

    # -- helpers ----------------------------------------------------------------------
    def _attrs(self, st: Stat) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        node = self._to_fuse(st.st_ino)
        a.st_ino = node
        if node != st.st_ino and _set_attr_ino is not None:
            _set_attr_ino(a, st.st_ino)
        a.entry_timeout = self.timeout
        a.attr_timeout = self.timeout
        a.st_mode = st.st_mode
        a.st_nlink = st.st_nlink
        a.st_uid = st.st_uid
        a.st_gid = st.st_gid
        a.st_rdev = st.st_rdev
        a.st_size = st.st_size
        a.st_blksize = st.st_blksize
        a.st_blocks = st.st_blocks
        a.st_atime_ns = st.st_atime_ns
        a.st_mtime_ns = st.st_mtime_ns
        a.st_ctime_ns = st.st_ctime_ns
        return a

    def _bare(self, ino: int, mode: int) -> pyfuse3.EntryAttributes:
        """A readdirplus entry without attributes: node id 0 (the kernel links nothing and
        counts no lookup) but the right ``d_ino`` and ``d_type``."""
        a = pyfuse3.EntryAttributes()
        a.st_ino = 0
        if _set_attr_ino is not None:
            _set_attr_ino(a, ino)
        a.st_mode = mode
        return a

    def _entry(self, fs_ino: int) -> pyfuse3.EntryAttributes:
        attrs = self._attrs(self.fs.getattr(fs_ino))
        self._ref(fs_ino)
        return attrs

    def _ref(self, fs_ino: int) -> None:
        count = self._lookups.get(fs_ino, 0)
        if count == 0:
            self.fs.pin(fs_ino)
        self._lookups[fs_ino] = count + 1

    @staticmethod
    def _name(raw: bytes) -> str:
        return os.fsdecode(raw)

    # -- lookups ----------------------------------------------------------------------
    @_handler
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        parent = self._to_fs(parent_inode)
        try:
            ino = self.fs.lookup(parent, self._name(name))
        except NotFound:
            if self.timeout <= 0:
                raise
            negative = pyfuse3.EntryAttributes()  # node id 0: a cached "no such name"
            negative.st_ino = 0
            negative.entry_timeout = self.timeout
            return negative
        return self._entry(ino)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for fuse_ino, nlookup in inode_list:
            ino = self._to_fs(fuse_ino)
            left = self._lookups.get(ino, 0) - nlookup
            if left > 0:
                self._lookups[ino] = left
                continue
            if self._lookups.pop(ino, None) is None:
                continue
            try:
                self.fs.unpin(ino)
            except Exception:
                log.exception("unpin(%d) failed", ino)

    @_handler
    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        return self._attrs(self.fs.getattr(self._to_fs(inode)))

    @_handler
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Any:
        kw: dict[str, int] = {}
        if fields.update_mode:
            kw["mode"] = stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            kw["uid"] = attr.st_uid
        if fields.update_gid:
            kw["gid"] = attr.st_gid
        if fields.update_size:
            kw["size"] = attr.st_size
        if fields.update_atime:
            kw["atime_ns"] = attr.st_atime_ns
        if fields.update_mtime:
            kw["mtime_ns"] = attr.st_mtime_ns
        ino = self._to_fs(inode)
        st = self.fs.setattr(ino, **kw) if kw else self.fs.getattr(ino)
        return self._attrs(st)

    @_handler
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.fsencode(self.fs.readlink(self._to_fs(inode)))

    # -- directories ------------------------------------------------------------------
    @_handler
    async def opendir(self, inode: int, ctx: Any) -> int:
        ino = self._to_fs(inode)
        entries = [(os.fsencode(e.name), e.ino, e.mode) for e in self.fs.readdir(ino)]
        try:
            parent = self.fs.lookup(ino, "..")
        except BurrowError:
            parent = ino
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = [(b".", ino, stat.S_IFDIR), (b"..", parent, stat.S_IFDIR), *entries]
        return fh

    @_handler
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self._dirs.get(fh)
        if entries is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        getattr_ = self.fs.getattr
        reply = pyfuse3.readdir_reply
        for index in range(start_id, len(entries)):
            name, ino, mode = entries[index]
            if index < 2:  # "." and "..": the kernel takes only d_ino and d_type from these
                if not reply(token, name, self._bare(ino, stat.S_IFDIR), index + 1):
                    return
                continue
            try:
                attrs = self._attrs(getattr_(ino))
            except Exception as exc:  # unreadable inode: list the name, as the kernel does;
                if isinstance(exc, NotFound):  # removed since opendir
                    continue
                log.error("readdir: inode %d (%r): %s", ino, name, exc)
                if not reply(token, name, self._bare(ino, mode), index + 1):
                    return
                continue
            if not reply(token, name, attrs, index + 1):
                return
            self._ref(ino)

    @_handler
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @_handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.fs.sync()

    @_handler
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
        ino = self.fs.mkdir(self._to_fs(parent_inode), self._name(name), mode, ctx.uid, ctx.gid)
        return self._entry(ino)

    @_handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.fs.rmdir(self._to_fs(parent_inode), self._name(name))

    # -- names ------------------------------------------------------------------------
    @_handler
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> Any:
        ino = self.fs.mknod(
            self._to_fs(parent_inode), self._name(name), mode, rdev, ctx.uid, ctx.gid
        )
        return self._entry(ino)

    @_handler
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        ino = self.fs.symlink(
            self._to_fs(parent_inode), self._name(name), os.fsdecode(target), ctx.uid, ctx.gid
        )
        return self._entry(ino)

    @_handler
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        ino = self._to_fs(inode)
        self.fs.link(ino, self._to_fs(new_parent_inode), self._name(new_name))
        return self._entry(ino)

    @_handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.fs.unlink(self._to_fs(parent_inode), self._name(name))

    @_handler
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        self.fs.rename(
            self._to_fs(parent_inode_old),
            self._name(name_old),
            self._to_fs(parent_inode_new),
            self._name(name_new),
            flags,
        )

    # -- files ------------------------------------------------------------------------
    def _new_fh(self, ino: int) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.fs.pin(ino)
        self._open[fh] = ino
        return fh

    @staticmethod
    def _file_info(fh: int) -> pyfuse3.FileInfo:
        # keep_cache: the daemon is the only writer and every write goes through the
        # kernel's page cache, so pages stay valid across opens.
        info = pyfuse3.FileInfo(fh=fh)
        info.keep_cache = True
        return info

    @_handler
    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        ino = self._to_fs(inode)
        st = self.fs.getattr(ino)
        if stat.S_ISDIR(st.st_mode):
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_TRUNC and (flags & os.O_ACCMODE) != os.O_RDONLY:
            self.fs.setattr(ino, size=0)
        return self._file_info(self._new_fh(ino))

    @_handler
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any) -> Any:
        ino = self.fs.create(self._to_fs(parent_inode), self._name(name), mode, ctx.uid, ctx.gid)
        attrs = self._entry(ino)
        return self._file_info(self._new_fh(ino)), attrs

    @_handler
    async def read(self, fh: int, off: int, size: int) -> Any:
        ino = self._open.get(fh)
        if ino is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        readinto = self._readinto
        if readinto is None:
            return self.fs.read(ino, off, size)
        # pyfuse3 copies the reply to the kernel before the next request is read, so one
        # buffer serves every request.
        if len(self._rbuf) < size:
            self._rbuf = bytearray(size)
        view = memoryview(self._rbuf)
        return view[: readinto(ino, off, view[:size])]

    @_handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        ino = self._open.get(fh)
        if ino is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        written: int = self.fs.write(ino, off, buf)
        return written

    @_handler
    async def flush(self, fh: int) -> None:
        # close(2): nothing to do; data is in the filesystem already (writes are
        # write-through) and the image is written at unmount.
        return None

    @_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        self.fs.sync()

    async def release(self, fh: int) -> None:
        ino = self._open.pop(fh, None)
        if ino is not None:
            try:
                self.fs.unpin(ino)
            except Exception:
                log.exception("unpin(%d) failed", ino)

    # -- xattrs and statfs --------------------------------------------------------------
    @_handler
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [os.fsencode(n) for n in self.fs.listxattr(self._to_fs(inode))]

    @_handler
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        ino = self._to_fs(inode)
        if name == b"system.posix_acl_access":
            # As the kernel's posix_acl_update_mode: the ACL's owner/group(mask)/other
            # entries become the mode bits, and an ACL that says no more than the mode is
            # not stored at all (so `cp -a` works on filesystems without ACL support).
            parsed = _acl_mode(value)
            if parsed is None:
                raise pyfuse3.FUSEError(errno.EINVAL)
            perm, minimal = parsed
            old = self.fs.getattr(ino).st_mode
            self.fs.setattr(ino, mode=(stat.S_IMODE(old) & ~0o777) | perm)
            if minimal:
                with contextlib.suppress(BurrowError, OSError):
                    self.fs.removexattr(ino, "system.posix_acl_access")
                return
        self.fs.setxattr(ino, os.fsdecode(name), value)

    @_handler
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        try:
            value: bytes = self.fs.getxattr(self._to_fs(inode), os.fsdecode(name))
        except BurrowError as exc:
            raise _acl_absent(name, exc) from None
        return value

    @_handler
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        try:
            self.fs.removexattr(self._to_fs(inode), os.fsdecode(name))
        except BurrowError as exc:
            raise _acl_absent(name, exc) from None

    @_handler
    async def statfs(self, ctx: Any) -> Any:
        s = self.fs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = s.f_bsize
        out.f_frsize = s.f_frsize
        out.f_blocks = s.f_blocks
        out.f_bfree = s.f_bfree
        out.f_bavail = s.f_bavail
        out.f_files = s.f_files
        out.f_ffree = s.f_ffree
        out.f_favail = s.f_ffree
        out.f_namemax = s.f_namemax
        return out


def _acl_absent(name: bytes, exc: BurrowError) -> BaseException:
    """A filesystem without xattrs has no POSIX ACLs: reading or removing one is ENODATA
    (as on a filesystem with ACL support and none set), not EOPNOTSUPP. Since setting a
    minimal ACL works (it sets the mode), ``cp -a`` and ``rsync -A`` then behave as on
    ext4 (libacl deletes the default ACL of every copied directory)."""
    if name.startswith(b"system.posix_acl_") and errno_of(exc) in (errno.EOPNOTSUPP, errno.ENOTSUP):
        return pyfuse3.FUSEError(errno.ENODATA)
    return exc


_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = 1, 2, 4, 8, 16, 32


def _acl_mode(value: bytes) -> tuple[int, bool] | None:
    """Permission bits an xattr-format POSIX ACL implies, and whether it is minimal."""
    if len(value) < 4 or (len(value) - 4) % 8 or struct.unpack_from("<I", value)[0] != 2:
        return None
    perms: dict[int, int] = {}
    tags = set()
    for off in range(4, len(value), 8):
        tag, perm, _ = struct.unpack_from("<HHI", value, off)
        tags.add(tag)
        perms.setdefault(tag, perm & 7)
    if not {_ACL_USER_OBJ, _ACL_GROUP_OBJ, _ACL_OTHER} <= tags:
        return None
    group = perms.get(_ACL_MASK, perms[_ACL_GROUP_OBJ])
    mode = perms[_ACL_USER_OBJ] << 6 | group << 3 | perms[_ACL_OTHER]
    return mode, tags <= {_ACL_USER_OBJ, _ACL_GROUP_OBJ, _ACL_OTHER}
