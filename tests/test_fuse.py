"""FUSE front end: standard tools run inside a burrow mount and must behave as on a real fs.

The in-memory filesystem is served here so these tests check the FUSE translation itself;
tests/test_fuse_images.py runs the same tools on ext4 and FAT images with fsck afterwards.
"""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from images import make_tree

pytestmark = [pytest.mark.fuse]


def burrow(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "burrow", *args], capture_output=True, text=True, check=check
    )


@pytest.fixture
def mnt(tmp_path: Path) -> Iterator[Path]:
    point = tmp_path / "mnt"
    point.mkdir()
    burrow("mount", "memory:", str(point))
    try:
        yield point
    finally:
        burrow("umount", str(point), check=False)


def test_tools_round_trip(mnt: Path, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    subprocess.run(["cp", "-a", str(src), str(mnt / "cp")], check=True)
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(mnt / "cp")], check=True)
    # stat fields survive cp -a (mode, size, mtime, link count of the hard link)
    for rel in ("etc/hostname", "big.bin", "sparse.bin", "dir/sub/deeper/file.txt"):
        a, b = os.stat(src / rel), os.stat(mnt / "cp" / rel)
        assert (a.st_mode, a.st_size, a.st_mtime_ns) == (b.st_mode, b.st_size, b.st_mtime_ns)
    assert os.stat(mnt / "cp" / "hardlink").st_nlink == 2
    assert os.stat(mnt / "cp" / "hardlink").st_ino == os.stat(mnt / "cp" / "etc/hostname").st_ino
    assert os.readlink(mnt / "cp" / "link") == "etc/hostname"
    # tar out of the mount and back in
    tarball = tmp_path / "t.tar"
    subprocess.run(["tar", "-C", str(mnt / "cp"), "-cf", str(tarball), "."], check=True)
    (mnt / "untar").mkdir()
    subprocess.run(["tar", "-C", str(mnt / "untar"), "-xf", str(tarball)], check=True)
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(mnt / "untar")], check=True)
    # rsync -a into the mount
    subprocess.run(["rsync", "-a", f"{src}/", str(mnt / "rsync")], check=True)
    subprocess.run(["diff", "-r", "--no-dereference", str(src), str(mnt / "rsync")], check=True)

    # find sees the same names
    def names(root: Path) -> list[str]:
        out = subprocess.run(["find", str(root)], capture_output=True, text=True, check=True)
        return sorted(line[len(str(root)) :] for line in out.stdout.splitlines())

    assert names(src) == names(mnt / "rsync")


def test_git_inside_mount(mnt: Path) -> None:
    repo = mnt / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}  # fmt: skip
    git = ["git", "-c", "init.defaultBranch=main", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True, env=env)
    (repo / "f.txt").write_text("one\n")
    subprocess.run([*git, "add", "f.txt"], check=True, env=env)
    subprocess.run([*git, "commit", "-qm", "first"], check=True, env=env)
    (repo / "f.txt").write_text("two\n")
    subprocess.run([*git, "commit", "-qam", "second"], check=True, env=env)
    log = subprocess.run([*git, "log", "--oneline"], capture_output=True, text=True, check=True)
    assert len(log.stdout.splitlines()) == 2
    subprocess.run([*git, "fsck", "--strict"], check=True, env=env, capture_output=True)


def test_fsx_random_io(mnt: Path) -> None:
    """fsx-style: random pwrite/pread/truncate on one file, checked against a model."""
    rng = random.Random(1234)
    path = mnt / "fsx.bin"
    model = bytearray()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        for _ in range(600):
            op = rng.random()
            if op < 0.45:
                off = rng.randrange(0, 300_000)
                data = rng.randbytes(rng.randrange(1, 20_000))
                os.pwrite(fd, data, off)
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off : off + len(data)] = data
            elif op < 0.85:
                off = rng.randrange(0, 320_000)
                n = rng.randrange(1, 40_000)
                assert os.pread(fd, n, off) == bytes(model[off : off + n])
            else:
                size = rng.randrange(0, 300_000)
                os.ftruncate(fd, size)
                if size < len(model):
                    del model[size:]
                else:
                    model.extend(bytes(size - len(model)))
            assert os.fstat(fd).st_size == len(model)
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(model)


