"""Tables written by burrow, judged by sgdisk -v, sgdisk -p, sfdisk -J and parted; damaged and
grown GPTs; edits of tables other tools made."""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
from pathlib import Path

import pytest

from burrow.block.memory import MemoryDevice
from burrow.block.raw import RawDevice
from burrow.errors import BurrowError, CorruptImage, NoSpace, NotFound, Unsupported, UsageError
from burrow.volume import (
    add_partition,
    add_partitions,
    init_table,
    read_table,
    relocate_backup,
    remove_partition,
    rename_partition,
    repair_table,
    resize_partition,
)
from images import make_gpt, make_mbr, make_raw, run
from volume_helpers import (
    ours,
    parted_table,
    sfdisk_table,
    sgdisk_clean,
    sgdisk_image,
    sgdisk_print,
    sgdisk_verify,
)

MiB = 1 << 20
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _table(path: Path):  # type: ignore[no-untyped-def]
    with RawDevice(path) as dev:
        table = read_table(dev)
    assert table is not None
    return table


def _same_as_sfdisk(path: Path) -> None:
    table = _table(path)
    oracle = sfdisk_table(path, table.sector_size if table.sector_size != 512 else None)
    mine = ours(table)
    if table.kind == "mbr":
        for row in oracle["partitions"]:  # type: ignore[attr-defined]
            row["type"] = row["type"].lstrip("0") or "0"
    assert mine == sorted(oracle["partitions"], key=lambda r: r["number"])  # type: ignore[call-overload]
    assert table.disk_id.lower() == str(oracle["id"]).lower()


def _assert_gpt_clean(path: Path) -> None:
    assert sgdisk_clean(path), sgdisk_verify(path)


@pytest.mark.tool("sgdisk", "sfdisk", "parted")
def test_gpt_written_by_burrow_passes_every_oracle(tmp_path: Path) -> None:
    img = make_raw(tmp_path / "disk.img", 128 * MiB)
    with RawDevice(img, readonly=False) as dev:
        init_table(dev, "gpt")
        p1 = add_partition(dev, size=32 * MiB, type="esp", name="EFI system")
        p2 = add_partition(dev, size=8 * MiB, type="swap", name="swap")
        p3 = add_partition(dev, size=20 * MiB, type="home", name="home")
        p4 = add_partition(dev, type="linux", name="root fs ✓")
        assert [p.number for p in (p1, p2, p3, p4)] == [1, 2, 3, 4]
        assert all(p.start % MiB == 0 for p in (p1, p2, p3, p4))
        remove_partition(dev, 3)
        resize_partition(dev, 2, 16 * MiB)
        rename_partition(dev, 1, "ESP")
        p5 = add_partition(dev, size=2 * MiB, type="8e00", name="lvm")  # fills the hole of 3
        assert p5.number == 3 and p5.start == p2.start + 16 * MiB
    _assert_gpt_clean(img)
    _same_as_sfdisk(img)
    table = _table(img)
    rows = sgdisk_print(img)
    assert [
        (r["number"], r["first"] * 512, (r["last"] - r["first"] + 1) * 512, r["name"]) for r in rows
    ] == [(p.number, p.start, p.size, p.name) for p in table.partitions]
    assert [r["code"] for r in rows] == ["EF00", "8200", "8E00", "8300"]
    assert parted_table(img) == [
        {"number": p.number, "start": p.start, "size": p.size, "name": p.name}
        for p in table.partitions
    ]


