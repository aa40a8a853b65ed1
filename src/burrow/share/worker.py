"""The export worker: the only process of ``burrow serve`` that touches files.

Why a separate process (virtiofsd and TunnelFS as models): the network-facing process parses
bytes from strangers; if it is ever compromised it should hold no file descriptor of any
export. Each export gets one worker, started before the server listens, which opens its
filesystem, then drops privileges for good (no supplementary groups, the given uid/gid, no
capabilities, ``PR_SET_NO_NEW_PRIVS``, optionally a fresh empty network namespace) and only
then serves requests from a ``SOCK_SEQPACKET`` socket.

The worker speaks the share protocol's frames (:mod:`burrow.proto.shareproto`) with handles
whose MAC part is zero: the network process has already checked the client's handles and
authorization, and puts the real MACs on the handles in replies.
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import os
import pwd
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from burrow.errors import BurrowError, RemoteProtocolError, errno_of
from burrow.fs.vfs import Filesystem, Stat, StatFS
from burrow.proto import shareproto as sp
from burrow.proto.shareproto import Kind, Op

__all__ = ["main", "open_export", "stat_from_tuple", "stat_to_tuple", "worker_handle"]

_MAX_FRAME = sp.MAX_MESSAGE
_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
#: A READ reply's header: the frame header and the blob's length (the data follows).
_READ_REPLY = struct.Struct(sp.FRAME.format + "I")
_READY = struct.Struct("<8sQB")  # b"BURROWOK", root ino, writable
_NO_MAC = bytes(16)
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNET = 0x40000000


def worker_handle(ino: int) -> bytes:
    return struct.pack("<Q", ino) + _NO_MAC


def _ino(handle: bytes) -> int:
    return int(struct.unpack_from("<Q", handle)[0])


def stat_to_tuple(st: Stat) -> tuple[int, ...]:
    return (
        st.st_ino,
        st.st_mode,
        st.st_nlink,
        st.st_uid,
        st.st_gid,
        st.st_size,
        st.st_atime_ns,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_rdev,
        st.st_blocks,
        st.st_blksize,
        st.st_dev,
    )


def stat_from_tuple(t: tuple[int, ...] | list[int]) -> Stat:
    return Stat(
        st_ino=t[0],
        st_mode=t[1],
        st_nlink=t[2],
        st_uid=t[3],
        st_gid=t[4],
        st_size=t[5],
        st_atime_ns=t[6],
        st_mtime_ns=t[7],
        st_ctime_ns=t[8],
        st_rdev=t[9],
        st_blocks=t[10],
        st_blksize=t[11],
        st_dev=t[12],
    )


def statfs_to_tuple(s: StatFS) -> tuple[int, ...]:
    return (
        s.f_bsize,
        s.f_frsize,
        s.f_blocks,
        s.f_bfree,
        s.f_bavail,
        s.f_files,
        s.f_ffree,
        s.f_namemax,
    )


# -- opening and privileges ----------------------------------------------------------------


def open_export(path: str, *, writable: bool) -> tuple[Filesystem, Callable[[], None]]:
    """A host directory, or ``IMAGE[@PART]`` through the disk API. Returns the filesystem
    and a function that closes it (committing image changes)."""
    if os.path.isdir(path):
        from burrow.fs.hostdir import HostDirFilesystem

        hfs = HostDirFilesystem(path, readonly=not writable)
        return hfs, hfs.close
    from burrow.disk import open_target

    target = open_target(path, writable=writable)
    return target.fs.fs, target.close


def drop_privileges(user: str | None, *, no_network: bool = False) -> None:
    """Become ``user`` (name or uid) with no supplementary groups and no capabilities."""
    libc = ctypes.CDLL(None, use_errno=True)
    if no_network and os.geteuid() == 0:
        libc.unshare(CLONE_NEWNET)  # best effort: a fresh namespace has only a down lo
    if user is not None and os.geteuid() == 0:
        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
            uid, gid = entry.pw_uid, entry.pw_gid
        except (KeyError, ValueError):
            if not user.isdigit():
                raise BurrowError(f"unknown user {user!r}") from None
            uid = gid = int(user)
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # a uid change from 0 clears every capability set
        if uid != 0:
            try:
                os.setuid(0)
            except PermissionError:
                pass
            else:  # pragma: no cover - the kernel refused to drop
                raise BurrowError("privileges could not be dropped")
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


def tune_malloc() -> None:
    """Keep freed memory for reuse instead of returning it to the kernel after every message.

    Share processes allocate and free a ~260 KiB buffer per chunk. glibc serves those from
    mmap or trims the heap after each free, so every new buffer page-faults afresh: measured
    as a third of the network process's time on writes and ~25% of the worker's. Buffers up to
    8 MiB now come from the heap, which keeps up to 64 MiB of free memory. glibc only (no-op
    elsewhere); called by the share's own processes, never by library users' processes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    for param, value in ((_M_MMAP_THRESHOLD, 8 << 20), (_M_TRIM_THRESHOLD, 64 << 20)):
        mallopt(param, value)


