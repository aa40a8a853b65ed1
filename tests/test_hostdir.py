"""HostDirFilesystem against the host's own answers (os.lstat, os.listdir, diff -r), and its
confinement: ``..``, absolute names, symlinks pointing out, forged inode numbers — with a
canary directory next to the root that must never be read or touched."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from burrow.errors import (
    BurrowError,
    Exists,
    FilesystemError,
    InvalidArgument,
    NotFound,
    ReadOnly,
)
from burrow.fs.copy import copy_in, copy_out
from burrow.fs.hostdir import HostDirFilesystem, openat2_available
from burrow.fs.paths import PathFS
from burrow.fs.vfs import RENAME_NOREPLACE

MODES = [True, False] if openat2_available() else [False]


def make_tree(root: Path) -> None:
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "a.txt").write_text("alpha\n")
    (root / "dir" / "sub" / "big.bin").write_bytes(os.urandom(300_000))
    (root / "empty").write_bytes(b"")
    (root / "link-in").symlink_to("dir/a.txt")
    (root / "link-out").symlink_to("../canary/secret")
    (root / "link-abs").symlink_to("/etc/passwd")
    (root / "dir" / "link-up").symlink_to("../../canary")
    os.link(root / "dir" / "a.txt", root / "hard")
    os.mkfifo(root / "fifo")


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    c = tmp_path / "canary"
    c.mkdir()
    (c / "secret").write_text("do not read")
    os.utime(c / "secret", ns=(1_000_000_000, 1_000_000_000))
    before = os.stat(c / "secret").st_atime_ns, sorted(os.listdir(c))
    yield c
    after = os.stat(c / "secret").st_atime_ns, sorted(os.listdir(c))
    assert before == after, "the canary next to the export was touched"
    assert (c / "secret").read_text() == "do not read"


@pytest.fixture(params=MODES, ids=lambda m: "openat2" if m else "walk")
def use_openat2(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_read_tree_matches_host(tmp_path: Path, canary: Path, use_openat2: bool) -> None:
    root = tmp_path / "export"
    root.mkdir()
    make_tree(root)
    fs = HostDirFilesystem(root, use_openat2=use_openat2)
    pfs = PathFS(fs)
    for dirpath, dirnames, filenames in os.walk(root):
        rel = "/" + os.path.relpath(dirpath, root).replace(".", "", 1).lstrip("/")
        assert sorted(pfs.listdir(rel)) == sorted(dirnames + filenames)
        for name in dirnames + filenames:
            host = os.lstat(os.path.join(dirpath, name))
            mine = pfs.lstat(f"{rel.rstrip('/')}/{name}")
            assert (mine.st_ino, mine.st_mode, mine.st_size, mine.st_nlink, mine.st_mtime_ns) == (
                host.st_ino,
                host.st_mode,
                host.st_size,
                host.st_nlink,
                host.st_mtime_ns,
            )
    assert pfs.read_bytes("/dir/sub/big.bin") == (root / "dir/sub/big.bin").read_bytes()
    assert pfs.readlink("/link-out") == "../canary/secret"  # returned, never followed
    assert pfs.read_bytes("/link-in") == b"alpha\n"  # resolved by the client side, inside
    st = fs.statfs()
    assert st.f_blocks == os.statvfs(root).f_blocks
    fs.close()


def test_copy_out_diff_r(tmp_path: Path, canary: Path, use_openat2: bool) -> None:
    root = tmp_path / "export"
    root.mkdir()
    make_tree(root)
    os.unlink(root / "fifo")
    with PathFS(HostDirFilesystem(root, use_openat2=use_openat2)) as pfs:
        (tmp_path / "out").mkdir()
        copy_out(pfs, "/", tmp_path / "out", archive=True, contents=True)
    res = subprocess.run(["diff", "-r", "--no-dereference", str(root), str(tmp_path / "out")])
    assert res.returncode == 0


def test_confinement(tmp_path: Path, canary: Path, use_openat2: bool) -> None:
    root = tmp_path / "export"
    root.mkdir()
    make_tree(root)
    fs = HostDirFilesystem(root, readonly=False, use_openat2=use_openat2)
    r = fs.root_ino
    for bad in ["..", ".", "", "a/b", "/etc", "x\0y", "../canary"]:
        with pytest.raises(InvalidArgument):
            fs.lookup(r, bad)
    # symlinks are never followed on the server
    out = fs.lookup(r, "link-out")
    assert stat.S_ISLNK(fs.getattr(out).st_mode)
    with pytest.raises(FilesystemError):
        fs.read(out, 0, 100)
    with pytest.raises(FilesystemError):
        fs.lookup(fs.lookup(fs.lookup(r, "dir"), "link-up"), "secret")  # symlink as a directory
    with pytest.raises(FilesystemError):
        fs.create(fs.lookup(fs.lookup(r, "dir"), "link-up"), "planted", 0o644)
    with pytest.raises(FilesystemError):
        fs.write(out, 0, b"overwrite through a link")
    with pytest.raises(BurrowError):
        fs.setattr(fs.lookup(r, "link-abs"), size=0)
    # forged inode numbers
    canary_ino = os.stat(canary / "secret").st_ino
    for forged in [canary_ino, os.stat(canary).st_ino, os.stat(tmp_path).st_ino, 1, 2**62]:
        with pytest.raises(NotFound):
            fs.getattr(forged)
        with pytest.raises(NotFound):
            fs.read(forged, 0, 10)
        with pytest.raises(NotFound):
            fs.lookup(forged, "secret")
    fs.close()
    assert os.readlink(root / "link-abs") == "/etc/passwd"


def test_directory_swapped_for_symlink_is_not_followed(
    tmp_path: Path, canary: Path, use_openat2: bool
) -> None:
    # A host-side race: a directory the client knows is replaced by a symlink pointing out.
    root = tmp_path / "export"
    (root / "d").mkdir(parents=True)
    fs = HostDirFilesystem(root, readonly=False, use_openat2=use_openat2)
    d = fs.lookup(fs.root_ino, "d")
    (root / "d").rmdir()
    (root / "d").symlink_to(canary)
    with pytest.raises(FilesystemError):
        fs.lookup(d, "secret")
    with pytest.raises(FilesystemError):
        list(fs.readdir(d))
    with pytest.raises(FilesystemError):
        fs.create(d, "planted", 0o644)
    fs.close()


def test_write_operations_match_host(tmp_path: Path, canary: Path, use_openat2: bool) -> None:
    root = tmp_path / "export"
    root.mkdir()
    fs = HostDirFilesystem(root, readonly=False, use_openat2=use_openat2)
    r = fs.root_ino
    d = fs.mkdir(r, "d", 0o750)
    f = fs.create(d, "f", 0o640)
    assert fs.write(f, 0, b"hello world") == 11
    assert fs.write(f, 6, b"WORLD") == 5
    assert (root / "d" / "f").read_bytes() == b"hello WORLD"
    assert stat.S_IMODE(os.stat(root / "d").st_mode) == 0o750 & ~_umask()
    with pytest.raises(Exists):
        fs.create(d, "f", 0o644)
    s = fs.symlink(d, "s", "f")
    assert os.readlink(root / "d" / "s") == "f" and fs.readlink(s) == "f"
    fs.link(f, r, "hard")
    assert os.stat(root / "hard").st_ino == f
    fs.setattr(f, mode=0o600, size=5, mtime_ns=123_000_000_000)
    host = os.stat(root / "d" / "f")
    assert stat.S_IMODE(host.st_mode) == 0o600 and host.st_size == 5
    assert host.st_mtime_ns == 123_000_000_000
    fs.rename(d, "f", r, "moved")
    assert fs.read(f, 0, 100) == b"hello"
    assert fs.getattr(f).st_ino == os.stat(root / "moved").st_ino
    with pytest.raises(Exists):
        fs.rename(r, "moved", r, "hard", RENAME_NOREPLACE)
    fs.setxattr(f, "user.k", b"v")
    assert os.getxattr(root / "moved", "user.k") == b"v"
    assert fs.listxattr(f) == ["user.k"] and fs.getxattr(f, "user.k") == b"v"
    fs.removexattr(f, "user.k")
    fs.unlink(d, "s")
    fs.rmdir(r, "d")
    fs.unlink(r, "hard")
    assert sorted(os.listdir(root)) == ["moved"]
    # rename a directory: inodes below it keep working
    d2 = fs.mkdir(r, "d2", 0o755)
    g = fs.create(d2, "g", 0o644)
    fs.rename(r, "d2", r, "d3")
    fs.write(g, 0, b"still here")
    assert (root / "d3" / "g").read_bytes() == b"still here"
    fs.close()


def test_copy_in_tree(tmp_path: Path, canary: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    os.unlink(src / "fifo")
    root = tmp_path / "export"
    root.mkdir()
    with PathFS(HostDirFilesystem(root, readonly=False)) as pfs:
        copy_in(src, pfs, "/", archive=True, contents=True)
    res = subprocess.run(["diff", "-r", "--no-dereference", str(src), str(root)])
    assert res.returncode == 0


def test_readonly_by_default(tmp_path: Path) -> None:
    fs = HostDirFilesystem(tmp_path)
    for call in [
        lambda: fs.create(fs.root_ino, "x", 0o644),
        lambda: fs.mkdir(fs.root_ino, "x", 0o755),
        lambda: fs.unlink(fs.root_ino, "x"),
        lambda: fs.setattr(fs.root_ino, mode=0o700),
        lambda: fs.write(fs.root_ino, 0, b"x"),
    ]:
        with pytest.raises(ReadOnly):
            call()
    assert os.listdir(tmp_path) == []
    fs.close()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_setid_bits_stripped_unless_allowed(tmp_path: Path) -> None:
    fs = HostDirFilesystem(tmp_path, readonly=False)
    f = fs.create(fs.root_ino, "prog", 0o6755)
    assert stat.S_IMODE(os.stat(tmp_path / "prog").st_mode) & 0o6000 == 0
    fs.setattr(f, mode=0o4755)
    assert stat.S_IMODE(os.stat(tmp_path / "prog").st_mode) == 0o755
    d = fs.mkdir(fs.root_ino, "shared", 0o3777)
    assert stat.S_IMODE(fs.getattr(d).st_mode) & 0o2000 == 0
    assert stat.S_IMODE(fs.getattr(d).st_mode) & 0o1000  # sticky is harmless and kept
    fifo = fs.mknod(fs.root_ino, "fifo", stat.S_IFIFO | 0o4644)
    assert (
        stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
        and fs.getattr(fifo).st_mode & 0o4000 == 0
    )
    with pytest.raises(BurrowError):
        fs.mknod(fs.root_ino, "dev", stat.S_IFCHR | 0o600, 0)
    fs.close()
    fs = HostDirFilesystem(tmp_path, readonly=False, allow_setid=True)
    fs.setattr(fs.lookup(fs.root_ino, "prog"), mode=0o4755)
    assert stat.S_IMODE(os.stat(tmp_path / "prog").st_mode) == 0o4755
    fs.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a block device needs root")
def test_xattrs_of_device_nodes_do_not_open_the_device(tmp_path: Path) -> None:
    """A device node whose device does not exist (ENXIO on open) still lists its xattrs,
    and a fifo with no writer is not opened (that would block or consume it)."""
    root = tmp_path / "export"
    root.mkdir()
    os.mknod(root / "sda", stat.S_IFBLK | 0o600, os.makedev(8, 250))
    os.mkfifo(root / "fifo")
    os.setxattr(root / "sda", "trusted.note", b"disk", follow_symlinks=False)
    fs = HostDirFilesystem(root)
    pfs = PathFS(fs)
    assert pfs.listxattr("/sda") == ["trusted.note"]
    assert pfs.getxattr("/sda", "trusted.note") == b"disk"
    assert pfs.listxattr("/fifo") == []
    out = tmp_path / "out"
    out.mkdir()
    copy_out(pfs, "/", out, archive=True, contents=True)
    assert stat.S_ISBLK(os.lstat(out / "sda").st_mode)
    assert os.getxattr(out / "sda", "trusted.note") == b"disk"
