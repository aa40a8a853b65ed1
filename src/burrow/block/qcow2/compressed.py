"""Compressed qcow2 clusters: locating them from an L2 entry and inflating them.

qemu writes one cluster as a raw deflate stream (zlib, window bits -12) or as one zstd frame
(``compression_type`` 1), starting at any byte offset and spanning whole 512-byte sectors.
The L2 entry packs the host offset in its low ``62 - (cluster_bits - 8)`` bits and the number
of *additional* sectors above that. Output is bounded to one cluster, so a compression bomb
costs at most one cluster of memory.
"""

from __future__ import annotations

import zlib

from burrow.block.qcow2.header import COMPRESSION_ZSTD
from burrow.errors import CorruptImage, Unsupported

__all__ = ["compressed_extent", "compressed_host_range", "inflate"]


def compressed_extent(entry: int, cluster_bits: int) -> tuple[int, int]:
    """``(host_offset, length)`` of the compressed bytes described by an L2 entry."""
    x = 62 - (cluster_bits - 8)
    host = entry & ((1 << x) - 1)
    sectors = ((entry >> x) & ((1 << (cluster_bits - 8)) - 1)) + 1
    return host, sectors * 512 - (host & 511)


def compressed_host_range(entry: int, cluster_bits: int) -> tuple[int, int]:
    """The sector-aligned byte range qemu counts in refcounts for a compressed cluster."""
    x = 62 - (cluster_bits - 8)
    host = entry & ((1 << x) - 1)
    sectors = ((entry >> x) & ((1 << (cluster_bits - 8)) - 1)) + 1
    return host & ~511, sectors * 512


def inflate(data: bytes, cluster_size: int, compression_type: int, where: int) -> bytes:
    """Decompress one cluster; the stream must produce exactly ``cluster_size`` bytes."""
    if compression_type == COMPRESSION_ZSTD:
        out = _zstd(data, cluster_size, where)
    else:
        try:
            d = zlib.decompressobj(-15)
            out = d.decompress(data, cluster_size)
        except zlib.error as exc:
            raise CorruptImage("qcow2 compressed cluster", where, f"deflate: {exc}") from None
    if len(out) != cluster_size:
        raise CorruptImage(
            "qcow2 compressed cluster",
            where,
            f"inflates to {len(out)} bytes, not one {cluster_size}-byte cluster",
        )
    return out


def _zstd(data: bytes, cluster_size: int, where: int) -> bytes:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a declared dependency
        raise Unsupported("compression type zstd", "the zstandard package is missing") from None
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=False)
        parts: list[bytes] = []
        got = 0
        while got < cluster_size:
            chunk = reader.read(cluster_size - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)
    except zstandard.ZstdError as exc:
        raise CorruptImage("qcow2 compressed cluster", where, f"zstd: {exc}") from None
