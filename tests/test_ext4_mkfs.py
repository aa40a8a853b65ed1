"""burrow's pure-Python mkfs for ext2/ext3/ext4, checked against e2fsprogs and the kernel."""

from __future__ import annotations

import os
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
    assert int(info["Block count"]) == sf.f_blocks
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