# -- serving -----------------------------------------------------------------------------


class WorkerServer:
    """Executes request frames against ``fs``; thread-safe replies on one socket."""

    def __init__(self, fs: Filesystem, sock: socket.socket, *, threads: int = 4) -> None:
        self.fs = fs
        self.sock = sock
        self._send_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="burrow-worker")

    def _send(self, data: bytes | bytearray | tuple[bytes, bytes]) -> None:
        with self._send_lock:
            if isinstance(data, tuple):
                self.sock.sendmsg(data)  # header and file data: one datagram, no join copy
            else:
                self.sock.send(data)

    def serve(self) -> None:
        while True:
            try:
                data = self.sock.recv(_MAX_FRAME + 1)
            except OSError:
                break
            if not data:
                break
            self._pool.submit(self._one, data)
        self._pool.shutdown(wait=True)

    def _one(self, data: bytes) -> None:
        try:
            frame = sp.decode_frame(data, expect=Kind.REQUEST, zero_copy=True)
        except RemoteProtocolError:
            return  # the network process sent garbage: nothing sensible to answer
        try:
            reply = self.execute(frame)
        except (BurrowError, OSError) as exc:
            reply = sp.encode_error(frame.op, frame.call_id, errno_of(exc), str(exc))
        except Exception as exc:  # a driver bug must not kill the export
            reply = sp.encode_error(frame.op, frame.call_id, 5, f"internal error: {exc!r}")
        try:
            self._send(reply)
        except OSError:
            pass

    def execute(self, frame: sp.Frame) -> bytes | bytearray | tuple[bytes, bytes]:
        """The reply frame; a READ reply as (header, file data), sent with ``sendmsg``
        rather than copied into one buffer."""
        fs, op, f, cid = self.fs, frame.op, frame.fields, frame.call_id

        def entry(ino: int) -> tuple[bytes, tuple[int, ...]]:
            return worker_handle(ino), stat_to_tuple(fs.getattr(ino))

        if op == Op.LOOKUP:
            return sp.encode_reply(op, cid, *entry(fs.lookup(_ino(f[0]), f[1])))
        if op == Op.GETATTR:
            return sp.encode_reply(op, cid, stat_to_tuple(fs.getattr(_ino(f[0]))))
        if op == Op.READDIR:
            return self._readdir(frame)
        if op == Op.READ:
            n = min(f[2], sp.MAX_CHUNK)
            data = fs.read(_ino(f[0]), f[1], n)
            if len(data) > n:
                raise BurrowError("the filesystem returned more than was asked")
            return _READ_REPLY.pack(Kind.REPLY, Op.READ, 0, cid, len(data)), data
        if op == Op.WRITE:
            return sp.encode_reply(op, cid, fs.write(_ino(f[0]), f[1], f[2]))
        if op == Op.CREATE:
            return sp.encode_reply(op, cid, *entry(fs.create(_ino(f[0]), f[1], f[2])))
        if op == Op.MKDIR:
            return sp.encode_reply(op, cid, *entry(fs.mkdir(_ino(f[0]), f[1], f[2])))
        if op == Op.UNLINK:
            fs.unlink(_ino(f[0]), f[1])
            return sp.encode_reply(op, cid)
        if op == Op.RMDIR:
            fs.rmdir(_ino(f[0]), f[1])
            return sp.encode_reply(op, cid)
        if op == Op.RENAME:
            fs.rename(_ino(f[0]), f[1], _ino(f[2]), f[3], f[4])
            return sp.encode_reply(op, cid)
        if op == Op.SYMLINK:
            return sp.encode_reply(op, cid, *entry(fs.symlink(_ino(f[0]), f[1], f[2])))
        if op == Op.READLINK:
            return sp.encode_reply(op, cid, fs.readlink(_ino(f[0])))
        if op == Op.LINK:
            fs.link(_ino(f[0]), _ino(f[1]), f[2])
            return sp.encode_reply(op, cid, stat_to_tuple(fs.getattr(_ino(f[0]))))
        if op == Op.SETATTR:
            mask = f[1]
            st = fs.setattr(
                _ino(f[0]),
                mode=f[2] if mask & sp.SET_MODE else None,
                uid=f[3] if mask & sp.SET_UID else None,
                gid=f[4] if mask & sp.SET_GID else None,
                size=f[5] if mask & sp.SET_SIZE else None,
                atime_ns=f[6] if mask & sp.SET_ATIME else None,
                mtime_ns=f[7] if mask & sp.SET_MTIME else None,
            )
            return sp.encode_reply(op, cid, stat_to_tuple(st))
        if op == Op.LISTXATTR:
            return sp.encode_reply(op, cid, fs.listxattr(_ino(f[0]))[: sp.MAX_ENTRIES])
        if op == Op.GETXATTR:
            return sp.encode_reply(op, cid, fs.getxattr(_ino(f[0]), f[1]))
        if op == Op.SETXATTR:
            fs.setxattr(_ino(f[0]), f[1], bytes(f[2]), f[3])
            return sp.encode_reply(op, cid)
        if op == Op.REMOVEXATTR:
            fs.removexattr(_ino(f[0]), f[1])
            return sp.encode_reply(op, cid)
        if op == Op.STATFS:
            return sp.encode_reply(op, cid, statfs_to_tuple(fs.statfs()))
        if op == Op.SYNC:
            fs.sync()
            return sp.encode_reply(op, cid)
        if op == Op.MKNOD:
            return sp.encode_reply(op, cid, *entry(fs.mknod(_ino(f[0]), f[1], f[2], f[3])))
        raise RemoteProtocolError(f"operation {op} not handled")  # pragma: no cover

    def _readdir(self, frame: sp.Frame) -> bytes | bytearray:
        """Entries with their attributes (NFSv3's READDIRPLUS): a walk that stats every
        entry costs one call per page instead of one per entry."""
        ino, start = _ino(frame.fields[0]), frame.fields[1]
        entries: list[tuple[str, bytes, tuple[int, ...]]] = []
        size = 64
        index = 0
        nxt = 0
        for index, e in enumerate(self.fs.readdir(ino)):
            if index < start:
                continue
            cost = 2 + len(e.name.encode("utf-8", "surrogateescape")) + sp.HANDLE_LEN + sp.ATTR.size
            if size + cost > sp.MAX_MESSAGE - 1024 or len(entries) >= sp.MAX_ENTRIES:
                nxt = index
                break
            try:
                attr = stat_to_tuple(self.fs.getattr(e.ino))
            except BurrowError:
                continue  # vanished since the listing
            entries.append((e.name, worker_handle(e.ino), attr))
            size += cost
        return sp.encode_reply(Op.READDIR, frame.call_id, entries, nxt)


