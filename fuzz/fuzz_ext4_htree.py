"""Fuzz hashed (htree) directories: dx_root, dx_node, dx_tail and the leaf blocks.

Input: one variant byte, then directory blocks in this order: the dx_root (logical block 0),
the dx_node blocks (two-level trees), then a few leaf blocks. The harness writes them over
the directory of a base image (``mkfs.ext4 -d`` + ``e2fsck -fyD``, which builds the index)
and looks names up through the index (``_dx_lookup``, the collision walk), lists the
directory and stats what it finds. Variants:

0. one-level index, half_md4, metadata_csum (dx_tail and dirent tail checksums);
1. two-level index (``indirect_levels`` = 1), long names;
2. tea hash, no metadata_csum.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from burrow.errors import BurrowError
from fuzz import ext4_focus as ef

BS = 1024
LEAVES = 4  # leaf blocks an input covers besides the index blocks
VARIANTS: tuple[tuple[int, int, tuple[str, ...], str | None], ...] = (
    (300, 24, (), None),
    (560, 230, (), None),
    (300, 24, ("-O", "^metadata_csum"), "tea"),
)
REGIONS = [(1, 64), (1 + 0x18, 16), (1 + BS, 64), (1 + 2 * BS, 64)]


def _name(i: int, length: int) -> str:
    return f"entry-{i:05d}-" + "n" * max(0, length - 12)


def _build(where: Path, variant: int) -> ef.Base:
    count, length, opts, hash_alg = VARIANTS[variant]
    src = where / "src"
    big = src / "big"
    big.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (big / _name(i, length)).write_bytes(b"%d\n" % i)
    (big / "sub").mkdir(exist_ok=True)
    ef.fix_times(src)
    image = where / "base.img"
    env = None
    if hash_alg:
        conf = where / "mke2fs.conf"
        conf.write_text(f"[defaults]\n\thash_alg = {hash_alg}\n")
        env = {**ef.env(), "MKE2FS_CONFIG": os.fspath(conf)}
    size = "8M" if count > 400 else "4M"
    args = ["mkfs.ext4", "-q", "-F", "-U", ef.UUID, "-E", f"hash_seed={ef.HASH_SEED}"]
    args += ["-b", str(BS), "-N", str(count + 64), "-O", "^has_journal", *opts]
    import subprocess

    subprocess.run([*args, "-d", os.fspath(src), os.fspath(image), size],
                   check=True, capture_output=True, env=env or ef.env())  # fmt: skip
    subprocess.run(["e2fsck", "-fyD", os.fspath(image)], capture_output=True, env=ef.env())
    data = image.read_bytes()
    fs = ef.open_fs(ef.PatchedDevice(data, []))
    ino = fs.lookup(fs.root_ino, "big")
    blocks = ef.block_offsets(fs, ino)
    root = data[blocks[0] : blocks[0] + BS]
    levels = root[0x1E]
    count_root = struct.unpack_from("<H", root, 0x22)[0]
    ptrs = [ef.u32(root, 0x24)] + [ef.u32(root, 0x20 + 8 * i + 4) for i in range(1, count_root)]
    index = [0]
    leaves = ptrs
    if levels:
        index += ptrs[:2]
        leaves = []
        for p in ptrs[:2]:
            node = data[blocks[p] : blocks[p] + BS]
            n = struct.unpack_from("<H", node, 0xA)[0]
            leaves += [ef.u32(node, 0xC)] + [ef.u32(node, 8 + 8 * i + 4) for i in range(1, n)]
    picks = index + [leaves[0], leaves[1], leaves[len(leaves) // 2], leaves[-1]][:LEAVES]
    slots = [(blocks[lb], BS) for lb in picks if lb < len(blocks)]
    names = [_name(i, length) for i in (0, 1, count // 3, count // 2, count - 1)]
    names += ["sub", "missing-name", _name(count + 5, length)]
    return ef.Base(data, BS, slots, names=names, inodes=[ino])


def base(variant: int) -> ef.Base:
    return ef.cached(f"htree-{variant}", lambda where: _build(where, variant))


def seeds(tmp_path: Path) -> list[bytes]:
    ef.need_tools("mkfs.ext4", "e2fsck")
    return [bytes([v]) + base(v).seed() for v in range(len(VARIANTS))]


def one_input(data: bytes) -> None:
    if not data:
        return
    b = base(data[0] % len(VARIANTS))
    fs = ef.open_fs(ef.apply(b, data[1:]))
    d = b.inodes[0]
    for name in b.names:
        try:
            fs.getattr(fs.lookup(d, name))
        except BurrowError:
            pass
    for n, ent in enumerate(fs.readdir(d), 1):
        if n > 2 * ef.MAX_ENTRIES:
            break
        if n % 50 == 0:
            fs.lookup(d, ent.name)
