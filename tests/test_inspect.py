"""``burrow inspect``: operating systems found in images made by real tools; the expected
values are the ones written into the trees (os-release, hostname, fstab), the partition
identities come from sgdisk/blkid, and the architecture from the host's own /bin/sh."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from burrow.disk import Disk
from burrow.inspect import inspect_disk, parse_fstab, parse_os_release
from disk_helpers import MiB, burrow_cli, esp_tree, ext4_image, fat_image, gpt_disk, os_tree, place
from images import make_gpt

pytestmark = pytest.mark.tool("mkfs.ext4", "mkfs.fat", "mcopy", "sgdisk")


def test_parsers() -> None:
    rel = parse_os_release(
        "NAME=\"Debian GNU/Linux\"\n# c\nID=debian\nVERSION='12 (bookworm)'\nBAD\n"
    )
    assert rel == {"NAME": "Debian GNU/Linux", "ID": "debian", "VERSION": "12 (bookworm)"}
    tab = parse_fstab("# x\nUUID=ab / ext4 defaults 0 1\n/dev/sdb1 /mnt/my\\040disk vfat\n")
    assert tab[1]["mountpoint"] == "/mnt/my disk" and tab[1]["options"] == "defaults"


def test_inspect_gpt_disk(tmp_path: Path) -> None:
    root = os_tree(tmp_path / "root")
    shutil.copy("/bin/sh", root / "usr/bin/sh")  # a real ELF for the architecture
    partuuid = "5B2F0E6C-8C1E-4D6A-9B0B-6E9C2D4F1A11"
    (root / "etc/fstab").write_text(
        "LABEL=root / ext4 defaults 0 1\n"
        "LABEL=EFI /boot/efi vfat umask=0077 0 2\n"
        f"PARTUUID={partuuid.lower()} /srv ext4 defaults 0 2\n"
        "/dev/vda3 none swap sw 0 0\n"
        "UUID=0000-DEAD /media/usb vfat noauto 0 0\n"
    )
    disk = gpt_disk(tmp_path, root, esp_tree(tmp_path / "esp"))
    subprocess.run(["sgdisk", "-u", f"2:{partuuid}", str(disk)], check=True, capture_output=True)
    with Disk(disk) as d:
        report = inspect_disk(d)
    (osinfo,) = report["operating_systems"]
    assert osinfo["root"] == 2 and osinfo["root_fstype"] == "ext4"
    assert osinfo["pretty_name"] == "Burrow Test 1" and osinfo["id"] == "burrowtest"
    assert osinfo["version_id"] == "1" and osinfo["hostname"] == "testhost"
    machine = {"x86_64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(platform.machine())
    if machine:
        assert osinfo["arch"] == machine
    assert osinfo["packages"] == {"format": "dpkg", "management": "apt",
                                  "database": "/var/lib/dpkg/status", "count": 2}  # fmt: skip
    assert [k["version"] for k in osinfo["kernels"]] == ["6.1.0-9-amd64"]
    assert osinfo["kernels"][0]["modules"] and osinfo["kernels"][0]["image"]
    mounts = {m["mountpoint"]: m["partition"] for m in osinfo["fstab"]}
    assert mounts == {"/": 2, "/boot/efi": 1, "/srv": 2, "none": None, "/media/usb": None}
    out = json.loads(burrow_cli("inspect", "--json", str(disk)).stdout)
    assert out["operating_systems"][0]["hostname"] == "testhost"
    text = burrow_cli("inspect", str(disk)).stdout.decode()
    assert "Burrow Test 1" in text and "partition 2" in text


def test_no_operating_system(tmp_path: Path) -> None:
    disk = make_gpt(tmp_path / "d.img", 40 * MiB, [("1:2048:+16M", "1:0700", "1:data")])
    place(disk, fat_image(tmp_path / "a", None, 16, "DATA"), MiB)
    with Disk(disk) as d:
        report = inspect_disk(d)
    assert report["operating_systems"] == []
    assert report["filesystems"][0]["label"] == "DATA"
    assert "no operating system" in burrow_cli("inspect", str(disk)).stdout.decode()


def test_alpine_like_whole_disk(tmp_path: Path) -> None:
    root = tmp_path / "alpine"
    (root / "lib/apk/db").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr/lib/os-release").write_text('NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\n')
    os.symlink("../usr/lib/os-release", root / "etc/os-release")
    (root / "lib/apk/db/installed").write_text("P:musl\nV:1\n\nP:busybox\nV:1\n\nP:apk-tools\n")
    img = ext4_image(tmp_path / "alpine.img", root, 16, "alp")
    with Disk(img) as d:
        (osinfo,) = inspect_disk(d)["operating_systems"]
    assert (osinfo["root"], osinfo["id"], osinfo["version_id"]) == (0, "alpine", "3.19.1")
    assert osinfo["packages"]["format"] == "apk" and osinfo["packages"]["count"] == 3
    assert osinfo["hostname"] is None and osinfo["kernels"] == []
