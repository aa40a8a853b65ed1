"""Damaged FAT images: CorruptImage (or a safe reading), never a hang or a stray exception."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from tests.fat_helpers import fs_tree
from tests.images import make_fat

from burrow.block.memory import MemoryDevice
from burrow.block.raw import RawDevice
from burrow.errors import CorruptImage
from burrow.fs.fat import open_fat, probe
from burrow.fs.fat.ondisk import DIRENT_SIZE

pytestmark = pytest.mark.tool("mkfs.fat", "mcopy")


@pytest.fixture
def image(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "file.bin").write_bytes(bytes(range(256)) * 40)  # 10 KiB: 5 clusters of 2 KiB
    (src / "sub" / "inner.txt").write_text("inner\n")
    (src / "Long Name.txt").write_text("long\n")
    return make_fat(tmp_path / "fat16.img", src, size_kib=32768, fat_bits=16)


def _locate(img: Path, *path: str) -> tuple[int, int, int, int]:
    """(dirent offset, first cluster, fat offset, fat size) of a file, found with our reader."""
    with RawDevice(img) as dev, open_fat(dev) as fs:
        ino = fs.root_ino
        parent = ino
        for part in path:
            parent, ino = ino, fs.lookup(ino, part)
        node = fs._nodes[ino]
        assert node.entry is not None
        off = fs._directory(parent).slot_offset(node.entry.slot)
        return off, node.entry.cluster, fs.geo.fat_offset, fs.geo.fat_size


def _set_fat16(img: Path, fat_off: int, fat_size: int, cluster: int, value: int) -> None:
    with open(img, "r+b") as f:
        for copy in range(2):
            f.seek(fat_off + copy * fat_size + 2 * cluster)
            f.write(struct.pack("<H", value))


def _open(img: Path) -> object:
    dev = MemoryDevice(img.stat().st_size, data=img.read_bytes())
    return open_fat(dev)


def test_chain_loop_is_corrupt_not_a_hang(image: Path) -> None:
    _, first, fat_off, fat_size = _locate(image, "file.bin")
    _set_fat16(image, fat_off, fat_size, first + 2, first)  # third cluster links back
    with RawDevice(image) as dev, open_fat(dev) as fs:
        ino = fs.lookup(fs.root_ino, "file.bin")
        # only 5 clusters are needed for the size; the loop sits inside them... or not:
        try:
            data = fs.read(ino, 0, 1 << 20)
        except CorruptImage:
            return
        assert len(data) == 10240  # the safe reading: the loop starts past the file's end


def test_directory_chain_loop(image: Path) -> None:
    _, first, fat_off, fat_size = _locate(image, "sub")
    _set_fat16(image, fat_off, fat_size, first, first)  # a directory cluster linking to itself
    with RawDevice(image) as dev, open_fat(dev) as fs:
        sub = fs.lookup(fs.root_ino, "sub")
        with pytest.raises(CorruptImage):
            list(fs.readdir(sub))


@pytest.mark.parametrize("value", [0x0000, 0x0001, 0xFFF7, 0xFFF0])
def test_chain_link_out_of_range(image: Path, value: int) -> None:
    _, first, fat_off, fat_size = _locate(image, "file.bin")
    _set_fat16(image, fat_off, fat_size, first + 1, value)
    with RawDevice(image) as dev, open_fat(dev) as fs:
        ino = fs.lookup(fs.root_ino, "file.bin")
        with pytest.raises(CorruptImage):
            fs.read(ino, 0, 20000)


@pytest.mark.parametrize("cluster", [1, 0xFFFF, 60000])
def test_bad_first_cluster(image: Path, cluster: int) -> None:
    off, _, _, _ = _locate(image, "file.bin")
    with open(image, "r+b") as f:
        f.seek(off + 26)
        f.write(struct.pack("<H", cluster))
    with RawDevice(image) as dev, open_fat(dev) as fs:
        ino = fs.lookup(fs.root_ino, "file.bin")
        with pytest.raises(CorruptImage):
            fs.read(ino, 0, 100)


def test_directory_without_cluster(image: Path) -> None:
    off, _, _, _ = _locate(image, "sub")
    with open(image, "r+b") as f:
        f.seek(off + 26)
        f.write(b"\0\0")
    with RawDevice(image) as dev, open_fat(dev) as fs:
        sub = fs.lookup(fs.root_ino, "sub")
        with pytest.raises(CorruptImage):
            fs.readdir(sub)


def test_truncated_image(image: Path) -> None:
    data = image.read_bytes()
    for cut in (100, 600, 70_000, len(data) // 2):
        dev = MemoryDevice(cut, data=data[:cut])
        assert not probe(dev)
        with pytest.raises(CorruptImage):
            open_fat(dev)


@pytest.mark.parametrize(
    ("offset", "fmt", "value"),
    [
        (11, "<H", 0),  # BPB_BytsPerSec
        (11, "<H", 100),
        (13, "<B", 3),  # BPB_SecPerClus not a power of two
        (13, "<B", 0),
        (14, "<H", 0),  # BPB_RsvdSecCnt
        (16, "<B", 0),  # BPB_NumFATs
        (19, "<H", 0),  # BPB_TotSec16 (and TotSec32 is 0 too on this image)
        (22, "<H", 0),  # BPB_FATSz16 = 0 makes it "FAT32" with no FATSz32
        (510, "<H", 0),  # signature
        (21, "<B", 0x12),  # BPB_Media
    ],
)
def test_bad_bpb_numbers(image: Path, offset: int, fmt: str, value: int) -> None:
    data = bytearray(image.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    if offset == 19:
        struct.pack_into("<I", data, 32, 0)
    dev = MemoryDevice(len(data), data=bytes(data))
    assert not probe(dev)
    with pytest.raises(CorruptImage):
        open_fat(dev)


def test_total_sectors_beyond_device(image: Path) -> None:
    data = bytearray(image.read_bytes())
    struct.pack_into("<H", data, 19, 0)
    struct.pack_into("<I", data, 32, 10 * len(data) // 512)
    with pytest.raises(CorruptImage):
        open_fat(MemoryDevice(len(data), data=bytes(data)))


@pytest.mark.tool("mkfs.fat")
def test_lying_fsinfo_is_recounted(tmp_path: Path) -> None:
    img = make_fat(tmp_path / "f32.img", None, size_kib=40000, fat_bits=32)
    with RawDevice(img) as dev, open_fat(dev) as fs:
        true_free = fs.statfs().f_bfree
    data = bytearray(img.read_bytes())
    for value in (0, 0x7FFFFFFF, true_free + 5):
        struct.pack_into("<II", data, 512 + 488, value, 0xDEADBEEF)  # free count, next free
        with open_fat(MemoryDevice(len(data), data=bytes(data))) as fs:
            assert fs.statfs().f_bfree == true_free


def test_garbage_long_names_fall_back_to_short(image: Path) -> None:
    """A long-name run whose checksum does not match is ignored (the kernel does the same)."""
    with RawDevice(image) as dev, open_fat(dev) as fs:
        d = fs._directory(fs.root_ino)
        lfn_slot = next(
            s for s in range(d.slots) if d.data[s * DIRENT_SIZE + 11] == 0x0F
        )  # some long entry
        off = d.slot_offset(lfn_slot)
    with open(image, "r+b") as f:
        f.seek(off + 13)
        old = f.read(1)[0]
        f.seek(off + 13)
        f.write(bytes([old ^ 0xFF]))
    with RawDevice(image) as dev, open_fat(dev) as fs:
        names = {e.name for e in fs.readdir(fs.root_ino)}
        assert len(names) == 3 and "Long Name.txt" not in names
        fs_tree(fs)


def test_unpaired_surrogate_in_long_name(image: Path) -> None:
    """Invalid UTF-16 on disk shows as U+FFFD and the shown name still works for lookup."""
    with RawDevice(image) as dev, open_fat(dev) as fs:
        d = fs._directory(fs.root_ino)
        slot = next(s for s in range(d.slots) if d.data[s * DIRENT_SIZE + 11] == 0x0F)
        off = d.slot_offset(slot)
    with open(image, "r+b") as f:
        f.seek(off + 1)
        f.write(b"\x00\xd8")  # an unpaired high surrogate as the first character
    with RawDevice(image) as dev, open_fat(dev) as fs:
        names = [e.name for e in fs.readdir(fs.root_ino)]
        odd = next(n for n in names if "\ufffd" in n)
        assert odd == "\ufffdong Name.txt"
        odd.encode("utf-8", "surrogateescape")
        fs.read(fs.lookup(fs.root_ino, odd), 0, 100)


@pytest.mark.tool("mkfs.ext4", "sfdisk")
def test_probe_rejects_other_formats(tmp_path: Path) -> None:
    import subprocess

    ext = tmp_path / "ext.img"
    with open(ext, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", ext], check=True, capture_output=True)
    mbr = tmp_path / "mbr.img"
    with open(mbr, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["sfdisk", "-q", mbr], input=",\n", text=True, check=True, capture_output=True)
    for path in (ext, mbr):
        with RawDevice(path) as dev:
            assert not probe(dev)
            with pytest.raises(CorruptImage):
                open_fat(dev)
    assert not probe(MemoryDevice(0))
    assert not probe(MemoryDevice(4096))


@pytest.mark.tool("mkfs.fat", "mcopy")
def test_fat32_mirroring_disabled_reads_the_active_fat(tmp_path: Path) -> None:
    src = tmp_path / "src32"
    src.mkdir()
    (src / "data file.bin").write_bytes(bytes(range(256)) * 100)
    img = make_fat(tmp_path / "f32.img", src, size_kib=40000, fat_bits=32)
    data = bytearray(img.read_bytes())
    reserved = struct.unpack_from("<H", data, 14)[0]
    fatsz = struct.unpack_from("<I", data, 36)[0]
    struct.pack_into("<H", data, 40, 0x81)  # BPB_ExtFlags: mirroring off, FAT #1 active
    start = reserved * 512
    data[start : start + fatsz * 512] = bytes(fatsz * 512)  # FAT #0 is stale garbage
    with open_fat(MemoryDevice(len(data), data=bytes(data))) as fs:
        ino = fs.lookup(fs.root_ino, "data file.bin")
        assert fs.read(ino, 0, 1 << 20) == bytes(range(256)) * 100
    dev = MemoryDevice(len(data), data=bytes(data))
    with open_fat(dev, readonly=False) as fs:
        w = fs.create(fs.root_ino, "new", 0o644)
        fs.write(w, 0, b"n" * 3000)
    after = dev.pread(fatsz * 512, start)
    assert after == bytes(fatsz * 512)  # the inactive FAT is left alone, as the spec says
    with open_fat(dev) as fs:
        assert fs.read(fs.lookup(fs.root_ino, "new"), 0, 5000) == b"n" * 3000


def test_unlink_file_with_damaged_chain(image: Path) -> None:
    _, first, fat_off, fat_size = _locate(image, "file.bin")
    _set_fat16(image, fat_off, fat_size, first + 1, 0x0001)
    with RawDevice(image, readonly=False) as dev, open_fat(dev, readonly=False) as fs:
        with pytest.raises(CorruptImage):
            fs.read(fs.lookup(fs.root_ino, "file.bin"), 0, 20000)
        fs.unlink(fs.root_ino, "file.bin")  # the name goes; the clusters are left to fsck
        names = {e.name for e in fs.readdir(fs.root_ino)}
        assert "file.bin" not in names and "sub" in names
