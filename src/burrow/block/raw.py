"""``RawDevice``: a host file (or block device node) used byte for byte.

Sparse-aware: ``extents`` uses SEEK_DATA/SEEK_HOLE, ``discard`` and ``write_zeroes`` with
``may_unmap`` punch holes with ``fallocate(PUNCH_HOLE)`` when the host filesystem allows it.
All I/O is positional (``os.preadv``/``os.pwrite``), so concurrent reads need no lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from collections.abc import Iterator

from burrow.block.device import BlockDevice, Extent, ExtentFlags
from burrow.errors import IOFailure

__all__ = ["RawDevice"]

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_FALLOC_FL_ZERO_RANGE = 0x10

_libc: ctypes.CDLL | None = None


def _fallocate(fd: int, mode: int, offset: int, length: int) -> bool:
    """Call fallocate(2) with ``mode``; False when the host filesystem does not support it."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fn = _libc.fallocate
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    if fn(fd, mode, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err))


class RawDevice(BlockDevice):
    """A host file as a block device. The file's size is the device size."""

    can_extents = True

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = True) -> None:
        self.path = os.fspath(path)
        flags = os.O_RDONLY if readonly else os.O_RDWR
        self._fd = os.open(self.path, flags | os.O_CLOEXEC)
        try:
            st = os.fstat(self._fd)
            self._is_blockdev = stat.S_ISBLK(st.st_mode)
            if self._is_blockdev:
                self._size = os.lseek(self._fd, 0, os.SEEK_END)
            else:
                self._size = st.st_size
        except BaseException:
            os.close(self._fd)
            raise
        self._readonly = readonly
        self._block_size = 4096
        self.can_discard = not readonly and not self._is_blockdev
        self.can_write_zeroes = not readonly and not self._is_blockdev
        self.can_multi_conn = True  # one host file: every connection sees every write

    @classmethod
    def from_fd(cls, fd: int, *, readonly: bool = True, path: str = "<fd>") -> RawDevice:
        self = cls.__new__(cls)
        self.path = path
        self._fd = os.dup(fd)
        self._is_blockdev = False
        self._size = os.fstat(self._fd).st_size
        self._readonly = readonly
        self._block_size = 4096
        self.can_discard = self.can_write_zeroes = not readonly
        self.can_multi_conn = True
        return self

    def fileno(self) -> int:
        return self._fd

    def _preadinto(self, buf: memoryview, offset: int) -> None:
        fd, total, want = self._fd, 0, len(buf)
        while total < want:
            got = os.preadv(fd, [buf[total:]], offset + total)
            if got == 0:  # file shrank underneath us: the rest reads as zeros
                buf[total:] = bytes(want - total)
                return
            total += got

    def _pwrite(self, data: memoryview, offset: int, fua: bool) -> None:
        fd, total, want = self._fd, 0, len(data)
        while total < want:
            done = os.pwrite(fd, data[total:], offset + total)
            if done <= 0:
                raise IOFailure("short write", path=self.path)
            total += done

    def _flush(self) -> None:
        os.fsync(self._fd)

    def _discard(self, n: int, offset: int) -> None:
        _fallocate(self._fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, n)

    def _write_zeroes(self, n: int, offset: int, may_unmap: bool) -> None:
        mode = (
            _FALLOC_FL_PUNCH_HOLE if may_unmap else _FALLOC_FL_ZERO_RANGE
        ) | _FALLOC_FL_KEEP_SIZE
        if _fallocate(self._fd, mode, offset, n):
            return
        if not may_unmap and _fallocate(
            self._fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, n
        ):
            return
        super()._write_zeroes(n, offset, may_unmap)

    def _extents(self, n: int, offset: int) -> Iterator[Extent]:
        end = offset + n
        pos = offset
        fd = self._fd
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos: the rest is a hole
                    yield Extent(pos, end - pos, ExtentFlags.HOLE | ExtentFlags.ZERO)
                    return
                if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                    yield Extent(pos, end - pos, ExtentFlags.DATA)
                    return
                raise
            if data > pos:
                stop = min(data, end)
                yield Extent(pos, stop - pos, ExtentFlags.HOLE | ExtentFlags.ZERO)
                pos = stop
                continue
            try:
                hole = os.lseek(fd, pos, os.SEEK_HOLE)
            except OSError:
                hole = end
            stop = min(max(hole, pos + 1), end)
            yield Extent(pos, stop - pos, ExtentFlags.DATA)
            pos = stop

    def resize(self, size: int) -> None:
        """Grow or shrink the backing file (host files only)."""
        self._check_writable()
        os.ftruncate(self._fd, size)
        self._size = size

    def _close(self) -> None:
        os.close(self._fd)
