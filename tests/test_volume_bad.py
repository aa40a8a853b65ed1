"""Bad partition tables: real-tool tables damaged in targeted ways must give CorruptImage (or a
warning with a safe reading), never a crash, a hang or a write."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest

from burrow.block.memory import MemoryDevice
from burrow.block.raw import RawDevice
from burrow.errors import CorruptImage
from burrow.volume import add_partition, init_table, read_table, remove_partition, repair_table
from images import make_gpt, make_mbr
from volume_helpers import patch_gpt

MiB = 1 << 20


@pytest.fixture(scope="module")
def gpt_template(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One sgdisk-made image for the module (each sgdisk write sleeps for a second)."""
    path = tmp_path_factory.mktemp("gpt") / "template.img"
    make_gpt(path, 8 * MiB, [("1:2048:+2M", "1:ef00", "1:a"), ("2:0:+2M", "2:8300")])
    return path.read_bytes()


@pytest.fixture
def gpt_image(tmp_path: Path, gpt_template: bytes) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(gpt_template)
    return path


def _read(path: Path):  # type: ignore[no-untyped-def]
    with RawDevice(path) as dev:
        return read_table(dev)


def _refuses_writes(path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with RawDevice(path, readonly=False) as dev:
        with pytest.raises(CorruptImage):
            add_partition(dev, size=MiB)
        with pytest.raises(CorruptImage):
            remove_partition(dev, 1)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


@pytest.mark.tool("sgdisk")
@pytest.mark.parametrize(
    ("header", "entries", "match"),
    [
        (None, {2: {"first_lba": 3000}}, "overlaps"),
        (None, {2: {"last_lba": 1 << 40}}, "beyond the device"),
        (None, {1: {"first_lba": 5000, "last_lba": 4000}}, "ends before it starts"),
        ({"num_entries": 1 << 31}, None, "out of range"),
        ({"num_entries": 100000}, None, "out of range"),
        ({"entry_size": 0}, None, "entry size"),
        ({"entry_size": 96}, None, "entry size"),
        ({"entry_size": 4097}, None, "entry size"),
        ({"entries_lba": 1 << 50}, None, "outside the device"),
        ({"entries_lba": 40}, None, "overlaps the usable area"),
        ({"last_usable": 1 << 40}, None, "beyond the device"),
        ({"first_usable": 0}, None, "usable"),
        ({"my_lba": 7}, None, "MyLBA"),
    ],
)
def test_consistent_crcs_but_bad_fields(
    gpt_image: Path,
    header: dict[str, int] | None,
    entries: dict[int, dict[str, int]] | None,
    match: str,
) -> None:
    img = gpt_image
    patch_gpt(img, header=header, entries=entries)
    with pytest.raises(CorruptImage, match=match):
        _read(img)
    _refuses_writes(img)


@pytest.mark.tool("sgdisk")
def test_bad_crcs_on_both_copies(gpt_image: Path) -> None:
    img = gpt_image
    size = img.stat().st_size
    fd = os.open(img, os.O_RDWR)
    try:
        os.pwrite(fd, b"\x01", 1024 + 32)  # primary entry array
        os.pwrite(fd, b"\x01", size - 512 + 44)  # backup header field
    finally:
        os.close(fd)
    with pytest.raises(CorruptImage, match="CRC32"):
        _read(img)
    _refuses_writes(img)


@pytest.mark.tool("sgdisk")
def test_backup_damaged_primary_used_with_warning(gpt_image: Path) -> None:
    img = gpt_image
    good = _read(img)
    fd = os.open(img, os.O_RDWR)
    try:
        os.pwrite(fd, bytes(512), img.stat().st_size - 512)
    finally:
        os.close(fd)
    table = _read(img)
    assert table.partitions == good.partitions
    assert any("backup GPT is damaged" in w for w in table.warnings)
    _refuses_writes(img)
    with RawDevice(img, readonly=False) as dev:
        repair_table(dev)
    assert _read(img).warnings == []


@pytest.mark.tool("sgdisk")
def test_entry_outside_usable_area_is_a_warning(gpt_image: Path) -> None:
    img = gpt_image
    patch_gpt(img, entries={1: {"first_lba": 20}})
    table = _read(img)
    assert table.partition(1).start == 20 * 512
    assert any("outside the usable area" in w for w in table.warnings)


@pytest.mark.tool("sgdisk")
def test_truncated_gpt_image(gpt_image: Path) -> None:
    img = gpt_image
    os.truncate(img, 3 * MiB)
    with pytest.raises(CorruptImage):
        _read(img)


def test_protective_mbr_without_gpt() -> None:
    dev = MemoryDevice(4 * MiB)
    init_table(dev, "gpt")
    dev.pwrite(bytes(512), 512)
    dev.pwrite(bytes(512), dev.size - 512)
    with pytest.raises(CorruptImage, match="GPT header"):
        read_table(dev)


def _mbr_with_logicals(tmp_path: Path) -> tuple[Path, int, int]:
    """sfdisk MBR with an extended partition holding logicals 5 and 6; returns the image and
    the sectors of the two EBRs."""
    img = make_mbr(tmp_path / "disk.img", 16 * MiB, "label: dos\n,2M,83\n,,5\n,2M,83\n,2M,83\n")
    table = _read(img)
    ext = table.partition(2).start // 512
    data = img.read_bytes()
    (link,) = struct.unpack_from("<I", data, ext * 512 + 446 + 16 + 8)
    return img, ext, ext + link


def _set_entry(path: Path, sector: int, index: int, os_type: int, lba: int, size: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", os_type, b"\0\0\0", lba, size)
        os.pwrite(fd, entry, sector * 512 + 446 + 16 * index)
    finally:
        os.close(fd)


@pytest.mark.tool("sfdisk")
def test_ebr_chain_loop(tmp_path: Path) -> None:
    img, _, ebr2 = _mbr_with_logicals(tmp_path)
    assert [p.number for p in _read(img).partitions] == [1, 2, 5, 6]
    _set_entry(img, ebr2, 1, 0x05, 0, 4096)  # EBR 2 links back to EBR 1
    with pytest.raises(CorruptImage, match="loops"):
        _read(img)


@pytest.mark.tool("sfdisk")
def test_ebr_self_loop(tmp_path: Path) -> None:
    img, ext, _ = _mbr_with_logicals(tmp_path)
    _set_entry(img, ext, 1, 0x05, 0, 4096)  # EBR 1 links to itself
    with pytest.raises(CorruptImage, match="loops"):
        _read(img)


@pytest.mark.tool("sfdisk")
def test_ebr_link_outside_extended(tmp_path: Path) -> None:
    img, ext, _ = _mbr_with_logicals(tmp_path)
    _set_entry(img, ext, 1, 0x05, 1 << 30, 4096)
    with pytest.raises(CorruptImage, match="outside the extended"):
        _read(img)


@pytest.mark.tool("sfdisk")
def test_cut_chain_is_a_warning_and_blocks_writes(tmp_path: Path) -> None:
    img, _, ebr2 = _mbr_with_logicals(tmp_path)
    fd = os.open(img, os.O_RDWR)
    try:
        os.pwrite(fd, b"\0\0", ebr2 * 512 + 510)
    finally:
        os.close(fd)
    table = _read(img)
    assert [p.number for p in table.partitions] == [1, 2, 5]
    assert any("signature" in w for w in table.warnings)
    _refuses_writes(img)


def test_long_ebr_chain_is_capped() -> None:
    dev = MemoryDevice(64 * MiB)
    init_table(dev, "mbr")
    add_partition(dev, type="linux", logical=True, size=8192)
    sector0 = bytearray(dev.pread(512, 0))
    (ext_start,) = struct.unpack_from("<I", sector0, 446 + 8)
    # 200 EBRs, each with a 1-sector logical partition right after it, linked in order.
    for i in range(200):
        ebr = bytearray(512)
        here = ext_start + 2 * i
        struct.pack_into("<B3sB3sII", ebr, 446, 0, b"", 0x83, b"", 1, 1)
        struct.pack_into("<B3sB3sII", ebr, 462, 0, b"", 0x05, b"", here + 2 - ext_start, 2)
        ebr[510:512] = b"\x55\xaa"
        dev.pwrite(ebr, here * 512)
    with pytest.raises(CorruptImage, match="more than 128"):
        read_table(dev)


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([(0x83, 2048, 4096), (0x83, 4000, 4096)], "overlaps"),
        ([(0x83, 2048, 1 << 30)], "beyond the device"),
        ([(0x83, 0, 100)], "LBA 0"),
    ],
)
def test_bad_primaries(entries: list[tuple[int, int, int]], match: str) -> None:
    dev = MemoryDevice(8 * MiB)
    sector = bytearray(512)
    for i, (t, lba, n) in enumerate(entries):
        struct.pack_into("<B3sB3sII", sector, 446 + 16 * i, 0, b"", t, b"", lba, n)
    sector[510:512] = b"\x55\xaa"
    dev.pwrite(sector, 0)
    with pytest.raises(CorruptImage, match=match):
        read_table(dev)


def test_boot_flag_garbage_is_not_an_mbr() -> None:
    dev = MemoryDevice(MiB)
    sector = bytearray(512)
    struct.pack_into("<B3sB3sII", sector, 446, 0x42, b"", 0x83, b"", 2048, 10)
    sector[510:512] = b"\x55\xaa"
    dev.pwrite(sector, 0)
    assert read_table(dev) is None


@pytest.mark.tool("sgdisk")
def test_entry_outside_usable_area_blocks_writes(gpt_image: Path) -> None:
    patch_gpt(gpt_image, entries={1: {"first_lba": 20}})
    _refuses_writes(gpt_image)
