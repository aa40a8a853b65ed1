"""The qcow2 header (``QCowHeader``), its header extensions and the internal snapshot table.

Field names follow qemu's ``docs/interop/qcow2.txt``. Everything here is pure parsing of bytes
that were read from an untrusted file: every number is checked against the file size and
against qemu's own limits before anything is allocated from it, and every failure is a
``CorruptImage`` naming the structure and the byte offset, or ``Unsupported`` naming the
feature.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from burrow.errors import CorruptImage, Unsupported

__all__ = [
    "COMPRESSION_ZLIB",
    "COMPRESSION_ZSTD",
    "HEADER_V2",
    "HEADER_V3",
    "Header",
    "Snapshot",
    "build_header",
    "parse_header",
    "parse_snapshots",
]

MAGIC = 0x514649FB  # "QFI\xfb"

# QCowHeader, version 2 part (72 bytes) and the version 3 additions (up to byte 104).
HEADER_V2 = struct.Struct(
    ">I"  # magic
    "I"  # version
    "Q"  # backing_file_offset
    "I"  # backing_file_size
    "I"  # cluster_bits
    "Q"  # size
    "I"  # crypt_method
    "I"  # l1_size
    "Q"  # l1_table_offset
    "Q"  # refcount_table_offset
    "I"  # refcount_table_clusters
    "I"  # nb_snapshots
    "Q"  # snapshots_offset
)
HEADER_V3 = struct.Struct(
    ">Q"  # incompatible_features
    "Q"  # compatible_features
    "Q"  # autoclear_features
    "I"  # refcount_order
    "I"  # header_length
)
V3_HEADER_BASE = HEADER_V2.size + HEADER_V3.size  # 104
COMPRESSION_TYPE_OFFSET = 104  # one byte, present when header_length > 104

# Header extension: type and length, then data padded to 8 bytes.
EXT_HEADER = struct.Struct(">II")
EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441
FEATURE_ENTRY = struct.Struct(">BB46s")  # type (0 incompat, 1 compat, 2 autoclear), bit, name

# Feature bits.
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_KNOWN = (
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2
)
COMPAT_LAZY_REFCOUNTS = 1 << 0
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1

FEATURE_NAMES: dict[tuple[int, int], str] = {
    (0, 0): "dirty bit",
    (0, 1): "corrupt bit",
    (0, 2): "external data file",
    (0, 3): "compression type",
    (0, 4): "extended L2 entries",
    (1, 0): "lazy refcounts",
    (2, 0): "bitmaps",
    (2, 1): "raw external data",
}

COMPRESSION_ZLIB = 0
COMPRESSION_ZSTD = 1

# qemu's limits (block/qcow2.h); burrow refuses anything larger so that no header field can
# make it allocate without bound.
MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
MAX_L1_BYTES = 32 << 20  # QCOW_MAX_L1_SIZE
MAX_REFTABLE_BYTES = 8 << 20  # QCOW_MAX_REFTABLE_SIZE
MAX_SNAPSHOTS = 65536  # QCOW_MAX_SNAPSHOTS
MAX_SNAPSHOT_TABLE_BYTES = 64 << 20  # QCOW_MAX_SNAPSHOTS_SIZE
MAX_SNAPSHOT_EXTRA = 1024  # QCOW_MAX_SNAPSHOT_EXTRA_DATA
MAX_BACKING_NAME = 1023
MAX_IMAGE_SIZE = 1 << 61  # QCOW_MAX_IMAGE_SIZE... qemu uses INT64_MAX / 512 style bounds

# Snapshot table entry (QCowSnapshotHeader) and its v3 extra data.
SNAPSHOT_HEADER = struct.Struct(
    ">Q"  # l1_table_offset
    "I"  # l1_size
    "H"  # id_str_size
    "H"  # name_size
    "I"  # date_sec
    "I"  # date_nsec
    "Q"  # vm_clock_nsec
    "I"  # vm_state_size
    "I"  # extra_data_size
)
SNAPSHOT_EXTRA = struct.Struct(">QQ")  # vm_state_size_large, disk_size

OFFSET_MASK = 0x00FFFFFFFFFFFE00  # bits 9-55: host offsets in L1/L2 entries


@dataclass
class Header:
    """A parsed, validated qcow2 header plus what its extensions said."""

    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible_features: int = 0
    compatible_features: int = 0
    autoclear_features: int = 0
    refcount_order: int = 4
    header_length: int = 72
    compression_type: int = COMPRESSION_ZLIB
    backing_file: str | None = None
    backing_format: str | None = None
    feature_names: dict[tuple[int, int], str] = field(default_factory=dict)
    unknown_extensions: list[int] = field(default_factory=list)
    has_bitmaps_extension: bool = False
    snapshots_size: int = 0  # bytes of snapshot table, known after parse_snapshots()

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def extended_l2(self) -> bool:
        return bool(self.incompatible_features & INCOMPAT_EXTL2)

    @property
    def l2_entry_size(self) -> int:
        return 16 if self.extended_l2 else 8

    @property
    def l2_entries(self) -> int:
        return self.cluster_size // self.l2_entry_size

    def feature_name(self, kind: int, bit: int) -> str:
        return (
            self.feature_names.get((kind, bit))
            or FEATURE_NAMES.get((kind, bit))
            or f"{('incompatible', 'compatible', 'autoclear')[kind]} feature bit {bit}"
        )


class Snapshot(NamedTuple):
    """One internal snapshot, as listed by ``qemu-img snapshot -l`` (read-only view)."""

    id: str
    name: str
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    vm_state_size: int
    disk_size: int | None
    l1_table_offset: int
    l1_size: int


def _need(data: bytes, end: int, structure: str, offset: int) -> None:
    if len(data) < end:
        raise CorruptImage(structure, offset, f"truncated: need {end} bytes, have {len(data)}")


def parse_header(data: bytes, file_size: int) -> Header:
    """Parse and validate the header cluster ``data`` (the file's first bytes).

    ``data`` should hold at least the first cluster (or the whole file when it is shorter).
    """
    _need(data, HEADER_V2.size, "qcow2 header", 0)
    (
        magic,
        version,
        backing_file_offset,
        backing_file_size,
        cluster_bits,
        size,
        crypt_method,
        l1_size,
        l1_table_offset,
        refcount_table_offset,
        refcount_table_clusters,
        nb_snapshots,
        snapshots_offset,
    ) = HEADER_V2.unpack_from(data, 0)
    if magic != MAGIC:
        raise CorruptImage("qcow2 header", 0, "bad magic")
    if version not in (2, 3):
        raise Unsupported(f"qcow2 version {version}", "only versions 2 and 3 exist")
    if not MIN_CLUSTER_BITS <= cluster_bits <= MAX_CLUSTER_BITS:
        raise CorruptImage("qcow2 header", 20, f"cluster_bits {cluster_bits} outside 9..21")
    hdr = Header(
        version=version,
        backing_file_offset=backing_file_offset,
        backing_file_size=backing_file_size,
        cluster_bits=cluster_bits,
        size=size,
        crypt_method=crypt_method,
        l1_size=l1_size,
        l1_table_offset=l1_table_offset,
        refcount_table_offset=refcount_table_offset,
        refcount_table_clusters=refcount_table_clusters,
        nb_snapshots=nb_snapshots,
        snapshots_offset=snapshots_offset,
    )
    cs = hdr.cluster_size
    if version == 3:
        _need(data, V3_HEADER_BASE, "qcow2 header", HEADER_V2.size)
        (
            hdr.incompatible_features,
            hdr.compatible_features,
            hdr.autoclear_features,
            hdr.refcount_order,
            hdr.header_length,
        ) = HEADER_V3.unpack_from(data, HEADER_V2.size)
        if hdr.header_length < V3_HEADER_BASE or hdr.header_length % 8:
            raise CorruptImage(
                "qcow2 header", 100, f"header_length {hdr.header_length} invalid (>= 104, x8)"
            )
        if hdr.header_length > cs:
            raise CorruptImage(
                "qcow2 header", 100, f"header_length {hdr.header_length} exceeds the cluster"
            )
        _need(data, hdr.header_length, "qcow2 header", V3_HEADER_BASE)
        if hdr.header_length > COMPRESSION_TYPE_OFFSET:
            hdr.compression_type = data[COMPRESSION_TYPE_OFFSET]
        if hdr.refcount_order > 6:
            raise CorruptImage("qcow2 header", 96, f"refcount_order {hdr.refcount_order} > 6")
    _validate_layout(hdr, file_size)
    _parse_extensions(hdr, data)
    _check_features(hdr)
    if backing_file_offset and backing_file_size:  # qemu: an empty name means no backing
        end = backing_file_offset + backing_file_size
        if backing_file_size > MAX_BACKING_NAME or end > cs or backing_file_offset < 72:
            raise CorruptImage(
                "qcow2 backing file name",
                backing_file_offset,
                f"name of {backing_file_size} bytes does not fit in the header cluster",
            )
        _need(data, end, "qcow2 backing file name", backing_file_offset)
        raw = data[backing_file_offset:end]
        try:
            hdr.backing_file = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CorruptImage(
                "qcow2 backing file name", backing_file_offset, "not valid UTF-8"
            ) from None
        if "\x00" in hdr.backing_file or not hdr.backing_file:
            raise CorruptImage("qcow2 backing file name", backing_file_offset, "empty or NUL")
    return hdr


def _validate_layout(hdr: Header, file_size: int) -> None:
    cs = hdr.cluster_size
    if hdr.crypt_method:
        raise Unsupported("encryption", f"crypt_method {hdr.crypt_method}")
    if hdr.size > MAX_IMAGE_SIZE:
        raise CorruptImage("qcow2 header", 24, f"virtual size {hdr.size} is absurd")
    span = hdr.l2_entries * cs  # the v3 fields (extended L2) are already parsed
    need_l1 = -(-hdr.size // span)
    if hdr.l1_size * 8 > MAX_L1_BYTES:
        raise CorruptImage("qcow2 header", 36, f"l1_size {hdr.l1_size} exceeds qemu's limit")
    if hdr.l1_size < need_l1:
        raise CorruptImage(
            "qcow2 header", 36, f"l1_size {hdr.l1_size} too small for {hdr.size} bytes"
        )
    if hdr.l1_size:
        _check_table("qcow2 L1 table", hdr.l1_table_offset, hdr.l1_size * 8, cs, file_size, 40)
    if hdr.refcount_table_clusters * cs > MAX_REFTABLE_BYTES:
        raise CorruptImage(
            "qcow2 header",
            56,
            f"refcount_table_clusters {hdr.refcount_table_clusters} exceeds qemu's limit",
        )
    if hdr.refcount_table_clusters == 0:
        raise CorruptImage("qcow2 header", 56, "no refcount table")
    _check_table(
        "qcow2 refcount table",
        hdr.refcount_table_offset,
        hdr.refcount_table_clusters * cs,
        cs,
        file_size,
        48,
    )
    if hdr.nb_snapshots > MAX_SNAPSHOTS:
        raise CorruptImage("qcow2 header", 60, f"{hdr.nb_snapshots} snapshots is absurd")
    if hdr.nb_snapshots:
        _check_table(
            "qcow2 snapshot table",
            hdr.snapshots_offset,
            hdr.nb_snapshots * SNAPSHOT_HEADER.size,
            cs,
            file_size,
            64,
        )


def _check_table(
    structure: str,
    offset: int,
    length: int,
    cs: int,
    file_size: int,
    field_offset: int,
    *,
    align: int = 0,
) -> None:
    """A table must start on a cluster boundary (``align`` overrides) and lie in the file."""
    if offset % (align or cs):
        raise CorruptImage(structure, offset, f"offset is not aligned (header byte {field_offset})")
    if offset == 0:
        raise CorruptImage(
            structure, offset, f"offset 0 overlaps the header (header byte {field_offset})"
        )
    if offset + length > file_size:
        raise CorruptImage(
            structure,
            offset,
            f"{length} bytes at {offset} lie outside the {file_size}-byte file",
        )


def _parse_extensions(hdr: Header, data: bytes) -> None:
    cs = hdr.cluster_size
    # qemu also reads extensions after a v2 header (backing format is common there).
    start = HEADER_V2.size if hdr.version == 2 else hdr.header_length
    end = hdr.backing_file_offset if hdr.backing_file_offset else cs
    end = min(end, cs, len(data))
    pos = start
    seen: set[int] = set()
    while pos + EXT_HEADER.size <= end:
        etype, elen = EXT_HEADER.unpack_from(data, pos)
        if etype == EXT_END:
            return
        body = pos + EXT_HEADER.size
        if elen > end - body:
            raise CorruptImage(
                "qcow2 header extension", pos, f"extension {etype:#x} of {elen} bytes overflows"
            )
        payload = data[body : body + elen]
        if etype in seen and etype in (EXT_BACKING_FORMAT, EXT_DATA_FILE):
            raise CorruptImage("qcow2 header extension", pos, f"duplicate extension {etype:#x}")
        seen.add(etype)
        if etype == EXT_BACKING_FORMAT:
            try:
                hdr.backing_format = payload.decode("ascii").rstrip("\x00")
            except UnicodeDecodeError:
                raise CorruptImage("qcow2 backing format extension", pos, "not ASCII") from None
        elif etype == EXT_FEATURE_TABLE:
            for i in range(elen // FEATURE_ENTRY.size):
                kind, bit, name = FEATURE_ENTRY.unpack_from(payload, i * FEATURE_ENTRY.size)
                if kind <= 2 and bit < 64:
                    text = name.split(b"\x00", 1)[0].decode("utf-8", "replace")
                    hdr.feature_names[(kind, bit)] = text
        elif etype == EXT_DATA_FILE:
            raise Unsupported("external data file", "qcow2 images with a data file are refused")
        elif etype == EXT_CRYPTO:
            raise Unsupported("encryption", "full disk encryption header extension")
        elif etype == EXT_BITMAPS:
            hdr.has_bitmaps_extension = True
        else:
            hdr.unknown_extensions.append(etype)
        pos = body + ((elen + 7) & ~7)
    # Running off the end of the extension area without an end marker: qemu accepts it when
    # the area is exhausted, so do we.


def _check_features(hdr: Header) -> None:
    incompat = hdr.incompatible_features
    unknown = incompat & ~INCOMPAT_KNOWN
    if unknown:
        bit = (unknown & -unknown).bit_length() - 1
        raise Unsupported(hdr.feature_name(0, bit), "unknown incompatible feature")
    if incompat & INCOMPAT_DATA_FILE:
        raise Unsupported("external data file", "qcow2 images with a data file are refused")
    if incompat & INCOMPAT_COMPRESSION:
        if hdr.compression_type not in (COMPRESSION_ZLIB, COMPRESSION_ZSTD):
            raise Unsupported(f"compression type {hdr.compression_type}")
    elif hdr.compression_type != COMPRESSION_ZLIB:
        raise CorruptImage(
            "qcow2 header", COMPRESSION_TYPE_OFFSET, "compression_type set without its feature bit"
        )
    if incompat & INCOMPAT_EXTL2 and hdr.cluster_bits < 14:
        # qemu refuses extended L2 below 16 KiB clusters (subclusters would be < 512 bytes).
        raise CorruptImage("qcow2 header", 72, "extended L2 entries need clusters >= 16 KiB")


def parse_snapshots(hdr: Header, read: Callable[[int, int, str], bytes]) -> list[Snapshot]:
    """Parse ``nb_snapshots`` entries starting at ``snapshots_offset``.

    ``read(n, offset, structure)`` returns exactly ``n`` bytes or raises ``CorruptImage``;
    entries are read one at a time, so opening costs what the table really holds (bounded by
    qemu's 64 MiB limit), not the bound.
    """
    out: list[Snapshot] = []
    base = hdr.snapshots_offset
    pos = 0
    for _ in range(hdr.nb_snapshots):
        if pos + SNAPSHOT_HEADER.size > MAX_SNAPSHOT_TABLE_BYTES:
            raise CorruptImage("qcow2 snapshot table", base, "larger than qemu's 64 MiB limit")
        head = read(SNAPSHOT_HEADER.size, base + pos, "qcow2 snapshot table")
        (
            l1_off,
            l1_size,
            id_size,
            name_size,
            date_sec,
            date_nsec,
            vm_clock,
            vm_state,
            extra_size,
        ) = SNAPSHOT_HEADER.unpack(head)
        if extra_size > MAX_SNAPSHOT_EXTRA:
            raise CorruptImage("qcow2 snapshot table", base + pos, "extra data too large")
        body_len = extra_size + id_size + name_size
        end = pos + SNAPSHOT_HEADER.size + body_len
        if end > MAX_SNAPSHOT_TABLE_BYTES:
            raise CorruptImage("qcow2 snapshot table", base, "larger than qemu's 64 MiB limit")
        body = read(body_len, base + pos + SNAPSHOT_HEADER.size, "qcow2 snapshot table")
        disk_size: int | None = None
        if extra_size >= SNAPSHOT_EXTRA.size:
            large, disk_size = SNAPSHOT_EXTRA.unpack_from(body, 0)
            vm_state = large or vm_state
        ids = body[extra_size : extra_size + id_size]
        name = body[extra_size + id_size :]
        if l1_size * 8 > MAX_L1_BYTES or l1_off % 512:
            raise CorruptImage("qcow2 snapshot table", base + pos, "bad snapshot L1 table")
        out.append(
            Snapshot(
                ids.decode("utf-8", "replace"),
                name.decode("utf-8", "replace"),
                date_sec,
                date_nsec,
                vm_clock,
                vm_state,
                disk_size,
                l1_off,
                l1_size,
            )
        )
        pos = (end + 7) & ~7
    hdr.snapshots_size = pos
    return out


def build_header(
    *,
    cluster_bits: int,
    size: int,
    l1_size: int,
    l1_table_offset: int,
    refcount_table_offset: int,
    refcount_table_clusters: int,
    refcount_order: int = 4,
    backing_file: str | None = None,
    backing_format: str | None = None,
) -> bytes:
    """A version 3 header cluster as qemu-img 7 writes it (header_length 112, zlib)."""
    header_length = 112
    exts = bytearray()
    if backing_format:
        fmt = backing_format.encode("ascii")
        exts += EXT_HEADER.pack(EXT_BACKING_FORMAT, len(fmt)) + fmt + bytes(-len(fmt) % 8)
    table = b"".join(
        FEATURE_ENTRY.pack(kind, bit, name.encode())
        for (kind, bit), name in sorted(FEATURE_NAMES.items())
    )
    exts += EXT_HEADER.pack(EXT_FEATURE_TABLE, len(table)) + table
    exts += EXT_HEADER.pack(EXT_END, 0)
    name = backing_file.encode("utf-8") if backing_file else b""
    backing_off = header_length + len(exts) if name else 0
    head = HEADER_V2.pack(
        MAGIC,
        3,
        backing_off,
        len(name),
        cluster_bits,
        size,
        0,
        l1_size,
        l1_table_offset,
        refcount_table_offset,
        refcount_table_clusters,
        0,
        0,
    ) + HEADER_V3.pack(0, 0, 0, refcount_order, header_length)
    head += bytes(header_length - len(head))
    out = head + bytes(exts) + name
    if len(out) > 1 << cluster_bits:
        raise Unsupported("backing file name", "too long to fit in the header cluster")
    return out