def test_open_unlinked_file_keeps_data(mnt: Path) -> None:
    path = mnt / "tmpfile"
    with open(path, "w+b") as f:
        f.write(b"still here")
        os.unlink(path)
        assert not path.exists()
        f.seek(0)
        assert f.read() == b"still here"


def test_metadata_ops(mnt: Path) -> None:
    f = mnt / "meta"
    f.write_bytes(b"x")
    os.chmod(f, 0o640)
    os.chown(f, 1234, 5678)
    os.utime(f, ns=(1_000_000_000, 2_000_000_123))
    st = os.stat(f)
    assert stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_mtime_ns == 2_000_000_123
    os.mkfifo(mnt / "fifo")
    assert stat.S_ISFIFO(os.stat(mnt / "fifo").st_mode)
    os.mknod(mnt / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert os.stat(mnt / "null").st_rdev == os.makedev(1, 3)
    subprocess.run(["setfattr", "-n", "user.color", "-v", "blue", str(f)], check=True)
    out = subprocess.run(["getfattr", "-d", str(f)], capture_output=True, text=True, check=True)
    assert 'user.color="blue"' in out.stdout
    os.rename(f, mnt / "renamed")
    assert (mnt / "renamed").read_bytes() == b"x" and not f.exists()
    os.mkdir(mnt / "d")
    (mnt / "d" / "inner").write_text("i")
    with pytest.raises(OSError) as err:
        os.rmdir(mnt / "d")
    assert err.value.errno == 39  # ENOTEMPTY
    with pytest.raises(OSError) as err:
        os.rename(mnt / "d", mnt / "d" / "sub")
    assert err.value.errno == 22  # EINVAL
    vfs = os.statvfs(mnt)
    assert vfs.f_blocks > 0 and vfs.f_namemax == 255


def test_read_only_mount_refuses_writes(tmp_path: Path) -> None:
    point = tmp_path / "ro"
    point.mkdir()
    burrow("mount", "--ro", "memory:", str(point))
    try:
        with pytest.raises(OSError) as err:
            (point / "x").write_text("no")
        assert err.value.errno == 30  # EROFS
    finally:
        burrow("umount", str(point))


def test_mount_errors_are_one_line(tmp_path: Path) -> None:
    proc = burrow("mount", "memory:", str(tmp_path / "missing"), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    proc = burrow("umount", str(tmp_path), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


def test_block_file_raw_image(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    data = os.urandom(1 << 20)
    image.write_bytes(data + bytes(3 << 20))
    point = tmp_path / "dev"
    point.touch()
    burrow("mount", "--block", str(image), str(point))
    try:
        assert point.stat().st_size == 4 << 20
        with open(point, "r+b") as f:
            assert f.read(1 << 20) == data
            f.seek(2 << 20)
            f.write(b"written through fuse")
    finally:
        burrow("umount", str(point))
    assert image.read_bytes()[2 << 20 : (2 << 20) + 20] == b"written through fuse"


@pytest.mark.root
@pytest.mark.tool("mkfs.ext4", "losetup")
def test_block_file_losetup_and_kernel_mount(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "tree")
    image = tmp_path / "ext4.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(image), "32M"], check=True)
    point = tmp_path / "dev"
    point.touch()
    burrow("mount", "--block", "--ro", str(image), str(point))
    mnt = tmp_path / "kmnt"
    mnt.mkdir()
    loop = None
    try:
        loop = subprocess.run(["losetup", "-f", "--show", "-r", str(point)], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        subprocess.run(["mount", "-o", "ro", loop, str(mnt)], check=True)
        try:
            subprocess.run(
                ["diff", "-r", "--no-dereference", "-x", "lost+found", str(src), str(mnt)],
                check=True,
            )
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        if loop:
            subprocess.run(["losetup", "-d", loop], check=False)
        burrow("umount", str(point), check=False)
