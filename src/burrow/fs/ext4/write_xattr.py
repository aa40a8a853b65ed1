"""Extended attributes for the writer: encode names and values, place them in the inode body or
in an xattr block, keep shared-block reference counts and the entry/block hashes.

Placement: attributes go into the inode body (after ``i_extra_isize``) while they fit, the
rest into one xattr block (sorted as the kernel sorts them: index, name length, name). A block
shared by several inodes (``h_refcount`` > 1) is never edited in place: our inode drops its
reference and gets a block of its own, as ``ext4_xattr_block_set`` does.
"""

from __future__ import annotations

import struct

from burrow.errors import InvalidArgument, NameTooLong, NoSpace, NotSupported
from burrow.fs.ext4 import ondisk as od

__all__ = [
    "XAttr",
    "acl_from_xattr",
    "block_hash",
    "entry_hash",
    "pack_block",
    "pack_ibody",
    "parse_area",
    "split_name",
]

XAttr = tuple[int, bytes, bytes]  # (name index, name without prefix, value as stored)
_ENTRY = struct.Struct("<BBHIII")
_U32 = struct.Struct("<I")
_M = 0xFFFFFFFF

_BY_PREFIX: list[tuple[str, int]] = [
    ("system.posix_acl_access", od.EXT4_XATTR_INDEX_POSIX_ACL_ACCESS),
    ("system.posix_acl_default", od.EXT4_XATTR_INDEX_POSIX_ACL_DEFAULT),
    ("user.", od.EXT4_XATTR_INDEX_USER),
    ("trusted.", od.EXT4_XATTR_INDEX_TRUSTED),
    ("security.", od.EXT4_XATTR_INDEX_SECURITY),
]


def split_name(name: str) -> tuple[int, bytes]:
    """``user.foo`` -> (1, b"foo"); refuses namespaces ext4 cannot hold."""
    for prefix, index in _BY_PREFIX:
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            if index in (2, 3):
                if rest:
                    continue
                return index, b""
            raw = rest.encode("utf-8", "surrogateescape")
            if not raw:
                raise InvalidArgument(f"empty attribute name after {prefix!r}")
            if len(raw) > 255:
                raise NameTooLong(f"attribute name too long: {name}")
            return index, raw
    raise NotSupported(f"ext4 cannot store the attribute namespace of {name!r}")


def entry_hash(name: bytes, value: bytes) -> int:
    """``ext4_xattr_hash_entry`` (unsigned-char variant)."""
    h = 0
    for c in name:
        h = ((h << 5) ^ (h >> 27) ^ c) & _M
    if value:
        padded = value + bytes(-len(value) % 4)
        for (w,) in struct.iter_unpack("<I", padded):
            h = ((h << 16) ^ (h >> 16) ^ w) & _M
    return h


def block_hash(hashes: list[int]) -> int:
    """``ext4_xattr_rehash``: the block hash from the entry hashes."""
    h = 0
    for e in hashes:
        if not e:
            return 0
        h = ((h << 16) ^ (h >> 16) ^ e) & _M
    return h


def _pad(n: int) -> int:
    return (n + 3) & ~3


def entry_cost(name: bytes, value: bytes) -> int:
    return _pad(16 + len(name)) + _pad(len(value))


def parse_area(buf: bytes | bytearray, first: int, end: int, value_base: int) -> list[XAttr]:
    """Entries from ``first`` up to the 4-zero-byte terminator (values relative to
    ``value_base``); used on areas our own loader already bounds-checked via the reader."""
    from burrow.errors import CorruptImage

    out: list[XAttr] = []
    pos = first
    while pos + 4 <= end and _U32.unpack_from(buf, pos)[0] != 0:
        if pos + 16 > end:
            raise CorruptImage("ext4_xattr_entry", None, "entry past the end")
        nlen, idx, voff, vinum, vsize, _h = _ENTRY.unpack_from(buf, pos)
        if vinum:
            raise NotSupported("ea_inode values cannot be rewritten yet")
        name = bytes(buf[pos + 16 : pos + 16 + nlen])
        vs = value_base + voff
        if pos + 16 + nlen > end or vs + vsize > end or (vsize and vs < first):
            raise CorruptImage("ext4_xattr_entry", None, "value outside the area")
        out.append((idx, name, bytes(buf[vs : vs + vsize])))
        pos = _pad(pos + 16 + nlen)
    return out