@pytest.mark.tool("sfdisk", "parted")
def test_mbr_written_by_burrow_with_logicals(tmp_path: Path) -> None:
    img = make_raw(tmp_path / "disk.img", 96 * MiB)
    with RawDevice(img, readonly=False) as dev:
        init_table(dev, "mbr")
        add_partition(dev, size=16 * MiB, type="0c", bootable=True)
        add_partition(dev, size=8 * MiB, type="swap")
        add_partition(dev, size=8 * MiB, type="linux")
        five = add_partition(dev, size=10 * MiB, type="linux", logical=True)
        assert five.number == 5
        table = read_table(dev)
        assert table is not None and table.partition(4).is_extended
        six = add_partition(dev, size=12 * MiB, type="lvm")  # all slots used: goes logical
        seven = add_partition(dev, type="83")
        assert (six.number, seven.number) == (6, 7)
        with pytest.raises(UsageError):
            add_partition(dev, size=MiB, name="names are GPT-only")
    out = run(["sfdisk", "-V", img]).stdout
    assert "No errors detected" in out, out
    _same_as_sfdisk(img)
    table = _table(img)
    assert table.partition(1).bootable
    theirs = [{k: r[k] for k in ("number", "start", "size")} for r in parted_table(img)]
    # parted reports an extended partition as its full size, as we do
    assert sorted(theirs, key=lambda r: r["number"]) == [
        {"number": p.number, "start": p.start, "size": p.size} for p in table.partitions
    ]
    # Removing logical 5 renumbers 6 and 7, as Linux does.
    six_start = table.partition(6).start
    with RawDevice(img, readonly=False) as dev:
        remove_partition(dev, 5)
        assert read_table(dev).partition(5).start == six_start  # type: ignore[union-attr]
        with pytest.raises(BurrowError, match="logical"):
            remove_partition(dev, 4)  # the extended partition still holds logicals
    assert "No errors detected" in run(["sfdisk", "-V", img]).stdout
    _same_as_sfdisk(img)


def test_mbr_fifth_primary_is_refused_clearly() -> None:
    dev = MemoryDevice(64 * MiB)
    init_table(dev, "mbr")
    for _ in range(4):
        add_partition(dev, size=4 * MiB)
    before = dev.pread(MiB, 0)
    with pytest.raises(NoSpace, match="logical"):
        add_partition(dev, size=4 * MiB)
    assert dev.pread(MiB, 0) == before


@pytest.mark.tool("sfdisk")
def test_edit_sfdisk_mbr_keeps_everything_else(tmp_path: Path) -> None:
    img = make_mbr(tmp_path / "disk.img", 64 * MiB, "label: dos\n,8M,83,*\n,,5\n,6M,82\n,6M,83\n")
    before = sfdisk_table(img)["partitions"]
    with RawDevice(img, readonly=False) as dev:
        new = add_partition(dev, size=4 * MiB, type="ef")
        assert new.number == 7  # the extended partition takes all free space
        resize_partition(dev, 6, 4 * MiB)
    after = sfdisk_table(img)["partitions"]
    assert [p["number"] for p in after] == [1, 2, 5, 6, 7]  # type: ignore[attr-defined]
    assert after[:3] == before[:3]  # type: ignore[index]
    assert after[3] == {**before[3], "size": 4 * MiB}  # type: ignore[index]
    assert after[4]["type"] == "EF" and after[4]["size"] == 4 * MiB  # type: ignore[index]
    assert "No errors detected" in run(["sfdisk", "-V", img]).stdout
    _same_as_sfdisk(img)


@pytest.mark.tool("sgdisk", "sfdisk")
def test_edit_sgdisk_gpt_keeps_guids_names_attributes(tmp_path: Path) -> None:
    img = sgdisk_image(
        tmp_path / "disk.img",
        64 * MiB,
        *("-n", "1:2048:+8M", "-t", "1:ef00", "-c", "1:EFI"),
        *("-n", "2:0:+8M", "-t", "2:8300", "-c", "2:data"),
        *("-n", "4:0:+4M", "-t", "4:8200", "-A", "2:set:63", "-A", "2:set:0"),
    )
    before = sfdisk_table(img)
    with RawDevice(img, readonly=False) as dev:
        add_partition(dev, size=MiB, name="new")
        rename_partition(dev, 4, "swap")
    after = sfdisk_table(img)
    assert after["id"] == before["id"]
    old = {p["number"]: p for p in before["partitions"]}  # type: ignore[attr-defined]
    new = {p["number"]: p for p in after["partitions"]}  # type: ignore[attr-defined]
    assert new[1] == old[1] and new[2] == old[2]
    assert new[4] == {**old[4], "name": "swap"}
    assert new[3]["name"] == "new" and new[3]["type"] == LINUX
    _assert_gpt_clean(img)


