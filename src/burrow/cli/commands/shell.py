"""``burrow shell IMAGE[@PART] [--rw]``: an interactive shell inside an image's filesystem.

Commands: ``cd ls cat cp rm mkdir rmdir stat pwd get put exit`` (``help`` lists them), with
tab completion of paths inside the image. Paths are inside the image; in ``cp``, a ``host:``
prefix names a host path (``cp host:/etc/hosts /etc/hosts``), and ``get``/``put`` copy out/in.

Read-only unless ``--rw``; with ``--rw`` changes go through an overlay and are committed when
the shell ends with ``exit`` or end of input, dropped by ``abort``. Commands can be piped on
stdin (no prompt is printed then); the exit status is 1 when any command failed.
"""

from __future__ import annotations

import argparse
import cmd
import os
import posixpath
import shlex
import stat as _stat
import sys
from typing import Any

from burrow.cli.common import display, display_always
from burrow.errors import BurrowError
from burrow.fs.paths import PathFS


def configure(parser: argparse.ArgumentParser) -> None:
    from burrow.cli.common import add_format

    parser.add_argument("image", metavar="IMAGE[@PART]")
    parser.add_argument("--rw", action="store_true", help="allow changes (committed at exit)")
    add_format(parser)


class BurrowShell(cmd.Cmd):
    intro = ""

    def __init__(self, pfs: PathFS, name: str, interactive: bool) -> None:
        super().__init__(stdin=sys.stdin, stdout=sys.stdout)
        self.pfs = pfs
        self.name = name
        self.interactive = interactive
        self.use_rawinput = interactive
        self.failed = 0
        self.aborted = False
        self._set_prompt()

    def _set_prompt(self) -> None:
        self.prompt = f"{self.name}:{self.pfs.cwd}> " if self.interactive else ""

    # -- plumbing --------------------------------------------------------------------------
    def _args(self, line: str) -> list[str] | None:
        try:
            return shlex.split(line)
        except ValueError as exc:
            self._error(None, str(exc))
            return None

    def _error(self, path: str | None, message: str) -> None:
        self.failed += 1
        prefix = f"burrow: {path}: " if path else "burrow: "
        print(display_always(prefix + message), file=sys.stderr)

    def onecmd(self, line: str) -> bool:
        try:
            return bool(super().onecmd(line))
        except (BurrowError, OSError) as exc:
            path = getattr(exc, "path", None) or getattr(exc, "filename", None)
            message = str(exc) if isinstance(exc, BurrowError) else (exc.strerror or str(exc))
            self._error(path, message)
            return False

    def postcmd(self, stop: bool, line: str) -> bool:
        self._set_prompt()
        return stop

    def emptyline(self) -> bool:
        return False

    def default(self, line: str) -> None:
        if line.strip().startswith("#"):
            return
        self._error(None, f"unknown command: {line.split(maxsplit=1)[0]} (try 'help')")

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        return [n + " " for n in super().completenames(text, *ignored)]

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return self.complete_path(text)

    def complete_path(self, text: str) -> list[str]:
        directory, _, prefix = text.rpartition("/")
        base = directory + "/" if _ else ""
        try:
            entries = list(self.pfs.scandir(directory or ("/" if _ else ".")))
        except (BurrowError, OSError):
            return []
        out = []
        for e in entries:
            if e.name.startswith(prefix):
                out.append(base + e.name + ("/" if e.is_dir() else ""))
        return sorted(out)

    # -- commands -----------------------------------------------------------------------------
    def do_pwd(self, line: str) -> None:
        """pwd: print the current directory"""
        print(self.pfs.cwd)

    def do_cd(self, line: str) -> None:
        """cd [DIR]: change directory (no argument: /)"""
        args = self._args(line)
        if args is None:
            return
        self.pfs.chdir(args[0] if args else "/")

    def do_ls(self, line: str) -> None:
        """ls [-l] [-a] [PATH...]: list a directory"""
        args = self._args(line)
        if args is None:
            return
        flags = {a for a in args if a.startswith("-")}
        paths = [a for a in args if not a.startswith("-")] or ["."]
        long = any("l" in f for f in flags)
        show_all = any("a" in f for f in flags)
        for p in paths:
            st = self.pfs.stat(p)
            if len(paths) > 1:
                print(f"{display(p)}:")
            names = [(posixpath.basename(p), p)] if not st.is_dir() else [
                (e.name, e.path) for e in sorted(self.pfs.scandir(p), key=lambda e: e.name)
            ]  # fmt: skip
            for name, full in names:
                if not show_all and name.startswith("."):
                    continue
                if not long:
                    print(display(name))
                    continue
                s = self.pfs.lstat(full)
                extra = f" -> {self.pfs.readlink(full)}" if s.is_symlink() else ""
                print(
                    f"{_stat.filemode(s.st_mode)} {s.st_nlink:>3} {s.st_uid:>5} {s.st_gid:>5} "
                    f"{s.st_size:>10} {display(name + extra)}"
                )

    def do_cat(self, line: str) -> None:
        """cat PATH...: print files"""
        args = self._args(line)
        if args is None:
            return
        for p in args:
            data = self.pfs.read_bytes(p)
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()

    def do_stat(self, line: str) -> None:
        """stat PATH...: show attributes"""
        args = self._args(line)
        if args is None:
            return
        from burrow.cli.commands.stat import kind_of

        for p in args:
            s = self.pfs.lstat(p)
            print(
                f"{display(p)}: {kind_of(s.st_mode)} mode {_stat.S_IMODE(s.st_mode):04o} "
                f"uid {s.st_uid} gid {s.st_gid} size {s.st_size} links {s.st_nlink} "
                f"inode {s.st_ino}"
            )

    def do_mkdir(self, line: str) -> None:
        """mkdir [-p] DIR...: make directories"""
        args = self._args(line)
        if args is None:
            return
        parents = "-p" in args
        for p in (a for a in args if a != "-p"):
            self.pfs.mkdir(p, parents=parents, exist_ok=parents)

    def do_rmdir(self, line: str) -> None:
        """rmdir DIR...: remove empty directories"""
        for p in self._args(line) or []:
            self.pfs.rmdir(p)

    def do_rm(self, line: str) -> None:
        """rm [-r] [-f] PATH...: remove files or trees"""
        args = self._args(line)
        if args is None:
            return
        flags = "".join(a[1:] for a in args if a.startswith("-"))
        for p in (a for a in args if not a.startswith("-")):
            if "f" in flags and not self.pfs.lexists(p):
                continue
            if self.pfs.lstat(p).is_dir():
                if "r" not in flags:
                    self._error(p, "is a directory (use rm -r)")
                    continue
                self.pfs.rmtree(p)
            else:
                self.pfs.remove(p)

    def do_cp(self, line: str) -> None:
        """cp [-r] [-a] SRC DST: copy inside the image; 'host:PATH' names a host path"""
        args = self._args(line)
        if args is None:
            return
        flags = "".join(a[1:] for a in args if a.startswith("-"))
        ops = [a for a in args if not a.startswith("-")]
        if len(ops) != 2:
            self._error(None, "usage: cp [-r] [-a] SRC DST")
            return
        from burrow.fs.copy import copy_between, copy_in, copy_out

        src, dst = ops
        archive, recursive = "a" in flags, "r" in flags or "R" in flags
        if src.startswith("host:") and dst.startswith("host:"):
            self._error(None, "one side must be inside the image")
        elif src.startswith("host:"):
            path = src[5:]
            copy_in(
                path,
                self.pfs,
                self._into(dst, os.path.basename(path.rstrip("/"))),
                archive=archive,
                recursive=recursive,
            )
        elif dst.startswith("host:"):
            path = dst[5:]
            if os.path.isdir(path):
                path = os.path.join(path, posixpath.basename(src.rstrip("/")) or "root")
            copy_out(self.pfs, src, path, archive=archive, recursive=recursive)
        else:
            copy_between(
                self.pfs,
                src,
                self.pfs,
                self._into(dst, posixpath.basename(src)),
                archive=archive,
                recursive=recursive,
            )

    def _into(self, dst: str, name: str) -> str:
        return posixpath.join(dst, name) if self.pfs.is_dir(dst) else dst

    def do_get(self, line: str) -> None:
        """get PATH [HOSTPATH]: copy a file or tree out of the image"""
        args = self._args(line) or []
        if not args:
            self._error(None, "usage: get PATH [HOSTPATH]")
            return
        self.do_cp(
            f"-a {shlex.quote(args[0])} host:{shlex.quote(args[1] if len(args) > 1 else '.')}"
        )

    def do_put(self, line: str) -> None:
        """put HOSTPATH [PATH]: copy a host file or tree into the image"""
        args = self._args(line) or []
        if not args:
            self._error(None, "usage: put HOSTPATH [PATH]")
            return
        self.do_cp(
            f"-r host:{shlex.quote(args[0])} {shlex.quote(args[1] if len(args) > 1 else '.')}"
        )

    def do_exit(self, line: str) -> bool:
        """exit: leave (changes are committed with --rw)"""
        return True

    do_quit = do_exit

    def do_EOF(self, line: str) -> bool:  # noqa: N802 - the name cmd.Cmd calls at end of input
        if self.interactive:
            print()
        return True

    def do_abort(self, line: str) -> bool:
        """abort: leave and drop every change"""
        self.aborted = True
        return True


def run(args: argparse.Namespace) -> int:
    from burrow.disk import open_target

    target = open_target(args.image, writable=args.rw, format=args.format)
    commit = False
    try:
        pfs = target.fs
        pfs.uid, pfs.gid = os.getuid(), os.getgid()
        from burrow.cli.common import current_umask

        pfs.umask = current_umask()
        interactive = sys.stdin.isatty()
        if interactive:
            try:
                import readline

                readline.set_completer_delims(" \t\n")
            except ImportError:
                pass
        shell = BurrowShell(pfs, os.path.basename(args.image), interactive)
        shell.cmdloop()
        commit = not shell.aborted
    finally:
        target.close(commit=commit)
    return 1 if shell.failed else 0
