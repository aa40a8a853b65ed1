"""ondisk.py and csum.py against real structures: every Layout round-trips, field offsets
match what dumpe2fs/debugfs report, and the checksum helpers reproduce what mke2fs stored."""

from __future__ import annotations

import os
import random
import re
import subprocess
from pathlib import Path

import pytest

from burrow.fs.ext4 import ondisk as od
from burrow.fs.ext4.csum import crc16, ext4_chksum, superblock_csum_seed
from burrow.fs.ext4.dirhash import dirhash

LAYOUTS = [v for v in vars(od).values() if isinstance(v, od.Layout)]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: lay.name)
def test_layout_round_trips(layout: od.Layout) -> None:
    rng = random.Random(layout.name)
    for _ in range(20):
        raw = rng.randbytes(layout.size)
        rec = layout.unpack(raw)
        assert layout.pack(rec) == raw
        assert set(rec) == set(layout.names)
    assert layout.pack(layout.new()) == bytes(layout.size)


def test_known_sizes_and_offsets() -> None:
    assert od.EXT4_SUPER_BLOCK.size == 1024
    assert od.EXT4_SUPER_BLOCK.offset("s_magic") == 0x38
    assert od.EXT4_SUPER_BLOCK.offset("s_uuid") == 0x68
    assert od.EXT4_SUPER_BLOCK.offset("s_desc_size") == 0xFE
    assert od.EXT4_SUPER_BLOCK.offset("s_checksum_seed") == 0x270
    assert od.EXT4_INODE.offset("i_block") == 0x28
    assert od.EXT4_INODE.offset("l_i_checksum_lo") == 0x7C
    assert od.EXT4_INODE.offset("i_crtime") == 0x90
    assert od.EXT4_GROUP_DESC_64.offset("bg_inode_table_hi") == 0x28
    assert od.JOURNAL_SUPERBLOCK.offset("s_checksum") == 0xFC
    assert od.JOURNAL_COMMIT_HEADER.offset("h_commit_sec") == 0x30
    assert od.journal_tag_bytes(od.JBD2_FEATURE_INCOMPAT_CSUM_V3) == 16
    assert od.journal_tag_bytes(od.JBD2_FEATURE_INCOMPAT_64BIT) == 12
    assert od.journal_tag_bytes(0) == 8
    assert od.journal_tag_bytes(od.JBD2_FEATURE_INCOMPAT_CSUM_V2) == 10


def test_rec_len_encoding_for_64k_blocks() -> None:
    for length in (12, 4096, 65532, 65536):
        disk = od.rec_len_to_disk(length, 65536)
        assert disk < 65536
        assert od.rec_len_from_disk(disk, 65536) == length
    assert od.rec_len_from_disk(4096, 4096) == 4096


def test_crc_conventions() -> None:
    # CRC-32C and CRC-16/ARC check values of "123456789"
    assert ext4_chksum(0xFFFFFFFF, b"123456789") ^ 0xFFFFFFFF == 0xE3069283
    assert crc16(0, b"123456789") == 0xBB3D


@pytest.mark.tool("mkfs.ext4", "dumpe2fs")
def test_superblock_and_gdt_checksums_match_mke2fs(tmp_path: Path) -> None:
    image = tmp_path / "c.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "lbl", image, "32M"], check=True,
                   capture_output=True)  # fmt: skip
    raw = image.read_bytes()[: 1 << 16]
    sb = od.EXT4_SUPER_BLOCK.unpack(raw, 1024)
    assert od.EXT4_SUPER_BLOCK.pack(sb) == raw[1024:2048]
    assert ext4_chksum(0xFFFFFFFF, raw[1024 : 1024 + 0x3FC]) == sb.s_checksum
    dump = subprocess.run(["dumpe2fs", "-h", os.fspath(image)], check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    m = re.search(r"Checksum seed:\s+0x([0-9a-f]+)", dump)
    seed = superblock_csum_seed(sb.s_uuid, sb.s_checksum_seed, False)
    if m:
        assert int(m[1], 16) == seed
    assert sb.s_volume_name.rstrip(b"\0") == b"lbl"
    bs = 1024 << sb.s_log_block_size
    gdt = (1 if bs > 1024 else 2) * bs
    desc = raw[gdt : gdt + sb.s_desc_size]
    gd = od.EXT4_GROUP_DESC_64.unpack(desc)
    c = ext4_chksum(seed, (0).to_bytes(4, "little"))
    c = ext4_chksum(c, desc[:0x1E] + b"\0\0" + desc[0x20:])
    assert c & 0xFFFF == gd.bg_checksum


@pytest.mark.tool("debugfs", "mkfs.ext4")
@pytest.mark.parametrize("alg", ["legacy", "half_md4", "tea"])
def test_dirhash_equals_debugfs(tmp_path: Path, alg: str) -> None:
    image = tmp_path / "h.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", image, "8M"], check=True, capture_output=True)
    version = {"legacy": 0, "half_md4": 1, "tea": 2}[alg]
    seed = "01020304-0506-0708-090a-0b0c0d0e0f10"
    words = tuple(int.from_bytes(bytes.fromhex(seed.replace("-", ""))[i : i + 4], "little")
                  for i in range(0, 16, 4))  # fmt: skip
    for name in ("a", "hello", "x" * 40, "entry-01234-xxxxxxxx", "L" * 255):
        out = subprocess.run(
            ["debugfs", "-R", f"dx_hash -h {alg} -s {seed} {name}", image],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        m = re.search(r"is 0x([0-9a-f]+) \(minor 0x([0-9a-f]+)\)", out)
        assert m, out
        assert dirhash(name.encode(), version, words) == (int(m[1], 16), int(m[2], 16))
