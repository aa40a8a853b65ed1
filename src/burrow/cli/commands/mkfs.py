"""``burrow mkfs fat|ext4|ext3|ext2 TARGET``: make a filesystem on a file, an image or a partition.

TARGET is a path to an image (raw or qcow2, opened read-write), a new raw file (created with
``--size``), or ``IMAGE@PART`` (partition number PART, or GPT partition name, of the image's
MBR/GPT table; the partition's offset becomes the FAT "hidden sectors" field, as mkfs.fat does
on a partition).
``--from DIR`` copies a host tree into the new filesystem (for ext4 also a tar archive).
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from burrow.block.device import BlockDevice
    from burrow.fs.vfs import Filesystem

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="fstype", metavar="TYPE", required=True)
    fat = sub.add_parser("fat", help="FAT12/16/32 with long names (also: vfat)", aliases=["vfat"])
    _common(fat)
    fat.add_argument("--fat", type=int, choices=[12, 16, 32], dest="fat_bits",
                     help="FAT type (default: chosen by size, like mkfs.fat)")  # fmt: skip
    fat.add_argument("--volume-id", help="32-bit volume serial number in hex (default: random)")
    fat.add_argument("--from", dest="source", metavar="DIR", help="copy this host tree in")
    for name in ("ext4", "ext3", "ext2"):
        ext = sub.add_parser(name, help=f"{name} filesystem")
        _common(ext)
        ext.add_argument("--uuid", help="filesystem UUID (default: random)")
        ext.add_argument("--block-size", type=int, help="block size in bytes")
        ext.add_argument("--inode-size", type=int, help="inode size in bytes")
        ext.add_argument("--features", help="comma-separated feature list (mke2fs -O syntax)")
        ext.add_argument("--from", dest="source", metavar="DIR|TAR", help="copy this tree in")
        ext.add_argument("--owner-map", action="append", default=[], metavar="HOST:IMAGE",
                         help="map host uid/gid to image ids (repeatable)")  # fmt: skip
        ext.add_argument("--all-root", action="store_true", help="make every file owned by root")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="TARGET", help="image file, new file, or IMAGE@PART")
    p.add_argument("--size", help="size of a new TARGET (e.g. 64M, 1G; raw unless --format "
                   "qcow2); an existing raw file is resized to it")  # fmt: skip
    p.add_argument("--label", default="", help="volume label")
    p.add_argument("--format", choices=["raw", "qcow2"], help="image format (default: detect)")
    p.add_argument("--force", action="store_true",
                   help="format a whole image even though it holds a partition table")  # fmt: skip


def parse_size(text: str) -> int:
    from burrow.errors import UsageError

    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"bad size {text!r} (examples: 1440K, 64M, 2G)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def _split_target(target: str) -> tuple[str, str | None]:
    """``IMAGE@PART`` -> (IMAGE, PART) when IMAGE@PART is not a file and PART is a number or
    IMAGE exists (then PART may also be a GPT partition name, as in ``ls``/``nbd serve``)."""
    if "@" in target and not os.path.exists(target):
        image, _, part = target.rpartition("@")
        if part and (part.isdigit() or os.path.exists(image)):
            return image, part
    return target, None


def open_target(args: argparse.Namespace) -> tuple[BlockDevice, list[BlockDevice], int]:
    """The writable device to format, devices to close afterwards, and its offset in sectors."""
    import burrow.block
    from burrow.errors import NotFound, UsageError

    image, part = _split_target(args.target)
    size = parse_size(args.size) if args.size else None
    if not os.path.exists(image):
        if part is not None:
            raise NotFound(f"{image}: no such image", path=image)
        if size is None:
            raise UsageError(f"{image} does not exist; give --size to create it")
        fmt = args.format or "raw"
        dev = burrow.block.create(image, size, format=fmt)
        return dev, [dev], 0
    dev = burrow.block.open(image, format=args.format, readonly=False)
    if part is None and not getattr(args, "force", False):
        _refuse_partitioned(dev, image)
    if part is None:
        if size is not None and size != dev.size:
            if args.format == "qcow2" or burrow.block.detect_format(image) != "raw":
                dev.close()
                raise UsageError("--size can only resize raw files")
            dev.close()
            with open(image, "r+b") as f:
                f.truncate(size)
            dev = burrow.block.open(image, format="raw", readonly=False)
        return dev, [dev], 0
    from burrow.volume import read_table

    table = read_table(dev)
    if table is None:
        dev.close()
        raise UsageError(f"{image} has no partition table")
    for partition in table.partitions:
        if str(partition.number) == part or (partition.name and partition.name == part):
            return partition.open(dev, readonly=False), [dev], partition.start // 512
    dev.close()
    have = [p.number for p in table.partitions]
    raise NotFound(f"no partition {part!r} (have {have})", path=image)


def _refuse_partitioned(dev: BlockDevice, image: str) -> None:
    """Formatting a whole partitioned disk destroys every partition: like mke2fs, refuse
    unless asked (``--force``), and point at ``IMAGE@PART``."""
    from burrow.errors import BurrowError, UsageError
    from burrow.volume import read_table

    try:
        table = read_table(dev)
    except BurrowError:
        return  # a damaged table is not something to protect
    if table is not None and table.partitions:
        dev.close()
        numbers = ", ".join(str(p.number) for p in table.partitions)
        raise UsageError(
            f"{image} holds a {table.kind} partition table (partitions {numbers}); "
            f"give {image}@N to format one partition, or --force to overwrite the whole disk"
        )


def run(args: argparse.Namespace) -> int:
    from burrow.errors import Unsupported

    fat = args.fstype in ("fat", "vfat")
    vid = _fat_volume_id(args) if fat else None  # refuse bad options before touching anything
    image, part = _split_target(args.target)
    created = part is None and not os.path.lexists(image)
    dev, owned, hidden = open_target(args)
    ok = False
    try:
        if fat:
            _mkfs_fat(args, dev, hidden, vid)
        else:
            try:
                from burrow.fs.ext4.populate import cli_mkfs
            except ImportError as exc:
                raise Unsupported("ext4 mkfs") from exc
            cli_mkfs(dev, args)  # checks --from before formatting, then populates
        dev.flush()
        ok = True
    finally:
        for d in reversed(owned):
            d.close()
        if created and not ok:
            # The user asked for a filesystem, not for a half-made file: a failed mkfs on a
            # new TARGET leaves nothing behind (an existing file is never removed).
            try:
                os.unlink(image)
            except OSError:
                pass
    return 0


def _fat_volume_id(args: argparse.Namespace) -> int | None:
    """``--volume-id`` as a number, and ``--from`` checked: usage errors before any write."""
    from burrow.errors import UsageError

    vid = None
    if args.volume_id:
        try:
            vid = int(args.volume_id.replace("-", ""), 16)
        except ValueError as exc:
            raise UsageError(f"bad volume id {args.volume_id!r} (8 hex digits)") from exc
        if not 0 <= vid <= 0xFFFFFFFF:
            raise UsageError(f"bad volume id {args.volume_id!r} (8 hex digits)")
    if args.source and not os.path.isdir(args.source):
        raise UsageError(f"--from {args.source}: not a directory")
    return vid


def _mkfs_fat(args: argparse.Namespace, dev: BlockDevice, hidden: int, vid: int | None) -> None:
    from burrow.fs.fat import open_fat
    from burrow.fs.fat.mkfs import mkfs

    mkfs(dev, fat_bits=args.fat_bits, label=args.label, volume_id=vid, hidden_sectors=hidden)
    if args.source:
        with open_fat(dev, readonly=False) as fs:
            copy_tree_in(args.source, fs, fs.root_ino)


def copy_tree_in(
    src: str, fs: Filesystem, dir_ino: int, *, depth: int = 0, where: str = ""
) -> None:
    """Copy the host directory ``src``'s contents into directory ``dir_ino`` of ``fs``.

    FAT-friendly rules: symlinks are followed (like mcopy); device nodes, fifos and sockets
    are skipped with a warning; mtimes and the read-only bit are kept. ``where`` is the
    directory's path in the image: a filesystem error names the file it happened on.
    """
    from burrow.errors import FilesystemError, UsageError

    if depth > 256:
        raise UsageError(f"{src}: directory tree too deep (symlink loop?)")
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        try:
            st = os.stat(entry.path)
        except OSError:
            print(f"burrow: skipping dangling symlink {entry.path}", file=sys.stderr)
            continue
        try:
            _copy_entry_in(entry, st, fs, dir_ino, depth, f"{where}/{entry.name}")
        except FilesystemError as exc:
            if exc.path is None:
                exc.path = exc.filename = f"{where}/{entry.name}"
            raise


def _copy_entry_in(
    entry: os.DirEntry[str], st: os.stat_result, fs: Filesystem, dir_ino: int, depth: int,
    where: str,
) -> None:  # fmt: skip
    """One directory entry of :func:`copy_tree_in` (``where``: its path in the image)."""
    if stat.S_ISDIR(st.st_mode):
        ino = fs.mkdir(dir_ino, entry.name, st.st_mode & 0o777)
        copy_tree_in(entry.path, fs, ino, depth=depth + 1, where=where)
        fs.setattr(ino, mode=st.st_mode & 0o777, atime_ns=st.st_atime_ns,
                   mtime_ns=st.st_mtime_ns)  # fmt: skip
    elif stat.S_ISREG(st.st_mode):
        ino = fs.create(dir_ino, entry.name, 0o644)
        with open(entry.path, "rb", buffering=0) as f:
            pos = 0
            while True:
                chunk = f.read(4 << 20)
                if not chunk:
                    break
                fs.write(ino, pos, chunk)
                pos += len(chunk)
        fs.setattr(ino, mode=st.st_mode & 0o777, atime_ns=st.st_atime_ns,
                   mtime_ns=st.st_mtime_ns)  # fmt: skip
    else:
        print(f"burrow: FAT cannot hold {entry.path} (special file), skipped", file=sys.stderr)
