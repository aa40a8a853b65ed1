"""Fuzz tar extraction into a filesystem (``burrow tar-in``, ``create --spec`` tar contents).

Seeds are archives written by GNU tar (ustar, pax with xattrs and nanosecond times, GNU
long names, a gzip stream) of a tree with hard links, symlinks, a fifo and odd modes, so
mutations land on real headers. Bad input must end in a BurrowError, never a traceback.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

from burrow.fs.memfs import MemoryFilesystem
from burrow.fs.paths import PathFS
from burrow.fs.tario import extract_tar

REGIONS = [(0, 512), (512, 512), (1024, 512), (1536, 512)]


def seeds(tmp_path: Path) -> list[bytes]:
    if shutil.which("tar") is None:
        import pytest

        pytest.skip("needs GNU tar")
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "sub" / "file.txt").write_text("hello\n")
    (src / "blob").write_bytes(os.urandom(3000))
    os.link(src / "blob", src / "dir" / "hard")
    os.symlink("../blob", src / "dir" / "sym")
    os.mkfifo(src / "fifo")
    (src / ("long-" * 30)).write_text("long name\n")
    os.chmod(src / "dir" / "sub", 0o2750)
    os.setxattr(src / "blob", "user.k", b"v")
    out = []
    for fmt, extra in (("ustar", []), ("posix", ["--xattrs"]), ("gnu", []), ("posix", ["-z"])):
        path = tmp_path / f"{fmt}{len(out)}.tar"
        names = ["."] if fmt != "ustar" else ["./dir", "./blob", "./fifo"]
        subprocess.run(["tar", f"--format={fmt}", *extra, "-C", str(src), "-cf", str(path),
                        *names], check=True, capture_output=True)  # fmt: skip
        out.append(path.read_bytes())
    return out


def one_input(data: bytes) -> None:
    pfs = PathFS(MemoryFilesystem(capacity=1 << 24))
    extract_tar(pfs, io.BytesIO(data), "/")
    for dirpath, _dirs, files in pfs.walk("/"):
        for name in files:
            pfs.lstat(dirpath.rstrip("/") + "/" + name)
