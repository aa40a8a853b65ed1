"""``burrow mkfs``: FAT on new files, existing images and partitions inside images."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from tests.fat_helpers import ENV, fsck_clean, host_tree, mtools_tree, tool
from tests.images import make_tree

from burrow import errors
from burrow.fs.fat.ondisk import parse_geometry


def burrow(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "burrow", *map(os.fspath, args)],
        capture_output=True,
        text=True,
        env=ENV,
    )


@pytest.mark.tool("fsck.fat", "mcopy", "mlabel")
def test_mkfs_fat_new_file_from_dir(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    (src / "Long Name With Spaces.txt").write_text("long\n")
    img = tmp_path / "new.img"
    proc = burrow("mkfs", "fat", img, "--size", "64M", "--label", "Data", "--from", src)
    assert proc.returncode == 0, proc.stderr
    assert img.stat().st_size == 64 << 20
    fsck_clean(img)
    assert "DATA" in tool("mlabel", "-s", "-i", img, "::").stdout
    # symlinks are followed (like mcopy); the hard link becomes a second copy
    assert mtools_tree(img, tmp_path / "mt") == host_tree(src)


@pytest.mark.tool("mkfs.fat", "fsck.fat")
@pytest.mark.parametrize(("size_kib", "fat"), [(1440, None), (32768, "16"), (40000, "32")])
def test_mkfs_fat_existing_image_matches_mkfs_fat(
    tmp_path: Path, size_kib: int, fat: str | None
) -> None:
    ours, ref = tmp_path / "ours.img", tmp_path / "ref.img"
    for p in (ours, ref):
        with open(p, "wb") as f:
            f.truncate(size_kib * 1024)
    tool("mkfs.fat", *(["-F", fat] if fat else []), ref)
    proc = burrow("mkfs", "fat", ours, *(["--fat", fat] if fat else []))
    assert proc.returncode == 0, proc.stderr
    fsck_clean(ours)
    a = parse_geometry(ours.read_bytes()[:512], ours.stat().st_size)
    b = parse_geometry(ref.read_bytes()[:512], ref.stat().st_size)
    for field in (
        "fat_bits", "sector_size", "sectors_per_cluster", "reserved_sectors", "num_fats",
        "fat_sectors", "root_entries", "total_sectors", "media", "sectors_per_track", "heads",
        "data_offset", "cluster_count", "fsinfo_sector", "backup_boot_sector", "root_cluster",
    ):  # fmt: skip
        assert getattr(a, field) == getattr(b, field), field
    if a.fat_bits == 32:
        data = ours.read_bytes()
        assert data[0:90] == data[6 * 512 : 6 * 512 + 90]  # backup boot sector
        assert data[510:512] == b"\x55\xaa"


@pytest.mark.tool("sfdisk", "fsck.fat", "mdir")
def test_mkfs_fat_on_partition(tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(
        ["sfdisk", "-q", img], input="label: gpt\nstart=2048, size=81920, type=U\n,\n",
        text=True, check=True, capture_output=True,
    )  # fmt: skip
    before = img.read_bytes()
    src = tmp_path / "src"
    (src / "EFI" / "BOOT").mkdir(parents=True)
    (src / "EFI" / "BOOT" / "BOOTX64.EFI").write_bytes(os.urandom(20000))
    proc = burrow("mkfs", "fat", f"{img}@1", "--label", "ESP", "--from", src)
    assert proc.returncode == 0, proc.stderr
    after = img.read_bytes()
    start, end = 2048 * 512, (2048 + 81920) * 512
    assert after[:start] == before[:start] and after[end:] == before[end:]  # only the partition
    assert struct.unpack_from("<I", after, start + 28)[0] == 2048  # hidden sectors
    fsck_clean(img, offset=start)
    listing = tool("mdir", "-/", "-i", f"{img}@@{start}", "::").stdout
    assert "BOOTX64" in listing and "ESP" in listing


@pytest.mark.tool("sgdisk", "fsck.fat", "mdir")
def test_mkfs_fat_on_a_gpt_partition_named_like_the_other_commands(tmp_path: Path) -> None:
    """``IMAGE@NAME`` selects a GPT partition by name in ``ls``/``nbd serve``; mkfs too.

    A name that matches nothing is "no partition", not "give --size to create it".
    """
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(
        ["sgdisk", "-n", "1:2048:+20M", "-t", "1:ef00", "-c", "1:EFI system", "-n", "2:0:0",
         "-c", "2:data", img],
        check=True, capture_output=True,
    )  # fmt: skip
    before = img.read_bytes()
    proc = burrow("mkfs", "fat", f"{img}@EFI system", "--label", "ESP")
    assert proc.returncode == 0, proc.stderr
    after = img.read_bytes()
    start, end = 2048 * 512, (2048 + 40960) * 512
    assert after[:start] == before[:start] and after[end:] == before[end:]  # only partition 1
    fsck_clean(img, offset=start)
    assert "ESP" in tool("mdir", "-i", f"{img}@@{start}", "::").stdout
    proc = burrow("mkfs", "fat", f"{img}@nosuchname")
    assert proc.returncode == errors.EXIT_FILESYSTEM, proc.stderr
    assert "no partition" in proc.stderr and "--size" not in proc.stderr
    assert not (tmp_path / "disk.img@nosuchname").exists()
    assert img.read_bytes() == after


def test_mkfs_from_a_tree_that_does_not_fit_names_the_file(tmp_path: Path) -> None:
    """FAT12/16 roots hold a fixed number of entries: the one-line error names the file that
    did not fit (as ``burrow cp`` does), and no half-made new image is left."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(300):
        (src / f"a long file name number {i:03d}.txt").write_text(str(i))
    target = tmp_path / "floppy.img"
    proc = burrow("mkfs", "fat", target, "--size", "1440K", "--from", src)
    assert proc.returncode == errors.EXIT_FILESYSTEM, proc.stderr
    line = proc.stderr.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith("burrow: /a long file name number "), line
    assert "root directory is full" in line
    assert not target.exists()