def _pack_entries(
    attrs: list[XAttr], buf: bytearray, first: int, end: int, value_base: int
) -> None:
    """Entries from ``first`` forward, values from ``end`` backward (offsets from
    ``value_base``). Caller checked the fit."""
    pos = first
    vend = end
    for idx, name, value in attrs:
        vlen = len(value)
        if vlen:
            vend -= _pad(vlen)
            buf[vend : vend + vlen] = value
            voff = vend - value_base
        else:
            voff = 0
        _ENTRY.pack_into(buf, pos, len(name), idx, voff, 0, vlen, entry_hash(name, value))
        buf[pos + 16 : pos + 16 + len(name)] = name
        pos = _pad(pos + 16 + len(name))
    buf[pos : pos + 4] = b"\0\0\0\0"


def ibody_room(inode_size: int, extra_isize: int) -> int:
    """Bytes for entries + values in the inode body (after the 4-byte magic, keeping the
    4-byte terminator)."""
    if inode_size <= 128 or extra_isize == 0:
        return 0
    return max(0, inode_size - 128 - extra_isize - 4 - 4)


def pack_ibody(raw: bytearray, extra_isize: int, attrs: list[XAttr]) -> None:
    isz = len(raw)
    start = 128 + extra_isize
    if start + 4 > isz:
        return
    raw[start:isz] = bytes(isz - start)
    if not attrs:
        return
    _U32.pack_into(raw, start, od.EXT4_XATTR_MAGIC)
    _pack_entries(attrs, raw, start + 4, isz, start + 4)


def block_room(bs: int) -> int:
    return bs - 32 - 4


def pack_block(bs: int, attrs: list[XAttr], refcount: int = 1) -> bytearray:
    attrs = sorted(attrs, key=lambda a: (a[0], len(a[1]), a[1]))
    buf = bytearray(bs)
    _pack_entries(attrs, buf, 32, bs, 0)
    hashes = [entry_hash(n, v) for _i, n, v in attrs]
    od.EXT4_XATTR_HEADER.pack_into(
        buf,
        0,
        {
            "h_magic": od.EXT4_XATTR_MAGIC,
            "h_refcount": refcount,
            "h_blocks": 1,
            "h_hash": block_hash(hashes),
        },
    )
    return buf


def place(
    attrs: list[XAttr], inode_size: int, extra_isize: int, bs: int
) -> tuple[list[XAttr], list[XAttr]]:
    """Split ``attrs`` into (in-inode, in-block); ``system.data`` must stay in the inode."""
    room = ibody_room(inode_size, extra_isize)
    inode: list[XAttr] = []
    block: list[XAttr] = []
    used = 0
    ordered = sorted(attrs, key=lambda a: 0 if a[0] == od.EXT4_XATTR_INDEX_SYSTEM else 1)
    for a in ordered:
        cost = entry_cost(a[1], a[2])
        if used + cost <= room:
            inode.append(a)
            used += cost
        elif a[0] == od.EXT4_XATTR_INDEX_SYSTEM:
            raise NoSpace("inline data does not fit in the inode")
        else:
            block.append(a)
    if sum(entry_cost(n, v) for _i, n, v in block) > block_room(bs):
        raise NoSpace("extended attributes do not fit in one block")
    return inode, block


# POSIX ACLs: the xattr API uses posix_acl_xattr (version 2, 8-byte entries); ext4 stores a
# compact version-1 form where the four "object" tags have no id.
_SHORT_TAGS = {od.ACL_USER_OBJ, od.ACL_GROUP_OBJ, od.ACL_MASK, od.ACL_OTHER}


def acl_from_xattr(value: bytes) -> bytes:
    if len(value) < 4 or (len(value) - 4) % 8:
        raise InvalidArgument("malformed POSIX ACL")
    (version,) = struct.unpack_from("<I", value, 0)
    if version != od.ACL_EA_VERSION:
        raise InvalidArgument("unsupported POSIX ACL version")
    out = bytearray(struct.pack("<I", od.EXT2_ACL_VERSION))
    for tag, perm, eid in struct.iter_unpack("<HHI", value[4:]):
        if tag in _SHORT_TAGS:
            out += struct.pack("<HH", tag, perm)
        elif tag in (od.ACL_USER, od.ACL_GROUP):
            out += struct.pack("<HHI", tag, perm, eid)
        else:
            raise InvalidArgument(f"bad ACL tag {tag:#x}")
    return bytes(out)