def ready_message(root_ino: int, writable: bool) -> bytes:
    return _READY.pack(b"BURROWOK", root_ino, int(writable))


def parse_ready(data: bytes) -> tuple[int, bool]:
    if len(data) != _READY.size:
        raise RemoteProtocolError("bad worker ready message")
    magic, ino, writable = _READY.unpack(data)
    if magic != b"BURROWOK":
        raise RemoteProtocolError("bad worker ready message")
    return int(ino), bool(writable)


def run_worker(
    sock: socket.socket,
    path: str,
    *,
    writable: bool,
    user: str | None = None,
    no_network: bool = False,
) -> None:
    fs, closer = open_export(path, writable=writable)
    drop_privileges(user, no_network=no_network)
    try:
        sock.send(ready_message(fs.root_ino, not fs.readonly))
        WorkerServer(fs, sock).serve()
    finally:
        closer()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="burrow-share-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--writable", action="store_true")
    parser.add_argument("--user")
    parser.add_argument("--no-network", action="store_true")
    args = parser.parse_args(argv)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stack dumps for debugging
    tune_malloc()
    sock = socket.socket(fileno=args.fd)
    try:
        run_worker(
            sock, args.path, writable=args.writable, user=args.user, no_network=args.no_network
        )
    except BurrowError as exc:
        print(f"burrow share worker: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