@pytest.mark.tool("fdisk")
def test_4096_byte_sector_gpt_read_by_fdisk(tmp_path: Path) -> None:
    img = make_raw(tmp_path / "disk.img", 64 * MiB)
    with RawDevice(img, readonly=False) as dev:
        init_table(dev, "gpt", sector_size=4096)
        add_partition(dev, size=8 * MiB, type="esp", name="esp")
        add_partition(dev, type="linux", name="root")
    out = run(["fdisk", "-b", "4096", "-l", img]).stdout
    assert "Disklabel type: gpt" in out, out
    rows = [
        (int(m[0]), int(m[1]) * 4096, int(m[2]) * 4096)
        for m in re.findall(rf"{re.escape(str(img))}(\d+)\s+(\d+)\s+\d+\s+(\d+)\s", out)
    ]
    table = _table(img)
    assert table.sector_size == 4096
    assert rows == [(p.number, p.start, p.size) for p in table.partitions]
    assert "EFI System" in out and "Linux filesystem" in out


@pytest.mark.root
@pytest.mark.tool("losetup", "sgdisk", "sfdisk")
def test_4096_byte_sector_gpt_on_a_4k_loop_device(tmp_path: Path) -> None:
    img = make_raw(tmp_path / "disk.img", 64 * MiB)
    with RawDevice(img, readonly=False) as dev:
        init_table(dev, "gpt", sector_size=4096)
        add_partition(dev, size=8 * MiB, type="esp", name="esp")
        add_partition(dev, type="swap", name="swap")
    loop = run(["losetup", "-f", "--show", "-b", "4096", img]).stdout.strip()
    try:
        assert sgdisk_clean(Path(loop)), sgdisk_verify(Path(loop))
        oracle = sfdisk_table(Path(loop))
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    assert oracle["sector_size"] == 4096
    table = _table(img)
    assert [(p["start"], p["size"], p["name"], p["type"]) for p in oracle["partitions"]] == [  # type: ignore[attr-defined]
        (p.start, p.size, p.name, p.type) for p in table.partitions
    ]


@pytest.mark.tool("sgdisk", "sfdisk")
@pytest.mark.parametrize("damage", ["header", "entries", "signature"])
def test_primary_damaged_backup_used_then_repaired(tmp_path: Path, damage: str) -> None:
    img = make_gpt(tmp_path / "disk.img", 32 * MiB, [("1:2048:+4M", "1:ef00", "1:esp"), ("2:0:0",)])
    good = _table(img)
    fd = os.open(img, os.O_RDWR)
    try:
        if damage == "header":
            os.pwrite(fd, b"\xff", 512 + 40)  # FirstUsableLBA: header CRC no longer matches
        elif damage == "entries":
            os.pwrite(fd, b"\xff", 1024 + 60)  # inside entry 1: array CRC no longer matches
        else:
            os.pwrite(fd, bytes(512 * 33), 512)  # header and entries zeroed
    finally:
        os.close(fd)
    assert not sgdisk_clean(img)  # the oracle sees the damage too
    table = _table(img)
    assert table.partitions == good.partitions and table.disk_id == good.disk_id
    assert any("primary GPT is damaged" in w for w in table.warnings)
    digest = _digest(img)
    with RawDevice(img, readonly=False) as dev:
        with pytest.raises(CorruptImage):
            add_partition(dev, size=MiB)
        with pytest.raises(CorruptImage):
            rename_partition(dev, 1, "x")
    assert _digest(img) == digest  # refused writes wrote nothing
    with RawDevice(img, readonly=False) as dev:
        assert repair_table(dev)
    _assert_gpt_clean(img)
    repaired = _table(img)
    assert repaired.warnings == [] and repaired.partitions == good.partitions


