"""`burrow part`: list/init/add/rm/resize/rename/fix through the real command, checked by
sfdisk -J, sgdisk -v and qemu-img; errors are one line with the documented exit codes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from burrow import errors
from burrow.cli.commands.part import parse_size
from burrow.cli.main import main
from images import make_gpt, make_raw, qemu_img
from volume_helpers import sfdisk_table, sgdisk_clean, sgdisk_verify

MiB = 1 << 20


def burrow(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["part", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _listing(capsys: pytest.CaptureFixture[str], img: Path) -> dict[str, object]:
    code, out, err = burrow(capsys, "list", img, "--json")
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.tool("sfdisk", "sgdisk")
def test_gpt_session_matches_sfdisk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = make_raw(tmp_path / "disk.img", 100 * MiB)
    assert burrow(capsys, "init", img, "gpt")[0] == 0
    assert burrow(capsys, "add", img, "--size", "32M", "--type", "esp", "--name", "EFI")[0] == 0
    assert burrow(capsys, "add", img, "--size", "8M", "--type", "swap")[0] == 0
    code, out, _ = burrow(capsys, "add", img, "--name", "root")
    assert code == 0 and "added partition 3" in out
    listing = _listing(capsys, img)
    assert set(listing) == {"table", "sector_size", "partitions"}
    assert listing["table"] == "gpt" and listing["sector_size"] == 512
    parts = listing["partitions"]
    assert isinstance(parts, list)
    oracle = sfdisk_table(img)["partitions"]
    keys = ("number", "start", "size", "type", "name", "uuid")
    assert [{k: p[k] for k in keys} for p in parts] == [{k: p[k] for k in keys} for p in oracle]  # type: ignore[attr-defined]
    assert parts[0]["type_name"] == "EFI System" and parts[0]["start"] == MiB
    assert parts[2]["start"] + parts[2]["size"] > 98 * MiB  # "no size" = the rest
    assert {"attributes", "bootable"} <= set(parts[0])
    assert sgdisk_clean(img), sgdisk_verify(img)

    code, out, _ = burrow(capsys, "list", img)
    assert code == 0
    assert "EFI System" in out and "root" in out and "32.0 MiB" in out

    assert burrow(capsys, "rename", img, "2", "swap space")[0] == 0
    assert burrow(capsys, "resize", img, "2", "4M")[0] == 0
    assert burrow(capsys, "rm", img, "1")[0] == 0
    after = sfdisk_table(img)["partitions"]
    assert [(p["number"], p["name"], p["size"]) for p in after] == [  # type: ignore[attr-defined]
        (2, "swap space", 4 * MiB),
        (3, "root", parts[2]["size"]),
    ]
    assert burrow(capsys, "resize", img, "2", "max")[0] == 0
    assert sfdisk_table(img)["partitions"][0]["size"] == 8 * MiB  # type: ignore[index]
    assert sgdisk_clean(img), sgdisk_verify(img)


@pytest.mark.tool("sfdisk")
def test_mbr_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = make_raw(tmp_path / "disk.img", 64 * MiB)
    assert burrow(capsys, "init", img, "mbr")[0] == 0
    assert burrow(capsys, "add", img, "--size", "10M", "--type", "0c", "--bootable")[0] == 0
    assert burrow(capsys, "add", img, "--size", "10M", "--logical", "--type", "83")[0] == 0
    assert burrow(capsys, "add", img, "--size", "4M", "--type", "swap")[0] == 0
    listing = _listing(capsys, img)
    assert listing["table"] == "mbr"
    parts = listing["partitions"]
    assert isinstance(parts, list)
    assert [(p["number"], p["type"]) for p in parts] == [
        (1, "0x0c"),
        (2, "0x05"),
        (5, "0x83"),
        (6, "0x82"),
    ]
    assert parts[0]["bootable"] and parts[0]["name"] == ""
    oracle = sfdisk_table(img)["partitions"]
    assert [(p["number"], p["start"], p["size"]) for p in oracle] == [  # type: ignore[attr-defined]
        (p["number"], p["start"], p["size"]) for p in parts
    ]
    code, _, err = burrow(capsys, "rename", img, "1", "x")
    assert code == errors.EXIT_UNSUPPORTED and err.count("\n") == 1


@pytest.mark.tool("qemu-img", "sgdisk", "sfdisk")
def test_qcow2_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    q = tmp_path / "disk.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", q, "64M")
    assert burrow(capsys, "init", q, "gpt")[0] == 0
    assert burrow(capsys, "add", q, "--size", "16M", "--type", "esp")[0] == 0
    assert burrow(capsys, "add", q, "--type", "linux", "--name", "data")[0] == 0
    qemu_img("check", q)
    raw = tmp_path / "disk.raw"
    qemu_img("convert", "-O", "raw", q, raw)
    assert sgdisk_clean(raw), sgdisk_verify(raw)
    listing = _listing(capsys, q)
    oracle = sfdisk_table(raw)["partitions"]
    assert [(p["start"], p["size"], p["name"]) for p in listing["partitions"]] == [  # type: ignore[attr-defined]
        (p["start"], p["size"], p["name"])
        for p in oracle  # type: ignore[attr-defined]
    ]


def test_errors_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img = make_raw(tmp_path / "disk.img", 16 * MiB)
    code, out, _ = burrow(capsys, "list", img)
    assert code == 0 and "no partition table" in out
    assert json.loads(burrow(capsys, "list", img, "--json")[1])["table"] is None
    code, _, err = burrow(capsys, "add", img)
    assert code == errors.EXIT_USAGE and err.startswith("burrow: ")
    assert burrow(capsys, "init", img, "gpt")[0] == 0
    assert burrow(capsys, "add", img, "--size", "4M")[0] == 0
    digest = _digest(img)
    for args, expected in [
        (("add", img, "--size", "64M"), errors.EXIT_FILESYSTEM),
        (("add", img, "--size", "12X"), errors.EXIT_USAGE),
        (("add", img, "--type", "no-such-type"), errors.EXIT_USAGE),
        (("rm", img, "9"), errors.EXIT_FILESYSTEM),
        (("resize", img, "1", "1T"), errors.EXIT_FILESYSTEM),
        (("rename", img, "1", "n" * 40), errors.EXIT_USAGE),
        (("init", img, "mbr"), errors.EXIT_FILESYSTEM),  # refuses to replace without --force
        (("list", tmp_path / "missing.img"), errors.EXIT_FILESYSTEM),
    ]:
        code, out, err = burrow(capsys, *args)
        assert code == expected, (args, err)
        assert err.startswith("burrow: ") and err.count("\n") == 1, err
        assert _digest(img) == digest
    assert burrow(capsys, "init", img, "mbr", "--force")[0] == 0
    assert _listing(capsys, img)["table"] == "mbr"


@pytest.mark.tool("sgdisk")
def test_corrupt_table_write_commands_refuse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = make_gpt(tmp_path / "disk.img", 16 * MiB, [("1:2048:+4M",)])
    fd = os.open(img, os.O_RDWR)
    try:
        os.pwrite(fd, b"\x01", 1024 + 40)  # primary entries
        os.pwrite(fd, b"\x01", img.stat().st_size - 512 + 40)  # backup header
    finally:
        os.close(fd)
    digest = _digest(img)
    for args in (
        ("list", img),
        ("add", img, "--size", "1M"),
        ("rm", img, "1"),
        ("resize", img, "1", "2M"),
        ("rename", img, "1", "x"),
        ("init", img, "gpt"),
        ("fix", img),
    ):
        code, _, err = burrow(capsys, *args)
        assert code == errors.EXIT_CORRUPT, (args, err)
        assert "corrupt" in err and err.count("\n") == 1
    assert _digest(img) == digest


@pytest.mark.tool("sgdisk")
def test_fix_rebuilds_primary_from_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = make_gpt(tmp_path / "disk.img", 16 * MiB, [("1:2048:+4M", "1:8300", "1:keep")])
    fd = os.open(img, os.O_RDWR)
    try:
        os.pwrite(fd, bytes(512), 512)
    finally:
        os.close(fd)
    code, out, err = burrow(capsys, "list", img)
    assert code == 0 and "keep" in out and "warning: primary GPT is damaged" in err
    assert not sgdisk_clean(img)
    code, out, _ = burrow(capsys, "fix", img)
    assert code == 0 and "fixed: primary GPT is damaged" in out
    assert sgdisk_clean(img), sgdisk_verify(img)
    assert burrow(capsys, "list", img)[2] == ""


def test_parse_size() -> None:
    assert parse_size("512") == 512
    assert parse_size("512K") == 512 * 1024
    assert parse_size("1.5M") == 3 * MiB // 2
    assert parse_size("2G") == 2 << 30
    assert parse_size("1TiB") == 1 << 40
    assert parse_size("3mb") == 3 * MiB
    for bad in ("", "0", "-1M", "1.0000001K", "12X", "M"):
        with pytest.raises(errors.UsageError):
            parse_size(bad)


def test_real_entry_point(tmp_path: Path) -> None:
    img = make_raw(tmp_path / "disk.img", 8 * MiB)
    cmd = [sys.executable, "-m", "burrow", "part"]
    subprocess.run([*cmd, "init", img, "gpt"], check=True, capture_output=True)
    subprocess.run([*cmd, "add", img, "--size", "2M"], check=True, capture_output=True)
    out = subprocess.run([*cmd, "list", img, "--json"], check=True, capture_output=True).stdout
    assert json.loads(out)["partitions"][0]["size"] == 2 * MiB
