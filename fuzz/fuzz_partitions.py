"""Fuzz the MBR/GPT reader (and the writer on whatever reads cleanly).

Input format (so mutations land on table sectors, not on megabytes of zeros): a little-endian
u32 device size in 512-byte sectors, then records of a u32 sector number and 512 bytes to put
there. When bit 31 of the size is set, the harness recomputes every GPT CRC before reading,
so mutations of header fields and entries get past the CRC checks to the semantic ones. Seeds are the non-zero sectors of small disks partitioned by sfdisk (MBR with an
extended partition and two logicals, GPT with names and attributes), sgdisk (GPT with a
hybrid MBR) and fdisk (GPT with 4096-byte sectors): the MBR, EBRs, both GPT headers and both
entry arrays.

Besides "only BurrowError": when a table reads without problems, adding and removing a
partition must leave a table that reads back without CorruptImage.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

from burrow.block.memory import MemoryDevice
from burrow.errors import BurrowError, CorruptImage
from burrow.volume import add_partition, read_table, remove_partition

SECTOR = 512
RECORD = 4 + SECTOR
MAX_SECTORS = 1 << 22  # 2 GiB, sparse in memory
SEED_SIZE = 32 << 20

# The size field, then (for the usual seed order: sector 0, 1, 2...) the MBR table, the GPT
# header in record 1 and the first entries (or EBR) in record 2, and a later record's number.
REGIONS = [
    (0, 4),
    (4 + 4 + 446, 66),
    (4 + RECORD + 4, 96),
    (4 + 2 * RECORD + 4, 256),
    (4 + 2 * RECORD + 4 + 446, 66),
    (4 + 3 * RECORD, 4),
]


FIX_CRCS = 1 << 31


def encode(image: bytes, *, fix_crcs: bool = False) -> bytes:
    """The fuzz input for a disk image: its size and its non-zero sectors."""
    out = [struct.pack("<I", len(image) // SECTOR | (FIX_CRCS if fix_crcs else 0))]
    view = memoryview(image)
    zero = bytes(SECTOR)
    for n in range(len(image) // SECTOR):
        chunk = view[n * SECTOR : (n + 1) * SECTOR]
        if chunk != zero:
            out.append(struct.pack("<I", n) + bytes(chunk))
    return b"".join(out)


def _image(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(SEED_SIZE)
    return path


def seeds(tmp_path: Path) -> list[bytes]:
    if shutil.which("sfdisk") is None:
        import pytest

        pytest.skip("needs sfdisk")
    made: list[bytes] = []
    scripts = {
        "mbr": "label: dos\n,4M,c,*\n,4M,82\n,,5\n,6M,83\n,,8e\n",
        "gpt": 'label: gpt\nsize=4M, type=U, name="EFI system"\n'
        'size=4M, type=S, attrs="RequiredPartition GUID:63"\ntype=L, name="root ü"\n',
    }
    for name, script in scripts.items():
        img = _image(tmp_path / f"{name}.img")
        subprocess.run(
            ["sfdisk", "-q", img], input=script, text=True, check=True, capture_output=True
        )
        made.append(encode(img.read_bytes()))
        made.append(encode(img.read_bytes(), fix_crcs=True))
    if shutil.which("sgdisk"):
        img = _image(tmp_path / "hybrid.img")
        subprocess.run(
            ["sgdisk", "-o", "-n", "1:2048:+4M", "-t", "1:0700", "-n", "2:0:0", "-h", "1", img],
            check=True,
            capture_output=True,
        )
        made.append(encode(img.read_bytes()))
    if shutil.which("fdisk"):
        img = _image(tmp_path / "gpt4k.img")
        keys = "g\nn\n\n\n+4M\nt\n1\nn\n\n\n\nw\n"
        subprocess.run(["fdisk", "-b", "4096", img], input=keys, text=True, capture_output=True)
        made.append(encode(img.read_bytes(), fix_crcs=True))
    return made


def one_input(data: bytes) -> None:
    if len(data) < 4:
        return
    (word,) = struct.unpack_from("<I", data)
    sectors = max(1, min(word & ~FIX_CRCS, MAX_SECTORS))
    dev = MemoryDevice(sectors * SECTOR)
    for pos in range(4, len(data) - RECORD + 1, RECORD):
        (n,) = struct.unpack_from("<I", data, pos)
        if n < sectors:
            dev.pwrite(data[pos + 4 : pos + RECORD], n * SECTOR)
    if word & FIX_CRCS:
        _fix_crcs(dev)
    table = read_table(dev)
    if table is None:
        return
    for part in table.partitions[:8]:
        with part.open(dev, readonly=True) as sl:
            sl.pread(min(SECTOR, sl.size), 0)
    if table.warnings:
        return
    try:
        added = add_partition(dev, size=1 << 20)
    except BurrowError:
        return
    try:
        after = read_table(dev)
        assert after is not None and added in after.partitions, "added partition not read back"
        remove_partition(dev, added.number)
        read_table(dev)
    except CorruptImage as exc:
        raise AssertionError(f"burrow wrote a table it cannot read back: {exc}") from exc


def _fix_crcs(dev: MemoryDevice) -> None:
    """Make every GPT header's array and header CRC32 match whatever the input says."""
    for ss in (512, 4096):
        if dev.size < 2 * ss:
            continue
        for lba in (1, dev.size // ss - 1):
            header = bytearray(dev.pread(ss, lba * ss))
            if header[:8] != b"EFI PART":
                continue
            hsize = struct.unpack_from("<I", header, 12)[0]
            elba, count, esize = struct.unpack_from("<QII", header, 72)
            length = count * esize
            if length <= 1 << 20 and elba * ss + length <= dev.size:
                crc = zlib.crc32(dev.pread(length, elba * ss))
                struct.pack_into("<I", header, 88, crc)
            if 92 <= hsize <= ss:
                struct.pack_into("<I", header, 16, 0)
                struct.pack_into("<I", header, 16, zlib.crc32(header[:hsize]))
            dev.pwrite(header, lba * ss)
