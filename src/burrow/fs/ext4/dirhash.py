"""The htree directory hash (``fs/ext4/hash.c``): legacy, half-MD4 and TEA, signed/unsigned.

Why signed and unsigned: the kernel once hashed names through ``char``, whose signedness
depends on the CPU; the superblock's ``s_flags`` records which one the filesystem was made
with, and ``dx_root_info.hash_version`` + 3 selects the unsigned variants.
"""

from __future__ import annotations

from burrow.errors import Unsupported
from burrow.fs.ext4.ondisk import (
    DX_HASH_HALF_MD4,
    DX_HASH_HALF_MD4_UNSIGNED,
    DX_HASH_LEGACY,
    DX_HASH_LEGACY_UNSIGNED,
    DX_HASH_TEA,
    DX_HASH_TEA_UNSIGNED,
)

__all__ = ["dirhash"]

_M = 0xFFFFFFFF
_DEFAULT_SEED = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
_HTREE_EOF_32BIT = 0x7FFFFFFF


def _signed_bytes(name: bytes) -> list[int]:
    return [b - 256 if b >= 128 else b for b in name]


def _dx_hack_hash(chars: list[int]) -> int:
    hash0, hash1 = 0x12A3FE2D, 0x37ABE8F9
    for c in chars:
        h = (hash1 + (hash0 ^ ((c * 7152373) & _M))) & _M
        if h & 0x80000000:
            h = (h - 0x7FFFFFFF) & _M
        hash1, hash0 = hash0, h
    return (hash0 << 1) & _M


def _str2hashbuf(chars: list[int], length: int, num: int) -> list[int]:
    pad = (length | (length << 8)) & _M
    pad = (pad | (pad << 16)) & _M
    out: list[int] = []
    val = pad
    n = min(length, num * 4)
    for i in range(n):
        val = (chars[i] + (val << 8)) & _M
        if i % 4 == 3:
            out.append(val)
            val = pad
    if len(out) < num:
        out.append(val)
    while len(out) < num:
        out.append(pad)
    return out


def _rol(x: int, s: int) -> int:
    return ((x << s) | (x >> (32 - s))) & _M


def _half_md4(buf: list[int], inp: list[int]) -> None:
    a, b, c, d = buf

    def f(x: int, y: int, z: int) -> int:
        return z ^ (x & (y ^ z))

    def g(x: int, y: int, z: int) -> int:
        return ((x & y) + ((x ^ y) & z)) & _M

    def h(x: int, y: int, z: int) -> int:
        return x ^ y ^ z

    k2, k3 = 0o13240474631, 0o15666365641
    a = _rol((a + f(b, c, d) + inp[0]) & _M, 3)
    d = _rol((d + f(a, b, c) + inp[1]) & _M, 7)
    c = _rol((c + f(d, a, b) + inp[2]) & _M, 11)
    b = _rol((b + f(c, d, a) + inp[3]) & _M, 19)
    a = _rol((a + f(b, c, d) + inp[4]) & _M, 3)
    d = _rol((d + f(a, b, c) + inp[5]) & _M, 7)
    c = _rol((c + f(d, a, b) + inp[6]) & _M, 11)
    b = _rol((b + f(c, d, a) + inp[7]) & _M, 19)

    a = _rol((a + g(b, c, d) + inp[1] + k2) & _M, 3)
    d = _rol((d + g(a, b, c) + inp[3] + k2) & _M, 5)
    c = _rol((c + g(d, a, b) + inp[5] + k2) & _M, 9)
    b = _rol((b + g(c, d, a) + inp[7] + k2) & _M, 13)
    a = _rol((a + g(b, c, d) + inp[0] + k2) & _M, 3)
    d = _rol((d + g(a, b, c) + inp[2] + k2) & _M, 5)
    c = _rol((c + g(d, a, b) + inp[4] + k2) & _M, 9)
    b = _rol((b + g(c, d, a) + inp[6] + k2) & _M, 13)

    a = _rol((a + h(b, c, d) + inp[3] + k3) & _M, 3)
    d = _rol((d + h(a, b, c) + inp[7] + k3) & _M, 9)
    c = _rol((c + h(d, a, b) + inp[2] + k3) & _M, 11)
    b = _rol((b + h(c, d, a) + inp[6] + k3) & _M, 15)
    a = _rol((a + h(b, c, d) + inp[1] + k3) & _M, 3)
    d = _rol((d + h(a, b, c) + inp[5] + k3) & _M, 9)
    c = _rol((c + h(d, a, b) + inp[0] + k3) & _M, 11)
    b = _rol((b + h(c, d, a) + inp[4] + k3) & _M, 15)

    buf[0] = (buf[0] + a) & _M
    buf[1] = (buf[1] + b) & _M
    buf[2] = (buf[2] + c) & _M
    buf[3] = (buf[3] + d) & _M


def _tea(buf: list[int], inp: list[int]) -> None:
    s = 0
    b0, b1 = buf[0], buf[1]
    a, b, c, d = inp
    for _ in range(16):
        s = (s + 0x9E3779B9) & _M
        b0 = (b0 + ((((b1 << 4) + a) & _M) ^ ((b1 + s) & _M) ^ (((b1 >> 5) + b) & _M))) & _M
        b1 = (b1 + ((((b0 << 4) + c) & _M) ^ ((b0 + s) & _M) ^ (((b0 >> 5) + d) & _M))) & _M
    buf[0] = (buf[0] + b0) & _M
    buf[1] = (buf[1] + b1) & _M


def dirhash(name: bytes, version: int, seed: tuple[int, ...] | None) -> tuple[int, int]:
    """``(hash, minor_hash)`` of ``name`` for ``version`` (DX_HASH_*, already adjusted for
    unsigned), with the superblock's ``s_hash_seed`` (all zeros means the default seed)."""
    buf = list(seed) if seed and any(seed) else list(_DEFAULT_SEED)
    minor = 0
    if version in (DX_HASH_LEGACY, DX_HASH_LEGACY_UNSIGNED):
        chars = list(name) if version == DX_HASH_LEGACY_UNSIGNED else _signed_bytes(name)
        h = _dx_hack_hash(chars)
    elif version in (DX_HASH_HALF_MD4, DX_HASH_HALF_MD4_UNSIGNED):
        chars = list(name) if version == DX_HASH_HALF_MD4_UNSIGNED else _signed_bytes(name)
        pos, left = 0, len(name)
        while left > 0:
            _half_md4(buf, _str2hashbuf(chars[pos:], left, 8))
            left -= 32
            pos += 32
        h, minor = buf[1], buf[2]
    elif version in (DX_HASH_TEA, DX_HASH_TEA_UNSIGNED):
        chars = list(name) if version == DX_HASH_TEA_UNSIGNED else _signed_bytes(name)
        pos, left = 0, len(name)
        while left > 0:
            _tea(buf, _str2hashbuf(chars[pos:], left, 4))
            left -= 16
            pos += 16
        h, minor = buf[0], buf[1]
    else:
        raise Unsupported(f"dx_hash_{version}", "unknown or unsupported htree hash version")
    h &= ~1 & _M
    if h == (_HTREE_EOF_32BIT << 1):
        h = (_HTREE_EOF_32BIT - 1) << 1
    return h, minor
