"""``burrow mount`` of ext4 and FAT images, checked against real oracles.

* Read-write: cp -a, tar, rsync, find, diff -r, git, an fsx-style checker, hard links,
  xattrs, fsync, open-then-unlinked files and statfs inside the mount; after unmount
  ``e2fsck -fn`` / ``fsck.fat -n`` are clean, a fresh read-only mount shows exactly what the
  live mount showed (so no kernel cache was stale) and, as root, so does the kernel's ext4.
* Read-only: every stat field, listing (d_ino, d_type), content, link and xattr equals the
  kernel's ext4 on the same image; every write gets EROFS.
* Damage: a corrupt extent tree, directory block or inode gives EIO for that file only; the
  mount lives on. A SIGKILLed daemon leaves the image as of its last commit.
* Lookup counts: after the kernel drops its caches, every reference burrow counted has been
  forgotten (served in-process to look inside).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ext4_helpers import build_image, kernel_snapshot, loop_mount, make_source_tree
from fat_helpers import fsck_clean, host_tree, mtools_tree
from fuse_helpers import GIT_ENV, burrow, daemon_pid, fsx, mounted, names, sh, umount
from images import make_fat, make_tree

pytestmark = [pytest.mark.fuse, pytest.mark.tool("mkfs.ext4", "e2fsck", "debugfs")]


def is_root() -> bool:
    return os.geteuid() == 0 and Path("/dev/loop-control").exists()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def e2fsck_clean(image: Path) -> None:
    proc = subprocess.run(["e2fsck", "-fn", os.fspath(image)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def without(snap: dict[bytes, dict[str, Any]], *fields: str) -> dict[bytes, dict[str, Any]]:
    return {k: {f: v for f, v in rec.items() if f not in fields} for k, rec in snap.items()}


def diff_r(a: Path, b: Path) -> None:
    sh("diff", "-r", "--no-dereference", "-x", "lost+found", a, b)


def driver_statfs(image: Path) -> Any:
    """What the write driver reports for the committed image (opened through an overlay
    that is dropped, so nothing is written)."""
    import burrow as api

    disk = api.open(image, writable=True)
    try:
        return disk.mount().fs.statfs()
    finally:
        disk.close(commit=False)


def stat_f(point: Path) -> dict[str, int]:
    out = sh("stat", "-f", "-c", "%S %b %f %a %c %d %l", point).split()
    return dict(zip(["bsize", "blocks", "bfree", "bavail", "files", "ffree", "namemax"],
                    map(int, out), strict=True))  # fmt: skip


def same_statfs(seen: dict[str, int], s: Any) -> None:
    assert seen == {
        "bsize": s.f_frsize,
        "blocks": s.f_blocks,
        "bfree": s.f_bfree,
        "bavail": s.f_bavail,
        "files": s.f_files,
        "ffree": s.f_ffree,
        "namemax": s.f_namemax,
    }


# -- read-write ext4 -------------------------------------------------------------------------
@pytest.fixture(params=["mkfs.ext4 -d", "burrow mkfs ext4 --from"])
def ext4_rw(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    src = make_tree(tmp_path / "src")
    image = tmp_path / "ext4.img"
    if request.param.startswith("mkfs.ext4"):
        sh("mkfs.ext4", "-q", "-F", "-d", src, image, "64M")
    else:
        burrow("mkfs", "ext4", "--size", "64M", "--from", os.fspath(src), os.fspath(image))
    return image, src


def test_ext4_read_write_tools(ext4_rw: tuple[Path, Path], tmp_path: Path) -> None:
    image, src = ext4_rw
    before = image.read_bytes()
    with mounted(image, tmp_path / "mnt") as mnt:
        diff_r(src, mnt)  # what mkfs put in
        sh("cp", "-a", src, mnt / "cp")
        diff_r(src, mnt / "cp")
        sh("tar", "-C", mnt / "cp", "-cf", tmp_path / "t.tar", ".")
        (mnt / "untar").mkdir()
        sh("tar", "-C", mnt / "untar", "-xf", tmp_path / "t.tar")
        diff_r(src, mnt / "untar")
        sh("rsync", "-a", f"{src}/", mnt / "rsync")
        diff_r(src, mnt / "rsync")
        assert names(src) == names(mnt / "rsync") == names(mnt / "cp")
        # git: many small files, renames, fsyncs, lock files
        repo = mnt / "repo"
        git = ["git", "-c", "init.defaultBranch=main", "-C", os.fspath(repo)]
        repo.mkdir()
        sh(*git, "init", "-q", env=GIT_ENV)
        shutil.copytree(src / "dir", repo / "dir", symlinks=True)
        (repo / "f.txt").write_text("one\n")
        sh(*git, "add", "-A", env=GIT_ENV)
        sh(*git, "commit", "-qm", "first", env=GIT_ENV)
        (repo / "f.txt").write_text("two\n")
        sh(*git, "commit", "-qam", "second", env=GIT_ENV)
        sh(*git, "gc", "-q", env=GIT_ENV)
        assert len(sh(*git, "log", "--oneline").splitlines()) == 2
        sh(*git, "fsck", "--strict", env=GIT_ENV)
        # hard links: one inode, both names see every change
        a, b = mnt / "cp" / "big.bin", mnt / "cp" / "big.hard"
        os.link(a, b)
        with open(b, "ab") as f:
            f.write(b"appended through the second name")
        sa, sb = os.stat(a), os.stat(b)
        assert sa.st_ino == sb.st_ino and sa.st_nlink == sb.st_nlink == 2
        assert (sa.st_size, sa.st_mtime_ns) == (sb.st_size, sb.st_mtime_ns) == (
            300_032, sb.st_mtime_ns)  # fmt: skip
        os.unlink(a)
        assert os.stat(b).st_nlink == 1
        # xattrs with the tools (one too big for the inode: an xattr block)
        x = mnt / "cp" / "etc" / "os-release"
        sh("setfattr", "-n", "user.color", "-v", "blue", x)
        sh("setfattr", "-n", "user.big", "-v", "0x" + os.urandom(700).hex(), x)
        sh("setfattr", "-n", "trusted.t", "-v", "t", x)
        dump = sh("getfattr", "-d", "-m", "-", x)
        assert 'user.color="blue"' in dump and "user.big=" in dump and 'trusted.t="t"' in dump
        sh("setfattr", "-x", "user.color", x)
        assert "user.color" not in sh("getfattr", "-d", x)
        # open, then unlinked: data stays readable and writable until close
        with open(mnt / "tmpfile", "w+b") as f:
            f.write(os.urandom(100_000))
            os.unlink(mnt / "tmpfile")
            f.write(b"more")
            f.flush()
            os.fsync(f.fileno())
            f.seek(99_996)
            assert len(f.read()) == 8 and os.fstat(f.fileno()).st_nlink == 0
        # fsync/fdatasync/syncfs on files and directories
        fd = os.open(mnt / "cp" / "etc", os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(fd)
        os.close(fd)
        sh("sync", "-f", mnt / "cp" / "etc" / "hostname")
        # statfs: what `stat -f` shows is the driver's figures
        seen = stat_f(mnt)
        live = kernel_snapshot(mnt)
        assert image.read_bytes() == before  # nothing reaches the image before unmount
        umount(mnt)
    e2fsck_clean(image)
    same_statfs(seen, driver_statfs(image))
    with mounted(image, tmp_path / "mnt", "--ro") as mnt:
        assert kernel_snapshot(mnt) == live  # the live mount's caches were right
        umount(mnt)
    if is_root():
        with loop_mount(image) as kmnt:
            assert kernel_snapshot(kmnt) == live
            ks = os.statvfs(kmnt)
            assert (ks.f_bfree, ks.f_files, ks.f_ffree, ks.f_frsize) == (
                seen["bfree"], seen["files"], seen["ffree"], seen["bsize"])  # fmt: skip


@pytest.mark.parametrize("block", ["1024", "4096"])
def test_ext4_fsx(block: str, tmp_path: Path) -> None:
    image = tmp_path / "ext4.img"
    sh("mkfs.ext4", "-q", "-F", "-b", block, image, "64M")
    with mounted(image, tmp_path / "mnt") as mnt:
        data = fsx(mnt / "fsx.bin", ops=400, span=2_000_000)
        umount(mnt)
    e2fsck_clean(image)
    with mounted(image, tmp_path / "mnt", "--ro") as mnt:
        assert (mnt / "fsx.bin").read_bytes() == data
        umount(mnt)


def test_ext4_fsx_after_tools(ext4_rw: tuple[Path, Path], tmp_path: Path) -> None:
    image, src = ext4_rw
    with mounted(image, tmp_path / "mnt") as mnt:
        sh("cp", "-a", src, mnt / "cp")
        sh("rsync", "-a", f"{src}/", mnt / "rsync")
        fsx(mnt / "fsx.bin", ops=400, span=2_000_000)
        umount(mnt)
    e2fsck_clean(image)


# -- read-write FAT --------------------------------------------------------------------------
def fat_tree(root: Path) -> Path:
    (root / "EFI" / "BOOT").mkdir(parents=True)
    (root / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(os.urandom(200_000))
    (root / "A Long File Name.txt").write_text("long\n" * 999)
    (root / "empty").write_bytes(b"")
    (root / "deep" / "er" / "est").mkdir(parents=True)
    (root / "deep" / "er" / "est" / "f.cfg").write_text("x=1\n")
    for i in range(40):
        (root / "many" / f"file number {i}.txt").parent.mkdir(exist_ok=True)
        (root / "many" / f"file number {i}.txt").write_text(str(i) * i)
    return root


@pytest.mark.tool("mkfs.fat", "fsck.fat", "mcopy")
def test_fat_read_write_tools(tmp_path: Path) -> None:
    src = fat_tree(tmp_path / "src")
    image = make_fat(tmp_path / "fat.img", src, size_kib=32 * 1024)
    with mounted(image, tmp_path / "mnt") as mnt:
        diff_r(src, mnt)
        # cp -a: owners are refused (EPERM, which cp -a accepts), ACLs degrade to the mode
        sh("cp", "-a", src, mnt / "cp")
        diff_r(src, mnt / "cp")
        sh("tar", "-C", mnt / "cp", "-cf", tmp_path / "t.tar", ".")
        (mnt / "untar").mkdir()
        sh("tar", "--no-same-owner", "-C", mnt / "untar", "-xf", tmp_path / "t.tar")
        diff_r(src, mnt / "untar")
        sh("rsync", "-rt", f"{src}/", mnt / "rsync")  # -a would chown: FAT has no owners
        diff_r(src, mnt / "rsync")
        assert names(src) == names(mnt / "rsync") == names(mnt / "untar")
        fsx(mnt / "fsx.bin", ops=300)
        with open(mnt / "tmpfile", "w+b") as f:
            f.write(b"x" * 50_000)
            os.unlink(mnt / "tmpfile")
            f.seek(0)
            assert f.read() == b"x" * 50_000
        fd = os.open(mnt / "cp" / "empty", os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        seen = stat_f(mnt)
        live = kernel_snapshot(mnt)
        tree = host_tree(mnt)
        umount(mnt)
    fsck_clean(image)
    same_statfs(seen, driver_statfs(image))
    assert mtools_tree(image, tmp_path / "mtools") == tree
    with mounted(image, tmp_path / "mnt", "--ro") as mnt:
        # FAT has no inode numbers: burrow numbers entries per mount
        assert without(kernel_snapshot(mnt), "ino") == without(live, "ino")
        umount(mnt)


# -- read-only: the kernel's view ----------------------------------------------------------
@pytest.mark.root
@pytest.mark.parametrize("variant", ["ext4-4k", "ext4-1k-128"])
def test_read_only_mount_is_the_kernels_view(variant: str, tmp_path: Path) -> None:
    src = make_source_tree(tmp_path / "src", big_entries=300)
    image = build_image(tmp_path / "img", src, variant)
    before = sha(image)

    def view(root: Path) -> dict[str, Any]:
        listing = {}
        for dirpath, _, _ in os.walk(root):
            with os.scandir(dirpath) as it:
                listing[os.path.relpath(dirpath, root)] = sorted(
                    (e.name, e.inode(), e.is_dir(follow_symlinks=False), e.is_symlink()) for e in it
                )
        st = os.stat(root)
        top = sorted(os.listdir(root))
        return {
            "tree": kernel_snapshot(root),
            "dirents": listing,
            "root": (st.st_ino, st.st_mode, st.st_nlink, st.st_uid, st.st_size, st.st_mtime_ns),
            "dot": os.stat(root / ".").st_ino,
            "dotdot": os.stat(root / "d1" / "..").st_ino,
            "ls": top,
        }

    with mounted(image, tmp_path / "mnt", "--ro") as mnt:
        ours = view(mnt)
        ls_a = subprocess.run(["ls", "-a", mnt], capture_output=True).stdout
        # every kind of write is refused with EROFS
        f = mnt / "tiny.txt"
        attempts = [
            lambda: os.open(mnt / "new", os.O_CREAT | os.O_WRONLY),
            lambda: os.open(f, os.O_RDWR),
            lambda: os.mkdir(mnt / "dir"),
            lambda: os.unlink(f),
            lambda: os.rmdir(mnt / "d1"),
            lambda: os.rename(f, mnt / "renamed"),
            lambda: os.chmod(f, 0o600),
            lambda: os.chown(f, 1, 1),
            lambda: os.utime(f, (1, 1)),
            lambda: os.truncate(f, 0),
            lambda: os.link(f, mnt / "hard"),
            lambda: os.symlink("x", mnt / "sym"),
            lambda: os.mkfifo(mnt / "fifo2"),
            lambda: os.setxattr(f, "user.x", b"1"),
            lambda: os.removexattr(mnt / "xattrs.txt", "user.small"),
        ]
        for attempt in attempts:
            with pytest.raises(OSError) as info:
                attempt()
            assert info.value.errno == errno.EROFS
        umount(mnt)
    with loop_mount(image) as kmnt:
        theirs = view(kmnt)
        assert ls_a == subprocess.run(["ls", "-a", kmnt], capture_output=True).stdout
    assert ours == theirs
    assert sha(image) == before


# -- damaged images ------------------------------------------------------------------------
def corrupt_image(tmp_path: Path) -> tuple[Path, Path]:
    """An ext4 image with three kinds of damage: the first extent leaf of /frag.bin, the
    block of directory /dir/sub and the inode of /etc/os-release (checksums catch all)."""
    src = make_tree(tmp_path / "src")
    with open(src / "frag.bin", "wb") as f:  # 700 extents: an index level and 3 leaves
        for i in range(700):
            f.seek(i * 8192)
            f.write(b"%07d" % i)
        f.truncate(700 * 8192)
    image = tmp_path / "bad.img"
    sh("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, image, "64M")
    leaf = [ln.split() for ln in sh("debugfs", "-R", "ex /frag.bin", image).splitlines()]
    first_leaf = int(next(t for t in leaf if t and t[0] == "0/")[7])
    dir_block = int(sh("debugfs", "-R", "blocks /dir/sub", image).split()[0])
    imap = re.search(r"located at block (\d+), offset (0x[0-9a-f]+)",
                     sh("debugfs", "-R", "imap /etc/os-release", image))  # fmt: skip
    assert imap is not None
    inode_block, inode_off = int(imap[1]), int(imap[2], 16)
    with open(image, "r+b") as f:
        f.seek(first_leaf * 4096 + 12)
        f.write(b"\xff" * 24)  # the first extent entries
        f.seek(dir_block * 4096 + 40)
        f.write(b"\xee" * 16)
        f.seek(inode_block * 4096 + inode_off + 4)
        f.write(b"\x01\x02\x03\x04")  # i_size_lo
    return image, src


@pytest.mark.parametrize("mode", ["--ro", "read-write"])
def test_corrupt_image_gives_eio_and_the_mount_lives(mode: str, tmp_path: Path) -> None:
    image, src = corrupt_image(tmp_path)
    opts = (mode,) if mode == "--ro" else ()
    with mounted(image, tmp_path / "mnt", *opts) as mnt:
        for _ in range(2):  # and again: nothing was cached or half-done by the failure
            with pytest.raises(OSError) as info:
                (mnt / "frag.bin").read_bytes()
            assert info.value.errno == errno.EIO
            with pytest.raises(OSError) as info:
                os.listdir(mnt / "dir" / "sub")
            assert info.value.errno == errno.EIO
            with pytest.raises(OSError) as info:
                os.stat(mnt / "etc" / "os-release")
            assert info.value.errno == errno.EIO
        # the damaged inode is still listed, as the kernel lists it
        assert sorted(os.listdir(mnt / "etc")) == ["hostname", "os-release"]
        with os.scandir(mnt / "etc") as it:
            assert {e.name: e.inode() for e in it}["os-release"] > 2
        # the rest reads fine
        assert (mnt / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
        assert (mnt / "etc" / "hostname").read_text() == "burrow-demo\n"
        assert (mnt / "frag.bin").stat().st_size == 700 * 8192
        if mode != "--ro":
            (mnt / "new.txt").write_text("written next to the damage\n")
            assert (mnt / "new.txt").read_text() == "written next to the damage\n"
        umount(mnt)
    if mode != "--ro":
        assert burrow("cat", f"{image}:/new.txt").stdout == "written next to the damage\n"


# -- a killed daemon ------------------------------------------------------------------------
def test_killed_daemon_leaves_the_last_commit(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    image = tmp_path / "ext4.img"
    sh("mkfs.ext4", "-q", "-F", "-d", src, image, "64M")
    point = tmp_path / "mnt"
    with mounted(image, point) as mnt:
        (mnt / "etc" / "hostname").write_text("first commit\n")
        umount(mnt)
    committed = sha(image)
    with mounted(image, point) as mnt:
        (mnt / "etc" / "hostname").write_text("never committed\n")
        (mnt / "more").mkdir()
        shutil.copytree(src / "dir", mnt / "more" / "dir")
        fd = os.open(mnt / "more" / "f", os.O_CREAT | os.O_WRONLY)
        os.write(fd, b"synced, yet not committed")
        os.fsync(fd)
        os.close(fd)
        os.kill(daemon_pid(mnt), signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(OSError) as info:
            os.listdir(mnt)
        assert info.value.errno == errno.ENOTCONN
        proc = burrow("umount", os.fspath(mnt), check=False)
        assert proc.returncode != 0 and "had died" in proc.stderr, proc.stderr
        assert not os.path.ismount(mnt)
    assert sha(image) == committed
    e2fsck_clean(image)
    assert burrow("cat", f"{image}:/etc/hostname").stdout == "first commit\n"


# -- kernel caches, lookup counts and forget ---------------------------------------------------
@contextlib.contextmanager
def serve_here(ops: Any, point: Path) -> Iterator[Path]:
    """Serve ``ops`` from a thread of this process, so the test can look inside."""
    import pyfuse3
    import trio

    point.mkdir(exist_ok=True)
    pyfuse3.init(ops, os.fspath(point), {"fsname=burrow-test", "default_permissions"})
    thread = threading.Thread(target=trio.run, args=(pyfuse3.main,), daemon=True)
    thread.start()
    try:
        yield point
    finally:
        subprocess.run(["fusermount3", "-u", "-z", os.fspath(point)], capture_output=True)
        thread.join(20)
        pyfuse3.close(unmount=False)


def drop_kernel_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("2\n")  # dentries and inodes


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        drop_kernel_caches()
        time.sleep(0.05)
    return bool(predicate())


@pytest.mark.root
def test_lookup_counts_and_forget(tmp_path: Path) -> None:
    from burrow.block.raw import RawDevice
    from burrow.fs.ext4 import open_ext4
    from burrow.fuse.ops import FilesystemOperations

    image = tmp_path / "ext4.img"
    sh("mkfs.ext4", "-q", "-F", "-N", "2048", image, "32M")
    dev = RawDevice(image, readonly=False)
    fs = open_ext4(dev, readonly=False)
    ops = FilesystemOperations(fs, timeout=60.0)
    free_inodes = fs.statfs().f_ffree
    try:
        with serve_here(ops, tmp_path / "mnt") as mnt:
            d = mnt / "many"
            d.mkdir()
            for i in range(600):
                (d / f"f{i}").write_bytes(b"x" * i)
            assert sorted(os.listdir(d), key=lambda n: int(n[1:])) == [f"f{i}" for i in range(600)]
            for i in range(600):
                assert os.stat(d / f"f{i}").st_size == i
            for i in range(0, 600, 2):  # delete half; the kernel's entries must go too
                os.unlink(d / f"f{i}")
            for i in range(600):
                assert os.path.exists(d / f"f{i}") == bool(i % 2)
            for i in range(0, 100, 2):  # recreate some: new inodes, new sizes
                (d / f"f{i}").write_bytes(b"y" * (i + 1000))
                assert os.stat(d / f"f{i}").st_size == i + 1000
            os.link(d / "f1", d / "hard")
            (d / "hard").write_bytes(b"through the link")
            assert os.stat(d / "f1").st_size == 16 and os.stat(d / "f1").st_nlink == 2
            held = open(d / "f3", "r+b")  # noqa: SIM115 (open, then unlinked: kept pinned)
            try:
                os.unlink(d / "f3")
                counts = ops.lookup_counts
                assert counts and all(n > 0 for n in counts.values())
                held_ino = os.fstat(held.fileno()).st_ino
                # the kernel forgets everything it does not use (the open file pins its dentry
                # and so its directory); burrow's counts follow
                kept = {held_ino, os.stat(d).st_ino}
                assert wait_for(lambda: set(ops.lookup_counts) <= kept), ops.lookup_counts
                assert held.read() == b"x" * 3
            finally:
                held.close()
            assert wait_for(lambda: not ops.lookup_counts), ops.lookup_counts
            # and everything is still right when looked up afresh
            assert sum(1 for _ in os.scandir(d)) == 300 + 50 - 1 + 1
            assert os.stat(d / "f1").st_nlink == 2 and not os.path.exists(d / "f3")
        assert ops.open_handles == 0
    finally:
        fs.close()
        dev.close()
    e2fsck_clean(image)
    # every unlinked inode was freed (f3 after its release): 1 dir + 299 + 50 files
    fs = open_ext4(RawDevice(image))
    assert free_inodes - fs.statfs().f_ffree == 1 + 299 + 50


def test_caches_follow_changes_made_through_the_mount(tmp_path: Path) -> None:
    """With the default 60 s timeouts, every change is seen at once (the kernel invalidates
    what it changed, burrow answers afresh); a negative entry does not hide a new file."""
    image = tmp_path / "ext4.img"
    sh("mkfs.ext4", "-q", "-F", image, "32M")
    with mounted(image, tmp_path / "mnt") as mnt:
        f = mnt / "f"
        assert not f.exists()  # a cached negative entry...
        f.write_bytes(b"1234")  # ...replaced by the create
        assert f.stat().st_size == 4
        os.link(f, mnt / "g")
        assert f.stat().st_nlink == 2
        with open(mnt / "g", "ab") as h:
            h.write(b"5678")
        assert f.stat().st_size == 8
        os.unlink(mnt / "g")
        assert f.stat().st_nlink == 1 and not (mnt / "g").exists()
        os.rename(f, mnt / "h")
        assert not f.exists() and (mnt / "h").read_bytes() == b"12345678"
        f.write_bytes(b"new")
        assert f.stat().st_ino != (mnt / "h").stat().st_ino
        before = (mnt).stat().st_nlink
        (mnt / "sub").mkdir()
        assert mnt.stat().st_nlink == before + 1
        os.chmod(mnt / "h", 0o600)
        assert stat.S_IMODE((mnt / "h").stat().st_mode) == 0o600
        acl = (2).to_bytes(4, "little") + b"".join(  # what `setfacl -m u::r,g::r,o::r` sends
            tag.to_bytes(2, "little") + (4).to_bytes(2, "little") + b"\xff" * 4
            for tag in (1, 4, 32)
        )
        os.setxattr(mnt / "h", "system.posix_acl_access", acl)  # a minimal ACL is the mode
        assert stat.S_IMODE((mnt / "h").stat().st_mode) == 0o444
        with open(mnt / "h", "w"):  # O_TRUNC
            pass
        assert (mnt / "h").stat().st_size == 0
        os.truncate(mnt / "f", 10_000)
        assert (mnt / "f").stat().st_size == 10_000
        live = kernel_snapshot(mnt)
        umount(mnt)
    with mounted(image, tmp_path / "mnt", "--ro") as mnt:
        assert kernel_snapshot(mnt) == live
        umount(mnt)


def test_foreground_logs_lifecycle_and_eio(tmp_path: Path) -> None:
    """--foreground logs to stderr what docs/fuse.md promises: the mount, each EIO with the
    driver's reason, the unmount and the commit."""
    import sys

    image, _ = corrupt_image(tmp_path)
    point = tmp_path / "mnt"
    point.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "burrow", "mount", "--foreground", os.fspath(image), point],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.ismount(point) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert os.path.ismount(point)
        with pytest.raises(OSError):
            (point / "frag.bin").read_bytes()
        (point / "new").write_text("x")
        sh("fusermount3", "-u", point)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            subprocess.run(["fusermount3", "-u", "-z", os.fspath(point)], capture_output=True)
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert f"mounted {image} on {point} (read-write; the image is written at unmount" in err
    assert re.search(r"(open|read)\(.*\): corrupt ext4", err), err
    assert "unmounted" in err and "committing to the image" in err and "closed in" in err
    assert "Traceback" not in err
    assert burrow("cat", f"{image}:/new").stdout == "x"