def test_mkfs_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.img"
    proc = burrow("mkfs", "fat", missing)
    assert proc.returncode == errors.EXIT_USAGE and "--size" in proc.stderr
    assert not missing.exists()
    proc = burrow("mkfs", "fat", tmp_path / "tiny.img", "--size", "16K")
    assert proc.returncode == errors.EXIT_USAGE
    proc = burrow("mkfs", "fat", tmp_path / "x.img", "--size", "8M", "--fat", "13")
    assert proc.returncode == errors.EXIT_USAGE
    plain = tmp_path / "plain.img"
    with open(plain, "wb") as f:
        f.truncate(8 << 20)
    proc = burrow("mkfs", "fat", f"{plain}@1")
    assert proc.returncode == errors.EXIT_USAGE and "partition table" in proc.stderr
    proc = burrow("mkfs", "fat", plain, "--from", tmp_path / "nope")
    assert proc.returncode == errors.EXIT_USAGE
    assert plain.read_bytes() == bytes(8 << 20)  # nothing written on a refused request
    proc = burrow("mkfs", "fat", plain, "--label", "bad:label")
    assert proc.returncode == errors.EXIT_USAGE


def test_refused_mkfs_leaves_no_new_file(tmp_path: Path) -> None:
    """A mkfs that fails must not leave a half-made image behind (the user did not get one)."""
    cases = [
        ("tiny.img", ["--size", "16K"]),
        ("label.img", ["--size", "8M", "--label", "waytoolonglabel"]),
        ("badlabel.img", ["--size", "8M", "--label", "bad:label"]),
        ("vid.img", ["--size", "8M", "--volume-id", "zz"]),
        ("from.img", ["--size", "8M", "--from", str(tmp_path / "nope")]),
        ("tiny.qcow2", ["--size", "16K", "--format", "qcow2"]),
    ]
    for name, extra in cases:
        target = tmp_path / name
        proc = burrow("mkfs", "fat", target, *extra)
        assert proc.returncode == errors.EXIT_USAGE, (name, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not target.exists(), f"{name} left behind after: {proc.stderr.strip()}"
    existing = tmp_path / "existing.img"
    existing.write_bytes(b"keep" * 1024)
    proc = burrow("mkfs", "fat", existing, "--volume-id", "zz")
    assert proc.returncode == errors.EXIT_USAGE
    assert existing.read_bytes() == b"keep" * 1024  # an existing file is never removed


@pytest.mark.tool("e2fsck")
def test_mkfs_ext4_branch(tmp_path: Path) -> None:
    img = tmp_path / "ext.img"
    proc = burrow("mkfs", "ext4", img, "--size", "32M", "--label", "root")
    if proc.returncode == errors.EXIT_UNSUPPORTED:
        pytest.skip("ext4 mkfs not available yet")
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run(["e2fsck", "-fn", img], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.tool("qemu-img", "fsck.fat", "mcopy")
def test_mkfs_fat_qcow2(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "dir").mkdir(parents=True)
    (src / "dir" / "file name.bin").write_bytes(os.urandom(100_000))
    img = tmp_path / "disk.qcow2"
    tool("qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
    proc = burrow("mkfs", "fat", img, "--fat", "16", "--from", src)
    assert proc.returncode == 0, proc.stderr
    assert "No errors" in tool("qemu-img", "check", img).stdout
    raw = tmp_path / "disk.raw"
    tool("qemu-img", "convert", "-O", "raw", img, raw)
    fsck_clean(raw)
    assert mtools_tree(raw, tmp_path / "mt") == host_tree(src)


@pytest.mark.tool("sgdisk", "fsck.fat")
def test_whole_partitioned_disk_needs_force(tmp_path: Path) -> None:
    """Like mke2fs, formatting a whole disk that holds a partition table is refused (exit 2,
    nothing written) unless --force; IMAGE@N formats just the partition."""
    from tests.images import make_gpt

    img = make_gpt(tmp_path / "disk.img", 32 << 20, [("1:2048:+16M", "1:0700", "1:data")])
    before = img.read_bytes()
    proc = burrow("mkfs", "fat", img)
    assert proc.returncode == errors.EXIT_USAGE
    assert "partition table" in proc.stderr and "@N" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert img.read_bytes() == before
    assert burrow("mkfs", "fat", f"{img}@1").returncode == 0
    assert burrow("mkfs", "fat", "--force", img).returncode == 0
    fsck_clean(img)
