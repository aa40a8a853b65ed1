"""Reading FAT12/16/32 images made by the real tools (mkfs.fat + mcopy)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from tests.fat_helpers import fs_tree, host_tree, tool
from tests.images import make_fat

from burrow.block.raw import RawDevice
from burrow.errors import NotFound, ReadOnly
from burrow.fs.fat import ATTRS_XATTR, open_fat, probe

pytestmark = pytest.mark.tool("mkfs.fat", "mcopy", "fsck.fat")


def _source(root: Path, *, deep: bool = False, many: int = 0) -> Path:
    root.mkdir()
    (root / "readme.txt").write_text("lower-case 8.3 name\n")
    (root / "UPPER.TXT").write_text("upper\n")
    (root / "MixedCase.Txt").write_text("mixed\n")
    (root / "Long File Name with spaces.text").write_text("long\n")
    (root / "a.b.c.d").write_text("dots\n")
    (root / "empty").write_bytes(b"")
    (root / "café-ünïcödé-名前.txt").write_text("unicode\n")
    (root / "big.bin").write_bytes(os.urandom(300_000))
    sub = root / "Sub Dir" / "deeper"
    sub.mkdir(parents=True)
    (sub / "leaf.txt").write_text("leaf\n")
    if deep:
        d = root / "deep"
        for i in range(16):
            d = d / f"level-{i:02d}-with-a-long-name"
        d.mkdir(parents=True)
        (d / "bottom.txt").write_text("bottom\n")
    if many:
        m = root / "many"
        m.mkdir()
        for i in range(many):
            (m / f"long file name number {i:04d}.data").write_bytes(str(i).encode() * 7)
    return root


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("MTOOLS_SKIP_CHECK", "1")


@pytest.mark.parametrize(
    ("fat_bits", "size_kib", "deep", "many"),
    [(12, 1440, False, 0), (16, 32768, False, 40), (32, 65536, True, 300)],
)
def test_reads_what_mcopy_wrote(
    tmp_path: Path, fat_bits: int, size_kib: int, deep: bool, many: int
) -> None:
    src = _source(tmp_path / "src", deep=deep, many=many)
    img = make_fat(
        tmp_path / "fat.img",
        src,
        size_kib=size_kib,
        fat_bits=None if size_kib == 1440 else fat_bits,
    )
    with RawDevice(img) as dev:
        assert probe(dev)
        with open_fat(dev) as fs:
            assert fs.geo.fat_bits == fat_bits
            assert fs_tree(fs) == host_tree(src)
            # mtimes: mcopy -p keeps them, FAT stores 2-second units
            ino = fs.lookup(fs.lookup(fs.root_ino, "Sub Dir"), "deeper")
            leaf = fs.lookup(ino, "leaf.txt")
            host = (src / "Sub Dir" / "deeper" / "leaf.txt").stat().st_mtime_ns
            ours = fs.getattr(leaf).st_mtime_ns
            assert ours % 2_000_000_000 == 0 and abs(ours - host) < 2_000_000_000
            # statfs agrees with fsck.fat's used/total cluster count
            out = tool("fsck.fat", "-n", img).stdout
            used, total = map(int, re.search(r"(\d+)/(\d+) clusters", out).groups())  # type: ignore[union-attr]
            st = fs.statfs()
            assert st.f_blocks == total
            assert st.f_blocks - st.f_bfree == used


def test_case_insensitive_lookup_and_short_aliases(tmp_path: Path) -> None:
    src = _source(tmp_path / "src")
    img = make_fat(tmp_path / "fat.img", src, size_kib=1440)
    with RawDevice(img) as dev, open_fat(dev) as fs:
        root = fs.root_ino
        a = fs.lookup(root, "readme.txt")
        assert fs.lookup(root, "README.TXT") == a == fs.lookup(root, "ReadMe.Txt")
        long_ino = fs.lookup(root, "Long File Name with spaces.text")
        assert fs.lookup(root, "long file name WITH SPACES.TEXT") == long_ino
        # the short alias mtools generated is found too (mdir shows it in the first column)
        alias = tool("mdir", "-i", img, "::/").stdout
        cols = next(line.split() for line in alias.splitlines() if "Long File" in line)
        short = f"{cols[0]}.{cols[1]}"  # mdir shows "LONGFI~1 TEX     5 date time long"
        assert fs.lookup(root, short) == long_ino
        with pytest.raises(NotFound):
            fs.lookup(root, "no such file")
        assert fs.lookup(root, ".") == root and fs.lookup(root, "..") == root
        sub = fs.lookup(root, "Sub Dir")
        assert fs.lookup(sub, "..") == root
        assert fs.listxattr(a) == [ATTRS_XATTR]
        assert int(fs.getxattr(a, ATTRS_XATTR), 0) & 0x20  # archive bit from mcopy
        with pytest.raises(ReadOnly):
            fs.create(root, "new", 0o644)


def test_label_and_volume_id(tmp_path: Path) -> None:
    img = make_fat(tmp_path / "fat.img", None, size_kib=8192, label="MYDISK")
    with RawDevice(img) as dev, open_fat(dev) as fs:
        info = fs.info()
        assert info.label == "MYDISK"
        assert info.fstype == "vfat"
        serial = tool("minfo", "-i", img, "::").stdout
        vid = re.search(r"serial number: ([0-9A-Fa-f]+)", serial)
        assert vid is not None
        assert int(vid.group(1), 16) == int(info.uuid.replace("-", ""), 16)


def test_read_ranges_and_inode_numbers_are_stable(tmp_path: Path) -> None:
    src = _source(tmp_path / "src")
    data = (src / "big.bin").read_bytes()
    img = make_fat(tmp_path / "fat.img", src, size_kib=32768, fat_bits=16)
    with RawDevice(img) as dev, open_fat(dev) as fs:
        ino = fs.lookup(fs.root_ino, "big.bin")
        for off, n in [(0, 1), (511, 2), (2047, 4097), (299_990, 100), (300_000, 10), (5, 0)]:
            assert fs.read(ino, off, n) == data[off : off + n]
        assert [e.ino for e in fs.readdir(fs.root_ino)] == [e.ino for e in fs.readdir(fs.root_ino)]
        assert fs.getattr(ino).st_ino == ino
    with RawDevice(img) as dev, open_fat(dev) as fs:
        assert fs.lookup(fs.root_ino, "big.bin") == ino  # derived from the entry's position
