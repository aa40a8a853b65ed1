"""``burrow create``: images from specs, checked by qemu-img check, sgdisk -v / sfdisk -V,
e2fsck -fn and fsck.fat -n per partition, mtools and (as root) a kernel loop mount."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from burrow import errors
from burrow.spec import load_spec, parse_spec
from disk_helpers import MiB, burrow_cli, esp_tree, os_tree, snapshot
from images import run

pytestmark = pytest.mark.tool("qemu-img", "sgdisk", "e2fsck", "fsck.fat", "mtype")


def raw_of(image: Path, tmp: Path) -> Path:
    info = json.loads(run(["qemu-img", "info", "--output=json", image]).stdout)
    if info["format"] == "raw":
        return image
    out = tmp / (image.name + ".raw")
    run(["qemu-img", "convert", "-O", "raw", image, out])
    return out


def partition_file(raw: Path, start: int, size: int, out: Path) -> Path:
    with open(raw, "rb") as f:
        f.seek(start)
        out.write_bytes(f.read(size))
    return out


def check_fs(part: Path, fstype: str) -> None:
    if fstype.startswith("ext"):
        proc = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
    else:
        proc = subprocess.run(["fsck.fat", "-n", str(part)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def write_spec(tmp: Path, text: str) -> Path:
    spec = tmp / "spec.toml"
    spec.write_text(text)
    return spec


def test_gpt_qcow2_with_esp_and_root(tmp_path: Path) -> None:
    os_tree(tmp_path / "rootfs")
    esp_tree(tmp_path / "esp")
    spec = write_spec(
        tmp_path,
        """
table = "gpt"
size = "160M"
[[partitions]]
name = "ESP"
type = "esp"
size = "40M"
filesystem = "fat"
label = "ESP"
contents = ["esp"]
[[partitions]]
name = "root"
type = "root-x86-64"
filesystem = "ext4"
label = "root"
contents = ["rootfs"]
ownership = "all_root"
[partitions.owners]
"/home/alice" = "1000:1000"
[partitions.modes]
"/etc/host*" = "0600"
""",
    )
    image = tmp_path / "out.qcow2"
    burrow_cli("create", str(image), "--spec", str(spec))
    run(["qemu-img", "check", image])
    raw = raw_of(image, tmp_path)
    run(["sgdisk", "-v", raw])
    table = json.loads(run(["sfdisk", "-J", raw]).stdout)["partitiontable"]
    p1, p2 = table["partitions"]
    assert p1["type"] == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" and p1["name"] == "ESP"
    assert p2["type"] == "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709" and p2["name"] == "root"
    assert p1["size"] * 512 == 40 * MiB
    esp = partition_file(raw, p1["start"] * 512, p1["size"] * 512, tmp_path / "esp.part")
    root = partition_file(raw, p2["start"] * 512, p2["size"] * 512, tmp_path / "root.part")
    check_fs(esp, "fat")
    check_fs(root, "ext4")
    got = subprocess.run(["mtype", "-i", str(esp), "::/loader.conf"], capture_output=True)
    assert got.stdout == b"timeout 3\n"
    label = subprocess.run(["blkid", "-p", "-o", "value", "-s", "LABEL", str(root)],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert label in ("root", "")  # blkid may be missing its probe for a partition file
    st = json.loads(burrow_cli("stat", "--json", f"{image}:/home/alice/notes.txt").stdout)
    assert (st["uid"], st["gid"]) == (1000, 1000)
    st = json.loads(burrow_cli("stat", "--json", f"{image}:/usr/bin/tool").stdout)
    assert (st["uid"], st["gid"], st["mode_octal"]) == (0, 0, "4755")
    st = json.loads(burrow_cli("stat", "--json", f"{image}:/etc/hostname").stdout)
    assert st["mode_octal"] == "0600"
    if os.geteuid() == 0:
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", "-o", "ro,loop", str(root), str(mnt)], check=True)
        try:
            ours = snapshot(mnt)
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
        want = snapshot(tmp_path / "rootfs")
        for rel, rec in want.items():  # apply the spec's ownership rules to the oracle
            # srv/hardlink is the same inode as home/alice/notes.txt
            alice = rel.startswith("home/alice") or rel == "srv/hardlink"
            rec["uid"] = rec["gid"] = 1000 if alice else 0
            if rel.startswith("etc/host"):
                rec["mode"] = (rec["mode"] & ~0o7777) | 0o600
        assert ours == want


@pytest.mark.tool("sfdisk")
def test_mbr_raw_with_tar_contents(tmp_path: Path) -> None:
    tarball = tmp_path / "rootfs.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, uid in (("opt", 0), ("opt/app.bin", 4242)):
            ti = tarfile.TarInfo(name)
            ti.uid = ti.gid = uid
            if name.endswith(".bin"):
                data = os.urandom(100_000)
                ti.size = len(data)
                import io

                tar.addfile(ti, io.BytesIO(data))
            else:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(ti)
    spec = write_spec(
        tmp_path,
        """
