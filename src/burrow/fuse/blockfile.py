"""Expose a ``BlockDevice`` as one regular file through FUSE (``burrow mount --block``).

The mount point is a regular file; its contents are the device. Root can then ``losetup`` it
and get a real kernel block device without the nbd module — what nbdfuse and
qemu-storage-daemon's FUSE export do. Reads and writes go straight to the device; ``fsync``
flushes it.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from typing import Any

import pyfuse3

from burrow.block.device import BlockDevice
from burrow.errors import BurrowError, errno_of

log = logging.getLogger("burrow.fuse")

__all__ = ["BlockFileOperations"]


class BlockFileOperations(pyfuse3.Operations):
    def __init__(self, dev: BlockDevice) -> None:
        super().__init__()
        self.after_init: Callable[[], None] | None = None  # run once, at the first request
        self.dev = dev
        self._rbuf = bytearray(1 << 20)
        self._uid, self._gid = os.getuid(), os.getgid()
        self._time = time.time_ns()

    def _check(self, inode: int) -> None:
        if self.after_init is not None:
            from burrow.fuse.ops import _run_after_init

            _run_after_init(self)
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOENT)

    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        self._check(inode)
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        a.st_mode = stat.S_IFREG | (0o444 if self.dev.readonly else 0o644)
        a.st_nlink = 1
        a.st_uid, a.st_gid = self._uid, self._gid
        a.st_size = self.dev.size
        a.st_blksize = max(512, self.dev.block_size)
        a.st_blocks = (self.dev.size + 511) // 512
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self._time
        a.attr_timeout = a.entry_timeout = 3600.0  # a device never changes size or owner
        return a

    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> Any:
        self._check(inode)
        if fields.update_size and attr.st_size != self.dev.size:
            raise pyfuse3.FUSEError(errno.EPERM)  # a device does not change size
        return await self.getattr(inode)

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        raise pyfuse3.FUSEError(errno.ENOTDIR)

    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        self._check(inode)
        if (flags & os.O_ACCMODE) != os.O_RDONLY and self.dev.readonly:
            raise pyfuse3.FUSEError(errno.EROFS)
        info = pyfuse3.FileInfo(fh=1)
        info.direct_io = False
        info.keep_cache = True
        return info

    def _io(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except BurrowError as exc:
            raise pyfuse3.FUSEError(errno_of(exc)) from None
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("block file I/O failed")
            raise pyfuse3.FUSEError(errno.EIO) from None

    async def read(self, fh: int, off: int, size: int) -> Any:
        if off >= self.dev.size:
            return b""
        n = min(size, self.dev.size - off)
        # one reusable buffer: pyfuse3 copies the reply before it reads the next request
        if len(self._rbuf) < n:
            self._rbuf = bytearray(n)
        view = memoryview(self._rbuf)[:n]
        self._io(self.dev.preadinto, view, off)
        return view

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        if off + len(buf) > self.dev.size:
            raise pyfuse3.FUSEError(errno.ENOSPC)
        self._io(self.dev.pwrite, buf, off)
        return len(buf)

    async def fsync(self, fh: int, datasync: bool) -> None:
        self._io(self.dev.flush)

    async def flush(self, fh: int) -> None:
        return None

    async def release(self, fh: int) -> None:
        return None

    async def statfs(self, ctx: Any) -> Any:
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = 512
        out.f_blocks = self.dev.size // 512
        out.f_namemax = 255
        return out
