"""Path layer semantics: the same operations on a host directory (the oracle: ``os`` and the
kernel) and on a ``PathFS`` over the in-memory filesystem must give the same answers."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import pytest

from burrow import errors
from burrow.fs.memfs import MemoryFilesystem
from burrow.fs.paths import PathFS


def build(host: Path, pfs: PathFS) -> None:
    """The same tree on the host and inside ``pfs``: dirs, files, relative, absolute-in-root
    and dangling symlinks, a hard link, a link chain and a loop."""
    host.mkdir(exist_ok=True)
    spec_dirs = ["a", "a/b", "a/b/c", "d"]
    spec_files = {"a/f.txt": b"hello\n", "a/b/c/deep": b"deep" * 1000, "top": b""}
    for d in spec_dirs:
        (host / d).mkdir()
        pfs.mkdir("/" + d)
    for f, data in spec_files.items():
        (host / f).write_bytes(data)
        pfs.write_bytes("/" + f, data)
    links = {
        "l_rel": "a/f.txt",
        "a/b/up": "../f.txt",
        "l_dir": "a/b",
        "l_chain": "l_rel",
        "l_dangling": "nowhere",
        "a/l_dotdot": "..",
        "loop1": "loop2",
        "loop2": "loop1",
    }
    for name, target in links.items():
        os.symlink(target, host / name)
        pfs.symlink(target, "/" + name)
    os.link(host / "a/f.txt", host / "hard")
    pfs.link("/a/f.txt", "/hard")


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, PathFS]:
    pfs = PathFS(MemoryFilesystem())
    host = tmp_path / "h"
    build(host, pfs)
    return host, pfs


def host_walk(root: Path, **kw: object) -> list[tuple[str, list[str], list[str]]]:
    out = []
    for dirpath, dirs, files in os.walk(root, **kw):  # type: ignore[call-overload]
        rel = "/" + os.path.relpath(dirpath, root)
        rel = "/" if rel == "/." else rel
        out.append((rel, sorted(dirs), sorted(files)))
    return out


def fs_walk(pfs: PathFS, **kw: object) -> list[tuple[str, list[str], list[str]]]:
    return [(d, sorted(ds), sorted(fs)) for d, ds, fs in pfs.walk("/", **kw)]  # type: ignore[arg-type]


@pytest.mark.parametrize("topdown", [True, False])
@pytest.mark.parametrize("followlinks", [False, True])
def test_walk_matches_os_walk(pair: tuple[Path, PathFS], topdown: bool, followlinks: bool) -> None:
    host, pfs = pair
    if followlinks:
        # os.walk follows l_dir and a/l_dotdot (a loop back to the root); our walk visits
        # each directory inode once. Compare the set of directories reached instead.
        ours = {d for d, _, _ in fs_walk(pfs, topdown=topdown, followlinks=True)}
        assert {"/", "/a", "/a/b", "/a/b/c", "/d"} <= ours
        assert len(ours) == 5  # every directory once, no infinite loop
        return
    expected = host_walk(host, topdown=topdown)
    got = fs_walk(pfs, topdown=topdown)
    assert got == expected


def test_walk_pruning_and_onerror(pair: tuple[Path, PathFS]) -> None:
    _, pfs = pair
    seen = []
    for dirpath, dirs, _files in pfs.walk("/"):
        seen.append(dirpath)
        if "a" in dirs:
            dirs.remove("a")
    assert "/a" not in seen and "/d" in seen
    errs: list[OSError] = []
    assert list(pfs.walk("/missing", onerror=errs.append)) == []
    assert errs and errs[0].errno == errno.ENOENT


PATHS = [
    "/", "/a", "a", "/a/", "/a/f.txt", "/l_rel", "/l_chain", "/l_dir", "/l_dir/c",
    "/l_dir/up", "/l_dir/../f.txt", "/a/b/up", "/l_dangling", "/loop1", "/a/f.txt/",
    "/a/l_dotdot/top", "/a/l_dotdot/a/l_dotdot/d", "/hard", "/a/./b/../f.txt",
    "/missing", "/missing/x", "/top/x", "/l_dir/", "/l_rel/",
]  # fmt: skip


def host_result(host: Path, p: str, follow: bool) -> object:
    target = str(host) + ("" if p == "/" else p if p.startswith("/") else "/" + p)
    try:
        st = os.stat(target, follow_symlinks=follow)
    except OSError as exc:
        return ("err", exc.errno)
    return (stat.S_IFMT(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else None)


def fs_result(pfs: PathFS, p: str, follow: bool) -> object:
    try:
        st = pfs.stat(p, follow_symlinks=follow)
    except OSError as exc:
        return ("err", exc.errno)
    return (stat.S_IFMT(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else None)


@pytest.mark.parametrize("follow", [True, False])
def test_stat_and_symlink_resolution_match_kernel(pair: tuple[Path, PathFS], follow: bool) -> None:
    host, pfs = pair
    for p in PATHS:
        assert fs_result(pfs, p, follow) == host_result(host, p, follow), p


def test_symlinks_stay_inside_the_filesystem() -> None:
    pfs = PathFS(MemoryFilesystem())
    pfs.mkdir("/etc")
    pfs.write_text("/etc/passwd", "inside\n")
    pfs.symlink("/etc/passwd", "/abs")
    pfs.symlink("../../../../../etc/passwd", "/etc/rel")
    assert pfs.read_text("/abs") == "inside\n"
    assert pfs.read_text("/etc/rel") == "inside\n"
    assert pfs.read_text("/../../etc/passwd") == "inside\n"
    # a link to "/" is the root
    pfs.symlink("/", "/rootlink")
    assert sorted(pfs.listdir("/rootlink")) == sorted(pfs.listdir("/"))


def test_eloop_and_errors_carry_path(pair: tuple[Path, PathFS]) -> None:
    _, pfs = pair
    with pytest.raises(OSError) as info:
        pfs.read_bytes("/loop1")
    assert info.value.errno == errno.ELOOP
    assert isinstance(info.value, errors.BurrowError)
    with pytest.raises(errors.NotFound) as nf:
        pfs.read_bytes("/a/missing")
    assert nf.value.path == "/a/missing"
    with pytest.raises(errors.NotADirectory):
        pfs.listdir("/top")
    with pytest.raises(errors.IsADirectory):
        pfs.read_bytes("/a")
    # a long chain of links that is not a loop but exceeds 40 steps
    prev = "/top"
    for i in range(45):
        pfs.symlink(prev, f"/chain{i}")
        prev = f"/chain{i}"
    pfs.stat("/chain38")
    with pytest.raises(OSError) as deep:
        pfs.stat("/chain44")
    assert deep.value.errno == errno.ELOOP


def test_readlink_listdir_scandir(pair: tuple[Path, PathFS]) -> None:
    host, pfs = pair
    assert pfs.readlink("/l_rel") == os.readlink(host / "l_rel")
    assert sorted(pfs.listdir("/")) == sorted(os.listdir(host))
    assert sorted(pfs.listdir("/l_dir")) == sorted(os.listdir(host / "l_dir"))
    with pytest.raises(errors.InvalidOperation):
        pfs.readlink("/top")
    ours = {
        e.name: (e.is_dir(), e.is_file(), e.is_symlink(), e.is_dir(follow_symlinks=False))
        for e in pfs.scandir("/")
        if not e.name.startswith("loop")
    }
    theirs = {
        e.name: (e.is_dir(), e.is_file(), e.is_symlink(), e.is_dir(follow_symlinks=False))
        for e in os.scandir(host)
        if not e.name.startswith("loop")
    }
    loop = next(e for e in pfs.scandir("/") if e.name == "loop1")
    with pytest.raises(OSError) as both:
        loop.is_dir()
    assert both.value.errno == errno.ELOOP
    assert ours == theirs
    assert pfs.exists("/l_rel") and not pfs.exists("/l_dangling") and pfs.lexists("/l_dangling")
    assert pfs.is_symlink("/l_dir") and pfs.is_dir("/l_dir") and not pfs.is_file("/l_dir")
    assert pfs.stat("/hard").st_ino == pfs.stat("/a/f.txt").st_ino
    assert pfs.stat("/hard").st_nlink == 2


def test_file_objects_behave_like_builtin_open(tmp_path: Path) -> None:
    pfs = PathFS(MemoryFilesystem())
    host = tmp_path / "f"
    ops: list[tuple[str, str]] = [
        ("wb", "write:hello world"), ("rb", "read"), ("ab", "write:!!"), ("rb", "read"),
        ("r+b", "seek:6;write:WORLD;seek:0;read"), ("rb", "seekend:-3;read"),
        ("w", "write:text\nline2\n"), ("r", "readlines"), ("a+", "write:more;seek:0;read"),
        ("wb", "write:"), ("rb", "read"),
    ]  # fmt: skip
    for mode, script in ops:
        results = []
        for f in (open(host, mode), pfs.open("/f", mode)):  # noqa: SIM115
            out = []
            with f:
                for step in script.split(";"):
                    op, _, arg = step.partition(":")
                    data: object = arg.encode() if "b" in mode else arg
                    if op == "write":
                        f.write(data)
                    elif op == "read":
                        out.append(f.read())
                    elif op == "readlines":
                        out.append(f.readlines())
                    elif op == "seek":
                        f.seek(int(arg))
                    elif op == "seekend":
                        f.seek(int(arg), io.SEEK_END)
                out.append(f.tell())
            results.append(out)
        assert results[0] == results[1], (mode, script)
        assert pfs.read_bytes("/f") == host.read_bytes()
    with pytest.raises(errors.Exists):
        pfs.open("/f", "x")
    with pfs.open("/new", "xb") as f:
        f.write(b"x" * 3_000_000)
    assert pfs.read_bytes("/new") == b"x" * 3_000_000
    with pytest.raises(errors.NotFound):
        pfs.open("/nope", "rb")
    with pytest.raises(errors.InvalidArgument):
        pfs.open("/f", "rw")
    with pfs.open("/f", "rb", buffering=0) as raw:
        assert isinstance(raw, io.RawIOBase)
    with pfs.open("/f", "rb") as f, pytest.raises(io.UnsupportedOperation):
        f.write(b"x")


def test_open_then_unlink_keeps_data() -> None:
    pfs = PathFS(MemoryFilesystem())
    pfs.write_bytes("/f", b"data")
    f = pfs.open("/f", "rb")
    pfs.remove("/f")
    assert not pfs.exists("/f")
    assert f.read() == b"data"
    f.close()


def test_create_through_dangling_symlink_like_open2(tmp_path: Path) -> None:
    pfs = PathFS(MemoryFilesystem())
    pfs.mkdir("/d")
    pfs.symlink("d/target", "/dangling")
    pfs.write_bytes("/dangling", b"x")
    assert pfs.read_bytes("/d/target") == b"x"
    assert pfs.is_symlink("/dangling")


def test_umask_owner_and_mkdir_parents() -> None:
    pfs = PathFS(MemoryFilesystem(), uid=1000, gid=100, umask=0o027)
    pfs.mkdir("/x/y/z", parents=True)
    for p in ("/x", "/x/y", "/x/y/z"):
        st = pfs.stat(p)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1000, 100)
    pfs.mkdir("/x/y/z", exist_ok=True)
    with pytest.raises(errors.Exists):
        pfs.mkdir("/x")
    pfs.write_bytes("/x/f", b"")
    assert stat.S_IMODE(pfs.stat("/x/f").st_mode) == 0o640
    pfs.makedirs("/x/y/z", exist_ok=True)
    pfs.mkdir("/", exist_ok=True)
    with pytest.raises(errors.Exists):
        pfs.mkdir("/x/f", exist_ok=True)  # exists but not a directory


def test_remove_rmdir_rmtree_rename() -> None:
    pfs = PathFS(MemoryFilesystem())
    pfs.makedirs("/t/a/b/c")
    for i in range(50):
        pfs.write_bytes(f"/t/a/b/f{i}", b"x")
    pfs.symlink("/t", "/t/a/loop")
    with pytest.raises(errors.NotEmpty):
        pfs.rmdir("/t")
    with pytest.raises(errors.IsADirectory):
        pfs.remove("/t")
    with pytest.raises(errors.NotADirectory):
        pfs.rmtree("/t/a/loop")
    pfs.rename("/t/a/b/f1", "/t/renamed")
    pfs.rename("/t/a/b/f2", "/t/renamed")  # replaces
    assert pfs.read_bytes("/t/renamed") == b"x"
    assert not pfs.exists("/t/a/b/f1")
    pfs.rmtree("/t/a")
    assert pfs.listdir("/t") == ["renamed"]
    pfs.remove("/t/renamed")
    pfs.rmdir("/t")
    assert pfs.listdir("/") == []
    with pytest.raises(errors.InvalidOperation):
        pfs.rmdir("/")
    with pytest.raises(errors.NotFound):  # the kernel resolves /x first
        pfs.rmdir("/x/..")
    pfs.mkdir("/d")
    with pytest.raises(errors.InvalidOperation):
        pfs.rmdir("/d/.")


def test_attributes_and_xattrs() -> None:
    pfs = PathFS(MemoryFilesystem())
    pfs.write_bytes("/f", b"0123456789")
    pfs.symlink("f", "/l")
    pfs.chmod("/l", 0o4751)
    assert stat.S_IMODE(pfs.stat("/f").st_mode) == 0o4751
    pfs.chown("/f", 12, -1)
    assert (pfs.stat("/f").st_uid, pfs.stat("/f").st_gid) == (12, 0)
    pfs.chown("/l", 5, 6, follow_symlinks=False)
    assert pfs.lstat("/l").st_uid == 5 and pfs.stat("/l").st_uid == 12
    pfs.utime("/f", ns=(1_000_000_001, 2_000_000_002))
    st = pfs.stat("/f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_001, 2_000_000_002)
    pfs.utime("/f", (3.5, 4.25))
    assert pfs.stat("/f").st_mtime_ns == 4_250_000_000
    pfs.truncate("/f", 4)
    assert pfs.read_bytes("/f") == b"0123"
    pfs.truncate("/f", 6)
    assert pfs.read_bytes("/f") == b"0123\0\0"
    pfs.setxattr("/f", "user.k", b"v")
    assert pfs.listxattr("/l") == ["user.k"]
    assert pfs.getxattr("/f", "user.k") == b"v"
    pfs.removexattr("/f", "user.k")
    assert pfs.listxattr("/f") == []
    assert pfs.statfs().f_bsize == 4096
    pfs.mknod("/fifo", stat.S_IFIFO | 0o644)
    assert stat.S_ISFIFO(pfs.lstat("/fifo").st_mode)


def test_relative_paths_and_chdir() -> None:
    pfs = PathFS(MemoryFilesystem())
    pfs.makedirs("/a/b")
    pfs.write_text("/a/b/f", "x")
    pfs.chdir("/a")
    assert pfs.read_text("b/f") == "x"
    assert pfs.listdir(".") == ["b"]
    assert pfs.abspath("b/../b/f") == "/a/b/f"
    with pytest.raises(errors.NotADirectory):
        pfs.chdir("b/f")


def test_readonly_filesystem_refuses_writes() -> None:
    pfs = PathFS(MemoryFilesystem(readonly=True))
    with pytest.raises(errors.ReadOnly):
        pfs.write_bytes("/f", b"x")
    with pytest.raises(errors.ReadOnly):
        pfs.mkdir("/d")
    with pytest.raises(errors.BurrowError):
        pfs.open("/", "rb")


# -- random operation sequences: PathFS over memfs vs the kernel on a host directory -----------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# names never climb out of the host sandbox (where the kernel would leave it and we stop at
# the root); ".." clamping is checked in test_symlinks_stay_inside_the_filesystem
NAMES = ["a", "b", "c", "d/e", "a/b", "b/c/d", "a/..", "l", "a/l", "./a", "a/.", "b/c/.."]
TARGETS = ["a", "b", "a/b", "nowhere", "l", "d/e/..", "a/l", "."]
OPS = st.lists(
    st.tuples(
        st.sampled_from(["mkdir", "write", "symlink", "rename", "remove", "rmdir", "stat",
                         "lstat", "readlink", "listdir", "read", "link", "makedirs"]),
        st.sampled_from(NAMES),
        st.sampled_from(NAMES + TARGETS),
    ),
    max_size=25,
)  # fmt: skip


def _apply(op: str, a: str, b: str, on_host: bool, root: Path, pfs: PathFS) -> object:
    def h(p: str) -> str:  # host path inside the sandbox (no pathlib: it would drop "/.")
        return f"{root}/{p}"

    try:
        if op == "mkdir":
            os.mkdir(h(a)) if on_host else pfs.mkdir(a)
        elif op == "makedirs":
            os.makedirs(h(a), exist_ok=True) if on_host else pfs.makedirs(a, exist_ok=True)
        elif op == "write":
            if on_host:
                with open(h(a), "wb") as f:
                    f.write(b"data:" + a.encode())
            else:
                pfs.write_bytes(a, b"data:" + a.encode())
        elif op == "symlink":
            target = b.lstrip("/") if b.startswith("/") else b  # keep absolute links out
            os.symlink(target, h(a)) if on_host else pfs.symlink(target, a)
        elif op == "rename":
            os.rename(h(a), h(b)) if on_host else pfs.rename(a, b)
        elif op == "remove":
            os.remove(h(a)) if on_host else pfs.remove(a)
        elif op == "rmdir":
            os.rmdir(h(a)) if on_host else pfs.rmdir(a)
        elif op == "link":
            os.link(h(a), h(b), follow_symlinks=False) if on_host else pfs.link(
                a, b, follow_symlinks=False
            )
        elif op in ("stat", "lstat"):
            follow = op == "stat"
            s = (
                os.stat(h(a), follow_symlinks=follow)
                if on_host
                else pfs.stat(a, follow_symlinks=follow)
            )
            return (
                stat.S_IFMT(s.st_mode),
                s.st_size if stat.S_ISREG(s.st_mode) else None,
                s.st_nlink if not stat.S_ISDIR(s.st_mode) else None,
            )
        elif op == "readlink":
            return os.readlink(h(a)) if on_host else pfs.readlink(a)
        elif op == "listdir":
            return sorted(os.listdir(h(a)) if on_host else pfs.listdir(a))
        elif op == "read":
            if on_host:
                with open(h(a), "rb") as f:
                    return f.read()
            return pfs.read_bytes(a)
    except OSError as exc:
        return ("error", exc.errno)
    return None


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_random_operations_match_the_kernel(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, str]]
) -> None:
    root = tmp_path_factory.mktemp("k")
    pfs = PathFS(MemoryFilesystem())
    for op, a, b in ops:
        want = _apply(op, a, b, True, root, pfs)
        got = _apply(op, a, b, False, root, pfs)
        # the kernel refuses some of these with EINVAL/EBUSY/ENOTEMPTY/EISDIR where we report
        # a sibling errno for the same refusal; require both to fail then
        if (
            isinstance(want, tuple)
            and want[:1] == ("error",)
            and op in ("rmdir", "rename", "remove", "mkdir", "makedirs", "link")
        ):
            assert isinstance(got, tuple) and got[:1] == ("error",), (op, a, b, want, got)
            continue
        assert got == want, (op, a, b, want, got)
