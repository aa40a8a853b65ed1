"""ext2/3/4 read driver against its oracles: the kernel (read-only loop mounts) and debugfs.

Images are built once per module by ``mkfs.<type> -d`` from one generated tree (see
``tests/ext4_helpers.py``) in every feature variant, then directories are indexed by
``e2fsck -fyD`` so htree lookups are exercised.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from burrow.block.memory import MemoryDevice
from burrow.block.raw import RawDevice
from burrow.errors import (
    BurrowError,
    CorruptImage,
    NameTooLong,
    NotFound,
    ReadOnly,
    Unsupported,
)
from burrow.fs.ext4 import open_ext4, probe
from burrow.fs.ext4.filesystem import Ext4Filesystem
from ext4_helpers import (
    BIG_DIR_VARIANTS,
    UNSIGNED_HASH_VARIANTS,
    VARIANTS,
    build_image,
    burrow_snapshot,
    debugfs,
    debugfs_ls,
    kernel_birthtimes,
    kernel_snapshot,
    loop_mount,
    make_source_tree,
)

pytestmark = pytest.mark.tool("mkfs.ext4", "debugfs", "e2fsck")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    for tool in ("mkfs.ext4", "debugfs", "e2fsck"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    work = tmp_path_factory.mktemp("ext4img")
    big = make_source_tree(work / "src-big")
    small = make_source_tree(work / "src-small", big_entries=300)

    def build(v: str) -> Path:
        return build_image(work / f"{v}.img", big if v in BIG_DIR_VARIANTS else small, v)

    # two at a time: mkfs spends part of its time in I/O, and the suite must stay short
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(VARIANTS, pool.map(build, VARIANTS), strict=True))


def _open(path: Path) -> Ext4Filesystem:
    return open_ext4(RawDevice(path))


def _copy(src: Path, dst: Path) -> None:
    """A sparse copy (the images are mostly holes)."""
    subprocess.run(["cp", "--sparse=always", os.fspath(src), os.fspath(dst)], check=True)


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _diff(a: dict[bytes, dict[str, object]], b: dict[bytes, dict[str, object]]) -> list[str]:
    out = []
    for p in sorted(set(a) | set(b)):
        ra, rb = a.get(p), b.get(p)
        if ra is None or rb is None:
            out.append(f"{p!r}: only in {'kernel' if ra is None else 'burrow'}")
        elif ra != rb:
            fields = {
                k: (ra.get(k), rb.get(k)) for k in set(ra) | set(rb) if ra.get(k) != rb.get(k)
            }
            out.append(f"{p!r}: {fields}")
    return out


# ---------------------------------------------------------------------------------------
# the kernel's view
# ---------------------------------------------------------------------------------------
@pytest.mark.root
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_tree_equals_kernel_view(images: dict[str, Path], variant: str) -> None:
    image = images[variant]
    before = os.stat(image).st_mtime_ns
    with _open(image) as fs:
        mine = burrow_snapshot(fs)
    with loop_mount(image) as mnt:
        theirs = kernel_snapshot(mnt)
        births = kernel_birthtimes(mnt)
    assert len(theirs) > (5000 if variant in BIG_DIR_VARIANTS else 300)
    assert _diff(mine, theirs) == []
    with _open(image) as fs:
        mine_births = {}
        for path in births:
            ino = fs.root_ino
            for part in path.split(b"/"):
                ino = fs.lookup(ino, os.fsdecode(part))
            mine_births[path] = fs.getattr(ino).st_birthtime_ns
    assert mine_births == births
    assert os.stat(image).st_mtime_ns == before  # nothing written


# ---------------------------------------------------------------------------------------
# debugfs' view (needs no root)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_listings_equal_debugfs(images: dict[str, Path], variant: str) -> None:
    image = images[variant]
    with _open(image) as fs:
        for path in ("/", "/bigdir", "/odd", "/odd/times", "/d1/d2/d3/d4"):
            ino = fs.root_ino
            for part in path.strip("/").split("/") if path != "/" else []:
                ino = fs.lookup(ino, part)
            expected = debugfs_ls(image, path)
            got = {}
            for ent in fs.readdir(ino):
                st = fs.getattr(ent.ino)
                size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
                got[os.fsencode(ent.name)] = (ent.ino, st.st_mode, st.st_uid, st.st_gid, size)
            # debugfs ls -p shows directory sizes as 0 and the low 16 bits of uid/gid only
            got = {k: (i, m, u & 0xFFFF, g & 0xFFFF, s) for k, (i, m, u, g, s) in got.items()}
            exp = {
                k: (i, m, u & 0xFFFF, g & 0xFFFF, 0 if stat.S_ISDIR(m) else s)
                for k, (i, m, u, g, s) in expected.items()
            }
            assert got == exp, path


@pytest.mark.parametrize("variant", ["ext4-4k", "ext4-blockmap", "ext2", "ext4-bigalloc"])
def test_contents_equal_debugfs_dump(images: dict[str, Path], variant: str, tmp_path: Path) -> None:
    image = images[variant]
    with _open(image) as fs:
        for name in ("random-1m.bin", "sparse.bin", "d1/mid.bin"):
            out = tmp_path / "dump"
            debugfs(image, f"dump /{name} {out}")
            ino = fs.root_ino
            for part in name.split("/"):
                ino = fs.lookup(ino, part)
            assert fs.read(ino, 0, 1 << 30) == out.read_bytes(), name


@pytest.mark.parametrize(
    "variant", ["ext4-4k", "ext4-blockmap", "ext4-bigalloc", "ext2", "ext4-inline", "ext3"]
)
def test_random_reads_equal_source_files(images: dict[str, Path], variant: str) -> None:
    """read/readinto at random offsets and lengths (across holes, extents, block maps and
    inline data) return what the source files mkfs copied hold."""
    import random

    image = images[variant]
    src = image.parent / ("src-big" if variant in BIG_DIR_VARIANTS else "src-small")
    rng = random.Random(variant)
    with _open(image) as fs:
        for name in ("random-1m.bin", "sparse.bin", "sparse-5g.bin", "small-200.txt", "tiny.txt"):
            ino = fs.lookup(fs.root_ino, name)
            size = fs.getattr(ino).st_size
            with open(src / name, "rb") as f:
                for _ in range(40):
                    off = rng.choice([0, rng.randrange(size), size - 1, size, size + 10])
                    n = rng.choice([1, 100, 4095, 4096, 70_000, 1 << 20])
                    f.seek(off)
                    expect = f.read(n)
                    assert fs.read(ino, off, n) == expect, (name, off, n)
                    buf = bytearray(n)
                    got = fs.readinto(ino, off, buf)
                    assert bytes(buf[:got]) == expect


_TIME = re.compile(r"^\s*(\w+): 0x([0-9a-f]+)(?::([0-9a-f]+))?", re.M)


@pytest.mark.parametrize("variant", ["ext4-4k", "ext4-inline", "ext3", "ext4-1k-128"])
def test_times_equal_debugfs_stat(images: dict[str, Path], variant: str) -> None:
    """Timestamps (incl. crtime, pre-1970, post-2038) decode as debugfs' raw fields say."""
    image = images[variant]
    with _open(image) as fs:
        times = fs.lookup(fs.lookup(fs.root_ino, "odd"), "times")
        for ent in fs.readdir(times):
            text = debugfs(image, f"stat /odd/times/{ent.name}")
            raw = {m[0]: (int(m[1], 16), int(m[2] or "0", 16)) for m in _TIME.findall(text)}
            st = fs.getattr(ent.ino)
            for field, value in (
                ("mtime", st.st_mtime_ns),
                ("atime", st.st_atime_ns),
                ("ctime", st.st_ctime_ns),
                ("crtime", st.st_birthtime_ns),
            ):
                if field not in raw:
                    assert field == "crtime" and value is None  # 128-byte inodes
                    continue
                secs, extra = raw[field]
                secs = secs - (1 << 32) if secs >= 1 << 31 else secs
                expect = (secs + ((extra & 3) << 32)) * 10**9 + (extra >> 2)
                assert value == expect, (ent.name, field)
        st = fs.getattr(fs.lookup(times, "before-1970"))
        assert st.st_mtime_ns < 0
        if fs.inode_size > 128:
            st = fs.getattr(fs.lookup(times, "after-2038"))
            assert st.st_mtime_ns == (0x12345678 + (1 << 32)) * 10**9 + 1021
            assert st.st_birthtime_ns is not None and st.st_birthtime_ns % 10**9 == 1000