@pytest.mark.tool("mkfs.fat", "mcopy", "mshowfat")
def test_fat_cluster_loop_gives_eio_and_the_mount_lives(tmp_path: Path) -> None:
    """A FAT chain that loops back on itself: EIO for that file, the rest reads fine."""
    import struct

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(20_000))
    (src / "b.txt").write_text("hello\n")
    image = make_fat(tmp_path / "fat.img", src, size_kib=32 * 1024, fat_bits=16)
    chain = sh("mshowfat", "-i", image, "::/a.bin")
    found = re.search(r"<(\d+)-(\d+)>", chain)
    assert found is not None and int(found[2]) - int(found[1]) == 9, chain  # 10 clusters
    first = int(found[1])
    with open(image, "r+b") as f:
        sector, _, reserved, nfats, _, _, _, fat_sectors = struct.unpack(
            "<HBHBHHBH", f.read(30)[11:24]
        )
        for copy in range(nfats):
            f.seek((reserved + copy * fat_sectors) * sector + 2 * (first + 3))
            f.write(struct.pack("<H", first + 1))  # a loop long before the file's end
    with mounted(image, tmp_path / "mnt", "--ro") as mnt:
        for _ in range(2):
            with pytest.raises(OSError) as info:
                (mnt / "a.bin").read_bytes()
            assert info.value.errno == errno.EIO
        assert (mnt / "b.txt").read_text() == "hello\n"
        assert sorted(os.listdir(mnt)) == ["a.bin", "b.txt"]
        umount(mnt)
