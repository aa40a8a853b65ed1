"""``MemoryFilesystem``: a complete POSIX-like filesystem held in RAM (like tmpfs).

Why it exists: it is the reference implementation of the ``vfs.Filesystem`` contract (every
rule in ``vfs.py`` is shown here in its simplest form), a scratch filesystem for front ends
(``burrow mount memory: DIR``), and the model that front-end tests (FUSE, shares) run against
without depending on an on-disk driver.
"""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from burrow.errors import (
    Exists,
    InvalidArgument,
    InvalidOperation,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
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

__all__ = ["MemoryFilesystem", "check_name"]

ENODATA = 61
MAX_NAME = 255


def check_name(name: str) -> None:
    """Refuse names no POSIX filesystem can hold: empty, ``.``, ``..``, ``/``, NUL, > 255 bytes."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise InvalidArgument(f"invalid file name {name!r}")
    if len(encode_name(name)) > MAX_NAME:
        raise NameTooLong(path=name)


@dataclass
class _Inode:
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int = 1
    rdev: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    data: bytearray = field(default_factory=bytearray)
    target: str = ""
    children: dict[str, int] | None = None
    parent: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)


class MemoryFilesystem(Filesystem):
    """An in-memory filesystem; ``capacity`` bounds the bytes of file data it may hold."""

    root_ino = 1

    def __init__(self, *, capacity: int = 1 << 30, readonly: bool = False) -> None:
        now = time.time_ns()
        root = _Inode(1, stat.S_IFDIR | 0o755, 0, 0, nlink=2, children={}, parent=1)
        root.atime_ns = root.mtime_ns = root.ctime_ns = now
        self._inodes: dict[int, _Inode] = {1: root}
        self._next = 2
        self._pins: dict[int, int] = {}
        self._capacity = capacity
        self._used = 0
        self.readonly = readonly
        self._lock = threading.RLock()

    # -- helpers ----------------------------------------------------------------------
    def _get(self, ino: int) -> _Inode:
        node = self._inodes.get(ino)
        if node is None:
            raise NotFound(f"no inode {ino}")
        return node

    def _dir(self, ino: int) -> _Inode:
        node = self._get(ino)
        if node.children is None:
            raise NotADirectory(f"inode {ino} is not a directory")
        return node

    def _writable(self) -> None:
        if self.readonly:
            raise ReadOnly("filesystem is read-only")

    def _new(self, parent: int, name: str, mode: int, uid: int, gid: int) -> _Inode:
        self._writable()
        check_name(name)
        d = self._dir(parent)
        assert d.children is not None
        if name in d.children:
            raise Exists(path=name)
        now = time.time_ns()
        node = _Inode(self._next, mode, uid, gid, atime_ns=now, mtime_ns=now, ctime_ns=now)
        self._next += 1
        self._inodes[node.ino] = node
        d.children[name] = node.ino
        d.mtime_ns = d.ctime_ns = now
        return node

    def _maybe_free(self, node: _Inode) -> None:
        if node.nlink <= 0 and not self._pins.get(node.ino):
            self._used -= len(node.data)
            self._inodes.pop(node.ino, None)

    # -- reading ----------------------------------------------------------------------
    def lookup(self, parent: int, name: str) -> int:
        with self._lock:
            d = self._dir(parent)
            if name == ".":
                return parent
            if name == "..":
                return d.parent
            assert d.children is not None
            ino = d.children.get(name)
            if ino is None:
                raise NotFound(path=name)
            return ino

    def getattr(self, ino: int) -> Stat:
        with self._lock:
            n = self._get(ino)
            size = len(n.data) if stat.S_ISREG(n.mode) else len(encode_name(n.target))
            if n.children is not None:
                size = 4096
            return Stat(
                st_ino=n.ino, st_mode=n.mode, st_nlink=n.nlink, st_uid=n.uid, st_gid=n.gid,
                st_size=size, st_atime_ns=n.atime_ns, st_mtime_ns=n.mtime_ns,
                st_ctime_ns=n.ctime_ns, st_rdev=n.rdev, st_blocks=(len(n.data) + 511) // 512,
            )  # fmt: skip

    def readdir(self, ino: int) -> Iterator[DirEntry]:
        with self._lock:
            d = self._dir(ino)
            assert d.children is not None
            entries = [
                DirEntry(name, child, stat.S_IFMT(self._inodes[child].mode))
                for name, child in d.children.items()
            ]
        return iter(entries)

    def read(self, ino: int, offset: int, n: int) -> bytes:
        with self._lock:
            node = self._get(ino)
            if node.children is not None:
                raise IsADirectory()
            if offset < 0 or n < 0:
                raise InvalidArgument("negative offset or length")
            return bytes(node.data[offset : offset + n])

    def readlink(self, ino: int) -> str:
        with self._lock:
            node = self._get(ino)
            if not stat.S_ISLNK(node.mode):
                raise InvalidOperation("not a symbolic link")
            return node.target

    def listxattr(self, ino: int) -> list[str]:
        with self._lock:
            return list(self._get(ino).xattrs)

    def getxattr(self, ino: int, name: str) -> bytes:
        with self._lock:
            value = self._get(ino).xattrs.get(name)
            if value is None:
                raise error_for_errno(ENODATA, f"no such attribute: {name}")
            return value

    def statfs(self) -> StatFS:
        with self._lock:
            blocks = self._capacity // 4096
            free = max(0, (self._capacity - self._used) // 4096)
            return StatFS(4096, 4096, blocks, free, free, 1 << 20, (1 << 20) - len(self._inodes))

    def info(self) -> FsInfo:
        return FsInfo(fstype="memfs", label="memory")

    # -- writing ----------------------------------------------------------------------
    def write(self, ino: int, offset: int, data: bytes | bytearray | memoryview) -> int:
        with self._lock:
            self._writable()
            node = self._get(ino)
            if node.children is not None:
                raise IsADirectory()
            if offset < 0:
                raise InvalidArgument("negative offset")
            end = offset + len(data)
            grow = max(0, end - len(node.data))
            if self._used + grow > self._capacity:
                from burrow.errors import NoSpace

                raise NoSpace()
            if grow:
                node.data.extend(bytes(grow))
                self._used += grow
            node.data[offset:end] = data
            node.mtime_ns = node.ctime_ns = time.time_ns()
            return len(data)

    def create(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0) -> int:
        with self._lock:
            return self._new(parent, name, stat.S_IFREG | (mode & 0o7777), uid, gid).ino

    def mkdir(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0) -> int:
        with self._lock:
            node = self._new(parent, name, stat.S_IFDIR | (mode & 0o7777), uid, gid)
            node.children, node.parent, node.nlink = {}, parent, 2
            self._inodes[parent].nlink += 1
            return node.ino

    def mknod(
        self, parent: int, name: str, mode: int, rdev: int = 0, uid: int = 0, gid: int = 0
    ) -> int:
        kind = stat.S_IFMT(mode)
        if kind not in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFREG):
            raise InvalidArgument(f"mknod cannot make file type {kind:o}")
        with self._lock:
            node = self._new(parent, name, mode, uid, gid)
            node.rdev = rdev
            return node.ino

    def symlink(self, parent: int, name: str, target: str, uid: int = 0, gid: int = 0) -> int:
        with self._lock:
            node = self._new(parent, name, stat.S_IFLNK | 0o777, uid, gid)
            node.target = target
            return node.ino

    def link(self, ino: int, new_parent: int, new_name: str) -> None:
        with self._lock:
            self._writable()
            node = self._get(ino)
            if node.children is not None:
                raise NotPermitted("hard links to directories are not allowed")
            check_name(new_name)
            d = self._dir(new_parent)
            assert d.children is not None
            if new_name in d.children:
                raise Exists(path=new_name)
            d.children[new_name] = ino
            node.nlink += 1
            node.ctime_ns = d.mtime_ns = d.ctime_ns = time.time_ns()

    def unlink(self, parent: int, name: str) -> None:
        with self._lock:
            self._writable()
            d = self._dir(parent)
            assert d.children is not None
            ino = d.children.get(name)
            if ino is None:
                raise NotFound(path=name)
            node = self._inodes[ino]
            if node.children is not None:
                raise IsADirectory(path=name)
            del d.children[name]
            node.nlink -= 1
            node.ctime_ns = d.mtime_ns = d.ctime_ns = time.time_ns()
            self._maybe_free(node)

    def rmdir(self, parent: int, name: str) -> None:
        with self._lock:
            self._writable()
            d = self._dir(parent)
            assert d.children is not None
            ino = d.children.get(name)
            if ino is None:
                raise NotFound(path=name)
            node = self._inodes[ino]
            if node.children is None:
                raise NotADirectory(path=name)
            if node.children:
                raise NotEmpty(path=name)
            del d.children[name]
            d.nlink -= 1
            node.nlink = 0
            d.mtime_ns = d.ctime_ns = time.time_ns()
            self._maybe_free(node)

    def _is_ancestor(self, maybe_ancestor: int, ino: int) -> bool:
        seen = 0
        while seen < 10_000:
            if ino == maybe_ancestor:
                return True
            parent = self._inodes[ino].parent if ino in self._inodes else self.root_ino
            if parent == ino:
                return False
            ino, seen = parent, seen + 1
        return False

    def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        with self._lock:
            self._writable()
            check_name(new_name)
            src_dir, dst_dir = self._dir(old_parent), self._dir(new_parent)
            assert src_dir.children is not None and dst_dir.children is not None
            ino = src_dir.children.get(old_name)
            if ino is None:
                raise NotFound(path=old_name)
            node = self._inodes[ino]
            target_ino = dst_dir.children.get(new_name)
            if flags & RENAME_EXCHANGE:
                if target_ino is None:
                    raise NotFound(path=new_name)
                other = self._inodes[target_ino]
                for moved, dest in ((node, new_parent), (other, old_parent)):
                    if moved.children is not None and self._is_ancestor(moved.ino, dest):
                        raise InvalidOperation("cannot move a directory into itself")
                src_dir.children[old_name], dst_dir.children[new_name] = target_ino, ino
                for moved, frm, to in ((node, src_dir, dst_dir), (other, dst_dir, src_dir)):
                    if moved.children is not None and frm is not to:
                        moved.parent = to.ino
                        frm.nlink -= 1
                        to.nlink += 1
                return
            if node.children is not None and self._is_ancestor(ino, new_parent):
                raise InvalidOperation("cannot move a directory into its own subtree")
            if target_ino is not None:
                if flags & RENAME_NOREPLACE:
                    raise Exists(path=new_name)
                if target_ino == ino:
                    return
                target = self._inodes[target_ino]
                if node.children is not None:
                    if target.children is None:
                        raise NotADirectory(path=new_name)
                    if target.children:
                        raise NotEmpty(path=new_name)
                    dst_dir.nlink -= 1
                    target.nlink = 0
                elif target.children is not None:
                    raise IsADirectory(path=new_name)
                else:
                    target.nlink -= 1
                del dst_dir.children[new_name]
                self._maybe_free(target)
            del src_dir.children[old_name]
            dst_dir.children[new_name] = ino
            if node.children is not None and src_dir is not dst_dir:
                node.parent = new_parent
                src_dir.nlink -= 1
                dst_dir.nlink += 1
            now = time.time_ns()
            node.ctime_ns = src_dir.mtime_ns = dst_dir.mtime_ns = now
            src_dir.ctime_ns = dst_dir.ctime_ns = now

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
        with self._lock:
            self._writable()
            node = self._get(ino)
            now = time.time_ns()
            if size is not None:
                if node.children is not None:
                    raise IsADirectory()
                if size < 0:
                    raise InvalidArgument("negative size")
                grow = size - len(node.data)
                if grow > 0 and self._used + grow > self._capacity:
                    from burrow.errors import NoSpace

                    raise NoSpace()
                if grow > 0:
                    node.data.extend(bytes(grow))
                else:
                    del node.data[size:]
                self._used += grow
                node.mtime_ns = now
            if mode is not None:
                node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
            if uid is not None:
                node.uid = uid
            if gid is not None:
                node.gid = gid
            if atime_ns is not None:
                node.atime_ns = atime_ns
            if mtime_ns is not None:
                node.mtime_ns = mtime_ns
            node.ctime_ns = now
            return self.getattr(ino)

    def setxattr(self, ino: int, name: str, value: bytes, flags: int = 0) -> None:
        with self._lock:
            self._writable()
            node = self._get(ino)
            if flags & XATTR_CREATE and name in node.xattrs:
                raise Exists(path=name)
            if flags & XATTR_REPLACE and name not in node.xattrs:
                raise error_for_errno(ENODATA, f"no such attribute: {name}")
            node.xattrs[name] = bytes(value)
            node.ctime_ns = time.time_ns()

    def removexattr(self, ino: int, name: str) -> None:
        with self._lock:
            self._writable()
            node = self._get(ino)
            if node.xattrs.pop(name, None) is None:
                raise error_for_errno(ENODATA, f"no such attribute: {name}")

    def pin(self, ino: int) -> None:
        with self._lock:
            self._pins[ino] = self._pins.get(ino, 0) + 1

    def unpin(self, ino: int) -> None:
        with self._lock:
            left = self._pins.get(ino, 0) - 1
            if left > 0:
                self._pins[ino] = left
                return
            self._pins.pop(ino, None)
            node = self._inodes.get(ino)
            if node is not None:
                self._maybe_free(node)
