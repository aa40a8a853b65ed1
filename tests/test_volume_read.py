"""Reading MBR and GPT tables written by real tools (sgdisk, sfdisk, fdisk, parted), checked
field by field against what sfdisk -J / fdisk -l / parted say about the same image."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from burrow.block.raw import RawDevice
from burrow.volume import PartitionTable, read_table
from images import make_ext4, make_fat, make_gpt, make_mbr, make_raw, run
from volume_helpers import ours, parted_table, sfdisk_table, sgdisk_image

MiB = 1 << 20


def _read(path: Path) -> PartitionTable:
    with RawDevice(path) as dev:
        table = read_table(dev)
    assert table is not None
    return table


def _assert_matches_sfdisk(path: Path, table: PartitionTable) -> None:
    oracle = sfdisk_table(path)
    assert table.kind == {"gpt": "gpt", "dos": "mbr"}[str(oracle["label"])]
    assert table.sector_size == oracle["sector_size"]
    assert table.disk_id.lower() == str(oracle["id"]).lower()
    mine = ours(table)
    if table.kind == "mbr":
        for row in mine:
            row["name"] = row["uuid"] = ""
            row["attributes"] = 0
    assert sorted(mine, key=lambda r: int(r["number"])) == sorted(  # type: ignore[call-overload]
        oracle["partitions"], key=lambda r: r["number"]
    )


@pytest.mark.tool("sgdisk", "sfdisk")
def test_sgdisk_gpt_types_names_attributes(tmp_path: Path) -> None:
    img = sgdisk_image(
        tmp_path / "disk.img",
        64 * MiB,
        *("-n", "1:2048:+8M", "-t", "1:ef00", "-c", "1:EFI system"),
        *("-n", "2:0:+4M", "-t", "2:8200", "-c", "2:swap space"),
        *("-n", "3:0:+4M", "-t", "3:0700", "-c", "3:Données ünïcode"),
        *("-n", "5:0:+2M", "-t", "5:8302", "-c", "5:home"),
        *("-n", "6:0:0", "-t", "6:8304", "-c", "6:root"),
        *("-A", "1:set:0", "-A", "6:set:2", "-A", "3:set:60", "-A", "3:set:63"),
    )
    table = _read(img)
    assert table.warnings == []
    _assert_matches_sfdisk(img, table)
    by_number = {p.number: p for p in table.partitions}
    assert sorted(by_number) == [1, 2, 3, 5, 6]  # gaps in GPT numbering are kept
    assert by_number[1].type_name == "EFI System"
    assert by_number[2].type_name == "Linux swap"
    assert by_number[3].type_name == "Microsoft basic data"
    assert by_number[5].type_name == "Linux home"
    assert by_number[6].type_name == "Linux root (x86-64)"
    assert by_number[3].name == "Données ünïcode"
    assert by_number[3].attributes == (1 << 60) | (1 << 63)
    assert by_number[6].bootable and not by_number[1].bootable


@pytest.mark.tool("sfdisk")
def test_sfdisk_mbr_extended_with_two_logicals(tmp_path: Path) -> None:
    img = make_mbr(
        tmp_path / "disk.img",
        64 * MiB,
        "label: dos\nlabel-id: 0x1234abcd\n,8M,c,*\n,8M,82\n,,5\n,10M,83\n,,8e\n",
    )
    table = _read(img)
    _assert_matches_sfdisk(img, table)
    assert table.disk_id == "0x1234abcd"
    numbers = [p.number for p in table.partitions]
    assert numbers == [1, 2, 3, 5, 6]
    ext = table.partition(3)
    assert ext.is_extended and ext.type_name == "Extended"
    assert table.partition(1).bootable and table.partition(1).type_name == "W95 FAT32 (LBA)"
    assert table.partition(6).type == "0x8e"
    for n in (5, 6):
        assert ext.start < table.partition(n).start and table.partition(n).end <= ext.end


@pytest.mark.tool("sfdisk")
@pytest.mark.parametrize("ext_type", ["f", "85"])
def test_other_extended_types(tmp_path: Path, ext_type: str) -> None:
    img = make_mbr(tmp_path / "disk.img", 32 * MiB, f"label: dos\n,,{ext_type}\n,4M,83\n,4M,82\n")
    table = _read(img)
    _assert_matches_sfdisk(img, table)
    assert [p.number for p in table.partitions] == [1, 5, 6]
    assert table.partition(1).is_extended and not table.partition(5).is_extended


@pytest.mark.tool("sfdisk")
def test_sfdisk_gpt(tmp_path: Path) -> None:
    img = make_mbr(
        tmp_path / "disk.img",
        40 * MiB,
        'label: gpt\nsize=4M, type=U, name="esp"\nsize=8M, type=S\ntype=L, name="rootfs"\n',
    )
    _assert_matches_sfdisk(img, _read(img))


@pytest.mark.tool("parted", "sfdisk")
@pytest.mark.parametrize("label", ["gpt", "msdos"])
def test_parted_tables(tmp_path: Path, label: str) -> None:
    img = make_raw(tmp_path / "disk.img", 64 * MiB)
    script = ["mklabel", label]
    if label == "gpt":
        script += [
            "mkpart",
            "boot",
            "fat32",
            "1MiB",
            "9MiB",
            "mkpart",
            "data",
            "ext4",
            "9MiB",
            "100%",
        ]
        script += ["set", "1", "esp", "on"]
    else:
        script += [
            "mkpart",
            "primary",
            "ext4",
            "1MiB",
            "9MiB",
            "mkpart",
            "extended",
            "9MiB",
            "100%",
        ]
        script += ["mkpart", "logical", "ext4", "10MiB", "20MiB"]
        script += ["mkpart", "logical", "linux-swap", "21MiB", "30MiB", "set", "1", "boot", "on"]
    run(["parted", "-s", img, *script])
    table = _read(img)
    _assert_matches_sfdisk(img, table)
    oracle = parted_table(img)
    mine = [{"number": p.number, "start": p.start, "size": p.size} for p in table.partitions]
    theirs = [{k: row[k] for k in ("number", "start", "size")} for row in oracle]
    if label == "msdos":  # parted shows the extended partition's full size too
        assert sorted(n["number"] for n in mine) == [1, 2, 5, 6]  # type: ignore[type-var]
    assert sorted(mine, key=lambda r: r["number"]) == sorted(theirs, key=lambda r: r["number"])  # type: ignore[arg-type, return-value]
    if label == "gpt":
        assert [p.name for p in table.partitions] == ["boot", "data"]
        assert table.partition(1).type_name == "EFI System"


def _fdisk_4096(path: Path) -> list[tuple[int, int, int]]:
    """(number, start, size) in bytes from ``fdisk -b 4096 -l``."""
    out = run(["fdisk", "-b", "4096", "-l", path]).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(rf"^{re.escape(str(path))}(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2)) * 4096, int(m.group(4)) * 4096))
    return rows


@pytest.mark.tool("fdisk")
def test_fdisk_4096_byte_sector_gpt(tmp_path: Path) -> None:
    img = make_raw(tmp_path / "disk.img", 64 * MiB)
    keys = "g\nn\n\n\n+8M\nt\n1\nn\n\n\n+16M\nn\n\n\n\nw\n"
    subprocess.run(["fdisk", "-b", "4096", img], input=keys, text=True, capture_output=True)
    expected = _fdisk_4096(img)
    assert len(expected) == 3
    table = _read(img)
    assert table.kind == "gpt" and table.sector_size == 4096
    assert [(p.number, p.start, p.size) for p in table.partitions] == expected
    assert table.partition(1).type_name == "EFI System"


def test_hand_built_4096_gpt_backup_only(tmp_path: Path) -> None:
    """A 4096-byte-sector GPT whose primary header is gone: found by its backup alone."""
    from burrow.block.memory import MemoryDevice
    from burrow.volume import add_partition, init_table

    dev = MemoryDevice(32 * MiB)
    init_table(dev, "gpt", sector_size=4096)
    part = add_partition(dev, size=4 * MiB, name="x")
    assert part.start == MiB
    dev.pwrite(bytes(4096), 4096)  # destroy the primary header
    table = read_table(dev)
    assert table is not None and table.sector_size == 4096
    assert [(p.start, p.size, p.name) for p in table.partitions] == [(MiB, 4 * MiB, "x")]
    assert any("backup" in w for w in table.warnings)


@pytest.mark.tool("sgdisk", "sfdisk")
def test_large_entry_array(tmp_path: Path) -> None:
    img = make_raw(tmp_path / "disk.img", 32 * MiB)
    run(["sgdisk", "-o", "-S", "256", "-n", "200:2048:+1M", "-t", "200:8300", img])
    table = _read(img)
    assert [p.number for p in table.partitions] == [200]
    _assert_matches_sfdisk(img, table)


@pytest.mark.tool("mkfs.ext4", "mkfs.fat")
def test_filesystems_and_blank_disks_have_no_table(tmp_path: Path) -> None:
    ext4 = make_ext4(tmp_path / "ext4.img", size="8M")
    fat = make_fat(tmp_path / "fat.img", size_kib=8192)
    fat32 = make_fat(tmp_path / "fat32.img", size_kib=40000, fat_bits=32)
    blank = make_raw(tmp_path / "blank.img", MiB)
    tiny = make_raw(tmp_path / "tiny.img", 100)
    for img in (ext4, fat, fat32, blank, tiny):
        with RawDevice(img) as dev:
            assert read_table(dev) is None, img.name


@pytest.mark.tool("sgdisk")
def test_partition_open_reads_its_own_bytes(tmp_path: Path) -> None:
    img = make_gpt(tmp_path / "disk.img", 16 * MiB, [("1:2048:+2M",), ("2:0:+3M",)])
    table = _read(img)
    fd = os.open(img, os.O_RDWR)
    try:
        for p in table.partitions:
            os.pwrite(fd, b"first%d" % p.number, p.start)
            os.pwrite(fd, b"last%d" % p.number, p.end - 5)
    finally:
        os.close(fd)
    with RawDevice(img) as dev:
        for p in table.partitions:
            with p.open(dev) as part:
                assert part.size == p.size and part.readonly
                assert part.pread(6, 0) == b"first%d" % p.number
                assert part.pread(5, part.size - 5) == b"last%d" % p.number


@pytest.mark.tool("sgdisk")
def test_hybrid_mbr_gpt_wins(tmp_path: Path) -> None:
    # hybrid MBR: 0xEE plus partition 1
    img = sgdisk_image(
        tmp_path / "disk.img",
        32 * MiB,
        "-n",
        "1:2048:+4M",
        "-t",
        "1:0700",
        "-n",
        "2:0:0",
        "-h",
        "1",
    )
    table = _read(img)
    assert table.kind == "gpt" and [p.number for p in table.partitions] == [1, 2]
    assert any("hybrid" in w for w in table.warnings)


@pytest.mark.tool("sgdisk")
def test_hybrid_mbr_with_both_gpt_copies_gone(tmp_path: Path) -> None:
    img = sgdisk_image(
        tmp_path / "disk.img",
        32 * MiB,
        "-n",
        "1:2048:+4M",
        "-t",
        "1:0700",
        "-n",
        "2:0:0",
        "-h",
        "1",
    )
    fd = os.open(img, os.O_RDWR)
    try:
        os.pwrite(fd, bytes(512), 512)
        os.pwrite(fd, bytes(512), img.stat().st_size - 512)
    finally:
        os.close(fd)
    table = _read(img)
    assert table.kind == "mbr"
    data = [p for p in table.partitions if p.type != "0xee"]
    assert [(p.start, p.size, p.type) for p in data] == [(MiB, 4 * MiB, "0x07")]
    assert any("hybrid MBR used" in w for w in table.warnings)


@pytest.mark.tool("sgdisk", "sfdisk")
def test_dos_table_over_a_stale_gpt_is_mbr(tmp_path: Path) -> None:
    """sfdisk over an sgdisk GPT, with sfdisk's wiping disabled: like Linux, use the MBR."""
    img = sgdisk_image(tmp_path / "disk.img", 32 * MiB, "-n", "1:2048:+4M")
    run(["sfdisk", "-q", "--wipe", "never", img], input="label: dos\n,8M,83\n")
    with open(img, "rb") as f:
        f.seek(512)
        assert f.read(8) == b"EFI PART"  # the stale header really is there
    table = _read(img)
    assert table.kind == "mbr"
    _assert_matches_sfdisk(img, table)
    assert any("GPT header without a protective MBR" in w for w in table.warnings)
