"""Fuzz extended attributes: in-inode xattrs, xattr blocks, POSIX ACLs and EA inodes.

Input: one variant byte, then the raw inodes and xattr blocks of a few files, in slot order
(inode, its xattr block, next inode, ...). The harness writes them over a base image made by
``mkfs.ext4 -d`` from a tree whose files carry xattrs (set with ``setxattr``), lists and reads
every attribute of those files and stats them. Variants:

0. 256-byte inodes, metadata_csum: a file with a few in-inode attributes and many more in
   an xattr block (user., trusted., security.), a directory with access and default ACLs;
1. ``ea_inode``: a value larger than a block lives in its own inode (slot 3), plus a file
   with an ACL whose entries spill into a block.
"""

from __future__ import annotations

import os
from pathlib import Path

from burrow.errors import BurrowError
from fuzz import ext4_focus as ef

BS = 1024
ISZ = 256
VARIANTS: tuple[tuple[str, ...], ...] = (
    ("-I", str(ISZ), "-O", "^has_journal"),
    ("-I", str(ISZ), "-O", "^has_journal,ea_inode"),
)
# in-inode xattr area of the first inode, the xattr block header and first entries
REGIONS = [(1 + 128, 128), (1 + ISZ, 32), (1 + ISZ + 32, 128), (1 + ISZ + BS, 160)]


def _acl(entries: list[tuple[int, int, int]]) -> bytes:
    """A ``posix_acl_xattr`` (version 2) value, as setfacl hands it to setxattr."""
    out = bytearray((2).to_bytes(4, "little"))
    for tag, perm, eid in entries:
        out += tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + eid.to_bytes(4, "little")
    return bytes(out)


ACL = _acl([(1, 6, 0xFFFFFFFF), (2, 4, 1000), (2, 6, 1001), (4, 4, 0xFFFFFFFF),
            (8, 5, 100), (0x10, 6, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)])  # fmt: skip


def _tree(src: Path, variant: int) -> list[str]:
    src.mkdir(parents=True, exist_ok=True)
    many = src / "many"
    many.write_bytes(b"xattrs\n")
    os.setxattr(many, "user.small", b"v")
    os.setxattr(many, "trusted.t", b"t" * 20)
    os.setxattr(many, "security.s", b"s" * 12)
    for i in range(12):
        os.setxattr(many, f"user.attr-{i:02d}", bytes([65 + i]) * (10 + 7 * i))
    acl = src / "acl"
    acl.mkdir()
    os.setxattr(acl, "system.posix_acl_access", ACL)
    os.setxattr(acl, "system.posix_acl_default", ACL)
    names = ["many", "acl"]
    if variant == 1:
        big = src / "big"
        big.write_bytes(b"big value\n")
        os.setxattr(big, "user.big", bytes(range(256)) * 12)
        os.setxattr(big, "user.tiny", b"1")
        names.insert(0, "big")
    ef.fix_times(src)
    return names


def _build(where: Path, variant: int) -> ef.Base:
    src = where / "src"
    names = _tree(src, variant)
    image = where / "base.img"
    ef.mkfs(image, "2M", "-b", str(BS), "-N", "64", *VARIANTS[variant], src=src)
    data = image.read_bytes()
    fs = ef.open_fs(ef.PatchedDevice(data, []))
    slots: list[tuple[int, int]] = []
    inodes: list[int] = []
    for name in names:
        ino = fs.lookup(fs.root_ino, name)
        inodes.append(ino)
        node = fs.inode(ino)
        slots.append((ef.inode_offset(fs, ino), ISZ))
        if node.file_acl:
            slots.append((node.file_acl * BS, BS))
        if name == "big":
            for _idx, _n, value, vinum, _s, _w in fs._xattr_entries(node):
                if value is None:
                    slots.append((ef.inode_offset(fs, vinum), ISZ))
                    break
    return ef.Base(data, BS, slots, inodes=inodes)


def base(variant: int) -> ef.Base:
    return ef.cached(f"xattr-{variant}", lambda where: _build(where, variant))


def seeds(tmp_path: Path) -> list[bytes]:
    ef.need_tools("mkfs.ext4")
    return [bytes([v]) + base(v).seed() for v in range(len(VARIANTS))]


KNOWN = ("user.small", "user.big", "system.posix_acl_access", "system.posix_acl_default",
         "trusted.t", "security.s", "user.none")  # fmt: skip


def one_input(data: bytes) -> None:
    if not data:
        return
    b = base(data[0] % len(VARIANTS))
    fs = ef.open_fs(ef.apply(b, data[1:]))
    for ino in b.inodes:
        try:
            fs.getattr(ino)
            names = fs.listxattr(ino)
        except BurrowError:
            names = []
        for name in [*names[:32], *KNOWN]:
            try:
                fs.getxattr(ino, name)
            except BurrowError:
                pass
