"""Rebuild refcounts of a qcow2 image left *dirty* (lazy refcounts, then a crash).

With ``lazy_refcounts=on`` qemu skips refcount updates while the image is open and sets the
dirty bit; after a crash the refcounts are stale. Before writing such an image, qemu walks
every reference and rewrites the refcounts; burrow does the same here:

* count every reference — header cluster, refcount table and blocks, active and snapshot L1
  tables, each L2 table once per L1 that points at it, and each data cluster once per path
  (L1 -> L2 -> cluster), compressed clusters over every host cluster their bytes touch;
* write the refcount blocks whose values differ, sync, then clear the dirty bit.

Images with persistent bitmaps (their clusters live in structures burrow does not walk) and
images that would need new refcount blocks are refused with ``Unsupported`` (repair them
with ``qemu-img check -r all``). Memory: one 4-byte counter per cluster of the file, bounded.
"""

from __future__ import annotations

import struct
from array import array

from burrow.block.qcow2.compressed import compressed_host_range
from burrow.block.qcow2.header import HEADER_V2, INCOMPAT_DIRTY, Header, Snapshot
from burrow.block.qcow2.hostfile import HostFile
from burrow.block.qcow2.refcount import Refcounts, zero_block
from burrow.block.qcow2.tables import OFFSET_MASK, OFLAG_COMPRESSED, decode_table
from burrow.errors import CorruptImage, Unsupported

__all__ = ["MAX_REPAIR_CLUSTERS", "rebuild_refcounts"]

MAX_REPAIR_CLUSTERS = 1 << 24  # 64 MiB of counters at most
COUNT_LIMIT = 1 << 32


def rebuild_refcounts(
    f: HostFile, hdr: Header, l1: array[int], snapshots: list[Snapshot], refs: Refcounts
) -> int:
    """Make every refcount match the references; returns how many blocks changed."""
    if hdr.has_bitmaps_extension:
        raise Unsupported(
            "dirty bit", "the image has persistent bitmaps; repair with `qemu-img check -r all`"
        )
    cb, cs = hdr.cluster_bits, hdr.cluster_size
    nclusters = -(-f.size // cs)
    if nclusters > MAX_REPAIR_CLUSTERS:
        raise Unsupported("dirty bit", "image too large to rebuild refcounts in memory")
    counts = array("I", bytes(4 * nclusters))
    ext = hdr.extended_l2

    def ref(offset: int, length: int, structure: str, where: int, times: int = 1) -> None:
        if offset + length > f.size + cs - 1 or length <= 0:
            raise CorruptImage(structure, where, f"reference to {offset:#x} beyond the file")
        for c in range(offset >> cb, ((offset + length - 1) >> cb) + 1):
            if c < nclusters:
                value = counts[c] + times
                if value >= COUNT_LIMIT:
                    raise CorruptImage(structure, where, f"cluster {c} referenced {value} times")
                counts[c] = value

    ref(0, cs, "qcow2 header", 0)
    ref(hdr.refcount_table_offset, refs.table_clusters * cs, "qcow2 refcount table", 48)
    for ti, entry in enumerate(refs.table):
        if entry:
            ref(entry & ~0x1FF, cs, "qcow2 refcount table", refs.table_offset + ti * 8)
    if hdr.nb_snapshots:
        ref(hdr.snapshots_offset, max(hdr.snapshots_size, 1), "qcow2 snapshot table", 64)

    # Each L2 table is walked once, whatever the number of L1 entries (active and snapshots)
    # pointing at it: its data clusters get one reference per such path.
    paths: dict[int, int] = {}
    tables: list[tuple[int, array[int], str]] = [(hdr.l1_table_offset, l1, "qcow2 L1 table")]
    for snap in snapshots:
        if snap.l1_size:
            data = f.read_meta(snap.l1_size * 8, snap.l1_table_offset, "qcow2 snapshot L1 table")
            tables.append((snap.l1_table_offset, decode_table(data), "qcow2 snapshot L1 table"))
    for l1_off, table, structure in tables:
        if len(table):
            ref(l1_off, len(table) * 8, structure, l1_off)
        for i, entry in enumerate(table):
            off = entry & OFFSET_MASK
            if not off:
                continue
            if off % cs or off + cs > f.size:
                raise CorruptImage(structure, l1_off + i * 8, f"L2 table {off:#x}")
            ref(off, cs, structure, l1_off + i * 8)
            paths[off] = paths.get(off, 0) + 1
    step = 2 if ext else 1
    for off, times in paths.items():
        l2 = decode_table(f.read_meta(cs, off, "qcow2 L2 table"))
        for j in range(0, len(l2), step):
            e = l2[j]
            if e & OFLAG_COMPRESSED:
                start, length = compressed_host_range(e, cb)
                length = min(length, max(0, f.size - start))
                ref(start, length or 1, "qcow2 L2 table", off + j * 8, times)
            elif e & OFFSET_MASK:
                ref(e & OFFSET_MASK, cs, "qcow2 L2 table", off + j * 8, times)

    changed = 0
    for ti in range(len(refs.table)):
        first = ti << refs.rbb
        if first >= nclusters and not refs.table[ti]:
            break
        blk = refs._block(ti)
        want_slice = counts[first : first + refs.rbe]
        if blk is None:
            if any(want_slice):
                raise Unsupported(
                    "dirty bit", "repair needs new refcount blocks; use `qemu-img check -r all`"
                )
            continue
        if want_slice and max(want_slice) > refs.max_value:
            raise Unsupported("refcount overflow", f"a cluster of block {ti}")
        want = array(blk.values.typecode, want_slice)
        if len(want) < refs.rbe:
            want.extend(zero_block(refs.order, refs.rbe - len(want)))
        if want != blk.values:
            blk.values = want
            blk.dirty = True
            changed += 1
    if nclusters > len(refs.table) << refs.rbb:
        raise Unsupported("dirty bit", "repair needs a bigger refcount table")
    refs.write_dirty()
    f.sync()
    hdr.incompatible_features &= ~INCOMPAT_DIRTY
    f.write(struct.pack(">Q", hdr.incompatible_features), HEADER_V2.size)
    f.sync()
    refs.hint = 0
    return changed
