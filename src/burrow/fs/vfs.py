"""The inode-based filesystem interface every driver implements (ext4, FAT, host dir, share).

Why inode-based (like the kernel VFS and pyfuse3) rather than path-based: FUSE and the share
protocol speak inodes, hard links and open-then-unlinked files only make sense with inodes,
and a path layer on top (``burrow.fs.paths``) is easy, while the reverse is not.

Conventions every driver keeps:

* Inode numbers are ``int``; ``root_ino`` is the root directory. Numbers are stable while the
  filesystem is open (drivers document how they are derived).
* Names are ``str``. On-disk names are bytes; drivers decode them with UTF-8 and
  ``surrogateescape`` (``os.fsdecode`` semantics) and encode the same way, so every on-disk
  name round-trips. ``readdir`` never yields ``.`` or ``..``.
* Errors are ``burrow.errors`` classes carrying an errno (``NotFound``, ``NotADirectory``,
  ``Exists``, ``NotEmpty``, ``ReadOnly``, ``NotSupported``...), never bare ``OSError``.
* Times are integer nanoseconds since the epoch.
* Writers check ``readonly`` and raise ``ReadOnly`` (EROFS) first.
* ``pin``/``unpin``: a front end that holds an inode open (FUSE, the share server) pins it; a
  driver must not free an inode whose link count dropped to zero while it is pinned, and frees
  it on the last ``unpin``.
"""

from __future__ import annotations

import stat as _stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from burrow.errors import NotSupported, ReadOnly

__all__ = [
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "XATTR_CREATE",
    "XATTR_REPLACE",
    "DirEntry",
    "Filesystem",
    "FsInfo",
    "Stat",
    "StatFS",
    "decode_name",
    "encode_name",
]

RENAME_NOREPLACE = 1  # same values as Linux renameat2
RENAME_EXCHANGE = 2
XATTR_CREATE = 1  # same values as Linux setxattr
XATTR_REPLACE = 2


def decode_name(raw: bytes) -> str:
    """On-disk name bytes -> ``str`` (undecodable bytes kept as surrogates)."""
    return raw.decode("utf-8", "surrogateescape")


def encode_name(name: str) -> bytes:
    """``str`` -> on-disk bytes; the exact inverse of :func:`decode_name`."""
    return name.encode("utf-8", "surrogateescape")


@dataclass(slots=True)
class Stat:
    """Inode attributes with ``os.stat_result`` field names.

    Treat as immutable. Not ``frozen``: a frozen dataclass costs about four times as much to
    build, and a directory walk builds one per entry."""

    st_ino: int
    st_mode: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_rdev: int = 0
    st_blocks: int = 0  # 512-byte units, as stat(2)
    st_blksize: int = 4096
    st_birthtime_ns: int | None = None  # crtime where the filesystem records it
    st_dev: int = 0

    @property
    def st_atime(self) -> float:
        return self.st_atime_ns / 1e9

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9

    @property
    def st_ctime(self) -> float:
        return self.st_ctime_ns / 1e9

    def is_dir(self) -> bool:
        return _stat.S_ISDIR(self.st_mode)

    def is_file(self) -> bool:
        return _stat.S_ISREG(self.st_mode)

    def is_symlink(self) -> bool:
        return _stat.S_ISLNK(self.st_mode)


@dataclass(slots=True)
class DirEntry:
    """One directory entry. ``mode`` holds only the file-type bits (``S_IFMT``), or 0 when the
    directory does not record the type (then call ``getattr``). Treat as immutable (not
    ``frozen`` for the same reason as :class:`Stat`)."""

    name: str
    ino: int
    mode: int = 0

    def is_dir(self) -> bool:
        return _stat.S_ISDIR(self.mode)


@dataclass(frozen=True, slots=True)
class StatFS:
    """``statvfs``-style figures."""

    f_bsize: int
    f_frsize: int
    f_blocks: int
    f_bfree: int
    f_bavail: int
    f_files: int
    f_ffree: int
    f_namemax: int = 255