# ---------------------------------------------------------------------------------------
# htree
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("variant", "hash_version"),
    [("ext4-4k", 1), ("ext4-largedir-tea", 2), ("ext4-metabg-legacy", 0), ("ext3", 1)],
)
def test_htree_lookup_every_name(images: dict[str, Path], variant: str, hash_version: int) -> None:
    image = images[variant]
    unsigned = "unsigned_directory_hash" in _stats(image)["Filesystem flags"]
    assert unsigned == (variant in UNSIGNED_HASH_VARIANTS)
    dump = debugfs(image, "htree /bigdir")
    assert f"Hash Version: {hash_version}" in dump  # the index exists and uses this hash
    with _open(image) as fs:
        d = fs.lookup(fs.root_ino, "bigdir")
        entries = list(fs.readdir(d))
        assert len(entries) == 5060
        for ent in entries:
            assert fs.lookup(d, ent.name) == ent.ino
        for missing in ("entry-00001-", "entry-99999", "x" * 255):
            with pytest.raises(NotFound):
                fs.lookup(d, missing)
        with pytest.raises(NameTooLong):
            fs.lookup(d, "x" * 256)
        assert fs.lookup(d, "..") == fs.root_ino
        assert fs.lookup(d, ".") == d
        # O(log n): a cold lookup reads the root, one block per index level and the leaf
        # (plus a possible collision continuation), not the directory's other blocks
        nblocks = fs.getattr(d).st_size // fs.block_size
        for ent in entries[::500]:
            fs.invalidate_all()
            fs._runs(fs.inode(d))  # the directory's block map (extent blocks) read once
            reads_before = fs.statistics()["metadata_block_reads"]
            assert fs.lookup(d, ent.name) == ent.ino
            reads = fs.statistics()["metadata_block_reads"] - reads_before  # type: ignore[operator]
            assert reads <= 4 < nblocks


