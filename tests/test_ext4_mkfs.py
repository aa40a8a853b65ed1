"""burrow's pure-Python mkfs for ext2/ext3/ext4, checked against e2fsprogs and the kernel."""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from burrow.block.filters.readonly import ReadOnlyFilter
from burrow.block.memory import MemoryDevice
from burrow.block.raw import RawDevice
from burrow.errors import InvalidArgument, NoSpace, ReadOnly, Unsupported
from burrow.fs.ext4.mkfs import compute_layout, default_journal_blocks, mkfs
from ext4_write_helpers import dump, fsck, readable

pytestmark = pytest.mark.tool("e2fsck", "dumpe2fs", "mkfs.ext4")

GEOMETRY = [
    "Block count",
    "Inode count",
    "Block size",
    "Inode size",
    "Free blocks",
    "Free inodes",
    "Blocks per group",
    "Inodes per group",
    "Reserved block count",
    "Total journal size",
    "Filesystem features",
    "Flex block group size",
]


def dumpe2fs(path: Path) -> dict[str, str]:
    out = subprocess.run(["dumpe2fs", "-h", str(path)], capture_output=True, text=True).stdout
    info: dict[str, str] = {}
    for line in out.splitlines():
        k, _, v = line.partition(":")
        info[k.strip()] = v.strip()
    return info


def ours(path: Path, size: int, **kw: object) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    dev = RawDevice(path, readonly=False)
    try:
        mkfs(dev, **kw)  # type: ignore[arg-type]
    finally:
        dev.close()
    return path


def tool(path: Path, size: int, fstype: str, *opts: str) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(
        [f"mkfs.{fstype}", "-q", "-F", "-O", "^resize_inode", *opts, str(path)],
        check=True,
        capture_output=True,
    )
    return path


@pytest.mark.parametrize(
    ("size", "fstype"),
    [
        (2 << 20, "ext4"),
        (64 << 20, "ext4"),
        (700 << 20, "ext4"),
        (6 << 30, "ext4"),
        (64 << 20, "ext3"),
        (64 << 20, "ext2"),
        (1 << 30, "ext3"),
    ],
)
def test_same_geometry_as_mke2fs(tmp_path: Path, size: int, fstype: str) -> None:
    """Our defaults equal mke2fs's (without resize_inode, which we never build)."""
    a = dumpe2fs(tool(tmp_path / "tool.img", size, fstype))
    b = dumpe2fs(ours(tmp_path / "ours.img", size, fstype=fstype))
    fsck(tmp_path / "ours.img")
    for key in GEOMETRY:
        assert a.get(key) == b.get(key), key


VARIANTS = [
    {},
    {"fstype": "ext2"},
    {"fstype": "ext3"},
    {"block_size": 1024},
    {"block_size": 4096},
    {"block_size": 2048, "inode_size": 512},
    {"inode_size": 128},
    {"features": "^metadata_csum"},
    {"features": "^metadata_csum,uninit_bg"},
    {"features": "^flex_bg"},
    {"features": "^64bit"},
    {"features": ["inline_data", "large_dir"]},
    {"features": "^has_journal"},
    {"fstype": "ext3", "block_size": 4096},
    {"label": "burrow-root", "uuid": "12345678-1234-5678-1234-567812345678"},
]


@pytest.mark.parametrize(
    "kw", VARIANTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default"
)
def test_variants_fsck_clean_and_counts_agree(tmp_path: Path, kw: dict[str, object]) -> None:
    img = ours(tmp_path / "fs.img", 96 << 20, **kw)
    fsck(img)
    info = dumpe2fs(img)
    with readable(img) as fs:
        sf = fs.statfs()
        fi = fs.info()
        assert dump(fs) == {}
        names = {e.name for e in fs.readdir(fs.root_ino)}
    assert names == {"lost+found"}
    assert int(info["Free blocks"]) == sf.f_bfree
    assert int(info["Free inodes"]) == sf.f_ffree
    assert int(info["Block count"]) == fi.extra["blocks_count"]
    assert set(info["Filesystem features"].split()) == set(fi.features)
    if "label" in kw:
        assert info["Filesystem volume name"] == kw["label"]
        assert info["Filesystem UUID"] == kw["uuid"]
    if kw.get("fstype") == "ext2" or kw.get("features") == "^has_journal":
        assert "has_journal" not in fi.features
    else:
        assert "has_journal" in fi.features
    if kw.get("fstype") in ("ext2", "ext3"):
        assert "extent" not in fi.features
    debugfs = subprocess.run(
        ["debugfs", "-R", "stats", str(img)], capture_output=True, text=True
    ).stdout
    assert f"Free blocks:              {sf.f_bfree}" in debugfs


