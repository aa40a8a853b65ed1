"""pyfuse3 ``Operations`` over any ``burrow.fs.vfs.Filesystem``.

Translation rules:

* Inode numbers: FUSE's root is always 1. The filesystem's ``root_ino`` and inode 1 swap
  places (a bijection), so every other number passes through unchanged and ``st_ino`` seen by
  programs equals the on-disk number (except for those two).
* Lookup counts: every reply that creates a kernel reference (lookup, create, mkdir, mknod,
  symlink, link) adds one; ``forget`` removes them. While an inode has references or open
  handles it is pinned in the filesystem, so open-then-unlinked files keep their data until
  the last release, as POSIX requires.
* Errors: ``BurrowError``\\s become ``FUSEError(errno)`` here and only here; an unexpected
  exception is logged and reported as EIO so a corrupt image never kills the mount.
* Caching: attributes and entries are cached by the kernel for ``attr_timeout`` /
  ``entry_timeout`` seconds (1 s by default). burrow is the only writer of the image while
  mounted, so the kernel caches stay right for changes made through the mount; changes made
  to the image file underneath a mount are not seen (documented in docs/fuse.md).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import struct
from collections.abc import Sequence
from typing import Any

import pyfuse3

from burrow.errors import BurrowError, errno_of
from burrow.fs.vfs import Filesystem, Stat

log = logging.getLogger("burrow.fuse")

__all__ = ["FilesystemOperations"]


class FilesystemOperations(pyfuse3.Operations):
    """Serve ``fs`` through FUSE. All filesystem calls run on the trio thread, in order."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, fs: Filesystem, *, timeout: float = 1.0) -> None:
        super().__init__()
        self.fs = fs
        self.timeout = timeout
        self._root = fs.root_ino
        self._lookups: dict[int, int] = {}  # fs inode -> kernel lookup count
        self._open: dict[int, int] = {}  # fh -> fs inode
        self._next_fh = 1
        self._dirs: dict[int, list[tuple[bytes, int]]] = {}  # fh -> snapshot of entries

    # -- numbering --------------------------------------------------------------------
    def _to_fs(self, ino: int) -> int:
        if ino == pyfuse3.ROOT_INODE:
            return self._root
        if ino == self._root:
            return pyfuse3.ROOT_INODE
        return ino

    _to_fuse = _to_fs  # the swap is its own inverse

    # -- helpers ----------------------------------------------------------------------
    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except pyfuse3.FUSEError:
            raise
        except BurrowError as exc:
            raise pyfuse3.FUSEError(errno_of(exc)) from None
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s", getattr(fn, "__name__", fn))
            raise pyfuse3.FUSEError(errno.EIO) from None

    def _attrs(self, st: Stat) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = self._to_fuse(st.st_ino)
        a.generation = 0
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

    def _entry(self, fs_ino: int) -> pyfuse3.EntryAttributes:
        attrs = self._attrs(self._call(self.fs.getattr, fs_ino))
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
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        parent = self._to_fs(parent_inode)
        ino = self._call(self.fs.lookup, parent, self._name(name))
        return self._entry(ino)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for fuse_ino, nlookup in inode_list:
            ino = self._to_fs(fuse_ino)
            left = self._lookups.get(ino, 0) - nlookup
            if left > 0:
                self._lookups[ino] = left
                continue
            self._lookups.pop(ino, None)
            try:
                self.fs.unpin(ino)
            except Exception:
                log.exception("unpin(%d) failed", ino)

    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        return self._attrs(self._call(self.fs.getattr, self._to_fs(inode)))

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
        st = self._call(self.fs.setattr, self._to_fs(inode), **kw)
        return self._attrs(st)

    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.fsencode(self._call(self.fs.readlink, self._to_fs(inode)))

    # -- directories ------------------------------------------------------------------
    async def opendir(self, inode: int, ctx: Any) -> int:
        ino = self._to_fs(inode)
        entries = self._call(lambda: [(os.fsencode(e.name), e.ino) for e in self.fs.readdir(ino)])
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = entries
        return fh

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self._dirs.get(fh, [])
        for index in range(start_id, len(entries)):
            name, ino = entries[index]
            try:
                attrs = self._attrs(self._call(self.fs.getattr, ino))
            except pyfuse3.FUSEError:
                continue  # removed meanwhile, or unreadable: skip rather than fail the listing
            if not pyfuse3.readdir_reply(token, name, attrs, index + 1):
                return
            self._ref(ino)

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self._call(self.fs.sync)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
        ino = self._call(
            self.fs.mkdir, self._to_fs(parent_inode), self._name(name), mode, ctx.uid, ctx.gid
        )
        return self._entry(ino)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self._call(self.fs.rmdir, self._to_fs(parent_inode), self._name(name))

    # -- names ------------------------------------------------------------------------
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> Any:
        ino = self._call(
            self.fs.mknod, self._to_fs(parent_inode), self._name(name), mode, rdev, ctx.uid, ctx.gid
        )
        return self._entry(ino)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        ino = self._call(
            self.fs.symlink,
            self._to_fs(parent_inode),
            self._name(name),
            os.fsdecode(target),
            ctx.uid,
            ctx.gid,
        )
        return self._entry(ino)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        ino = self._to_fs(inode)
        self._call(self.fs.link, ino, self._to_fs(new_parent_inode), self._name(new_name))
        return self._entry(ino)

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self._call(self.fs.unlink, self._to_fs(parent_inode), self._name(name))

    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        self._call(
            self.fs.rename,
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
        self._open[fh] = ino
        self.fs.pin(ino)
        return fh

    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        ino = self._to_fs(inode)
        st = self._call(self.fs.getattr, ino)
        if stat.S_ISDIR(st.st_mode):
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_TRUNC and (flags & os.O_ACCMODE) != os.O_RDONLY:
            self._call(self.fs.setattr, ino, size=0)
        return pyfuse3.FileInfo(fh=self._new_fh(ino))

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any) -> Any:
        ino = self._call(
            self.fs.create, self._to_fs(parent_inode), self._name(name), mode, ctx.uid, ctx.gid
        )
        attrs = self._entry(ino)
        return pyfuse3.FileInfo(fh=self._new_fh(ino)), attrs

    async def read(self, fh: int, off: int, size: int) -> bytes:
        ino = self._open.get(fh)
        if ino is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        data: bytes = self._call(self.fs.read, ino, off, size)
        return data

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        ino = self._open.get(fh)
        if ino is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        written: int = self._call(self.fs.write, ino, off, buf)
        return written

    async def flush(self, fh: int) -> None:
        return None

    async def fsync(self, fh: int, datasync: bool) -> None:
        self._call(self.fs.sync)

    async def release(self, fh: int) -> None:
        ino = self._open.pop(fh, None)
        if ino is not None:
            try:
                self.fs.unpin(ino)
            except Exception:
                log.exception("unpin(%d) failed", ino)

    # -- xattrs and statfs --------------------------------------------------------------
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        value: bytes = self._call(self.fs.getxattr, self._to_fs(inode), os.fsdecode(name))
        return value

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        names = self._call(self.fs.listxattr, self._to_fs(inode))
        return [os.fsencode(n) for n in names]

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
            old = self._call(self.fs.getattr, ino).st_mode
            self._call(self.fs.setattr, ino, mode=(stat.S_IMODE(old) & ~0o777) | perm)
            if minimal:
                with contextlib.suppress(pyfuse3.FUSEError):
                    self._call(self.fs.removexattr, ino, "system.posix_acl_access")
                return
        self._call(self.fs.setxattr, ino, os.fsdecode(name), value)

    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        self._call(self.fs.removexattr, self._to_fs(inode), os.fsdecode(name))

    async def statfs(self, ctx: Any) -> Any:
        s = self._call(self.fs.statfs)
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
