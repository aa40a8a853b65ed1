"""Our mkfs chooses the geometry mkfs.fat chooses, and fsck.fat accepts the result."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from tests.fat_helpers import assert_fats_identical, fsck_clean, tool

from burrow.block.memory import MemoryDevice
from burrow.block.raw import RawDevice
from burrow.errors import InvalidArgument, UsageError
from burrow.fs.fat import open_fat, probe
from burrow.fs.fat.mkfs import mkfs, plan
from burrow.fs.fat.ondisk import parse_geometry

pytestmark = pytest.mark.tool("mkfs.fat", "fsck.fat")

FIELDS = (
    "fat_bits", "sector_size", "sectors_per_cluster", "reserved_sectors", "num_fats",
    "fat_sectors", "root_entries", "total_sectors", "media", "sectors_per_track", "heads",
    "data_offset", "cluster_count", "root_cluster", "fsinfo_sector", "backup_boot_sector",
)  # fmt: skip

CASES = [
    (160, None), (360, None), (720, None), (1200, None), (1440, None), (2880, None),
    (1000, None), (4096, None), (8192, None), (16384, None), (20000, None), (65536, None),
    (262144, None), (300000, None), (524288, None), (1 << 20, None), (9 << 20, None),
    (17 << 20, None), (40000, 32), (65536, 12), (8192, 12), (32768, 16), (2 << 20, 32),
]  # fmt: skip


def _head(path: Path, n: int = 8 * 512) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _blank(path: Path, kib: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(kib * 1024)
    return path


@pytest.mark.parametrize(("kib", "bits"), CASES)
def test_geometry_matches_mkfs_fat(tmp_path: Path, kib: int, bits: int | None) -> None:
    ref = _blank(tmp_path / "ref.img", kib)
    ours = _blank(tmp_path / "ours.img", kib)
    tool("mkfs.fat", *(["-F", str(bits)] if bits else []), ref)
    with RawDevice(ours, readonly=False) as dev:
        mkfs(dev, fat_bits=bits, label="TEST", volume_id=0xCAFEF00D)
    a = parse_geometry(_head(ours), ours.stat().st_size)
    b = parse_geometry(_head(ref), ref.stat().st_size)
    assert {f: getattr(a, f) for f in FIELDS} == {f: getattr(b, f) for f in FIELDS}
    assert a.volume_id == 0xCAFEF00D and a.label == b"TEST       "
    if kib < 4 << 20:  # fsck.fat reads the whole FAT; keep the big ones to the geometry check
        fsck_clean(ours)
    assert_fats_identical(ours)
    with RawDevice(ours) as dev:
        assert probe(dev)
        with open_fat(dev) as fs:
            assert fs.label() == "TEST"
            assert list(fs.readdir(fs.root_ino)) == []
            assert fs.statfs().f_bfree == a.cluster_count - (1 if a.fat_bits == 32 else 0)
    if a.fat_bits == 32:
        data = _head(ours)
        assert data[:512] == data[6 * 512 : 7 * 512]  # backup boot sector
        assert data[512:1024] == data[7 * 512 : 8 * 512]  # backup FSInfo
        free = struct.unpack_from("<I", data, 512 + 488)[0]
        assert free == a.cluster_count - 1


@pytest.mark.tool("minfo")
def test_minfo_agrees(tmp_path: Path) -> None:
    img = _blank(tmp_path / "m.img", 65536)
    with RawDevice(img, readonly=False) as dev:
        mkfs(dev, fat_bits=16, volume_id=0x12345678)
    out = tool("minfo", "-i", img, "::").stdout
    assert "sector size: 512 bytes" in out
    assert "cluster size: 4 sectors" in out
    assert "serial number: 12345678" in out
    assert "media descriptor byte: 0xf8" in out


def test_refusals() -> None:
    with pytest.raises(UsageError):
        plan(16 * 1024)  # too small
    with pytest.raises(UsageError):
        plan(300 << 20, 12)  # too many clusters for FAT12
    with pytest.raises(UsageError):
        plan(8 << 20, 16)  # too few clusters for FAT16
    with pytest.raises(UsageError):
        plan(8 << 20, 24)
    dev = MemoryDevice(8 << 20)
    for label in ("twelve chars", "a:b", " lead", "ctl\x01"):
        with pytest.raises(InvalidArgument):
            mkfs(dev, label=label)
    with pytest.raises(InvalidArgument):
        mkfs(dev, volume_id=1 << 33)