def test_journal_sizes_follow_the_e2fsprogs_table() -> None:
    assert default_journal_blocks(1000) == 0
    assert default_journal_blocks(20000) == 1024
    assert default_journal_blocks(262144) == 8192
    assert default_journal_blocks(100 << 20) == 262144
    lay = compute_layout(8 << 30)
    assert lay.journal_blocks == 16384 and lay.block_size == 4096


def test_large_sparse_filesystem(tmp_path: Path) -> None:
    """64bit with many groups and a journal needing an extent index block."""
    img = ours(tmp_path / "big.img", 40 << 30, journal_blocks=262144)
    fsck(img)
    info = dumpe2fs(img)
    assert info["Total journal size"] == "1024M"
    stat = subprocess.run(["debugfs", "-R", "stat <8>", str(img)], capture_output=True, text=True)
    assert "(ETB0)" in stat.stdout  # the journal's extent tree has an index level


def test_bad_requests_write_nothing() -> None:
    tiny = MemoryDevice(32 << 10)
    with pytest.raises(NoSpace):
        mkfs(tiny)
    assert tiny.pread(4096, 0) == bytes(4096)
    big = MemoryDevice(8 << 20)
    with pytest.raises(Unsupported):
        mkfs(big, features="bigalloc")
    with pytest.raises(InvalidArgument):
        mkfs(big, features="no_such_feature")
    with pytest.raises(InvalidArgument):
        mkfs(big, fstype="ext5")
    with pytest.raises(InvalidArgument):
        mkfs(big, block_size=3000)
    with pytest.raises(InvalidArgument):
        mkfs(big, label="x" * 17)
    assert big.pread(4096, 0) == bytes(4096)
    with pytest.raises(ReadOnly):
        mkfs(ReadOnlyFilter(big))


def test_memory_device_and_fixed_identity(tmp_path: Path) -> None:
    dev = MemoryDevice(16 << 20)
    u = uuid.UUID("0f0e0d0c-0b0a-0908-0706-050403020100")
    mkfs(dev, uuid=u, label="mem", now_ns=1_700_000_000 * 10**9, hash_seed=u)
    img = tmp_path / "mem.img"
    img.write_bytes(dev.pread(dev.size, 0))
    fsck(img)
    info = dumpe2fs(img)
    assert info["Filesystem UUID"] == str(u)
    assert info["Filesystem volume name"] == "mem"


@pytest.mark.root
@pytest.mark.parametrize("kw", [{}, {"fstype": "ext2"}, {"fstype": "ext3"}, {"block_size": 4096}])
def test_kernel_mounts_and_writes_read_back(tmp_path: Path, kw: dict[str, object]) -> None:
    img = ours(tmp_path / "fs.img", 64 << 20, **kw)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        (mnt / "d").mkdir()
        (mnt / "d" / "f.txt").write_bytes(b"kernel wrote this\n")
        (mnt / "big").write_bytes(os.urandom(1 << 20))
        os.symlink("d/f.txt", mnt / "ln")
        os.setxattr(mnt / "d" / "f.txt", "user.k", b"v")
        expect_big = (mnt / "big").read_bytes()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    fsck(img)
    with readable(img) as fs:
        tree = dump(fs)
    assert tree["/d/f.txt"][2] == b"kernel wrote this\n"
    assert tree["/d/f.txt"][3] == {"user.k": b"v"}
    assert tree["/big"][2] == expect_big
    assert tree["/ln"] == ("link", "d/f.txt")


def _burrow(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "burrow", *args], capture_output=True, text=True)