@pytest.mark.tool("sgdisk", "sfdisk")
def test_grown_image_any_write_moves_the_backup(tmp_path: Path) -> None:
    img = make_gpt(tmp_path / "disk.img", 32 * MiB, [("1:2048:+4M", "1:8300", "1:a")])
    os.truncate(img, 96 * MiB)
    table = _table(img)
    assert any("grew" in w for w in table.warnings)
    assert not sgdisk_clean(img)
    with RawDevice(img, readonly=False) as dev:
        big = add_partition(dev, name="b")  # the rest: up to the new end
    assert big.end > 90 * MiB
    _assert_gpt_clean(img)
    _same_as_sfdisk(img)
    assert _table(img).warnings == []
    os.truncate(img, 128 * MiB)
    with RawDevice(img, readonly=False) as dev:
        assert relocate_backup(dev)
        assert not relocate_backup(dev)
        grown = resize_partition(dev, 2, None)
    assert grown.end == 128 * MiB - 33 * 512 - (128 * MiB - 33 * 512) % 512  # up to last usable
    _assert_gpt_clean(img)


@pytest.mark.tool("sgdisk", "sfdisk")
def test_switching_table_kinds_wipes_the_old_gpt(tmp_path: Path) -> None:
    img = make_gpt(tmp_path / "disk.img", 32 * MiB, [("1:2048:+4M",)])
    with RawDevice(img, readonly=False) as dev:
        init_table(dev, "mbr")
        add_partition(dev, size=4 * MiB)
    assert sfdisk_table(img)["label"] == "dos"
    assert _table(img).kind == "mbr"
    with RawDevice(img, readonly=False) as dev:
        init_table(dev, "gpt")
    _assert_gpt_clean(img)
    assert _table(img).partitions == []


def test_refusals_write_nothing() -> None:
    dev = MemoryDevice(16 * MiB)
    with pytest.raises(UsageError):
        add_partition(dev, size=MiB)  # no table yet
    init_table(dev, "gpt")
    add_partition(dev, size=4 * MiB)
    snapshot = dev.pread(dev.size, 0)
    cases = [
        lambda: add_partition(dev, size=64 * MiB),
        lambda: add_partition(dev, size=MiB, type="nonsense"),
        lambda: add_partition(dev, size=MiB, name="x" * 37),
        lambda: add_partition(dev, size=MiB, start=MiB),  # inside partition 1
        lambda: add_partition(dev, size=MiB, start=513),  # not a sector multiple
        lambda: add_partition(dev, size=MiB, number=1),
        lambda: add_partition(dev, size=MiB, logical=True),
        lambda: resize_partition(dev, 1, 64 * MiB),
        lambda: resize_partition(dev, 2, MiB),
        lambda: remove_partition(dev, 7),
        lambda: rename_partition(dev, 9, "x"),
    ]
    for case in cases:
        with pytest.raises(BurrowError):
            case()
        assert dev.pread(dev.size, 0) == snapshot
    with pytest.raises(NotFound):
        remove_partition(dev, 2)
    mbr = MemoryDevice(16 * MiB)
    init_table(mbr, "mbr")
    add_partition(mbr, size=MiB)
    with pytest.raises(Unsupported):
        rename_partition(mbr, 1, "x")
    with pytest.raises(Unsupported):
        init_table(mbr, "mbr", sector_size=4096)


