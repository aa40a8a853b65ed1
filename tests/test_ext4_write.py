"""ext4 write operations, each followed by ``e2fsck -fn``; bad input; the kernel as oracle."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from burrow.block.filters.readonly import ReadOnlyFilter
from burrow.block.raw import RawDevice
from burrow.errors import (
    BurrowError,
    CorruptImage,
    Exists,
    InvalidArgument,
    InvalidOperation,
    IsADirectory,
    NameTooLong,
    NoSpace,
    NotADirectory,
    NotEmpty,
    NotFound,
    NotPermitted,
    ReadOnly,
    TooManyLinks,
    Unsupported,
)
from burrow.fs import vfs
from burrow.fs.ext4 import open_ext4
from ext4_write_helpers import dump, fsck, host_dump, make_image, readable, resolve, writable

pytestmark = pytest.mark.tool("mkfs.ext4", "e2fsck", "debugfs")

ALL = ["tool-ext4", "ours-ext4", "tool-ext4-4k", "tool-ext3", "ours-ext2", "tool-inline",
       "tool-nocsum"]  # fmt: skip


def _populate(fs: vfs.Filesystem) -> dict[str, bytes]:
    r = fs.root_ino
    data = {
        "small": b"hello\n",
        "big": os.urandom(2_500_000),
        "sparse": b"",
    }
    f = fs.create(r, "small", 0o644, 1000, 100)
    fs.write(f, 0, data["small"])
    d = fs.mkdir(r, "dir", 0o750, 1000, 100)
    sub = fs.mkdir(d, "sub", 0o700)
    g = fs.create(sub, "big", 0o600)
    fs.write(g, 0, data["big"])
    s = fs.create(r, "sparse", 0o644)
    fs.write(s, 5_000_000, b"end")
    fs.write(s, 1000, b"start")
    data["sparse"] = bytes(1000) + b"start" + bytes(5_000_000 - 1005) + b"end"
    fs.symlink(r, "fast", "small")
    fs.symlink(d, "slow", "/" + "long/" * 30 + "target")
    fs.link(f, d, "hard")
    fs.mknod(r, "fifo", stat.S_IFIFO | 0o644)
    fs.mknod(r, "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    fs.mknod(r, "big-dev", stat.S_IFBLK | 0o660, os.makedev(259, 70000))
    fs.mknod(r, "sock", stat.S_IFSOCK | 0o755)
    fs.setxattr(f, "user.small", b"1")
    fs.setxattr(f, "user.medium", b"m" * 600)
    fs.setxattr(d, "trusted.x", b"t")
    fs.setattr(f, atime_ns=1_000_000_000_123, mtime_ns=-5_000_000_000)
    return data


@pytest.mark.parametrize("variant", ALL)
def test_populate_then_fsck_and_read_back(tmp_path: Path, variant: str) -> None:
    img = make_image(tmp_path / "fs.img", variant, 48 << 20)
    with writable(img) as fs:
        data = _populate(fs)
        before = dump(fs)
    fsck(img)
    with readable(img) as fs:
        after = dump(fs)
        assert after == before
        assert fs.read(resolve(fs, "/dir/sub/big"), 0, 3_000_000) == data["big"]
        sp = resolve(fs, "/sparse")
        assert fs.read(sp, 0, 6_000_000) == data["sparse"]
        st = fs.getattr(sp)
        assert st.st_blocks * 512 < 64 * 1024  # the hole takes no blocks
        small = fs.getattr(resolve(fs, "/small"))
        assert (small.st_uid, small.st_gid, small.st_nlink) == (1000, 100, 2)
        assert small.st_mtime_ns == -5_000_000_000
        assert small.st_atime_ns == 1_000_000_000_123 or variant == "tool-ext2"
        dev = fs.getattr(resolve(fs, "/big-dev"))
        assert dev.st_rdev == os.makedev(259, 70000)
        assert fs.getxattr(resolve(fs, "/small"), "user.medium") == b"m" * 600


@pytest.mark.parametrize("variant", ["tool-ext4", "tool-ext3", "tool-inline"])
def test_remove_everything_returns_all_space(tmp_path: Path, variant: str) -> None:
    img = make_image(tmp_path / "fs.img", variant, 48 << 20)
    with readable(img) as fs:
        free0 = fs.statfs()
    with writable(img) as fs:
        _populate(fs)
    with writable(img) as fs:
        r = fs.root_ino
        d = fs.lookup(r, "dir")
        sub = fs.lookup(d, "sub")
        fs.unlink(sub, "big")
        fs.rmdir(d, "sub")
        for n in ("slow", "hard"):
            fs.unlink(d, n)
        fs.rmdir(r, "dir")
        for n in ("small", "sparse", "fast", "fifo", "null", "big-dev", "sock"):
            fs.unlink(r, n)
        sf = fs.statfs()
    fsck(img)
    with readable(img) as fs:
        assert fs.statfs().f_bfree == free0.f_bfree == sf.f_bfree
        assert fs.statfs().f_ffree == free0.f_ffree
        assert dump(fs) == {}


@pytest.mark.parametrize("variant", ["tool-ext4", "ours-ext3"])
def test_truncate_shrink_grow_and_overwrite(tmp_path: Path, variant: str) -> None:
    img = make_image(tmp_path / "fs.img", variant, 48 << 20)
    payload = os.urandom(9_000_000)
    with writable(img) as fs:
        f = fs.create(fs.root_ino, "f", 0o644)
        for off in range(0, len(payload), 1 << 20):
            fs.write(f, off, payload[off : off + (1 << 20)])
        free_full = fs.statfs().f_bfree
        fs.setattr(f, size=123_457)
        assert fs.statfs().f_bfree > free_full + 8000
        fs.setattr(f, size=300_000)
        fs.write(f, 100, b"X" * 10)
        expect = bytearray(payload[:123_457] + bytes(300_000 - 123_457))
        expect[100:110] = b"X" * 10
        assert fs.read(f, 0, 400_000) == bytes(expect)
    fsck(img)
    with readable(img) as fs:
        assert fs.read(fs.lookup(fs.root_ino, "f"), 0, 400_000) == bytes(expect)


def test_deep_extent_tree_and_shrink(tmp_path: Path) -> None:
    """A fragmented file needs index levels; truncating frees the tree blocks again."""
    img = make_image(tmp_path / "fs.img", "tool-ext4", 64 << 20)
    with writable(img) as fs:
        f = fs.create(fs.root_ino, "frag", 0o644)
        for k in range(1200):  # every other block: 1200 extents
            fs.write(f, 2048 * k, b"Z" * 1024)
        st = fs.getattr(f)
        assert st.st_blocks > 2400
    fsck(img)
    out = subprocess.run(["debugfs", "-R", "stat /frag", str(img)], capture_output=True,
                         text=True).stdout  # fmt: skip
    assert "(ETB1)" in out or "(ETB0)" in out
    with writable(img) as fs:
        f = fs.lookup(fs.root_ino, "frag")
        assert fs.read(f, 2048 * 777, 1024) == b"Z" * 1024
        fs.setattr(f, size=5000)
    fsck(img)
    with readable(img) as fs:
        assert fs.getattr(fs.lookup(fs.root_ino, "frag")).st_blocks == 6  # 3 KiB blocks


@pytest.mark.parametrize("variant", ["tool-ext4", "ours-ext4-4k", "tool-nocsum"])
def test_big_directory_htree(tmp_path: Path, variant: str) -> None:
    img = make_image(tmp_path / "fs.img", variant, 64 << 20)
    names = [f"entry-{k:05d}-{'n' * (k % 50)}" for k in range(4000)]
    with writable(img) as fs:
        d = fs.mkdir(fs.root_ino, "big", 0o755)
        for n in names:
            fs.create(d, n, 0o644)
        for n in names[::3]:
            fs.unlink(d, n)
    fsck(img)
    out = subprocess.run(["debugfs", "-R", "htree big", str(img)], capture_output=True,
                         text=True)  # fmt: skip
    assert "Number of entries" in out.stdout or "Indirect levels" in out.stdout
    keep = set(names) - set(names[::3])
    with readable(img) as fs:
        d = fs.lookup(fs.root_ino, "big")
        assert {e.name for e in fs.readdir(d)} == keep
        for n in list(keep)[:200]:
            fs.lookup(d, n)


def test_rename_semantics(tmp_path: Path) -> None:
    img = make_image(tmp_path / "fs.img", "tool-ext4", 32 << 20)
    with writable(img) as fs:
        r = fs.root_ino
        a = fs.mkdir(r, "a", 0o755)
        b = fs.mkdir(r, "b", 0o755)
        aa = fs.mkdir(a, "aa", 0o755)
        f = fs.create(a, "f", 0o644)
        g = fs.create(b, "g", 0o644)
        fs.write(g, 0, b"g")
        with pytest.raises(InvalidOperation):
            fs.rename(r, "a", aa, "inside")
        with pytest.raises(InvalidOperation):
            fs.rename(r, "a", a, "self")
        with pytest.raises(Exists):
            fs.rename(a, "f", b, "g", vfs.RENAME_NOREPLACE)
        with pytest.raises(IsADirectory):
            fs.rename(a, "f", r, "b")
        with pytest.raises(NotADirectory):
            fs.rename(r, "b", a, "f")
        with pytest.raises(NotEmpty):
            fs.rename(r, "b", r, "a")
        with pytest.raises(NotFound):
            fs.rename(a, "missing", b, "x")
        fs.rename(a, "f", b, "g")  # replaces g
        assert fs.lookup(b, "g") == f
        with pytest.raises(NotFound):
            fs.getattr(g)
        fs.rename(a, "aa", b, "aa")  # directory across parents: '..' and links fixed
        assert fs.lookup(fs.lookup(b, "aa"), "..") == b
        assert fs.getattr(a).st_nlink == 2 and fs.getattr(b).st_nlink == 3
        fs.rename(r, "a", b, "g", vfs.RENAME_EXCHANGE)  # dir <-> file across dirs
        assert fs.lookup(b, "g") == a and fs.lookup(r, "a") == f
        assert fs.lookup(a, "..") == b
        assert fs.getattr(b).st_nlink == 4 and fs.getattr(r).st_nlink == 4
    fsck(img)


def test_bad_names_and_operations(tmp_path: Path) -> None:
    img = make_image(tmp_path / "fs.img", "ours-ext4", 32 << 20)
    with writable(img) as fs:
        r = fs.root_ino
        for bad in ("", ".", "..", "a/b", "nul\0"):
            with pytest.raises(InvalidArgument):
                fs.create(r, bad, 0o644)
        with pytest.raises(NameTooLong):
            fs.mkdir(r, "n" * 256, 0o755)
        fs.create(r, "n" * 255, 0o644)
        d = fs.mkdir(r, "d", 0o755)
        f = fs.create(d, "f", 0o644)
        with pytest.raises(Exists):
            fs.create(d, "f", 0o644)
        with pytest.raises(NotEmpty):
            fs.rmdir(r, "d")
        with pytest.raises(NotADirectory):
            fs.rmdir(d, "f")
        with pytest.raises(IsADirectory):
            fs.unlink(r, "d")
        with pytest.raises(NotPermitted):
            fs.link(d, r, "dirlink")
        with pytest.raises(IsADirectory):
            fs.write(d, 0, b"x")
        with pytest.raises(NotADirectory):
            fs.create(f, "x", 0o644)
        with pytest.raises(NotFound):
            fs.unlink(r, "nope")
        with pytest.raises(BurrowError):
            fs.setxattr(f, "os2.weird", b"x")
        with pytest.raises(BurrowError):
            fs.removexattr(f, "user.none")
        fs.setxattr(f, "user.a", b"1")
        with pytest.raises(Exists):
            fs.setxattr(f, "user.a", b"2", vfs.XATTR_CREATE)
        with pytest.raises(BurrowError):
            fs.setxattr(f, "user.b", b"2", vfs.XATTR_REPLACE)
    fsck(img)


def test_enospc_leaves_nothing_half_written(tmp_path: Path) -> None:
    img = make_image(tmp_path / "fs.img", "ours-ext4", 8 << 20)
    with writable(img) as fs:
        f = fs.create(fs.root_ino, "fill", 0o644)
        chunk = os.urandom(1 << 20)
        written = 0
        with pytest.raises(NoSpace):
            while True:
                fs.write(f, written, chunk)
                written += len(chunk)
        assert fs.getattr(f).st_size == written
        free = fs.statfs().f_bfree
        with pytest.raises(NoSpace):
            fs.write(f, written, os.urandom((free + 10) * 1024))
        assert fs.getattr(f).st_size == written
        assert fs.statfs().f_bfree == free
        fs.setattr(f, size=written // 2)
        fs.create(fs.root_ino, "after", 0o644)
    fsck(img)


def test_pinned_unlinked_inode_lives_until_unpin(tmp_path: Path) -> None:
    img = make_image(tmp_path / "fs.img", "tool-ext4", 16 << 20)
    with writable(img) as fs:
        f = fs.create(fs.root_ino, "open", 0o644)
        fs.write(f, 0, b"still here")
        fs.pin(f)
        free = fs.statfs().f_bfree
        fs.unlink(fs.root_ino, "open")
        assert fs.read(f, 0, 100) == b"still here"
        fs.write(f, 10, b"!")
        assert fs.statfs().f_bfree == free
        fs.unpin(f)
        assert fs.statfs().f_bfree == free + 1
        with pytest.raises(NotFound):
            fs.getattr(f)
        g = fs.create(fs.root_ino, "closed-while-pinned", 0o644)
        fs.write(g, 0, b"x" * 5000)
        fs.pin(g)
        fs.unlink(fs.root_ino, "closed-while-pinned")
    fsck(img)


def test_link_count_limits(tmp_path: Path) -> None:
    img = make_image(tmp_path / "fs.img", "tool-ext4", 16 << 20)
    with writable(img) as fs:
        f = fs.create(fs.root_ino, "f", 0o644)
        d = fs.mkdir(fs.root_ino, "d", 0o755)
        fs.sync()
        fi, di = f, d
    subprocess.run(["debugfs", "-w", "-R", f"sif <{fi}> links_count 65000", str(img)],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run(["debugfs", "-w", "-R", f"sif <{di}> links_count 64999", str(img)],
                   check=True, capture_output=True)  # fmt: skip
    with writable(img) as fs:
        with pytest.raises(TooManyLinks):
            fs.link(fi, fs.root_ino, "one-more")
        fs.mkdir(di, "s1", 0o755)
        assert fs.getattr(di).st_nlink == 65000
        fs.mkdir(di, "s2", 0o755)  # dir_nlink: the count becomes 1 ("many")
        assert fs.getattr(di).st_nlink == 1


def test_refusals(tmp_path: Path) -> None:
    img = make_image(tmp_path / "fs.img", "tool-ext4", 16 << 20)
    with RawDevice(img) as dev, pytest.raises(ReadOnly):
        open_ext4(dev, readonly=False)
    with RawDevice(img, readonly=False) as dev, pytest.raises(ReadOnly):
        open_ext4(ReadOnlyFilter(dev, owns_base=False), readonly=False)
    with readable(img) as fs, pytest.raises(ReadOnly):
        fs.create(fs.root_ino, "x", 0o644)
    # errors state
    subprocess.run(["debugfs", "-w", "-R", "ssv state 2", str(img)], check=True,
                   capture_output=True)  # fmt: skip
    with RawDevice(img, readonly=False) as dev, pytest.raises(CorruptImage):
        open_ext4(dev, readonly=False)
    subprocess.run(["debugfs", "-w", "-R", "ssv state 1", str(img)], check=True,
                   capture_output=True)  # fmt: skip
    # an ro_compat feature we cannot keep consistent
    img2 = tmp_path / "quota.img"
    with open(img2, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "quota", str(img2)], check=True,
                   capture_output=True)  # fmt: skip
    with RawDevice(img2, readonly=False) as dev, pytest.raises(Unsupported):
        open_ext4(dev, readonly=False)
    before = img2.read_bytes()
    assert img2.read_bytes() == before


def test_inline_data_grows_out(tmp_path: Path) -> None:
    img = make_image(tmp_path / "fs.img", "tool-inline", 16 << 20)
    mnt_less = tmp_path / "src"
    mnt_less.mkdir()
    (mnt_less / "tiny").write_bytes(b"inline!")
    (mnt_less / "d").mkdir()
    for k in range(3):
        (mnt_less / "d" / f"e{k}").write_bytes(b"")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "inline_data", "-d", str(mnt_less), str(img),
                    "16M"], check=True, capture_output=True)  # fmt: skip
    with writable(img) as fs:
        t = fs.lookup(fs.root_ino, "tiny")
        fs.write(t, 7, b"x" * 9000)
        d = fs.lookup(fs.root_ino, "d")
        for k in range(100):
            fs.create(d, f"grown-{k:03d}", 0o644)
    fsck(img)
    with readable(img) as fs:
        assert fs.read(fs.lookup(fs.root_ino, "tiny"), 0, 20) == b"inline!" + b"x" * 13
        assert len(list(fs.readdir(fs.lookup(fs.root_ino, "d")))) == 103


def test_superblock_bookkeeping(tmp_path: Path) -> None:
    img = make_image(tmp_path / "fs.img", "tool-ext4", 16 << 20)

    def sb() -> dict[str, str]:
        out = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True)
        return {
            k.strip(): v.strip()
            for k, _, v in (ln.partition(":") for ln in out.stdout.splitlines())
        }

    before = sb()
    with writable(img) as fs:
        fs.create(fs.root_ino, "x", 0o644)
        fs.write(fs.lookup(fs.root_ino, "x"), 0, b"y" * 100_000)
        sf = fs.statfs()
    after = sb()
    assert int(after["Mount count"]) == int(before["Mount count"]) + 1
    assert after["Filesystem state"] == "clean"
    assert int(after["Free blocks"]) == sf.f_bfree
    assert int(after["Free inodes"]) == sf.f_ffree
    assert after["Journal start"] == "0"  # the journal stays empty
    fsck(img)


@pytest.mark.root
@pytest.mark.parametrize("variant", ["ours-ext4", "tool-ext3", "tool-inline"])
def test_kernel_sees_exactly_what_we_wrote(tmp_path: Path, variant: str) -> None:
    img = make_image(tmp_path / "fs.img", variant, 48 << 20)
    with writable(img) as fs:
        _populate(fs)
        ours = dump(fs)
        stats = {p: fs.getattr(resolve(fs, p)) for p in ours}
    fsck(img)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(img), str(mnt)], check=True)
    try:
        kernel = host_dump(mnt)
        for p, st in stats.items():
            k = os.lstat(str(mnt) + p)
            assert (k.st_mode, k.st_uid, k.st_gid, k.st_nlink) == (
                st.st_mode, st.st_uid, st.st_gid, st.st_nlink), p  # fmt: skip
            assert k.st_mtime_ns == st.st_mtime_ns, p
            if not stat.S_ISDIR(k.st_mode):
                assert k.st_size == st.st_size, p
            assert k.st_rdev == st.st_rdev, p
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert kernel == ours


@pytest.mark.root
def test_shared_xattr_block_refcounts(tmp_path: Path) -> None:
    """The kernel shares identical xattr blocks; changing one file's attributes must drop
    its reference, not edit the shared block."""
    img = make_image(tmp_path / "fs.img", "tool-ext4", 16 << 20)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        for n in ("a", "b", "c"):
            (mnt / n).write_bytes(n.encode())
            os.setxattr(mnt / n, "user.shared", b"S" * 700)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    with writable(img) as fs:
        a = fs.lookup(fs.root_ino, "a")
        fs.setxattr(a, "user.own", b"mine")
        b = fs.lookup(fs.root_ino, "b")
        fs.removexattr(b, "user.shared")
        c = fs.lookup(fs.root_ino, "c")
        fs.unlink(fs.root_ino, "c")
        del c
    fsck(img)
    with readable(img) as fs:
        a = fs.lookup(fs.root_ino, "a")
        assert fs.getxattr(a, "user.shared") == b"S" * 700
        assert fs.getxattr(a, "user.own") == b"mine"
        assert fs.listxattr(fs.lookup(fs.root_ino, "b")) == []


def _ops(fs: vfs.Filesystem) -> list[Callable[[], object]]:
    r = fs.root_ino
    return [
        lambda: fs.create(r, "new", 0o644),
        lambda: fs.write(fs.lookup(r, "big"), 5000, b"x" * 70000),
        lambda: fs.setattr(fs.lookup(r, "big"), size=10),
        lambda: fs.unlink(fs.lookup(r, "d"), "f7"),
        lambda: fs.create(fs.lookup(r, "d"), "zz", 0o644),
        lambda: fs.rename(r, "d", fs.lookup(r, "d"), "e2"),
        lambda: fs.rename(fs.lookup(r, "d"), "f3", r, "moved"),
        lambda: fs.setxattr(fs.lookup(fs.lookup(r, "d"), "f9"), "user.q", b"v" * 300),
        lambda: fs.mkdir(r, "nd", 0o755),
        lambda: fs.rmdir(fs.lookup(r, "d"), "e"),
        lambda: fs.unlink(r, "slow"),
        lambda: list(fs.readdir(r)),
        fs.close,
    ]


def _corrupt_runs(tmp_path: Path, opts: list[str], seeds: int) -> None:
    import random
    import traceback

    from burrow.block.memory import MemoryDevice

    src = tmp_path / "src"
    (src / "d" / "e").mkdir(parents=True)
    for i in range(40):
        (src / "d" / f"f{i}").write_bytes(os.urandom(i * 300))
    (src / "big").write_bytes(os.urandom(300_000))
    os.symlink("x" * 80, src / "slow")
    img = tmp_path / "fz.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", *opts, "-d", str(src), str(img), "4M"], check=True,
                   capture_output=True)  # fmt: skip
    base = img.read_bytes()
    escaped: list[str] = []
    for seed in range(seeds):
        rnd = random.Random(seed)
        buf = bytearray(base)
        for _ in range(rnd.randint(1, 300)):
            buf[rnd.randrange(2048, 400 * 1024)] = rnd.randrange(256)
        dev = MemoryDevice(len(buf), data=bytes(buf))
        try:
            fs = open_ext4(dev, readonly=False, ignore_checksums=True)
        except BurrowError:
            continue
        ops = _ops(fs)
        for op in ops:
            try:
                op()
            except BurrowError:
                pass
            except Exception as exc:  # the point: anything else escaping is a bug
                escaped.append(f"seed {seed}: {exc!r}\n{traceback.format_exc()}")
    assert not escaped, escaped[0]


@pytest.mark.parametrize("opts", [[], ["-t", "ext3"], ["-O", "inline_data"]], ids=str)
def test_corrupt_images_only_raise_burrow_errors(tmp_path: Path, opts: list[str]) -> None:
    """Random damage to metadata: every write operation either works or raises a
    BurrowError (CorruptImage, NoSpace, ...), never IndexError/struct.error/MemoryError."""
    _corrupt_runs(tmp_path, opts, 120)


@pytest.mark.root
def test_kernel_keeps_writing_our_htree_and_uninit_extents(tmp_path: Path) -> None:
    """The kernel adds to and removes from an htree we built, and we write into extents the
    kernel left uninitialised (fallocate): both stay e2fsck-clean and read back."""
    img = make_image(tmp_path / "fs.img", "ours-ext4", 64 << 20)
    names = [f"n{k:04d}-{'z' * (k % 30)}" for k in range(2500)]
    with writable(img) as fs:
        d = fs.mkdir(fs.root_ino, "big", 0o755)
        for n in names:
            fs.create(d, n, 0o644)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        for n in names[:500]:
            (mnt / "big" / n).unlink()
        for k in range(500):
            (mnt / "big" / f"kernel-{k}").write_bytes(b"k")
        subprocess.run(["fallocate", "-l", "3M", str(mnt / "prealloc")], check=True)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    fsck(img)
    with writable(img) as fs:
        d = fs.lookup(fs.root_ino, "big")
        for n in names[500:1000]:
            fs.unlink(d, n)
        for k in range(300):
            fs.create(d, f"burrow-again-{k}", 0o644)
        p = fs.lookup(fs.root_ino, "prealloc")
        fs.write(p, 1_000_000, b"middle")
        fs.write(p, 3_000_000, b"!")
    fsck(img)
    subprocess.run(["mount", "-o", "loop,ro", str(img), str(mnt)], check=True)
    try:
        listing = set(os.listdir(mnt / "big"))
        data = (mnt / "prealloc").read_bytes()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    expect = set(names[1000:]) | {f"kernel-{k}" for k in range(500)}
    expect |= {f"burrow-again-{k}" for k in range(300)}
    assert listing == expect
    want = bytearray(3 << 20)
    want[1_000_000:1_000_006] = b"middle"
    want[3_000_000] = ord("!")
    assert data == bytes(want)


@pytest.mark.parametrize("fstype", ["ext2", "ext4"])
def test_large_sparse_file_sets_large_file(tmp_path: Path, fstype: str) -> None:
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run([f"mkfs.{fstype}", "-q", "-F", "-O", "^large_file", str(img)], check=True,
                   capture_output=True)  # fmt: skip
    with writable(img) as fs:
        f = fs.create(fs.root_ino, "huge", 0o644)
        fs.write(f, 3 << 30, b"far away")
        g = fs.create(fs.root_ino, "grown", 0o644)
        fs.setattr(g, size=5 << 30)
    fsck(img)
    out = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True).stdout
    assert "large_file" in out
    with readable(img) as fs:
        f = fs.lookup(fs.root_ino, "huge")
        assert fs.getattr(f).st_size == (3 << 30) + 8
        assert fs.read(f, 3 << 30, 100) == b"far away"
        assert fs.read(f, 1 << 30, 10) == bytes(10)


def test_ext2_is_not_clean_while_open(tmp_path: Path) -> None:
    img = make_image(tmp_path / "fs.img", "tool-ext2", 16 << 20)
    dev = RawDevice(img, readonly=False)
    fs = open_ext4(dev, readonly=False)
    fs.create(fs.root_ino, "x", 0o644)
    fs.sync()
    out = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True).stdout
    assert "Filesystem state:         not clean" in out
    fs.close()
    dev.close()
    out = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True).stdout
    assert "Filesystem state:         clean" in out
    fsck(img)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BURROW_SOAK"), reason="soak: make soak (BURROW_SOAK=1)")
def test_100k_entry_directory(tmp_path: Path) -> None:
    """100k names in one directory: e2fsck-clean, indexed, and each lookup reads only the few
    blocks of its index path (a linear scan would read the directory's thousands of blocks)."""
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(256 << 20)
    with RawDevice(img, readonly=False) as dev:
        from burrow.fs.ext4.mkfs import mkfs

        mkfs(dev, inode_ratio=2048)
    with writable(img) as fs:
        d = fs.mkdir(fs.root_ino, "d", 0o755)
        for i in range(100_000):
            fs.create(d, f"file-{i:06d}", 0o644)
    fsck(img)
    with readable(img) as fs:
        d = fs.lookup(fs.root_ino, "d")
        assert fs.getattr(d).st_size > 1000 * fs.block_size  # type: ignore[attr-defined]
        for i in range(0, 100_000, 997):
            fs.invalidate_all()  # type: ignore[attr-defined]
            before = fs.statistics()["metadata_block_reads"]  # type: ignore[attr-defined]
            fs.lookup(d, f"file-{i:06d}")
            reads = fs.statistics()["metadata_block_reads"] - before  # type: ignore[attr-defined]
            assert 1 <= reads <= 8, f"lookup of file-{i:06d} read {reads} blocks"


def test_tiny_memory_limits_flush_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the in-memory limits tiny, state is packed, written below and forgotten between
    operations all the time; the result must be the same."""
    from burrow.fs.ext4 import writer

    monkeypatch.setattr(writer, "MAX_DIRTY_INODES", 5)
    monkeypatch.setattr(writer, "MAX_CACHED_BLOCKS", 8)
    monkeypatch.setattr(writer, "MAX_WINODES", 4)
    monkeypatch.setattr(writer, "MAX_WDIRS", 2)
    img = make_image(tmp_path / "fs.img", "tool-ext4", 48 << 20)
    with writable(img) as fs:
        data = _populate(fs)
        d = fs.mkdir(fs.root_ino, "many", 0o755)
        for k in range(600):
            f = fs.create(d, f"file-{k:04d}", 0o644)
            fs.write(f, 0, b"%d" % k)
        for k in range(0, 600, 7):
            fs.unlink(d, f"file-{k:04d}")
        before = dump(fs)
    fsck(img)
    with readable(img) as fs:
        assert dump(fs) == before
        assert fs.read(resolve(fs, "/dir/sub/big"), 0, 3_000_000) == data["big"]


def test_bad_checksums_refused_unless_ignored(tmp_path: Path) -> None:
    """The writer verifies what it loads itself (inodes, directory blocks, extent and xattr
    blocks) instead of silently re-checksumming damaged metadata."""
    img = make_image(tmp_path / "fs.img", "tool-ext4", 16 << 20)
    with writable(img) as fs:
        d = fs.mkdir(fs.root_ino, "d", 0o755)
        for k in range(5):
            fs.create(d, f"entry-{k}", 0o644)
        f = fs.create(fs.root_ino, "f", 0o644)
        fs.setxattr(f, "user.big", b"B" * 500)
        fs.setxattr(f, "user.big2", b"C" * 300)  # spills into an xattr block
    bs = 1024

    def block_of(path: str) -> int:
        out = subprocess.run(["debugfs", "-R", f"bmap {path} 0", str(img)], capture_output=True,
                             text=True).stdout  # fmt: skip
        return int(out.split()[0])

    good = img.read_bytes()
    bad = bytearray(good)
    dblk = block_of("/d")
    bad[dblk * bs + 34] ^= 0x20  # a byte inside a name: structure fine, checksum wrong
    img.write_bytes(bytes(bad))
    with RawDevice(img, readonly=False) as dev:
        fs = open_ext4(dev, readonly=False)
        with pytest.raises(CorruptImage):
            fs.create(fs.lookup(fs.root_ino, "d"), "more", 0o644)
        fs.close()
    with RawDevice(img, readonly=False) as dev:
        fs = open_ext4(dev, readonly=False, ignore_checksums=True)
        fs.create(fs.lookup(fs.root_ino, "d"), "more", 0o644)
        fs.close()
    img.write_bytes(good)
    out = subprocess.run(["debugfs", "-R", "stat /f", str(img)], capture_output=True, text=True)
    acl = int(out.stdout.split("File ACL: ")[1].split()[0])
    bad = bytearray(good)
    bad[acl * bs + bs - 10] ^= 1  # inside a value
    img.write_bytes(bytes(bad))
    with RawDevice(img, readonly=False) as dev:
        fs = open_ext4(dev, readonly=False)
        with pytest.raises(CorruptImage):
            fs.setxattr(fs.lookup(fs.root_ino, "f"), "user.x", b"1")
        fs.close()


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BURROW_SOAK"), reason="soak: make soak (BURROW_SOAK=1)")
def test_large_dir_three_level_htree(tmp_path: Path) -> None:
    """With large_dir on 1 KiB blocks and long names the index grows to three levels."""
    from burrow.fs.ext4.mkfs import mkfs

    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(200 << 20)
    with RawDevice(img, readonly=False) as dev:
        mkfs(dev, block_size=1024, features="large_dir", inode_ratio=2048)
    with writable(img) as fs:
        d = fs.mkdir(fs.root_ino, "d", 0o755)
        for i in range(60_000):
            fs.create(d, f"{i:06d}-" + "L" * 200, 0o644)
    fsck(img)
    out = subprocess.run(["debugfs", "-R", "htree /d", str(img)], capture_output=True, text=True)
    assert "Indirect levels: 2" in out.stdout
    with readable(img) as fs:
        d = fs.lookup(fs.root_ino, "d")
        assert fs.lookup(d, "012345-" + "L" * 200)


@pytest.mark.timeout(60)
def test_run_search_with_nothing_free_after_the_goal(tmp_path: Path) -> None:
    """Regression: the allocator's run search looped forever when every block from the start
    offset to the end of the group was in use and a free run lay before it (a FUSE mount
    hung on an append). The search must give up on that group (or find the earlier run)."""
    img = make_image(tmp_path / "fs.img", "ours-ext4", 8 << 20)
    with writable(img) as fs:
        alloc = fs.alloc  # type: ignore[attr-defined]
        n = alloc.group_len(0)
        group = alloc.groups[0]
        alloc.block_map(0)
        saved = group.bmap
        # used everywhere except a 3-block hole at 100..102
        group.bmap = ((1 << n) - 1) & ~(0b111 << 100)
        try:
            for start in (n - 10, 200, 103):
                hit = alloc._longest_in_group(0, start, 8)
                assert hit is None or hit[0] < start
        finally:
            group.bmap = saved
    fsck(img)


@pytest.mark.timeout(60)
def test_append_when_free_space_lies_only_before_the_goal(tmp_path: Path) -> None:
    """Regression: the allocator's run search looped forever when every block from the goal
    to the end of the group was in use (a FUSE mount hung on an append)."""
    img = make_image(tmp_path / "fs.img", "ours-ext4", 8 << 20)
    with writable(img) as fs:
        early = fs.create(fs.root_ino, "early", 0o644)
        fs.write(early, 0, os.urandom(256 << 10))
        big = fs.create(fs.root_ino, "big", 0o644)
        size = 0
        for step in (64 << 10, 4 << 10, 1 << 10):  # fill every last block
            chunk = os.urandom(step)
            with pytest.raises(NoSpace):
                while True:
                    fs.write(big, size, chunk)
                    size += len(chunk)
        assert fs.statfs().f_bavail == 0
        fs.unlink(fs.root_ino, "early")
        tail = os.urandom(128 << 10)
        fs.write(big, size, tail)
        assert fs.read(big, size, len(tail)) == tail
    fsck(img)
