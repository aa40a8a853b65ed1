"""Fuzz file block mapping: extent trees (header, index, leaf, tail) and ext2/3 block maps
(direct, indirect, double indirect), plus the inode fields around them (size, flags).

Input: one variant byte, then the raw inode of a file and the mapping blocks it points to,
in slot order. The harness writes them over a base image made by ``mkfs -d`` and reads the
file at a few offsets (``_map_block``, ``readinto``) and stats it. Variants:

0. ext4: a sparse file (data in every other block: 40 extents, so an index in the inode and
   a leaf block) and a small contiguous file (extents in the inode);
1. ext2: a 300 KiB file (1 KiB blocks: direct, indirect and double indirect blocks).
"""

from __future__ import annotations

from pathlib import Path

from burrow.errors import BurrowError
from fuzz import ext4_focus as ef

BS = 1024
ISZ = 256
VARIANTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ext4", ("-I", str(ISZ), "-O", "^has_journal")),
    ("ext2", ("-I", str(ISZ))),
)
READS = ((0, 4096), (20 * BS, 8192), (260 * BS, 8192), (1 << 40, 16))
# the extent header and index/leaf entries in i_block, and the mapping blocks' first entries
REGIONS = [(1 + 0x28, 60), (1 + 0x04, 8), (1 + ISZ, 96), (1 + ISZ + BS, 96)]


def _tree(src: Path, variant: int) -> list[str]:
    src.mkdir(parents=True, exist_ok=True)
    if variant == 0:
        with open(src / "sparse", "wb") as f:
            for i in range(40):
                f.seek(2 * i * BS)
                f.write(bytes([i + 1]) * BS)
        (src / "small").write_bytes(bytes(range(256)) * 10)
        names = ["sparse", "small"]
    else:
        (src / "big").write_bytes(bytes(range(251)) * 1224)  # 300 KiB: double indirect
        names = ["big"]
    ef.fix_times(src)
    return names


def _build(where: Path, variant: int) -> ef.Base:
    fstype, opts = VARIANTS[variant]
    src = where / "src"
    names = _tree(src, variant)
    image = where / "base.img"
    ef.mkfs(image, "2M", "-b", str(BS), "-N", "32", *opts, src=src, fstype=fstype)
    data = image.read_bytes()
    fs = ef.open_fs(ef.PatchedDevice(data, []))
    slots: list[tuple[int, int]] = []
    inodes: list[int] = []
    for name in names:
        ino = fs.lookup(fs.root_ino, name)
        inodes.append(ino)
        node = fs.inode(ino)
        slots.append((ef.inode_offset(fs, ino), ISZ))
        i_block = node.i_block
        if fstype == "ext4":
            if int.from_bytes(i_block[6:8], "little"):  # depth > 0: the leaf block
                leaf = ef.u32(i_block, 12 + 4) | (int.from_bytes(i_block[20:22], "little") << 32)
                slots.append((leaf * BS, BS))
        else:
            ind, dind = ef.u32(i_block, 48), ef.u32(i_block, 52)
            slots.append((ind * BS, BS))
            slots.append((dind * BS, BS))
            first = ef.u32(data, dind * BS)
            slots.append((first * BS, BS))
    return ef.Base(data, BS, slots, inodes=inodes)


def base(variant: int) -> ef.Base:
    return ef.cached(f"extents-{variant}", lambda where: _build(where, variant))


def seeds(tmp_path: Path) -> list[bytes]:
    ef.need_tools("mkfs.ext4", "mkfs.ext2")
    return [bytes([v]) + base(v).seed() for v in range(len(VARIANTS))]


def one_input(data: bytes) -> None:
    if not data:
        return
    b = base(data[0] % len(VARIANTS))
    fs = ef.open_fs(ef.apply(b, data[1:]))
    buf = bytearray(8192)
    for ino in b.inodes:
        try:
            st = fs.getattr(ino)
        except BurrowError:
            continue
        for offset, n in READS:
            try:
                fs.readinto(ino, min(offset, st.st_size), memoryview(buf)[:n])
            except BurrowError:
                pass
        try:
            fs.read(ino, max(0, st.st_size - 100), 200)
        except BurrowError:
            pass
