"""``create_qcow2``: a new, empty version 3 image laid out the way ``qemu-img create`` does.

Layout: cluster 0 holds the header, its extensions (backing format, feature names) and the
backing file name; then the refcount table, the refcount blocks that count everything so far,
and the L1 table. Refcount width is 16 bits (qemu's default). The file is created with
``O_EXCL`` so an existing image is never overwritten.
"""

from __future__ import annotations

import os
import struct

from burrow.block.qcow2.device import Qcow2Device
from burrow.block.qcow2.header import MAX_IMAGE_SIZE, MAX_L1_BYTES, build_header
from burrow.block.qcow2.refcount import encode_block
from burrow.errors import UsageError

__all__ = ["create_qcow2"]

REFCOUNT_ORDER = 4


def create_qcow2(
    path: str | os.PathLike[str],
    size: int,
    *,
    cluster_size: int = 65536,
    backing: str | None = None,
    backing_format: str | None = None,
) -> Qcow2Device:
    """Create ``path`` as an empty qcow2 image of ``size`` bytes; return it open for writing.

    ``backing`` is stored as given; a relative name is resolved against the new image's
    directory (as qemu does). When ``backing_format`` is omitted it is detected now and
    recorded, so the image never needs probing later.
    """
    path = os.fspath(path)
    if cluster_size < 512 or cluster_size > 2 << 20 or cluster_size & (cluster_size - 1):
        raise UsageError(f"cluster size {cluster_size} is not a power of two in 512..2M")
    if size < 0 or size % 512 or size > MAX_IMAGE_SIZE:
        raise UsageError(f"image size {size} must be a multiple of 512 bytes")
    cb = cluster_size.bit_length() - 1
    if backing is not None:
        from burrow.block import detect_format

        bpath = backing if os.path.isabs(backing) else os.path.join(os.path.dirname(path), backing)
        if not os.path.exists(bpath):
            raise UsageError(f"backing file {bpath!r} does not exist")
        if backing_format is None:
            backing_format = detect_format(bpath)
        if backing_format not in ("raw", "qcow2"):
            raise UsageError(f"backing format {backing_format!r} is not raw or qcow2")
    elif backing_format is not None:
        raise UsageError("backing_format given without a backing file")

    l2_entries = cluster_size // 8
    l1_size = max(1, -(-size // (l2_entries * cluster_size)))
    if l1_size * 8 > MAX_L1_BYTES:
        raise UsageError(f"{size} bytes needs an L1 table beyond qemu's limit; use bigger clusters")
    l1_clusters = -(-l1_size * 8 // cluster_size)
    per_block = cluster_size * 8 // (1 << REFCOUNT_ORDER)
    tc, nb = 1, 1
    while True:
        total = 1 + tc + nb + l1_clusters
        want_nb = -(-total // per_block)
        want_tc = -(-want_nb * 8 // cluster_size)
        if (want_nb, want_tc) == (nb, tc):
            break
        nb, tc = max(nb, want_nb), max(tc, want_tc)
    reftable_off = cluster_size
    blocks_off = reftable_off + tc * cluster_size
    l1_off = blocks_off + nb * cluster_size
    header = build_header(
        cluster_bits=cb,
        size=size,
        l1_size=l1_size,
        l1_table_offset=l1_off,
        refcount_table_offset=reftable_off,
        refcount_table_clusters=tc,
        refcount_order=REFCOUNT_ORDER,
        backing_file=backing,
        backing_format=backing_format,
    )
    from array import array

    reftable = b"".join(struct.pack(">Q", blocks_off + i * cluster_size) for i in range(nb))
    counts = array("Q", bytes(8 * nb * per_block))
    for i in range(total):
        counts[i] = 1
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.pwrite(fd, header + bytes(cluster_size - len(header)), 0)
        os.pwrite(fd, reftable + bytes(tc * cluster_size - len(reftable)), reftable_off)
        for i in range(nb):
            chunk = counts[i * per_block : (i + 1) * per_block]
            os.pwrite(fd, encode_block(chunk, REFCOUNT_ORDER), blocks_off + i * cluster_size)
        os.ftruncate(fd, l1_off + l1_clusters * cluster_size)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return Qcow2Device(path, readonly=False)
