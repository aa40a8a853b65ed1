"""Positional I/O on the image file, with the bounds checks every metadata read needs.

The qcow2 engine never uses the file position, so reads from several threads need no lock
here. ``size`` tracks the file's length as the engine grows it, so "offset beyond the end of
the file" checks stay right while writing.
"""

from __future__ import annotations

import os
import stat

from burrow.errors import CorruptImage, IOFailure

__all__ = ["HostFile"]

IOV_MAX = 1024


class HostFile:
    """An open image file: ``read_meta`` for bounded structures, ``readinto`` for data."""

    def __init__(self, fd: int, path: str, readonly: bool) -> None:
        self.fd = fd
        self.path = path
        self.readonly = readonly
        st = os.fstat(fd)
        # A block device reports st_size 0; its size is where SEEK_END lands.
        self.size = os.lseek(fd, 0, os.SEEK_END) if stat.S_ISBLK(st.st_mode) else st.st_size
        self.meta_reads = 0

    def read_meta(self, n: int, offset: int, structure: str) -> bytes:
        """Read a whole metadata structure; it must lie entirely inside the file."""
        if offset < 0 or n < 0 or offset + n > self.size:
            raise CorruptImage(
                structure, offset, f"{n} bytes at {offset} lie outside the {self.size}-byte file"
            )
        self.meta_reads += 1
        data = os.pread(self.fd, n, offset)
        if len(data) != n:
            raise CorruptImage(structure, offset, "short read (file truncated while open?)")
        return data

    def readinto(self, buf: memoryview, offset: int) -> None:
        """Fill ``buf`` from ``offset``; bytes past the end of the file read as zeros."""
        fd, total, want = self.fd, 0, len(buf)
        while total < want:
            got = os.preadv(fd, [buf[total:]], offset + total)
            if got == 0:
                buf[total:] = bytes(want - total)
                return
            total += got

    def read_upto(self, n: int, offset: int) -> bytes:
        """Read at most ``n`` bytes (fewer at the end of the file)."""
        return os.pread(self.fd, max(0, min(n, self.size - offset)), offset)

    def write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        mv = memoryview(data).cast("B")
        fd, total, want = self.fd, 0, len(mv)
        while total < want:
            done = os.pwrite(fd, mv[total:], offset + total)
            if done <= 0:
                raise IOFailure("short write", path=self.path)
            total += done
        self.size = max(self.size, offset + want)

    def writev(self, bufs: list[memoryview], offset: int) -> None:
        """Write several buffers back to back with as few system calls as possible."""
        pos = offset
        for i in range(0, len(bufs), IOV_MAX):
            group = bufs[i : i + IOV_MAX]
            want = sum(len(b) for b in group)
            done = os.pwritev(self.fd, group, pos)
            if done != want:  # rare: finish the rest piece by piece
                joined = memoryview(b"".join(group))
                self.write(joined[done:], pos + done)
            pos += want
        self.size = max(self.size, pos)

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)
