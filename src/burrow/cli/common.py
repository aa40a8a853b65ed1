"""Helpers shared by the file commands (ls, cat, cp, rm, ...): addresses, sessions, output.

Why a session: one command line may name several images (``burrow cp a.img:/x b.img:/y``) or
the same image several times; each image is opened once, writable ones through an overlay,
and everything is committed together at the end only when the command succeeded. A failed
command leaves every image untouched.

Coreutils conventions live here too: new files belong to the invoking user and get modes
minus the process umask (``PathFS.uid/gid/umask`` are set from the process).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from burrow.cli.main import UNSAFE_CHARS as _UNSAFE
from burrow.errors import UsageError

if TYPE_CHECKING:
    from burrow.disk import Address, Target
    from burrow.fs.paths import PathFS

__all__ = [
    "Progress",
    "Session",
    "add_format",
    "add_json",
    "current_umask",
    "emit_json",
    "fs_address",
    "human_size",
    "parse_mode",
    "parse_size",
]


def display(text: str, *, stream: Any = None) -> str:
    """A name from an image or share, safe to print on a terminal.

    Names are untrusted: one holding ``ESC [ ...`` would drive the user's terminal. When the
    stream is a terminal, control characters and undecodable bytes print as ``?`` (as
    ``ls -q`` does); pipes and files get the name unchanged, so scripts see the real bytes.
    """
    stream = sys.stdout if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return text.translate(_UNSAFE) if tty else text


def display_always(text: str) -> str:
    """``display`` for messages (errors, logs): always made safe, terminal or not."""
    return text.translate(_UNSAFE)


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", choices=["raw", "qcow2"], help="image format (default: detect qcow2 by magic)"
    )


def emit_json(data: Any) -> None:
    import json

    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


_SUFFIXES = {"": 1, "b": 512, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """``64M``, ``1G``, ``4096``, ``2GiB``, ``1.5G``: binary multiples as coreutils/qemu-img."""
    t = text.strip().lower().removesuffix("ib").removesuffix("b" if len(text) > 1 else "")
    num = t.rstrip("kmgtpb")
    suffix = t[len(num) :]
    if suffix not in _SUFFIXES:
        raise UsageError(f"invalid size {text!r}")
    try:
        value = float(num) * _SUFFIXES[suffix]
    except ValueError:
        raise UsageError(f"invalid size {text!r}") from None
    if value < 0 or not math.isfinite(value):
        raise UsageError(f"invalid size {text!r}")
    return int(value)


def parse_mode(text: str, old: int, *, is_dir: bool = False, umask: int = 0) -> int:
    """An octal mode or a symbolic ``chmod`` expression (``u+x,go-w``, ``a=r``, ``+X``)."""
    if text and all(c in "01234567" for c in text):
        return int(text, 8) & 0o7777
    mode = old & 0o7777
    for clause in text.split(","):
        if not clause:
            raise UsageError(f"invalid mode {text!r}")
        i = 0
        who = ""
        while i < len(clause) and clause[i] in "ugoa":
            who += clause[i]
            i += 1
        if i >= len(clause):
            raise UsageError(f"invalid mode {text!r}")
        while i < len(clause):
            op = clause[i]
            if op not in "+-=":
                raise UsageError(f"invalid mode {text!r}")
            i += 1
            perms = ""
            while i < len(clause) and clause[i] in "rwxXstugo":
                perms += clause[i]
                i += 1
            bits = 0
            for p in perms:
                if p in "ugo":
                    shift = {"u": 6, "g": 3, "o": 0}[p]
                    src = (mode >> shift) & 7
                    bits |= src << 6 | src << 3 | src
                elif p == "r":
                    bits |= 0o444
                elif p == "w":
                    bits |= 0o222
                elif p == "x":
                    bits |= 0o111
                elif p == "X":
                    if is_dir or mode & 0o111:
                        bits |= 0o111
                elif p == "s":
                    bits |= 0o6000
                elif p == "t":
                    bits |= 0o1000
            mask = 0
            for w in who or "a":
                mask |= {"u": 0o4700, "g": 0o2070, "o": 0o1007, "a": 0o7777}[w]
            if not who:
                # as chmod: without "who", the umask limits what is granted
                bits &= ~umask | 0o7000
            bits &= mask
            if op == "+":
                mode |= bits
            elif op == "-":
                mode &= ~bits
            else:
                keep = mode & ~mask & 0o7777
                if is_dir and who:
                    keep |= mode & 0o6000 & mask  # chmod keeps dir set-id bits on '='
                mode = keep | bits
    return mode


def fs_address(text: str) -> Address:
    """Parse an operand that must be inside an image (``IMAGE[@PART]:PATH``); a bare
    ``IMAGE[@PART]`` means its root."""
    from burrow.disk import parse_address

    addr = parse_address(text, image_required=True)
    if addr.kind == "host":
        raise UsageError(f"{text}: not an image path (use IMAGE[@PART]:PATH)")
    return addr


class Session:
    """Opens each image (or share) once for a command and closes them all at the end.

    Use as a context manager: on a clean exit writable images are committed, on an exception
    every change is dropped.
    """

    def __init__(self, *, writable: bool = False, image_format: str | None = None) -> None:
        self.writable = writable
        self.image_format = image_format
        self._targets: dict[str, Target] = {}

    def target(self, addr: Address) -> Target:
        from burrow.disk import open_target

        key = addr.target
        t = self._targets.get(key)
        if t is None:
            t = open_target(key, writable=self.writable, format=self.image_format)
            pfs = t.fs
            pfs.uid, pfs.gid, pfs.umask = os.getuid(), os.getgid(), current_umask()
            self._targets[key] = t
        return t

    def fs(self, addr: Address) -> PathFS:
        return self.target(addr).fs

    def close(self, *, commit: bool) -> None:
        error: BaseException | None = None
        for t in self._targets.values():
            try:
                t.close(commit=commit and error is None)
            except BaseException as exc:
                error = error or exc
        self._targets.clear()
        if error is not None:
            raise error

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(commit=exc_type is None)


@contextmanager
def open_fs(text: str, *, writable: bool = False) -> Iterator[tuple[PathFS, str]]:
    """Open the filesystem an ``IMAGE[@PART]:PATH`` operand names; yields ``(fs, path)``."""
    addr = fs_address(text)
    with Session(writable=writable) as s:
        yield s.fs(addr), addr.path


class Progress:
    """A progress bar on stderr for work that takes more than about a second.

    Nothing is drawn when stderr is not a terminal, and nothing before ``delay`` seconds have
    passed (so fast commands print nothing extra). ``rich`` is imported only when a bar is
    actually shown.
    """

    def __init__(self, total: int | None, label: str, *, delay: float = 1.0) -> None:
        self.total = total
        self.label = label
        self.delay = delay
        self.done = 0
        self._start = time.monotonic()
        self._bar: Any = None
        self._task: Any = None
        self._enabled = sys.stderr.isatty() and os.environ.get("BURROW_PROGRESS", "1") != "0"

    def update(self, n: int) -> None:
        self.done += n
        if not self._enabled:
            return
        if self._bar is None:
            if time.monotonic() - self._start < self.delay:
                return
            try:
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )
            except ImportError:
                self._enabled = False
                return
            from rich.console import Console

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total)
        self._bar.update(self._task, completed=self.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tree_bytes(pfs: PathFS, path: str) -> int:
    """Bytes of regular-file data under ``path`` (for a progress bar's total): one
    ``readdir`` and one ``getattr`` per entry, by inode, each directory once."""
    fs = pfs.fs
    st = pfs.lstat(path)
    if not st.is_dir():
        return st.st_size if st.is_file() else 0
    total = 0
    todo = [st.st_ino]
    seen = set(todo)
    while todo:
        for e in fs.readdir(todo.pop()):
            a = fs.getattr(e.ino)
            if a.is_file():
                total += a.st_size
            elif a.is_dir() and e.ino not in seen:
                seen.add(e.ino)
                todo.append(e.ino)
    return total