def test_special_names_and_kinds(images: dict[str, Path]) -> None:
    with _open(images["ext4-4k"]) as fs:
        root = fs.root_ino
        assert fs.read(fs.lookup(root, "L" * 255), 0, 100) == b"long name\n"
        odd = os.fsdecode(b"non-utf8-\xff\xfe-\xe9t\xe9")
        assert fs.read(fs.lookup(root, odd), 0, 100) == b"latin-1 name\n"
        assert fs.readlink(fs.lookup(root, "fast-link")) == "d1/d2/d3/d4/deep.txt"
        assert fs.readlink(fs.lookup(root, "slow-60")) == "t" * 60
        for link in ("fast-link", "slow-60", "slow-link"):  # read() of a link: its target
            ino = fs.lookup(root, link)
            assert fs.read(ino, 0, 4096) == os.fsencode(fs.readlink(ino))
            buf = bytearray(10)
            assert fs.readinto(ino, 2, buf) == 10
            assert bytes(buf) == os.fsencode(fs.readlink(ino))[2:12]
        assert fs.getattr(fs.lookup(root, "blk-new")).st_rdev == os.makedev(259, 70000)
        assert fs.getattr(fs.lookup(root, "chr-old")).st_rdev == os.makedev(4, 64)
        assert stat.S_ISFIFO(fs.getattr(fs.lookup(root, "fifo")).st_mode)
        assert stat.S_ISSOCK(fs.getattr(fs.lookup(root, "sock")).st_mode)
        tiny = fs.lookup(root, "tiny.txt")
        assert fs.lookup(root, "hard-1") == tiny
        assert fs.getattr(tiny).st_nlink == 3
        big = fs.lookup(root, "sparse-5g.bin")
        assert fs.getattr(big).st_size == (5 << 30) + 15
        assert fs.read(big, 5 << 30, 100) == b"tail past 4 GiB"
        assert fs.read(big, 1 << 30, 4096) == bytes(4096)
        x = fs.lookup(root, "xattrs.txt")
        assert fs.getxattr(x, "user.small") == b"value"
        assert fs.getxattr(x, "trusted.t") == b"trusted value"
        with pytest.raises(OSError):
            fs.getxattr(x, "user.nope")
        with pytest.raises(BurrowError):
            fs.read(fs.lookup(root, "d1"), 0, 10)


def test_ea_inode_value(images: dict[str, Path], tmp_path: Path) -> None:
    image = images["ext4-sparse2-eainode"]
    out = tmp_path / "value"
    debugfs(image, f"ea_get -f {out} /tiny.txt user.huge")
    value = out.read_bytes()
    assert len(value) >= 4096  # bigger than fits in a block: stored in an ea_inode
    with _open(image) as fs:
        tiny = fs.lookup(fs.root_ino, "tiny.txt")
        assert fs.getxattr(tiny, "user.huge") == value
        assert "user.huge" in fs.listxattr(tiny)


# ---------------------------------------------------------------------------------------
# identity, statfs
# ---------------------------------------------------------------------------------------
def _stats(image: Path) -> dict[str, str]:
    out = {}
    for line in debugfs(image, "stats").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_info_and_statfs_equal_debugfs_stats(images: dict[str, Path], variant: str) -> None:
    image = images[variant]
    s = _stats(image)
    with _open(image) as fs:
        info = fs.info()
        sf = fs.statfs()
    assert info.fstype == VARIANTS[variant][0]
    assert info.uuid == s["Filesystem UUID"]
    assert sorted(info.features) == sorted(s["Filesystem features"].split())
    assert info.extra["blocks_count"] == int(s["Block count"])
    assert info.extra["free_blocks"] == int(s["Free blocks"])
    assert info.extra["free_inodes"] == int(s["Free inodes"])
    assert info.extra["inodes_count"] == sf.f_files == int(s["Inode count"])
    assert info.extra["block_size"] == sf.f_bsize == int(s["Block size"])
    assert sf.f_bfree == int(s["Free blocks"])  # clean image: descriptors agree with sb
    assert sf.f_ffree == int(s["Free inodes"])


