"""Mount and unmount: run the pyfuse3 loop, daemonise, and commit on unmount.

Lifecycle of ``burrow mount`` (daemon mode, the default):

1. The parent opens the image and the filesystem (so errors are reported as one line), then
   forks. The child starts the FUSE session; once the kernel has the mount, the child tells
   the parent through a pipe and the parent exits 0 — the mount is usable when the command
   returns.
2. On unmount (``burrow umount`` or ``fusermount3 -u``) the loop ends and the child calls
   ``close()`` on what it serves: the filesystem syncs, the overlay commits to the image.
   A killed daemon leaves the image as of its last commit (the overlay was never applied).
3. The child records its pid and, at the end, its exit status in the state directory, so
   ``burrow umount`` can wait for the commit to finish and report failures.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from burrow.errors import BurrowError, UsageError

log = logging.getLogger("burrow.fuse")

__all__ = ["mount", "state_dir", "unmount"]


def state_dir() -> Path:
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/burrow-{os.getuid()}"
    path = Path(base) / "burrow-mounts"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _state_file(mountpoint: str) -> Path:
    key = hashlib.sha256(os.path.realpath(mountpoint).encode()).hexdigest()[:24]
    return state_dir() / f"{key}.json"


def _write_state(mountpoint: str, **fields: Any) -> None:
    path = _state_file(mountpoint)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"mountpoint": os.path.realpath(mountpoint), **fields}))
    tmp.replace(path)


def _options(fsname: str, readonly: bool, allow_other: bool, default_permissions: bool) -> set[str]:
    opts = {f"fsname=burrow:{fsname}", "subtype=burrow"}
    if default_permissions:
        opts.add("default_permissions")
    if readonly:
        opts.add("ro")
    if allow_other:
        opts.add("allow_other")
    return opts


READ_AHEAD_KB = 1024  # = FUSE's largest request (256 pages): 8x fewer read requests


def _bdi_of(real: str) -> str | None:
    """``MAJOR:MINOR`` of the mount at ``real`` (a resolved path), from /proc/self/mountinfo.

    Read from the table, never with stat() or realpath(): the daemon must not send a request
    to itself before its loop runs (it would wait for itself forever)."""
    found = None
    with contextlib.suppress(OSError), open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and _unescape(fields[4]) == real:
                found = fields[2]  # the last one is the top of the stack
    return found


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _tune_readahead(real: str, kib: int = READ_AHEAD_KB) -> None:
    """Raise the mount's readahead from the kernel's 128 KiB so sequential reads arrive as
    1 MiB requests. FUSE's INIT reply can only lower it; the sysfs knob of the mount's own
    backing device can raise it (root only; otherwise reads stay at 128 KiB)."""
    bdi = _bdi_of(real)
    if bdi is None:
        return
    try:
        Path(f"/sys/class/bdi/{bdi}/read_ahead_kb").write_text(f"{kib}\n")
    except OSError as exc:
        log.info("readahead stays at the kernel default (%s)", exc.strerror or exc)
    else:
        log.info("readahead of %s set to %d KiB", bdi, kib)


def _serve(ops: Any, mountpoint: str, options: set[str], ready: Callable[[], None]) -> None:
    import pyfuse3
    import trio

    real = os.path.realpath(mountpoint)  # before mounting: it stats the mount point
    tune = functools.partial(_tune_readahead, real)
    if hasattr(ops, "after_init"):
        ops.after_init = tune  # after INIT, which sets the readahead to at most 128 KiB
    pyfuse3.init(ops, mountpoint, options)
    ready()
    try:
        # One task: the handlers never wait, so more tasks would only add scheduling.
        trio.run(functools.partial(pyfuse3.main, min_tasks=1, max_tasks=1))
    except BaseException:
        pyfuse3.close(unmount=True)
        raise
    pyfuse3.close(unmount=False)
    counts = getattr(ops, "lookup_counts", None)
    if counts is not None:
        log.info("unmounted (kernel references left: %d inodes)", len(counts))
    else:
        log.info("unmounted")


def mount(
    ops: Any,
    mountpoint: str,
    *,
    close: Callable[[], None],
    fsname: str,
    readonly: bool = False,
    allow_other: bool = False,
    foreground: bool = False,
    default_permissions: bool = True,
) -> int:
    """Mount ``ops`` on ``mountpoint``; ``close`` runs after unmount (sync + commit).

    In daemon mode returns in the parent once the mount is usable (0) or failed (non-zero).
    """
    if not os.path.exists(mountpoint):
        raise UsageError(f"mount point {mountpoint} does not exist")
    options = _options(fsname, readonly, allow_other, default_permissions)
    if foreground:
        _log_to_stderr()

        def stop(signum: int, frame: Any) -> None:
            subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False)

        signal.signal(signal.SIGTERM, stop)
        _write_state(mountpoint, pid=os.getpid(), status="mounted")
        try:
            _serve(
                ops, mountpoint, options, lambda: _log_mounted(fsname, mountpoint, ops, readonly)
            )
        finally:
            _finish(mountpoint, close)
        return 0

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:  # parent: wait for the child's word
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            message = pipe.read()
        if message == b"ok":
            return 0
        text = message.decode(errors="replace") or "the mount daemon exited"
        print(f"burrow: {mountpoint}: {text}", file=sys.stderr)
        return 1
    # child
    os.close(read_fd)
    os.setsid()
    code = 0
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):
            os.dup2(devnull, fd)
        log_path = state_dir() / (_state_file(mountpoint).stem + ".log")
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(log_fd, 2)
        _log_to_stderr()
        _write_state(mountpoint, pid=os.getpid(), status="mounted")

        def ready() -> None:
            _log_mounted(fsname, mountpoint, ops, readonly)
            os.write(write_fd, b"ok")
            os.close(write_fd)

        try:
            _serve(ops, mountpoint, options, ready)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(write_fd, str(exc).encode() or type(exc).__name__.encode())
            raise
        finally:
            _finish(mountpoint, close)
    except BaseException:
        log.exception("mount daemon failed")
        code = 1
    finally:
        os._exit(code)


def _log_to_stderr() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s burrow[%(process)d]: %(message)s",
        force=True,
    )


def _log_mounted(fsname: str, mountpoint: str, ops: Any, readonly: bool) -> None:
    timeout = getattr(ops, "timeout", None)
    cache = f"; kernel caches attributes and names for {timeout:g} s" if timeout else ""
    mode = "read-only" if readonly else "read-write; the image is written at unmount"
    log.info("mounted %s on %s (%s%s)", fsname, mountpoint, mode, cache)


def _finish(mountpoint: str, close: Callable[[], None]) -> None:
    log.info("syncing the filesystem and committing to the image")
    t0 = time.monotonic()
    try:
        close()
    except Exception as exc:
        log.exception("closing the filesystem failed; the image keeps its last committed state")
        _write_state(mountpoint, pid=os.getpid(), status="failed", error=str(exc))
        return
    log.info("closed in %.2f s", time.monotonic() - t0)
    _write_state(mountpoint, pid=os.getpid(), status="closed")


def unmount(mountpoint: str, *, timeout: float = 120.0) -> None:
    """Unmount and wait for the daemon to finish committing; raise if it failed."""
    state = _state_file(mountpoint)
    proc = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BurrowError(proc.stderr.strip() or "fusermount3 -u failed", path=mountpoint)
    if not state.exists():
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = json.loads(state.read_text())
        except (OSError, ValueError):
            return
        if info.get("status") in ("closed", "failed"):
            state.unlink(missing_ok=True)
            if info["status"] == "failed":
                raise BurrowError(
                    f"commit after unmount failed: {info.get('error')}", path=mountpoint
                )
            return
        pid = int(info.get("pid", 0))
        if pid and not _alive(pid):
            _dead_daemon(state, pid, mountpoint)
            return
        time.sleep(0.05)
    raise BurrowError("timed out waiting for the mount daemon to finish", path=mountpoint)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead too
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _dead_daemon(state: Path, pid: int, mountpoint: str) -> None:
    """The daemon is gone: fine if it wrote its final status first, else it was killed."""
    try:
        info = json.loads(state.read_text())
    except (OSError, ValueError):
        info = {}
    state.unlink(missing_ok=True)
    status = info.get("status")
    if status == "closed":
        return
    if status == "failed":
        raise BurrowError(f"commit after unmount failed: {info.get('error')}", path=mountpoint)
    raise BurrowError(
        f"the mount daemon (pid {pid}) had died: changes made through the mount were not "
        "written; the image keeps its state from before the mount",
        path=mountpoint,
    )