table = "mbr"
format = "raw"
[[partitions]]
type = "0c"
size = "34M"
bootable = true
filesystem = "fat32"
label = "BOOT"
[[partitions]]
type = "83"
filesystem = "ext3"
label = "data"
contents = ["rootfs.tar.gz", { source = "rootfs.tar.gz", target = "/again" }]
""",
    )
    image = tmp_path / "mbr.img"
    burrow_cli("create", str(image), "--spec", str(spec), "--size", "96M")
    assert image.stat().st_size == 96 * MiB
    run(["sfdisk", "-V", image])
    table = json.loads(run(["sfdisk", "-J", image]).stdout)["partitiontable"]
    assert table["label"] == "dos"
    p1, p2 = table["partitions"]
    assert p1["type"] == "c" and p1.get("bootable") is True and p2["type"] == "83"
    check_fs(partition_file(image, p1["start"] * 512, p1["size"] * 512, tmp_path / "p1"), "fat")
    p2file = partition_file(image, p2["start"] * 512, p2["size"] * 512, tmp_path / "p2")
    check_fs(p2file, "ext3")
    if os.geteuid() == 0:  # the kernel reads back what the tar said
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", "-o", "ro,loop", str(p2file), str(mnt)], check=True)
        try:
            for rel in ("opt/app.bin", "again/opt/app.bin"):
                st = os.stat(mnt / rel)
                assert (st.st_uid, st.st_gid, st.st_size) == (4242, 4242, 100_000)
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
    info = json.loads(burrow_cli("info", "--json", str(image)).stdout)
    fs = {f["number"]: f for f in info["filesystems"]}
    assert fs[1]["label"] == "BOOT" and "fat32" in fs[1]["features"]
    assert fs[2]["fstype"] == "ext3" and fs[2]["label"] == "data"
    for path in ("/opt/app.bin", "/again/opt/app.bin"):
        st = json.loads(burrow_cli("stat", "--json", f"{image}@data:{path}").stdout)
        assert (st["uid"], st["size"]) == (4242, 100_000)


def test_whole_disk_filesystem(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("a\n")
    spec = write_spec(
        tmp_path,
        """
table = "none"
format = "raw"
size = "32M"
filesystem = "ext2"
label = "plain"
uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
contents = ["files"]
ownership = "invoking"
""",
    )
    image = tmp_path / "plain.img"
    burrow_cli("create", str(image), "--spec", str(spec))
    check_fs(image, "ext2")
    info = json.loads(burrow_cli("info", "--json", str(image)).stdout)
    assert info["table"] is None
    assert info["filesystems"][0]["uuid"] == "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    st = json.loads(burrow_cli("stat", "--json", f"{image}:/a.txt").stdout)
    assert (st["uid"], st["gid"]) == (os.getuid(), os.getgid())


def test_empty_image_and_refusals(tmp_path: Path) -> None:
    image = tmp_path / "empty.qcow2"
    burrow_cli("create", str(image), "--size", "1G")
    info = json.loads(run(["qemu-img", "info", "--output=json", image]).stdout)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 1 << 30)
    run(["qemu-img", "check", image])
    raw = tmp_path / "empty.raw"
    burrow_cli("create", str(raw), "--size", "10M", "--format", "raw")
    assert raw.stat().st_size == 10 * MiB and raw.stat().st_blocks == 0
    proc = burrow_cli("create", str(raw), "--size", "10M", check=False)
    assert proc.returncode == errors.EXIT_FILESYSTEM and b"exists" in proc.stderr
    proc = burrow_cli("create", str(tmp_path / "x.img"), check=False)
    assert proc.returncode == errors.EXIT_USAGE
    bad = write_spec(tmp_path, 'table = "gpt"\nsize = "64M"\n[[partitions]]\nfilesytem = "ext4"\n')
    proc = burrow_cli("create", str(tmp_path / "typo.img"), "--spec", str(bad), check=False)
    assert proc.returncode == errors.EXIT_USAGE and b"filesytem" in proc.stderr
    assert not (tmp_path / "typo.img").exists()
    # a build that fails half-way leaves no file behind
    spec = write_spec(
        tmp_path,
        """
table = "gpt"
size = "64M"
[[partitions]]
filesystem = "ext4"
contents = ["does-not-exist"]
""",
    )
    proc = burrow_cli("create", str(tmp_path / "half.img"), "--spec", str(spec), check=False)
    assert proc.returncode != 0 and b"does-not-exist" in proc.stderr
    assert not (tmp_path / "half.img").exists()
    # too small for what the spec asks
    spec = write_spec(
        tmp_path,
        """
table = "gpt"
size = "8M"
[[partitions]]
size = "64M"
""",
    )
    proc = burrow_cli("create", str(tmp_path / "small.img"), "--spec", str(spec), check=False)
    assert proc.returncode != 0 and not (tmp_path / "small.img").exists()


def test_spec_parsing_errors(tmp_path: Path) -> None:
    for text, needle in [
        ({"table": "zfs"}, "gpt, mbr or none"),
        ({"partitions": [{"size": "*"}, {"size": "1M"}]}, "only the last"),
        ({"partitions": [{"contents": ["x"]}]}, "need a filesystem"),
        ({"partitions": [{"filesystem": "btrfs"}]}, "btrfs"),
        ({"partitions": [{"filesystem": "ext4", "owners": {"/x": "bob"}}]}, "UID:GID"),
        ({"table": "none", "partitions": [{}]}, "takes no"),
        ({"size": "-5M"}, "invalid size"),
    ]:
        with pytest.raises(errors.UsageError) as info:
            parse_spec(text, tmp_path)
        assert needle in str(info.value), (text, info.value)
    (tmp_path / "broken.toml").write_text("table = [")
    with pytest.raises(errors.UsageError):
        load_spec(tmp_path / "broken.toml")