@pytest.mark.root
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_statfs_equals_kernel_statvfs(images: dict[str, Path], variant: str) -> None:
    """f_blocks without metadata overhead, f_bavail less reserves: as the kernel's df."""
    with _open(images[variant]) as fs:
        sf = fs.statfs()
    with loop_mount(images[variant]) as mnt:
        k = os.statvfs(mnt)
    mine = (sf.f_bsize, sf.f_blocks, sf.f_bfree, sf.f_bavail, sf.f_files, sf.f_ffree)
    assert mine == (k.f_frsize, k.f_blocks, k.f_bfree, k.f_bavail, k.f_files, k.f_ffree)


def test_probe_and_write_refusal(images: dict[str, Path]) -> None:
    dev = RawDevice(images["ext2"])
    assert probe(dev)
    assert not probe(MemoryDevice(1 << 20))
    assert not probe(MemoryDevice(100))
    fs = open_ext4(dev)
    with pytest.raises(ReadOnly):
        fs.create(fs.root_ino, "x", 0o644)


# ---------------------------------------------------------------------------------------
# refused features and bad input
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("feature", ["encrypt", "journal_dev", "compression", "dirdata"])
def test_unsupported_incompat_features(
    images: dict[str, Path], tmp_path: Path, feature: str
) -> None:
    image = tmp_path / "f.img"
    _copy(images["ext4-2k-nocsum-nojournal"], image)
    data = bytearray(image.read_bytes()[:4096])
    bits = {"encrypt": 0x10000, "journal_dev": 0x8, "compression": 0x1, "dirdata": 0x1000}
    incompat = int.from_bytes(data[1024 + 0x60 : 1024 + 0x64], "little") | bits[feature]
    with open(image, "r+b") as f:
        f.seek(1024 + 0x60)
        f.write(incompat.to_bytes(4, "little"))
    with pytest.raises(Unsupported) as exc:
        _open(image)
    assert exc.value.feature == feature


def _patch(image: Path, offset: int, data: bytes) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(data)


_IMAP = re.compile(r"located at block (\d+), offset 0x([0-9a-f]+)")


def _inode_offset(image: Path, path: str, block_size: int) -> int:
    m = _IMAP.search(debugfs(image, f"imap {path}"))
    assert m, path
    return int(m[1]) * block_size + int(m[2], 16)


def _walk_all(fs: Ext4Filesystem) -> None:
    stack = [fs.root_ino]
    seen = 0
    while stack:
        ino = stack.pop()
        for ent in fs.readdir(ino):
            st = fs.getattr(ent.ino)
            fs.listxattr(ent.ino)
            seen += 1
            if stat.S_ISDIR(st.st_mode):
                stack.append(ent.ino)
                fs.lookup(ino, ent.name)
            elif stat.S_ISREG(st.st_mode):
                fs.read(ent.ino, 0, 1 << 20)
            elif stat.S_ISLNK(st.st_mode):
                fs.readlink(ent.ino)


@pytest.fixture
def scratch(images: dict[str, Path], tmp_path: Path) -> Iterator[Path]:
    image = tmp_path / "scratch.img"
    _copy(images["ext4-4k"], image)
    yield image


def _bmap(image: Path, path: str, lblk: int) -> int:
    return int(debugfs(image, f"bmap {path} {lblk}").strip())


def _extent_leaf(image: Path) -> int:
    """Physical block of the first extent leaf block of /fragmented.bin (debugfs ex)."""
    for line in debugfs(image, "ex /fragmented.bin").splitlines():
        parts = line.split()
        if parts[:2] == ["0/", "1"]:
            return int(parts[7])
    raise AssertionError("no index level in /fragmented.bin")


