"""The disk API on images made by real tools: partition and filesystem selection, reading, and
whole-tree copy-out judged by the kernel (loop mount), ``debugfs rdump`` and ``mcopy -s``."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import burrow.disk
from burrow import errors
from burrow.disk import Disk, backing_chain, parse_address
from burrow.fs.copy import copy_out
from disk_helpers import (
    MiB,
    esp_tree,
    ext4_image,
    fat_image,
    gpt_disk,
    os_tree,
    place,
    snapshot,
)
from images import make_gpt, make_mbr, make_raw, qemu_img, run

pytestmark = pytest.mark.tool("mkfs.ext4", "mkfs.fat", "mcopy", "sgdisk")


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("trees")
    return os_tree(base / "root"), esp_tree(base / "esp")


@pytest.fixture(scope="module")
def disk_img(tmp_path_factory: pytest.TempPathFactory, trees: tuple[Path, Path]) -> Path:
    return gpt_disk(tmp_path_factory.mktemp("disk"), *trees)


def test_whole_disk_ext4(tmp_path: Path, trees: tuple[Path, Path]) -> None:
    img = ext4_image(tmp_path / "fs.img", trees[0])
    with burrow.disk.open(img) as disk:
        assert disk.partitions == [] and disk.table is None
        fs = disk.mount()
        assert fs.read_text("/etc/os-release").startswith("PRETTY_NAME")
        assert fs.readlink("/bin") == "usr/bin"
        assert fs.read_bytes("/bin/tool") == (trees[0] / "usr/bin/tool").read_bytes()
        assert disk.mount(1) is fs and disk.mount("root") is fs
        walked = {d: (sorted(ds), sorted(f)) for d, ds, f in fs.walk("/")}
        expected = {}
        for d, ds, f in os.walk(trees[0]):
            rel = "/" + os.path.relpath(d, trees[0])
            expected["/" if rel == "/." else rel] = (sorted(ds), sorted(f))
        expected["/"][0].append("lost+found")
        expected["/"][0].sort()
        expected["/lost+found"] = ([], [])
        assert walked == expected


def test_gpt_selection(disk_img: Path) -> None:
    with Disk(disk_img) as disk:
        assert [p.number for p in disk.partitions] == [1, 2]
        assert disk.table is not None and disk.table.kind == "gpt"
        root = disk.mount()  # two filesystems: the one with /etc/os-release wins
        assert root.read_text("/etc/hostname") == "testhost\n"
        assert disk.mount(2) is root and disk.mount("2") is root and disk.mount("rootfs") is root
        esp = disk.mount("ESP")  # GPT partition name
        assert esp is disk.mount("EFI") is disk.mount("efi") is disk.mount(1)
        assert esp.read_text("/loader.conf") == "timeout 3\n"
        entries = {e.number: e for e in disk.filesystems()}
        assert entries[1].fstype == "vfat" and entries[1].label == "EFI"
        assert entries[2].fstype == "ext4" and entries[2].label == "root" and entries[2].is_root
        blkid = subprocess.run(
            ["blkid", "-p", "-o", "value", "-s", "UUID", str(Path(disk_img).parent / "root.part")],
            capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        if blkid:
            assert entries[2].uuid == blkid
        with pytest.raises(errors.NotFound):
            disk.mount("nosuch")
        with pytest.raises(errors.NotFound):
            disk.mount(7)


def test_several_filesystems_without_a_root_need_a_choice(tmp_path: Path) -> None:
    disk = make_gpt(tmp_path / "d.img", 40 * MiB, [("1:2048:+16M", "1:0700", "1:a"),
                                                   ("2:0:+16M", "2:0700", "2:b")])  # fmt: skip
    place(disk, fat_image(tmp_path / "a", None, 16, "AAA"), MiB)
    place(disk, fat_image(tmp_path / "b", None, 16, "BBB"), 17 * MiB)
    with Disk(disk) as d:
        with pytest.raises(errors.UsageError) as info:
            d.mount()
        assert "AAA" in str(info.value) and "BBB" in str(info.value)
        assert d.mount("BBB").info().label == "BBB"


def test_largest_ext_is_the_fallback_root(tmp_path: Path) -> None:
    disk = make_gpt(tmp_path / "d.img", 60 * MiB, [("1:2048:+16M", "1:8300", "1:small"),
                                                   ("2:0:+40M", "2:8300", "2:big")])  # fmt: skip
    place(disk, ext4_image(tmp_path / "a", None, 16, "small"), MiB)
    place(disk, ext4_image(tmp_path / "b", None, 40, "big"), 17 * MiB)
    with Disk(disk) as d:
        assert d.mount().info().label == "big"


@pytest.mark.tool("sfdisk")
def test_mbr_logical_partition(tmp_path: Path) -> None:
    disk = make_mbr(tmp_path / "m.img", 64 * MiB,
                    "label: dos\nstart=2048, size=16M, type=c\nstart=34816, type=5\n"
                    "start=36864, size=20M, type=83\n")  # fmt: skip
    place(disk, ext4_image(tmp_path / "l", None, 20, "logical"), 36864 * 512)
    with Disk(disk) as d:
        assert [p.number for p in d.partitions] == [1, 2, 5]
        assert d.mount().info().label == "logical"  # the only filesystem
        assert d.mount(5).info().label == "logical"
        with pytest.raises(errors.UsageError):
            d.mount(2)  # the extended container


def test_nothing_mountable(tmp_path: Path) -> None:
    img = make_raw(tmp_path / "z.img", 4 * MiB)
    with Disk(img) as d, pytest.raises(errors.Unsupported):
        d.mount()
    swap = make_raw(tmp_path / "swap.img", 4 * MiB)
    run(["mkswap", swap])
    with Disk(swap) as d:
        with pytest.raises(errors.Unsupported) as info:
            d.mount()
        assert info.value.feature == "swap"
        assert d.filesystems()[0].fstype == "swap"


def test_corrupt_superblock_is_reported(tmp_path: Path) -> None:
    img = ext4_image(tmp_path / "c.img", None, 8)
    with open(img, "r+b") as f:  # keep the magic, break the geometry
        f.seek(1024 + 0x18)  # s_log_block_size
        f.write((40).to_bytes(4, "little"))
    with Disk(img) as d, pytest.raises((errors.CorruptImage, errors.Unsupported)):
        d.mount()


def _loop(
    image: Path, offset: int = 0, fstype: str = ""
) -> contextlib.AbstractContextManager[Path]:
    @contextlib.contextmanager
    def cm() -> Iterator[Path]:
        mnt = image.parent / f"mnt-{offset}"
        mnt.mkdir(exist_ok=True)
        opts = f"ro,loop,offset={offset}"
        subprocess.run(["mount", *(["-t", fstype] if fstype else []), "-o", opts, str(image),
                        str(mnt)], check=True, capture_output=True)  # fmt: skip
        try:
            yield mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=False)

    return cm()


@pytest.mark.root
def test_copy_out_matches_kernel_loop_mount(disk_img: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with Disk(disk_img) as d:
        copy_out(d.mount(), "/", out, archive=True, contents=True)
    with _loop(disk_img, 33 * MiB) as mnt:
        assert snapshot(out) == snapshot(mnt)
        assert os.stat(out).st_mode == os.stat(mnt).st_mode


@pytest.mark.tool("debugfs")
def test_copy_out_matches_debugfs_rdump(disk_img: Path, tmp_path: Path) -> None:
    part = disk_img.parent / "root.part"
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    with Disk(disk_img) as d:
        copy_out(d.mount(), "/", ours, archive=True, contents=True)
    subprocess.run(["debugfs", "-R", f"rdump / {theirs}", str(part)], check=True,
                   capture_output=True)  # fmt: skip

    def comparable(snap: dict[str, dict[str, object]]) -> dict[str, object]:
        # rdump keeps no hard links, xattrs, set-id bits or special files (fifos, devices)
        return {
            k: (v["mode"] & ~0o7000, v.get("sha"), v.get("target"), v["size"])
            for k, v in snap.items()
            if stat.S_ISDIR(v["mode"]) or stat.S_ISREG(v["mode"]) or stat.S_ISLNK(v["mode"])
        }

    assert comparable(snapshot(ours)) == comparable(snapshot(theirs))


def test_fat_copy_out_matches_mcopy(disk_img: Path, tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    with Disk(disk_img) as d:
        copy_out(d.mount("ESP"), "/", ours, recursive=True, contents=True)
    subprocess.run(["mcopy", "-s", "-n", "-i", str(disk_img.parent / "esp.part"), "::/*",
                    str(theirs)], check=True, capture_output=True)  # fmt: skip

    def content(root: Path) -> dict[str, bytes | None]:
        return {
            str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))
        }

    assert content(ours) == content(theirs)


def test_parse_address(tmp_path: Path) -> None:
    img = tmp_path / "a:b.img"
    img.write_bytes(b"")
    (tmp_path / "plain.img").write_bytes(b"")
    a = parse_address(f"{img}:/etc/x")
    assert (a.kind, a.image, a.part, a.path) == ("image", str(img), None, "/etc/x")
    a = parse_address(f"{tmp_path}/plain.img@ESP:/EFI")
    assert (a.kind, a.image, a.part, a.path) == ("image", f"{tmp_path}/plain.img", "ESP", "/EFI")
    a = parse_address(f"{tmp_path}/plain.img:")
    assert a.path == "/"
    assert parse_address(str(tmp_path)).kind == "host"
    assert parse_address("relative/host/path").kind == "host"
    a = parse_address("missing.img:/x")
    assert (a.kind, a.image) == ("image", "missing.img")
    a = parse_address("burrow://h:7000/exp/some/path")
    assert (a.kind, a.url, a.path) == ("url", "burrow://h:7000/exp", "/some/path")
    a = parse_address("nbd://localhost:10809/exp:/etc")
    assert (a.image, a.path) == ("nbd://localhost:10809/exp", "/etc")
    with pytest.raises(errors.UsageError):
        parse_address("burrow://hostonly")


@pytest.mark.tool("qemu-img")
def test_backing_chain(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-f", "qcow2", base, "16M")
    mid = tmp_path / "mid.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", mid)
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", str(mid), "-F", "qcow2", top)
    chain = backing_chain(top)
    assert [c["filename"] for c in chain] == [str(mid), "base.qcow2"]
    assert [c["format"] for c in chain] == ["qcow2", "qcow2"]
    assert backing_chain(base) == []


@pytest.mark.tool("qemu-img")
def test_qcow2_image(disk_img: Path, tmp_path: Path) -> None:
    q = tmp_path / "disk.qcow2"
    qemu_img("convert", "-O", "qcow2", disk_img, q)
    try:
        d = Disk(q)
    except errors.Unsupported as exc:
        pytest.skip(f"qcow2 engine not available yet: {exc}")
    with d:
        assert d.format == "qcow2"
        assert d.mount().read_text("/etc/hostname") == "testhost\n"


def _writable(img: Path) -> Disk:
    try:
        return Disk(img, writable=True)
    except errors.Unsupported as exc:
        pytest.skip(f"writing needs the overlay: {exc}")


@pytest.mark.tool("fsck.fat")
def test_writes_commit_on_clean_exit_and_drop_on_error(
    tmp_path: Path, trees: tuple[Path, Path]
) -> None:
    img = gpt_disk(tmp_path, trees[0], trees[1])
    before = img.read_bytes()
    with pytest.raises(RuntimeError), _writable(img) as d:
        d.mount("ESP").write_bytes("/NEW.TXT", b"dropped")
        raise RuntimeError("boom")
    assert img.read_bytes() == before  # the base is untouched until commit
    with _writable(img) as d:
        d.mount("ESP").write_bytes("/NEW.TXT", b"kept\n")
        assert img.read_bytes() == before
    esp = tmp_path / "esp.check"
    with open(img, "rb") as f:
        f.seek(MiB)
        esp.write_bytes(f.read(32 * MiB))
    run(["fsck.fat", "-n", esp])
    got = subprocess.run(["mtype", "-i", str(esp), "::/NEW.TXT"], capture_output=True)
    assert got.stdout == b"kept\n"


def test_read_only_open_never_writes(disk_img: Path) -> None:
    before = os.stat(disk_img)
    data = disk_img.read_bytes()
    with Disk(disk_img) as d:
        fs = d.mount()
        with pytest.raises(errors.ReadOnly):
            fs.write_bytes("/x", b"y")
        list(fs.walk("/"))
    assert disk_img.read_bytes() == data
    assert os.stat(disk_img).st_mtime_ns == before.st_mtime_ns


@pytest.mark.tool("debugfs")
def test_directory_loop_in_a_corrupt_image(tmp_path: Path) -> None:
    """debugfs links /a into /a/b: every tree walker must stop (copy refuses with
    CorruptImage, listings show the loop once) instead of running forever."""
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_text("x\n")
    img = ext4_image(tmp_path / "loop.img", src, 8)
    run(["debugfs", "-w", "-R", "link /a /a/b/loop", img])
    with Disk(img) as d:
        fs = d.mount()
        walked = [p for p, _, _ in fs.walk("/", followlinks=True)]
        assert walked.count("/a") == 1 and "/a/b/loop" not in walked
        with pytest.raises(errors.CorruptImage):
            copy_out(fs, "/", tmp_path / "out", archive=True)
    from disk_helpers import burrow_cli

    proc = burrow_cli("ls", "-R", f"{img}:/a")
    assert proc.stdout.decode().count("/a/b:") == 1
    assert b"loop" in burrow_cli("tree", f"{img}:/").stdout
    proc = burrow_cli("cp", "-a", f"{img}:/", str(tmp_path / "cli"), check=False)
    assert proc.returncode == errors.EXIT_CORRUPT and b"loop" in proc.stderr


@pytest.mark.tool("qemu-img")
def test_backing_chain_never_blocks_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-f", "qcow2", "-u", "-b", str(fifo), "-F", "raw", top, "16M")
    chain = backing_chain(top)  # would hang if it opened the fifo for reading blocking
    assert [c["filename"] for c in chain] == [str(fifo)]


@pytest.mark.tool("fsck.fat")
def test_overlay_scratch_file_and_interrupted_commit(
    tmp_path: Path, trees: tuple[Path, Path]
) -> None:
    img = gpt_disk(tmp_path, trees[0], trees[1])
    with burrow.disk.open_target(f"{img}@ESP", writable=True) as target:
        target.fs.write_bytes("/big.bin", bytes(range(256)) * 8192)
        scratch = [p.name for p in tmp_path.iterdir() if ".burrow-overlay-" in p.name]
        assert len(scratch) == 1  # changes spill to a file next to the image, not memory
    assert not [p for p in tmp_path.iterdir() if ".burrow-overlay-" in p.name]
    with Disk(img) as d:
        assert d.mount("ESP").read_bytes("/big.bin") == bytes(range(256)) * 8192
    # a journal left by an interrupted commit: read-only opens refuse rather than read a
    # half-applied image (and never repair it themselves)
    journal = Path(str(img) + ".burrow-journal")
    journal.write_bytes(b"incomplete")
    with pytest.raises(errors.BurrowError) as info:
        Disk(img)
    assert "interrupted commit" in str(info.value)
    with _writable(img) as d:  # a writable open lets the overlay recover (drops it here)
        d.mount("ESP").read_bytes("/big.bin")
    assert not journal.exists()


def test_disk_over_an_open_device(disk_img: Path) -> None:
    from burrow.block.memory import MemoryDevice

    data = disk_img.read_bytes()
    dev = MemoryDevice(len(data), data=data)
    with Disk.from_device(dev, writable=True, name="mem") as d:
        d.mount("ESP").write_bytes("/MEM.TXT", b"in memory\n")
        assert d.mount().read_text("/etc/hostname") == "testhost\n"
    with Disk.from_device(dev) as d:  # the overlay was committed into the device
        assert d.mount("ESP").read_bytes("/MEM.TXT") == b"in memory\n"
    assert disk_img.read_bytes() == data  # the file itself was never involved