def _host_tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("burrow\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(os.urandom(70_000))
    os.chmod(root / "bin" / "tool", 0o4755)
    os.symlink("../etc/hostname", root / "bin" / "ln")
    os.link(root / "etc" / "hostname", root / "hard")
    with open(root / "sparse", "wb") as f:
        f.seek(3_000_000)
        f.write(b"end")
    os.setxattr(root / "etc" / "hostname", "user.origin", b"host")
    os.mkfifo(root / "fifo")
    os.utime(root / "etc" / "hostname", ns=(1_500_000_000_000_000_000, 1_400_000_000_123_456_789))
    return root


def test_cli_from_directory(tmp_path: Path) -> None:
    src = _host_tree(tmp_path / "src")
    img = tmp_path / "fs.img"
    proc = _burrow("mkfs", "ext4", str(img), "--size", "64M", "--label", "cli", "--from", str(src))
    assert proc.returncode == 0, proc.stderr
    fsck(img)
    with readable(img) as fs:
        tree = dump(fs)
        h = fs.lookup(fs.lookup(fs.root_ino, "etc"), "hostname")
        st = fs.getattr(h)
        assert st.st_mtime_ns == 1_400_000_000_123_456_789
        sp = fs.getattr(fs.lookup(fs.root_ino, "sparse"))
        assert sp.st_size == 3_000_003 and sp.st_blocks < 64
        assert fs.info().label == "cli"
    assert tree["/etc/hostname"] == ("file", 0o644, b"burrow\n", {"user.origin": b"host"}, 2)
    assert tree["/bin/tool"][1] == 0o4755
    assert tree["/bin/ln"] == ("link", "../etc/hostname")
    assert tree["/fifo"][0] == "node"


def test_cli_from_tar_sets_owners_and_devices_without_root(tmp_path: Path) -> None:
    import io
    import tarfile

    tarpath = tmp_path / "root.tar.gz"
    with tarfile.open(tarpath, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        for name, kind in (("dev", tarfile.DIRTYPE), ("home/user", tarfile.DIRTYPE)):
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mode = 0o755
            tf.addfile(ti)
        ti = tarfile.TarInfo("dev/null")
        ti.type = tarfile.CHRTYPE
        ti.devmajor, ti.devminor, ti.mode = 1, 3, 0o666
        tf.addfile(ti)
        ti = tarfile.TarInfo("dev/sda")
        ti.type = tarfile.BLKTYPE
        ti.devmajor, ti.devminor, ti.mode = 8, 0, 0o660
        tf.addfile(ti)
        data = b"secret\n"
        ti = tarfile.TarInfo("home/user/notes")
        ti.size, ti.mode, ti.uid, ti.gid, ti.mtime = len(data), 0o600, 1000, 1000, 1234567890
        ti.pax_headers = {"SCHILY.xattr.user.tag": "blue"}
        tf.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("home/user/again")
        ti.type, ti.linkname = tarfile.LNKTYPE, "home/user/notes"
        tf.addfile(ti)
        ti = tarfile.TarInfo("implied/dir/file")  # parents missing from the archive
        ti.size = 0
        tf.addfile(ti, io.BytesIO(b""))
    img = tmp_path / "fs.img"
    proc = _burrow("mkfs", "ext3", str(img), "--size", "32M", "--from", str(tarpath),
                   "--owner-map", "1000:0")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    fsck(img)
    with readable(img) as fs:
        dev = fs.lookup(fs.root_ino, "dev")
        null = fs.getattr(fs.lookup(dev, "null"))
        sda = fs.getattr(fs.lookup(dev, "sda"))
        assert null.st_rdev == os.makedev(1, 3) and stat.S_ISCHR(null.st_mode)
        assert sda.st_rdev == os.makedev(8, 0) and stat.S_ISBLK(sda.st_mode)
        user = fs.lookup(fs.lookup(fs.root_ino, "home"), "user")
        notes = fs.lookup(user, "notes")
        st = fs.getattr(notes)
        assert (st.st_uid, st.st_gid, st.st_nlink) == (0, 0, 2)
        assert st.st_mtime_ns == 1234567890 * 10**9
        assert fs.read(notes, 0, 100) == b"secret\n"
        assert fs.getxattr(notes, "user.tag") == b"blue"
        assert fs.lookup(user, "again") == notes
        resolve_implied = fs.lookup(fs.lookup(fs.lookup(fs.root_ino, "implied"), "dir"), "file")
        assert resolve_implied


def test_cli_bad_source_formats_nothing(tmp_path: Path) -> None:
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    bogus = tmp_path / "not-a-tar"
    bogus.write_bytes(b"hello")
    proc = _burrow("mkfs", "ext4", str(img), "--from", str(bogus))
    assert proc.returncode != 0
    assert img.read_bytes() == bytes(16 << 20)
    proc = _burrow("mkfs", "ext4", str(img), "--from", str(tmp_path / "missing"))
    assert proc.returncode != 0
    assert img.read_bytes() == bytes(16 << 20)


@pytest.mark.root
def test_cli_from_directory_kernel_view(tmp_path: Path) -> None:
    from ext4_write_helpers import host_dump

    src = _host_tree(tmp_path / "src")
    os.chown(src / "bin" / "tool", 123, 456)
    os.chmod(src / "bin" / "tool", 0o4755)  # chown cleared the setuid bit
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    img = tmp_path / "fs.img"
    assert _burrow("mkfs", "ext4", str(img), "--size", "64M", "--from", str(src)).returncode == 0
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop,ro", str(img), str(mnt)], check=True)
    try:
        assert host_dump(mnt) == host_dump(src)
        k = os.lstat(mnt / "bin" / "tool")
        assert (k.st_uid, k.st_gid, k.st_mode) == (123, 456, 0o104755)
        assert os.lstat(mnt / "null").st_rdev == os.makedev(1, 3)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.root
@pytest.mark.parametrize(
    "kw", VARIANTS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default"
)
def test_every_variant_mounts(tmp_path: Path, kw: dict[str, object]) -> None:
    img = ours(tmp_path / "fs.img", 48 << 20, **kw)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        assert sorted(os.listdir(mnt)) == ["lost+found"]
        (mnt / "probe").write_bytes(b"p" * 10000)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    fsck(img)


@pytest.mark.tool("tar")
def test_from_gnu_tar_keeps_nanosecond_times_and_binary_xattrs(tmp_path: Path) -> None:
    """A `tar --format=posix` archive of a real tree: times to the nanosecond, raw xattr bytes.

    tarfile's own ``mtime`` is a float (about 7 digits after the point today), so nanoseconds
    came out wrong before the pax string was parsed exactly.
    """
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    f = src / "dir" / "file"
    f.write_bytes(b"data\n")
    times = {
        f: (1795572985_940037299, 1795572985_940090710),
        src / "dir": (1700000000_123456789, 1700000000_999999999),
    }
    for p, (at, mt) in times.items():
        os.utime(p, ns=(at, mt))
    raw = bytes(range(256))
    try:
        os.setxattr(f, "user.raw", raw)
    except OSError:
        pytest.skip("no user xattrs on the temporary directory")
    os.utime(src / "dir", ns=times[src / "dir"])
    tarpath = tmp_path / "src.tar"
    subprocess.run(["tar", "--format=posix", "--xattrs", "--xattrs-include=*", "-cf", str(tarpath),
                    "-C", str(src), "."], check=True)  # fmt: skip
    img = tmp_path / "fs.img"
    proc = _burrow("mkfs", "ext4", str(img), "--size", "16M", "--from", str(tarpath))
    assert proc.returncode == 0, proc.stderr
    fsck(img)
    with readable(img) as fs:
        d = fs.lookup(fs.root_ino, "dir")
        ino = fs.lookup(d, "file")
        for node, p in ((ino, f), (d, src / "dir")):
            st, host = fs.getattr(node), os.lstat(p)
            assert st.st_mtime_ns == host.st_mtime_ns
        assert fs.getxattr(ino, "user.raw") == raw


@pytest.mark.tool("tar", "debugfs")
@pytest.mark.parametrize("fmt", ["posix", "gnu"])
def test_from_sparse_tar_leaves_holes(tmp_path: Path, fmt: str) -> None:
    """`tar -S` members (and zeros inside data chunks) become holes, block by block."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(3000)
    with open(src / "s", "wb") as f:
        f.seek(10 << 20)
        f.write(data)
        f.seek((10 << 20) + 70000)  # same 8 MiB read chunk, a few blocks further
        f.write(data)
        f.seek(30 << 20)
        f.write(b"end")
    (src / "dense").write_bytes(os.urandom(200_000) + bytes(100_000) + os.urandom(5))
    tarpath = tmp_path / "src.tar"
    subprocess.run(["tar", "-S", f"--format={fmt}", "-cf", str(tarpath), "-C", str(src), "."],
                   check=True)  # fmt: skip
    img = tmp_path / "fs.img"
    proc = _burrow("mkfs", "ext4", str(img), "--size", "64M", "--from", str(tarpath))
    assert proc.returncode == 0, proc.stderr
    fsck(img)
    for name, most in (("s", 3), ("dense", 50 + 25)):  # data blocks (4 KiB) at most
        out = subprocess.run(["debugfs", "-R", f"stat /{name}", str(img)], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
        blockcount = int(out.split("Blockcount:")[1].split()[0])  # 512-byte units
        assert blockcount * 512 <= most * 4096, (name, blockcount)
        dumped = tmp_path / f"{name}.out"
        subprocess.run(["debugfs", "-R", f"dump /{name} {dumped}", str(img)], check=True,
                       capture_output=True)  # fmt: skip
        assert dumped.read_bytes() == (src / name).read_bytes()