@dataclass(frozen=True)
class FsInfo:
    """Identity and features, for ``burrow info``."""

    fstype: str  # "ext4", "ext3", "ext2", "vfat", "hostdir", "share"
    label: str = ""
    uuid: str = ""
    features: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class Filesystem:
    """Base class for drivers. Read methods must be implemented; write methods default to
    ``ReadOnly`` when the filesystem is read-only and ``NotSupported`` otherwise."""

    root_ino: int = 1
    readonly: bool = True

    # -- reading --------------------------------------------------------------------------
    def lookup(self, parent: int, name: str) -> int:
        """Inode number of ``name`` in directory ``parent`` (``NotFound`` if absent)."""
        raise NotImplementedError

    def getattr(self, ino: int) -> Stat:
        raise NotImplementedError

    def readdir(self, ino: int) -> Iterator[DirEntry]:
        """Entries of a directory, without ``.`` and ``..``."""
        raise NotImplementedError

    def read(self, ino: int, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset``; short only at end of file."""
        raise NotImplementedError

    def readlink(self, ino: int) -> str:
        raise NotImplementedError

    def listxattr(self, ino: int) -> list[str]:
        """Full names with namespace prefix (``user.foo``, ``security.selinux``...)."""
        return []

    def getxattr(self, ino: int, name: str) -> bytes:
        from burrow.errors import error_for_errno

        raise error_for_errno(61, f"no such attribute: {name}")  # ENODATA

    def statfs(self) -> StatFS:
        raise NotImplementedError

    def info(self) -> FsInfo:
        return FsInfo(fstype=type(self).__name__.lower())

    # -- writing --------------------------------------------------------------------------
    def _refuse(self, what: str) -> NotSupported | ReadOnly:
        if self.readonly:
            return ReadOnly("filesystem is read-only")
        return NotSupported(f"{what} is not supported on this filesystem")

    def write(self, ino: int, offset: int, data: bytes | bytearray | memoryview) -> int:
        raise self._refuse("write")

    def create(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0) -> int:
        """Create a regular file; returns its inode number (``Exists`` if the name is taken)."""
        raise self._refuse("create")

    def mkdir(self, parent: int, name: str, mode: int, uid: int = 0, gid: int = 0) -> int:
        raise self._refuse("mkdir")

    def mknod(
        self, parent: int, name: str, mode: int, rdev: int = 0, uid: int = 0, gid: int = 0
    ) -> int:
        """Device nodes, fifos and sockets (``mode`` includes the type bits)."""
        raise self._refuse("mknod")

    def symlink(self, parent: int, name: str, target: str, uid: int = 0, gid: int = 0) -> int:
        raise self._refuse("symlink")

    def link(self, ino: int, new_parent: int, new_name: str) -> None:
        raise self._refuse("link")

    def unlink(self, parent: int, name: str) -> None:
        raise self._refuse("unlink")

    def rmdir(self, parent: int, name: str) -> None:
        raise self._refuse("rmdir")

    def rename(
        self, old_parent: int, old_name: str, new_parent: int, new_name: str, flags: int = 0
    ) -> None:
        raise self._refuse("rename")

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
        """Change attributes; ``None`` leaves one unchanged. ``mode`` is permission bits only.
        Returns the new attributes. ctime is set to now by the driver."""
        raise self._refuse("setattr")

    def setxattr(self, ino: int, name: str, value: bytes, flags: int = 0) -> None:
        raise self._refuse("setxattr")

    def removexattr(self, ino: int, name: str) -> None:
        raise self._refuse("removexattr")

    # -- lifetime ---------------------------------------------------------------------
    def pin(self, ino: int) -> None:
        """A front end holds ``ino`` open; keep it alive even if its last link goes."""

    def unpin(self, ino: int) -> None:
        """Release one ``pin``; free the inode if it has no links left and no pins."""

    def sync(self) -> None:
        """Write every change to the device below."""

    def close(self) -> None:
        """Sync (when writable) and release resources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