CORRUPTIONS = {
    # name: (path or None, how to find the offset, bytes)
    "sb-magic": lambda img: (1024 + 0x38, b"\0\0"),
    "sb-log-block-size": lambda img: (1024 + 0x18, b"\x09\0\0\0"),
    "sb-inodes-per-group": lambda img: (1024 + 0x28, b"\xff\xff\xff\x7f"),
    "sb-blocks-per-group": lambda img: (1024 + 0x20, b"\0\0\0\0"),
    "sb-desc-size": lambda img: (1024 + 0xFE, b"\x03\0"),
    "gdt-inode-table": lambda img: (4096 + 8, b"\xff\xff\xff\x0f"),
    "inode-extent-magic": lambda img: (_inode_offset(img, "/random-1m.bin", 4096) + 0x28, b"\0\0"),
    "inode-extent-depth": lambda img: (
        _inode_offset(img, "/random-1m.bin", 4096) + 0x28 + 6,
        b"\x07\0",
    ),
    "inode-extent-entries": lambda img: (
        _inode_offset(img, "/random-1m.bin", 4096) + 0x28 + 2,
        b"\x09\0",
    ),
    "inode-extent-start": lambda img: (
        _inode_offset(img, "/random-1m.bin", 4096) + 0x28 + 12 + 8,
        b"\xff\xff\xff\x7f",
    ),
    "extent-leaf-magic": lambda img: (_extent_leaf(img) * 4096, b"\0\0"),
    "extent-leaf-depth": lambda img: (_extent_leaf(img) * 4096 + 6, b"\x01\0"),
    "extent-leaf-entries": lambda img: (_extent_leaf(img) * 4096 + 2, b"\xff\x7f"),
    "extent-index-duplicate": lambda img: (
        _inode_offset(img, "/fragmented.bin", 4096) + 0x28 + 12 + 12 + 4,
        Path(img).read_bytes()[
            _inode_offset(img, "/fragmented.bin", 4096) + 0x28 + 16 : _inode_offset(
                img, "/fragmented.bin", 4096
            )
            + 0x28
            + 20
        ],
    ),
    "inode-extra-isize": lambda img: (_inode_offset(img, "/tiny.txt", 4096) + 0x80, b"\xff\x00"),
    "dir-rec-len-zero": lambda img: (_bmap(img, "/d1", 0) * 4096 + 4, b"\0\0"),
    "dir-name-len": lambda img: (_bmap(img, "/d1", 0) * 4096 + 12 + 6, b"\xff"),
    "dir-inode-too-big": lambda img: (_bmap(img, "/d1", 0) * 4096 + 24, b"\xff\xff\xff\x7f"),
    "htree-info-length": lambda img: (_bmap(img, "/bigdir", 0) * 4096 + 24 + 5, b"\x20"),
    "htree-levels": lambda img: (_bmap(img, "/bigdir", 0) * 4096 + 24 + 6, b"\x05"),
    "htree-count": lambda img: (_bmap(img, "/bigdir", 0) * 4096 + 34, b"\xff\x7f"),
    "xattr-block-magic": lambda img: (
        int(re.search(r"File ACL: (\d+)", debugfs(img, "stat /xattrs.txt"))[1]) * 4096,  # type: ignore[index]
        b"\0\0\0\0",
    ),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
@pytest.mark.parametrize("ignore", [False, True])
def test_corruption_is_reported(scratch: Path, name: str, ignore: bool) -> None:
    """Structural damage -> CorruptImage/Unsupported (with checksums ignored too, so the
    structural checks themselves are exercised), never another exception, never a write."""
    key = (name, "ext4-4k")
    if key not in _OFFSETS:  # located once on the pristine image (debugfs is slow)
        _OFFSETS[key] = CORRUPTIONS[name](scratch)
    offset, data = _OFFSETS[key]
    _patch(scratch, offset, data)
    before = _unchanged(scratch)
    with pytest.raises((CorruptImage, Unsupported)):
        fs = open_ext4(RawDevice(scratch), ignore_checksums=ignore)
        _walk_all(fs)
        if name.startswith("htree"):
            d = fs.lookup(fs.root_ino, "bigdir")
            fs.lookup(d, "entry-00042-" + "x" * 2)
    assert _unchanged(scratch) == before


_OFFSETS: dict[tuple[str, str], tuple[int, bytes]] = {}


def _unchanged(path: Path) -> tuple[int, int, int]:
    """(size, mtime, ctime): any write through the file changes them (cheaper than hashing)."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def test_checksum_mismatch_detected_and_ignorable(scratch: Path) -> None:
    # flip one byte of an inode's i_generation-adjacent reserved field: only the csum notices
    off = _inode_offset(scratch, "/tiny.txt", 4096)
    _patch(scratch, off + 0x70, b"\x01")  # i_obso_faddr
    fs = open_ext4(RawDevice(scratch))
    with pytest.raises(CorruptImage) as exc:
        fs.getattr(fs.lookup(fs.root_ino, "tiny.txt"))
    assert exc.value.structure == "ext4_inode"
    fs = open_ext4(RawDevice(scratch), ignore_checksums=True)
    assert fs.read(fs.lookup(fs.root_ino, "tiny.txt"), 0, 5) == b"01234"


CSUM_DAMAGE = {
    # name: (offset finder, structure named in the CorruptImage)
    "superblock": (lambda img: 1024 + 0x78, "ext4_super_block"),  # s_volume_name
    "group-desc": (lambda img: 4096 + 0x0C, "ext4_group_desc"),  # bg_free_blocks_count_lo
    "dir-leaf": (lambda img: _bmap(img, "/bigdir", 1) * 4096 + 9, "ext4_dir_entry_tail"),
    "dx-root": (lambda img: _bmap(img, "/bigdir", 0) * 4096 + 0x24, "dx_tail"),
    "xattr-block": (
        lambda img: (
            int(re.search(r"File ACL: (\d+)", debugfs(img, "stat /xattrs.txt"))[1])  # type: ignore[index]
            * 4096
            + 4000
        ),
        "ext4_xattr_header",
    ),
}


@pytest.mark.parametrize("name", sorted(CSUM_DAMAGE))
def test_metadata_csum_mismatches(scratch: Path, name: str) -> None:
    """One flipped byte that only a checksum can notice: CorruptImage naming the structure;
    with ignore_checksums the same walk completes."""
    finder, structure = CSUM_DAMAGE[name]
    offset = finder(scratch)
    with open(scratch, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))

    def everything(fs: Ext4Filesystem) -> None:
        _walk_all(fs)
        d = fs.lookup(fs.root_ino, "bigdir")
        fs.lookup(d, "entry-00042-" + "x" * 2)
        fs.statfs()

    with pytest.raises(CorruptImage) as exc:
        everything(open_ext4(RawDevice(scratch)))
    assert exc.value.structure == structure
    everything(open_ext4(RawDevice(scratch), ignore_checksums=True))


def test_bad_group_desc_checksum_crc16(images: dict[str, Path], tmp_path: Path) -> None:
    """gdt_csum (crc16) without metadata_csum: a changed descriptor is reported."""
    image = tmp_path / "g.img"
    _copy(images["ext3"], image)
    subprocess.run(
        ["tune2fs", "-O", "uninit_bg", os.fspath(image)], check=True, capture_output=True
    )
    subprocess.run(["e2fsck", "-fy", os.fspath(image)], capture_output=True)
    fs = open_ext4(RawDevice(image))
    assert fs.has_gdt_csum
    _walk_all(fs)
    _patch(image, 4096 + 0x10, b"\x77")  # bg_used_dirs_count_lo of group 0
    with pytest.raises(CorruptImage):
        _walk_all(open_ext4(RawDevice(image)))
    _walk_all(open_ext4(RawDevice(image), ignore_checksums=True))


def test_extent_loop_and_overlap(scratch: Path, tmp_path: Path) -> None:
    """Two extents mapping overlapping logical ranges are refused."""
    off = _inode_offset(scratch, "/random-1m.bin", 4096) + 0x28
    hdr = Path(scratch).read_bytes()[off : off + 60]
    entries = int.from_bytes(hdr[2:4], "little")
    if entries < 1:
        pytest.skip("extent layout unexpected")
    first = hdr[12:24]
    patched = hdr[:2] + (2).to_bytes(2, "little") + hdr[4:12] + first + first + hdr[36:]
    _patch(scratch, off, patched)
    with pytest.raises(CorruptImage):
        fs = open_ext4(RawDevice(scratch), ignore_checksums=True)
        fs.read(fs.lookup(fs.root_ino, "random-1m.bin"), 0, 1 << 20)


# ---------------------------------------------------------------------------------------
# 64 KiB blocks (the kernel here cannot mount them: debugfs is the oracle)
# ---------------------------------------------------------------------------------------
def test_64k_blocks_equal_debugfs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    for i in range(300):
        (src / "dir" / f"file-{i}").write_bytes(b"%d" % i * (i + 1))
    (src / "big").write_bytes(os.urandom(300_000))
    image = tmp_path / "64k.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-b", "65536", "-d", src, image, "64M"],
        check=True,
        capture_output=True,
    )
    subprocess.run(["e2fsck", "-fyD", image], capture_output=True)
    with _open(image) as fs:
        assert fs.block_size == 65536
        d = fs.lookup(fs.root_ino, "dir")
        names = {os.fsencode(e.name): e.ino for e in fs.readdir(d)}
        assert {k: v[0] for k, v in debugfs_ls(image, "/dir").items()} == names
        for i in range(300):
            ino = fs.lookup(d, f"file-{i}")
            assert fs.read(ino, 0, 10_000) == b"%d" % i * (i + 1)
        assert fs.read(fs.lookup(fs.root_ino, "big"), 0, 1 << 20) == (src / "big").read_bytes()


# ---------------------------------------------------------------------------------------
# journal recovery
# ---------------------------------------------------------------------------------------
def _dirty_journal_image(tmp_path: Path, fstype: str) -> Path:
    """Write through a loop mount, sync, shut down without flushing the log, unmount: the
    image now needs recovery (some changes live only in the journal)."""
    image = tmp_path / f"j-{fstype}.img"
    opts = ["-b", "4096"] if fstype == "ext4" else ["-b", "1024"]
    subprocess.run([f"mkfs.{fstype}", "-q", "-F", *opts, image, "64M"], check=True,
                   capture_output=True)  # fmt: skip
    with loop_mount(image, readonly=False, options="commit=60") as mnt:
        for i in range(50):
            (mnt / f"f{i}").write_bytes(os.urandom(3000 + i))
        (mnt / "dir").mkdir()
        for i in range(300):
            (mnt / "dir" / f"n{i}").write_text(str(i))
        os.setxattr(mnt / "f1", "user.j", b"journal")
        subprocess.run(["sync"], check=True)
        (mnt / "f2").unlink()
        os.rename(mnt / "f3", mnt / "dir" / "f3-moved")
        for i in range(100):  # freed and reused blocks produce revoke records
            (mnt / "dir" / f"n{i}").unlink()
        subprocess.run(["sync", "-f", os.fspath(mnt / "f1")], check=True)
        subprocess.run(["xfs_io", "-x", "-c", "shutdown", os.fspath(mnt)], check=True,
                       capture_output=True)  # fmt: skip
    return image


@pytest.mark.root
@pytest.mark.tool("xfs_io")
@pytest.mark.parametrize("fstype", ["ext4", "ext3"])
def test_journal_replay_matches_kernel_recovery(tmp_path: Path, fstype: str) -> None:
    """ext4: 64-bit tags with csum v3; ext3: 32-bit tags, no checksums."""
    image = _dirty_journal_image(tmp_path, fstype)
    features = _stats(image)["Filesystem features"].split()
    assert "needs_recovery" in features
    digest = _sha(image)
    fs = open_ext4(RawDevice(image))
    assert fs.journal_replayed > 0
    mine = burrow_snapshot(fs)
    assert "needs_recovery" not in fs.info().features
    copy = tmp_path / "copy.img"
    _copy(image, copy)
    with loop_mount(copy, readonly=False) as mnt:
        theirs = kernel_snapshot(mnt)
    assert b"dir/f3-moved" in theirs and b"f2" not in theirs
    for rec in (*mine.values(), *theirs.values()):
        rec.pop("atime")  # the kernel's rw mount of the copy may touch atimes
    assert _diff(mine, theirs) == []
    assert _sha(image) == digest

    # damaged journal blocks: a BurrowError or a consistent read, never a crash or a write
    fs2 = open_ext4(RawDevice(image))
    jnode = fs2.inode(fs2.sb.s_journal_inum)
    bs = fs2.block_size
    for k, (jblk, off, value) in enumerate(
        [(1, 0, b"\0"), (1, 7, b"\x09"), (1, 12, b"\xff\xff\xff\xff"), (1, 20, b"\x01"),
         (2, 100, b"\xaa"), (3, 0, b"\xc0"), (3, 11, b"\x07"), (4, 12, b"\x00\x00\x7f\xff"),
         (5, 30, b"\x55"), (6, 16, b"\xff")]
    ):  # fmt: skip
        bad = tmp_path / f"bad{k}.img"
        _copy(image, bad)
        _patch(bad, fs2._map_block(jnode, jblk) * bs + off, value)
        before = _sha(bad)
        try:
            burrow_snapshot(open_ext4(RawDevice(bad)))
        except BurrowError:
            pass
        assert _sha(bad) == before
        bad.unlink()


# ---------------------------------------------------------------------------------------
# casefold (this kernel lacks CONFIG_UNICODE and debugfs looks names up exactly, so the
# oracle is the directory's own entries under Unicode case folding)
# ---------------------------------------------------------------------------------------
def test_casefold_lookup(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "cf").mkdir(parents=True)
    (src / "plain").mkdir()
    names = ["Hello", "ÄÖÜ-File", "straße", *(f"Name-{i}" for i in range(300))]
    for name in names:
        (src / "cf" / name).write_bytes(name.encode())
        (src / "plain" / name).write_bytes(name.encode())
    image = tmp_path / "cf.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "casefold", "-d", src, image, "32M"],
                   check=True, capture_output=True)  # fmt: skip
    debugfs_w = ["debugfs", "-w", "-R", "sif /cf flags 0x40000000", image]
    subprocess.run(debugfs_w, check=True, capture_output=True)
    subprocess.run(["e2fsck", "-fyD", image], capture_output=True)
    with _open(image) as fs:
        cf = fs.lookup(fs.root_ino, "cf")
        plain = fs.lookup(fs.root_ino, "plain")
        assert "casefold" in fs.info().features
        exact = {e.name: e.ino for e in fs.readdir(cf)}
        assert set(exact) == set(names)
        for name, ino in exact.items():
            assert fs.lookup(cf, name) == ino
            assert fs.lookup(cf, name.upper()) == ino
            assert fs.lookup(cf, name.lower()) == ino
        assert fs.lookup(cf, "STRASSE") == exact["straße"]
        # the index is searched with the hash of the folded name (no fallback scan needed)
        assert "Indirect levels" in debugfs(image, "htree /cf")
        nblocks = fs.getattr(cf).st_size // fs.block_size
        for name in ("HELLO", "äöü-file", "NAME-150"):
            fs.invalidate_all()
            fs._runs(fs.inode(cf))
            before = fs.statistics()["metadata_block_reads"]
            assert fs.lookup(cf, name) > 0
            reads = fs.statistics()["metadata_block_reads"] - before  # type: ignore[operator]
            assert reads <= 3 < nblocks
        with pytest.raises(NotFound):
            fs.lookup(plain, "hello")  # only +F directories fold case
        assert fs.lookup(plain, "Hello") > 0


@pytest.mark.root
def test_revision_0_without_filetype_equals_kernel(tmp_path: Path) -> None:
    """GOOD_OLD_REV: 128-byte inodes, no feature flags, directory entries without file types."""
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_bytes(b"old\n" * 3000)
    os.symlink("a/b/f", src / "l")
    os.mkfifo(src / "fifo")
    image = tmp_path / "r0.img"
    subprocess.run(["mkfs.ext2", "-q", "-F", "-r", "0", "-d", src, image, "8M"], check=True,
                   capture_output=True)  # fmt: skip
    with _open(image) as fs:
        assert fs.info().features == () and fs.inode_size == 128
        assert all(e.mode == 0 for e in fs.readdir(fs.root_ino))
        mine = burrow_snapshot(fs)
    with loop_mount(image) as mnt:
        assert _diff(mine, kernel_snapshot(mnt)) == []


def test_writable_open_without_writer_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import burrow.fs.ext4

    monkeypatch.setitem(sys.modules, "burrow.fs.ext4.writer", None)  # import fails
    monkeypatch.delattr(burrow.fs.ext4, "writer", raising=False)  # even if imported before
    with pytest.raises(Unsupported) as exc:
        open_ext4(MemoryDevice(1 << 20), readonly=False)
    assert exc.value.feature == "ext4 write"


def test_concurrent_readers_with_tiny_caches(
    images: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several threads walking and reading one filesystem, with caches small enough that
    entries are evicted under each other's feet, see what one thread sees."""
    import threading

    import burrow.fs.ext4.filesystem as ext4fs

    with _open(images["ext4-bigalloc"]) as fs:
        expected = burrow_snapshot(fs)
    monkeypatch.setattr(ext4fs, "MAX_BLOCK_CACHE", 8)
    monkeypatch.setattr(ext4fs, "MAX_INODE_CACHE", 16)
    monkeypatch.setattr(ext4fs, "MAX_CACHED_RUNS", 4)
    shared = _open(images["ext4-bigalloc"])
    results: list[object] = []

    def worker() -> None:
        try:
            results.append(burrow_snapshot(shared))
        except Exception as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results), [type(r) for r in results]


@pytest.mark.root
def test_kernel_written_xattr_block_with_empty_values(tmp_path: Path) -> None:
    """Xattrs the kernel itself writes into an xattr block (128-byte inodes have no room in
    the inode): empty values carry e_value_offs 0 there."""
    image = tmp_path / "x.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-I", "128", image, "16M"], check=True,
                   capture_output=True)  # fmt: skip
    with loop_mount(image, readonly=False) as mnt:
        f = mnt / "f"
        f.write_bytes(b"data")
        os.setxattr(f, "user.empty", b"")
        os.setxattr(f, "user.full", b"value")
        os.setxattr(f, "trusted.e2", b"")
    with _open(image) as fs:
        ino = fs.lookup(fs.root_ino, "f")
        assert fs.getxattr(ino, "user.empty") == b""
        assert fs.getxattr(ino, "trusted.e2") == b""
        assert fs.getxattr(ino, "user.full") == b"value"
        mine = burrow_snapshot(fs)
    with loop_mount(image) as mnt:
        assert _diff(mine, kernel_snapshot(mnt)) == []
