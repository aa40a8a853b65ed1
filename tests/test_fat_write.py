"""Writing FAT12/16/32: every test ends with ``fsck.fat -n`` clean and mtools seeing our tree."""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.fat_helpers import assert_fats_identical, fs_tree, fsck_clean, mtools_tree, tool
from tests.images import make_fat

from burrow.block.raw import RawDevice
from burrow.errors import (
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
    NotSupported,
    ReadOnly,
)
from burrow.fs.fat import ATTRS_XATTR, FatFilesystem, open_fat
from burrow.fs.fat.mkfs import mkfs
from burrow.fs.vfs import RENAME_EXCHANGE, RENAME_NOREPLACE

pytestmark = pytest.mark.tool("mkfs.fat", "mcopy", "fsck.fat", "mdir")

SIZES = {12: 1440, 16: 32768, 32: 65536}


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("MTOOLS_SKIP_CHECK", "1")


@pytest.fixture(params=[12, 16, 32])
def image(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    bits = int(request.param)
    return make_fat(
        tmp_path / f"fat{bits}.img",
        None,
        size_kib=SIZES[bits],
        fat_bits=None if bits == 12 else bits,
    )


class Opened:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.dev = RawDevice(path, readonly=False)
        self.fs: FatFilesystem = open_fat(self.dev, readonly=False)

    def close(self) -> None:
        self.fs.close()
        self.dev.close()


@pytest.fixture
def opened(image: Path) -> Iterator[Opened]:
    o = Opened(image)
    yield o
    o.close()


def _check(o: Opened, tmp_path: Path) -> dict[str, bytes | None]:
    """Close, then fsck.fat -n and mtools must agree with what we read back."""
    o.close()
    fsck_clean(o.path)
    assert_fats_identical(o.path)
    with RawDevice(o.path) as dev, open_fat(dev) as fs:
        ours = fs_tree(fs)
    assert mtools_tree(o.path, tmp_path / "mt") == ours
    return ours


def _write_file(fs: FatFilesystem, parent: int, name: str, data: bytes) -> int:
    ino = fs.create(parent, name, 0o644)
    assert fs.write(ino, 0, data) == len(data)
    return ino


def test_populate_tree(opened: Opened, tmp_path: Path) -> None:
    fs = opened.fs
    root = fs.root_ino
    big = os.urandom(200_000)
    _write_file(fs, root, "readme.txt", b"hello\n")
    _write_file(fs, root, "Mixed Case Long Name.Text", b"long\n")
    _write_file(fs, root, "caf\u00e9 \u540d\u524d \u00fcml\u00e4ut.txt", b"unicode\n")
    _write_file(fs, root, "empty", b"")
    _write_file(fs, root, "big.bin", big)
    sub = fs.mkdir(root, "Sub Directory", 0o755)
    deeper = fs.mkdir(sub, "deeper", 0o755)
    _write_file(fs, deeper, "leaf.txt", b"leaf\n")
    many = fs.mkdir(root, "many", 0o755)
    for i in range(120):  # several clusters of directory entries
        _write_file(fs, many, f"a rather long file name number {i:03d}.data", bytes([i]) * i)
    tree = _check(opened, tmp_path)
    assert tree["/big.bin"] == big
    assert tree["/Sub Directory/deeper/leaf.txt"] == b"leaf\n"
    assert tree["/caf\u00e9 \u540d\u524d \u00fcml\u00e4ut.txt"] == b"unicode\n"
    assert tree["/many/a rather long file name number 077.data"] == bytes([77]) * 77
    # short names: lower-case 8.3 stays an 8.3 entry with case flags, long ones get ~N
    listing = tool("mdir", "-i", opened.path, "::/").stdout
    assert "readme   txt" in listing
    assert "MIXEDC~1 TEX" in listing
    assert "Sub Directory" in listing


def test_sparse_writes_truncate_and_overwrite(opened: Opened, tmp_path: Path) -> None:
    fs = opened.fs
    ino = fs.create(fs.root_ino, "sparse", 0o644)
    fs.write(ino, 100_000, b"tail")
    assert fs.read(ino, 0, 100_004) == bytes(100_000) + b"tail"
    fs.write(ino, 10, b"middle")
    fs.setattr(ino, size=50)  # shrink
    fs.setattr(ino, size=9000)  # grow again: zeros, not the old bytes
    expected = bytes(10) + b"middle" + bytes(9000 - 16)
    assert fs.read(ino, 0, 10_000) == expected
    t = fs.create(fs.root_ino, "to-zero", 0o644)
    fs.write(t, 0, b"x" * 5000)
    fs.setattr(t, size=0)
    assert fs.getattr(t).st_size == 0
    tree = _check(opened, tmp_path)
    assert tree["/sparse"] == expected
    assert tree["/to-zero"] == b""


def test_unlink_rmdir_and_free_space(opened: Opened, tmp_path: Path) -> None:
    fs = opened.fs
    root = fs.root_ino
    free0 = fs.statfs().f_bfree
    d = fs.mkdir(root, "dir", 0o755)
    _write_file(fs, d, "inner file with long name", os.urandom(70_000))
    with pytest.raises(NotEmpty):
        fs.rmdir(root, "dir")
    with pytest.raises(IsADirectory):
        fs.unlink(root, "dir")
    with pytest.raises(NotADirectory):
        fs.rmdir(d, "INNER FILE WITH LONG NAME")
    fs.unlink(d, "INNER FILE WITH LONG NAME")  # case-insensitive, like vfat
    fs.rmdir(root, "DIR")
    with pytest.raises(NotFound):
        fs.lookup(root, "dir")
    assert fs.statfs().f_bfree == free0
    _write_file(fs, root, "kept", b"k")
    tree = _check(opened, tmp_path)
    assert tree == {"/kept": b"k"}


def test_rename(opened: Opened, tmp_path: Path) -> None:
    fs = opened.fs
    root = fs.root_ino
    a = fs.mkdir(root, "a", 0o755)
    b = fs.mkdir(root, "b", 0o755)
    moved = fs.mkdir(a, "moved directory", 0o755)
    f = _write_file(fs, moved, "file.txt", b"content")
    fs.rename(a, "moved directory", b, "Renamed Directory")  # across dirs: '..' fixed
    assert fs.lookup(b, "renamed directory") == moved  # same inode number after the move
    assert fs.lookup(moved, "..") == b
    assert fs.lookup(moved, "file.txt") == f
    _write_file(fs, root, "x", b"old target")
    _write_file(fs, root, "y", b"new content")
    with pytest.raises(Exists):
        fs.rename(root, "y", root, "X", RENAME_NOREPLACE)
    fs.rename(root, "y", root, "x")  # replaces the target
    fs.rename(root, "x", root, "X")  # case-only rename of the same entry
    with pytest.raises(InvalidOperation):
        fs.rename(root, "b", moved, "loop")
    with pytest.raises(IsADirectory):
        fs.rename(root, "X", root, "a")
    with pytest.raises(NotADirectory):
        fs.rename(root, "a", root, "X")
    e = fs.mkdir(root, "empty target", 0o755)
    fs.rename(root, "a", root, "empty target")  # replaces an empty directory
    assert fs.lookup(root, "empty target") != e
    tree = _check(opened, tmp_path)
    assert tree["/X"] == b"new content"
    assert tree["/b/Renamed Directory/file.txt"] == b"content"
    assert "/y" not in tree and "/a" not in tree
    assert tree["/empty target"] is None


def test_refusals(opened: Opened, tmp_path: Path) -> None:
    fs = opened.fs
    root = fs.root_ino
    f = _write_file(fs, root, "file", b"1")
    with pytest.raises(NotPermitted) as ei:
        fs.symlink(root, "link", "file")
    assert ei.value.errno == errno.EPERM
    with pytest.raises(NotPermitted):
        fs.link(f, root, "hard")
    with pytest.raises(NotPermitted):
        fs.mknod(root, "dev", stat.S_IFCHR | 0o644, 0x0101)
    with pytest.raises(NotPermitted):
        fs.setattr(f, uid=1000)
    fs.setattr(f, uid=0, gid=0)  # the owner FAT reports: accepted as a no-op
    with pytest.raises(Exists):
        fs.create(root, "FILE", 0o644)
    with pytest.raises(Exists):
        fs.mkdir(root, "File", 0o755)
    for bad in ("a:b", "q?", "star*", "back\\slash", "ctl\x01", "", ".."):
        with pytest.raises(InvalidArgument):
            fs.create(root, bad, 0o644)
    with pytest.raises(NameTooLong):
        fs.create(root, "n" * 256, 0o644)
    fs.create(root, "n" * 255, 0o644)
    with pytest.raises(NotSupported):
        fs.setxattr(f, "user.other", b"x")
    _check(opened, tmp_path)


def test_attributes_mode_and_xattr(opened: Opened, tmp_path: Path) -> None:
    fs = opened.fs
    root = fs.root_ino
    f = _write_file(fs, root, "ro.txt", b"r")
    assert fs.getattr(f).st_mode == stat.S_IFREG | 0o644
    fs.setattr(f, mode=0o444)
    assert fs.getattr(f).st_mode == stat.S_IFREG | 0o444
    assert int(fs.getxattr(f, ATTRS_XATTR), 0) == 0x21  # archive + read-only
    h = _write_file(fs, root, "hidden.txt", b"h")
    fs.setxattr(h, ATTRS_XATTR, b"0x26")  # hidden + system + archive
    with pytest.raises(InvalidArgument):
        fs.setxattr(h, ATTRS_XATTR, b"0x10")  # cannot make a file a directory
    ro_new = fs.create(root, "created-ro", 0o444)
    assert fs.getattr(ro_new).st_mode & 0o222 == 0
    d = fs.mkdir(root, "folder", 0o555)  # directories never carry read-only (vfat: no rodir)
    assert fs.getattr(d).st_mode == stat.S_IFDIR | 0o755
    fs.setxattr(d, ATTRS_XATTR, b"0x11")  # Windows' "customised folder" marker
    assert fs.getattr(d).st_mode == stat.S_IFDIR | 0o755
    assert fs.getxattr(d, ATTRS_XATTR) == b"0x11"
    with pytest.raises(IsADirectory):
        fs.read(root, 0, 1)
    with pytest.raises(IsADirectory):
        fs.write(d, 0, b"x")
    _check(opened, tmp_path)
    attrib = tool("mattrib", "-i", opened.path, "::/ro.txt", "::/hidden.txt").stdout
    lines = {line.split("::/")[1].strip(): line.split("::/")[0] for line in attrib.splitlines()}
    assert "R" in lines["ro.txt"] and "A" in lines["ro.txt"]
    assert "H" in lines["hidden.txt"] and "S" in lines["hidden.txt"]
    assert "R" not in lines["hidden.txt"]


def test_times(opened: Opened, tmp_path: Path) -> None:
    fs = opened.fs
    f = _write_file(fs, fs.root_ino, "t", b"t")
    mtime = 1_700_000_001_234_567_890  # 2023-11-14 22:13:21.23 UTC
    st = fs.setattr(f, mtime_ns=mtime, atime_ns=mtime)
    assert st.st_mtime_ns == 1_700_000_000 * 10**9  # 2-second resolution, rounded down
    assert st.st_atime_ns == 1_699_920_000 * 10**9  # access: the date only
    st = fs.setattr(f, mtime_ns=0)  # before 1980: clamped
    assert st.st_mtime_ns == 315_532_800 * 10**9
    st = fs.setattr(f, mtime_ns=5_000_000_000 * 10**9)  # after 2107: clamped
    assert st.st_mtime_ns == 4_354_819_198 * 10**9
    fs.setattr(f, mtime_ns=mtime)
    _check(opened, tmp_path)
    listing = tool("mdir", "-i", opened.path, "::/T").stdout
    assert "2023-11-14" in listing and "22:13" in listing


def test_dirty_flag_and_fsinfo(tmp_path: Path) -> None:
    img = make_fat(tmp_path / "f32.img", None, size_kib=65536, fat_bits=32)
    raw = img.read_bytes()
    fat_off = struct.unpack_from("<H", raw, 14)[0] * 512
    fsinfo_free = struct.unpack_from("<I", raw, 512 + 488)[0]
    # make FSInfo lie
    with open(img, "r+b") as f:
        f.seek(512 + 488)
        f.write(struct.pack("<I", 12345))
    o = Opened(img)
    assert o.fs.statfs().f_bfree == fsinfo_free  # recounted, not trusted
    assert struct.unpack_from("<I", img.read_bytes(), fat_off + 4)[0] & 0x08000000  # clean
    _write_file(o.fs, o.fs.root_ino, "f", b"x" * 10_000)
    entry1 = struct.unpack_from("<I", img.read_bytes(), fat_off + 4)[0]
    assert not entry1 & 0x08000000  # dirty while mounted read-write
    o.close()
    data = img.read_bytes()
    assert struct.unpack_from("<I", data, fat_off + 4)[0] & 0x08000000  # clean again
    free_after = struct.unpack_from("<I", data, 512 + 488)[0]
    assert free_after == fsinfo_free - 20  # 10 000 bytes in 512-byte clusters
    fsck_clean(img)


def test_read_only_open_writes_nothing(image: Path) -> None:
    before = image.read_bytes()
    with RawDevice(image) as dev, open_fat(dev) as fs:
        fs_tree(fs)
        fs.statfs()
        with pytest.raises(ReadOnly):
            fs.mkdir(fs.root_ino, "x", 0o755)
    with RawDevice(image, readonly=False) as dev, open_fat(dev, readonly=False) as fs:
        fs_tree(fs)  # read-write open without changes writes nothing either
    assert image.read_bytes() == before


def test_fixed_root_full_and_disk_full(tmp_path: Path) -> None:
    img = make_fat(tmp_path / "floppy.img", None, size_kib=1440)
    o = Opened(img)
    fs = o.fs
    with pytest.raises(NoSpace):
        for i in range(300):  # 224 root slots, 3 per long name
            fs.create(fs.root_ino, f"long name number {i}", 0o644)
    d = fs.mkdir(fs.root_ino, "d", 0o755) if fs.statfs().f_bfree else None
    assert d is None or d > 1
    names = [e.name for e in fs.readdir(fs.root_ino)]
    ino = fs.lookup(fs.root_ino, names[0])
    with pytest.raises(NoSpace):
        fs.write(ino, 0, bytes(2 * 1024 * 1024))
    fs.setattr(ino, size=0)
    fs.write(ino, 0, b"fits")
    o.close()
    fsck_clean(img)


def test_pinned_unlink_keeps_data_until_unpin(opened: Opened, tmp_path: Path) -> None:
    fs = opened.fs
    free0 = fs.statfs().f_bfree
    ino = _write_file(fs, fs.root_ino, "open file", b"z" * 30_000)
    fs.pin(ino)
    fs.unlink(fs.root_ino, "open file")
    assert fs.read(ino, 0, 10) == b"z" * 10
    assert fs.getattr(ino).st_nlink == 0
    assert fs.statfs().f_bfree < free0
    fs.unpin(ino)
    assert fs.statfs().f_bfree == free0
    assert _check(opened, tmp_path) == {}


def test_mkfs_then_write(tmp_path: Path) -> None:
    """Our own mkfs, our writer, then the tools."""
    for bits, kib in ((12, 4096), (16, 20000), (32, 40000)):
        img = tmp_path / f"ours{bits}.img"
        with open(img, "wb") as f:
            f.truncate(kib * 1024)
        with RawDevice(img, readonly=False) as dev:
            mkfs(dev, fat_bits=bits, label="BURROW", volume_id=0x1234ABCD)
            with open_fat(dev, readonly=False) as fs:
                d = fs.mkdir(fs.root_ino, "EFI", 0o755)
                b = fs.mkdir(d, "BOOT", 0o755)
                _write_file(fs, b, "BOOTX64.EFI", os.urandom(50_000))
                assert fs.label() == "BURROW"
        fsck_clean(img)
        assert "BURROW" in tool("mlabel", "-s", "-i", img, "::").stdout
        tree = mtools_tree(img, tmp_path / f"mt{bits}")
        assert set(tree) == {"/EFI", "/EFI/BOOT", "/EFI/BOOT/BOOTX64.EFI"}


@pytest.mark.parametrize(("fat", "size"), [("16", 64 << 20), ("32", 300 << 20)])
def test_4k_sectors(tmp_path: Path, fat: str, size: int) -> None:
    """4096-byte logical sectors (4Kn disks): mtools' tree reads back, our writes fsck clean."""
    src = tmp_path / "src"
    (src / "Sub Dir").mkdir(parents=True)
    (src / "Sub Dir" / "a long file name.bin").write_bytes(os.urandom(50_000))
    img = tmp_path / "4k.img"
    with open(img, "wb") as f:
        f.truncate(size)
    tool("mkfs.fat", "-S", "4096", "-F", fat, img)
    tool("mcopy", "-s", "-i", img, src / "Sub Dir", "::/")
    o = Opened(img)
    assert o.fs.geo.sector_size == 4096
    sub = o.fs.lookup(o.fs.root_ino, "sub dir")
    data = (src / "Sub Dir" / "a long file name.bin").read_bytes()
    assert o.fs.read(o.fs.lookup(sub, "A LONG FILE NAME.BIN"), 0, 60_000) == data
    for i in range(150):
        _write_file(o.fs, sub, f"another long name {i:03d}.txt", b"%d" % i)
    tree = _check(o, tmp_path)
    assert tree["/Sub Dir/another long name 149.txt"] == b"149"


def test_dirty_volume_stays_dirty(tmp_path: Path) -> None:
    img = make_fat(tmp_path / "f16.img", None, size_kib=32768, fat_bits=16)
    boot = img.read_bytes()[:512]
    fat_off = struct.unpack_from("<H", boot, 14)[0] * 512
    fat_len = struct.unpack_from("<H", boot, 22)[0] * 512

    def entry1() -> int:
        with open(img, "rb") as f:
            f.seek(fat_off + 2)
            return int(struct.unpack("<H", f.read(2))[0])

    with open(img, "r+b") as f:  # as if a previous session had crashed
        for copy in range(2):
            f.seek(fat_off + copy * fat_len + 2)
            f.write(struct.pack("<H", entry1() & ~0x8000))
    o = Opened(img)
    assert o.fs.info().extra["clean"] is False
    _write_file(o.fs, o.fs.root_ino, "f", b"x")
    o.close()
    assert not entry1() & 0x8000  # still marked for fsck: we do not hide an unclean past
    assert_fats_identical(img)


def test_non_bmp_names_round_trip(opened: Opened) -> None:
    """Characters outside the BMP go to disk as UTF-16 surrogate pairs and come back."""
    name = "smile \U0001f600 \U00020000.txt"
    _write_file(opened.fs, opened.fs.root_ino, name, b"pair")
    opened.close()
    fsck_clean(opened.path)
    with RawDevice(opened.path) as dev, open_fat(dev) as fs:
        assert fs_tree(fs) == {f"/{name}": b"pair"}
        assert fs.lookup(fs.root_ino, name.upper()) == fs.lookup(fs.root_ino, name)


def test_failed_rename_changes_nothing(tmp_path: Path) -> None:
    img = make_fat(tmp_path / "floppy.img", None, size_kib=1440)
    o = Opened(img)
    fs = o.fs
    d = fs.mkdir(fs.root_ino, "d", 0o755)
    inner = _write_file(fs, d, "a long file name inside", b"precious")
    with pytest.raises(NoSpace):
        for i in range(300):  # fill the fixed root directory
            fs.create(fs.root_ino, f"filler {i}", 0o644)
    with pytest.raises(NoSpace):
        fs.rename(d, "a long file name inside", fs.root_ino, "yet another long name")
    assert fs.lookup(d, "a long file name inside") == inner
    assert fs.read(inner, 0, 100) == b"precious"
    o.close()
    fsck_clean(img)
    with RawDevice(img) as dev, open_fat(dev) as fs2:
        assert fs_tree(fs2)["/d/a long file name inside"] == b"precious"


def test_directory_cache_eviction_keeps_inodes_and_changes(opened: Opened, tmp_path: Path) -> None:
    """With a tiny directory cache, evicted directories are written back and reloaded; inode
    numbers and pending changes survive."""
    fs = opened.fs
    fs.dir_cache_count = 3
    dirs = [fs.root_ino]
    for i in range(20):
        dirs.append(fs.mkdir(dirs[i % len(dirs)], f"Dir {i}", 0o755))
    files: dict[int, tuple[int, int]] = {}
    for i in range(60):
        d = dirs[(i * 7) % len(dirs)]
        files[i] = (d, _write_file(fs, d, f"file {i} long name", b"%d" % i))
    for i, (d, f) in files.items():
        assert fs.lookup(d, f"FILE {i} LONG NAME") == f
    for i in range(0, 60, 3):
        d, f = files[i]
        nd = dirs[(i * 11 + 1) % len(dirs)]
        fs.rename(d, f"file {i} long name", nd, f"moved {i}")
        assert fs.lookup(nd, f"moved {i}") == f
        fs.write(f, 0, b"changed %d" % i)
    fs.statfs()  # an operation start trims the cache
    assert len(fs._dirs) <= 3
    expected = fs_tree(fs)
    assert _check(opened, tmp_path) == expected


def test_rename_exchange(opened: Opened, tmp_path: Path) -> None:
    fs = opened.fs
    root = fs.root_ino
    a = fs.mkdir(root, "dir a", 0o755)
    b = fs.mkdir(root, "b", 0o755)
    sub = fs.mkdir(a, "Sub Directory", 0o755)
    _write_file(fs, sub, "inside", b"in sub")
    f = _write_file(fs, b, "a file with a long name", b"file data")
    fs.rename(a, "Sub Directory", b, "a file with a long name", RENAME_EXCHANGE)
    # names stay, what they point at swaps; inode numbers follow the content
    assert fs.lookup(a, "Sub Directory") == f
    assert fs.lookup(b, "a file with a long name") == sub
    assert fs.lookup(sub, "..") == b
    assert fs.read(f, 0, 100) == b"file data"
    with pytest.raises(InvalidOperation):
        fs.rename(root, "b", sub, "inside", RENAME_EXCHANGE)
    with pytest.raises(NotFound):
        fs.rename(root, "b", root, "missing", RENAME_EXCHANGE)
    tree = _check(opened, tmp_path)
    assert tree["/dir a/Sub Directory"] == b"file data"
    assert tree["/b/a file with a long name/inside"] == b"in sub"
