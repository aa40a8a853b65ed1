"""Fuzz the jbd2 journal replay (``burrow.fs.ext4.journal``) and what it replays.

Input: one variant byte, then the first blocks of the journal (superblock, descriptor,
data, revoke and commit blocks). The harness writes them over the journal of a base image
that needs recovery and opens it read-only, which replays the journal into memory; then it
walks the recovered filesystem (the replayed blocks are superblock, descriptors, bitmaps,
inode table and directory blocks, so hostile journal contents reach every parser).

Base images (one per variant) come from ``mkfs.ext4``; their transactions are written by
``debugfs`` (``jo``/``jw``/``jc``) and hold the blocks that ``debugfs`` changed in a copy
(mkdir, write, symlink, rm), so replay turns the base into that copy:

0. ext4, metadata_csum, 64-bit tags with checksum v3 (``jo -c``), a revoke record;
1. the same without journal checksums (``jo``);
2. ext3 (32-bit tags, no checksums).
"""

from __future__ import annotations

from pathlib import Path

from fuzz import ext4_focus as ef

BS = 1024
VARIANTS = (
    ("ext4", ("-O", "^resize_inode,^flex_bg"), "jo -c"),
    ("ext4", ("-O", "^resize_inode,^flex_bg"), "jo"),
    ("ext3", ("-O", "^resize_inode"), "jo"),
)
JOURNAL_BLOCKS = 24  # blocks of the journal an input covers (the log of the seeds is ~20)
# the journal superblock and the first descriptor/commit blocks of the seeds
REGIONS = [(1, 256), (1 + BS, 64), (1 + 2 * BS, 64), (1 + 4 * BS, 64), (1 + 8 * BS, 64)]


def _build(where: Path, variant: int) -> ef.Base:
    fstype, opts, jo = VARIANTS[variant]
    image = where / "base.img"
    ef.mkfs(image, "3M", "-b", str(BS), "-N", "64", "-J", "size=1", *opts, fstype=fstype)
    before = image.read_bytes()
    changed = where / "changed.img"
    changed.write_bytes(before)
    payload = where / "payload"
    payload.write_bytes(bytes(range(256)) * 12)
    ef.debugfs(
        changed,
        f"mkdir d\nmkdir d/e\nwrite {payload} d/file\nsymlink d/link /d/file\n"
        f"write {payload} gone\nrm gone\n",
    )
    after = changed.read_bytes()
    fs = ef.open_fs(ef.PatchedDevice(before, []))
    journal = ef.block_offsets(fs, fs.sb.s_journal_inum)
    jset = {off // BS for off in journal}
    diff = [
        b
        for b in range(len(before) // BS)
        if b not in jset and before[b * BS : (b + 1) * BS] != after[b * BS : (b + 1) * BS]
    ]
    # transactions: the changed blocks in two groups, a revoke of one of them (not
    # replayed), then that block again in a later transaction (replayed)
    half = max(1, len(diff) // 2)
    groups = [diff[:half], diff[half:]]
    script = [jo]
    for i, group in enumerate(groups):
        if not group:
            continue
        blob = where / f"t{i}"
        blob.write_bytes(b"".join(after[b * BS : (b + 1) * BS] for b in group))
        script.append(f"jw -b {','.join(map(str, group))} {blob}")
    script.append(f"jw -r {diff[-1]}")
    last = where / "tlast"
    last.write_bytes(after[diff[-1] * BS : (diff[-1] + 1) * BS])
    script.append(f"jw -b {diff[-1]} {last}")
    script.append("jc")
    ef.debugfs(image, "\n".join(script) + "\n")
    data = image.read_bytes()
    slots = [(off, BS) for off in journal[:JOURNAL_BLOCKS]]
    return ef.Base(data, BS, slots)


def base(variant: int) -> ef.Base:
    return ef.cached(f"journal-{variant}", lambda where: _build(where, variant))


def seeds(tmp_path: Path) -> list[bytes]:
    ef.need_tools("mkfs.ext4", "debugfs")
    return [bytes([v]) + base(v).seed() for v in range(len(VARIANTS))]


def one_input(data: bytes) -> None:
    if not data:
        return
    b = base(data[0] % len(VARIANTS))
    fs = ef.open_fs(ef.apply(b, data[1:]))
    for _ in ef.walk(fs, 60):
        pass
    fs.statfs()
    fs.info()