@pytest.mark.tool("sgdisk", "sfdisk")
@pytest.mark.parametrize("kind", ["gpt", "mbr"])
def test_random_edit_sequences_match_sfdisk(tmp_path: Path, kind: str) -> None:
    """Random add/remove/resize/rename sequences; after each step sfdisk -J must agree with
    our reading, and for GPT sgdisk -v must find no problems."""
    rng = random.Random(f"burrow-part-{kind}")
    img = make_raw(tmp_path / "disk.img", 256 * MiB)
    with RawDevice(img, readonly=False) as dev:
        init_table(dev, kind)
    most = 0
    for step in range(30):
        with RawDevice(img, readonly=False) as dev:
            table = read_table(dev)
            assert table is not None
            numbers = [p.number for p in table.partitions if not p.is_extended]
            op = rng.choice(["add", "add", "add", "rm", "resize", "rename"])
            try:
                if op == "add" or not numbers:
                    add_partition(
                        dev,
                        size=None
                        if rng.random() < 0.08
                        else rng.choice([MiB * rng.randint(1, 24), 512 * rng.randint(1, 9999)]),
                        type=rng.choice(["linux", "swap", "esp", "lvm"]),
                        name=f"p{step}" if kind == "gpt" else "",
                        logical=(rng.random() < 0.5) if kind == "mbr" else None,
                    )
                elif op == "rm":
                    remove_partition(dev, rng.choice(numbers))
                elif op == "resize":
                    resize_partition(dev, rng.choice(numbers), MiB * rng.randint(1, 8))
                elif kind == "gpt":
                    rename_partition(dev, rng.choice(numbers), f"renamed {step}")
            except NoSpace:
                pass
            most = max(most, len(table.partitions))
        _same_as_sfdisk(img)
        if kind == "gpt":
            _assert_gpt_clean(img)
        else:
            assert "No errors detected" in run(["sfdisk", "-V", img]).stdout
    assert most >= 5  # the sequence really built a populated table


def test_large_disks_mbr_limit_and_protective_cap() -> None:
    dev = MemoryDevice(3 << 40)  # sparse: 3 TiB
    init_table(dev, "mbr")
    big = add_partition(dev)
    assert big.end == (2**32 - 1 + 1) * 512  # an MBR cannot address past sector 2^32-1
    with pytest.raises(NoSpace):
        add_partition(dev, start=(2**32) * 512, size=MiB)
    init_table(dev, "gpt")
    whole = add_partition(dev)
    assert whole.end > (3 << 40) - MiB
    sector0 = dev.pread(512, 0)
    assert sector0[446 + 4] == 0xEE
    assert int.from_bytes(sector0[446 + 12 : 446 + 16], "little") == 0xFFFFFFFF
    table = read_table(dev)
    assert table is not None and table.warnings == [] and table.partitions == [whole]


@pytest.mark.tool("sfdisk", "sgdisk")
def test_grown_image_with_damaged_primary_finds_the_old_backup(tmp_path: Path) -> None:
    img = make_mbr(tmp_path / "disk.img", 16 * MiB, 'label: gpt\nsize=4M, name="keep"\n')
    good = _table(img)
    os.truncate(img, 48 * MiB)
    fd = os.open(img, os.O_RDWR)
    try:
        os.pwrite(fd, bytes(512), 512)
    finally:
        os.close(fd)
    table = _table(img)  # the backup is where the protective MBR says the disk ended
    assert table.partitions == good.partitions
    assert any("primary GPT is damaged" in w for w in table.warnings)
    assert any("grew" in w for w in table.warnings)
    with RawDevice(img, readonly=False) as dev:
        repair_table(dev)
    _assert_gpt_clean(img)
    _same_as_sfdisk(img)


@pytest.mark.tool("sfdisk")
def test_add_partitions_plans_logicals_for_more_than_four(tmp_path: Path) -> None:
    img = make_raw(tmp_path / "disk.img", 64 * MiB)
    with RawDevice(img, readonly=False) as dev:
        init_table(dev, "mbr")
        made = add_partitions(
            dev,
            [{"size": 4 * MiB, "type": "esp", "bootable": True}]
            + [{"size": 4 * MiB, "type": "linux"}] * 4
            + [{"type": "swap"}],
        )
    assert [p.number for p in made] == [1, 2, 3, 5, 6, 7]
    assert "No errors detected" in run(["sfdisk", "-V", img]).stdout
    _same_as_sfdisk(img)
    table = _table(img)
    assert table.partition(4).is_extended and table.partition(7).type == "0x82"
    gpt = MemoryDevice(64 * MiB)
    init_table(gpt, "gpt")
    assert [p.number for p in add_partitions(gpt, [{"size": MiB}] * 6)] == [1, 2, 3, 4, 5, 6]
