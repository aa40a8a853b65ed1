"""Hostile qcow2 images: every malformation is a CorruptImage (or Unsupported) naming the
structure and the offset — never IndexError/struct.error/MemoryError, never a hang, never a
write to a read-only image."""

from __future__ import annotations

import random
import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from burrow.block.qcow2 import Qcow2Device
from burrow.block.qcow2.header import parse_header
from burrow.errors import BurrowError, CorruptImage
from fuzz import fuzz_qcow2
from fuzz.common import mutate
from images import qemu_img
from qcow2_helpers import fast_tmp_dir, qemu_io


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Overrides pytest's tmp_path with a tmpfs directory (see qcow2_helpers.fast_tmp_dir)."""
    yield from fast_tmp_dir()


pytestmark = pytest.mark.tool("qemu-img", "qemu-io")


@pytest.fixture(scope="module")
def seed_image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("seed")
    img = d / "seed.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "1M")
    qemu_io(img, "write -P 0xab 0 3000", "write -P 0xcd 600000 2000")
    return img.read_bytes()


def _open_all(path: Path, *, write: bool = False) -> None:
    with Qcow2Device(path, readonly=not write) as dev:
        dev.pread(dev.size, 0)
        list(dev.extents(dev.size, 0))
        if write:
            dev.pwrite(b"x" * 5000, 100)
            dev.flush()


def _expect(path: Path, data: bytes, structure: str, *, write: bool = False) -> CorruptImage:
    path.write_bytes(data)
    with pytest.raises(CorruptImage) as err:
        _open_all(path, write=write)
    assert err.value.structure == structure, err.value
    return err.value


def _set(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


def test_truncated_files(seed_image: bytes, tmp_path: Path) -> None:
    p = tmp_path / "t.qcow2"
    hdr = parse_header(seed_image, len(seed_image))
    for cut in [0, 3, 50, 71, 103, 111, 300, 511, hdr.l1_table_offset + 4]:
        p.write_bytes(seed_image[:cut])
        with pytest.raises(CorruptImage):
            _open_all(p)
    for cut in range(512, len(seed_image), 97):  # cutting anywhere: a BurrowError at most
        p.write_bytes(seed_image[:cut])
        try:
            _open_all(p)
        except BurrowError:
            pass


def test_table_offsets_beyond_file_or_unaligned(seed_image: bytes, tmp_path: Path) -> None:
    p = tmp_path / "o.qcow2"
    hdr = parse_header(seed_image, len(seed_image))
    far = 1 << 40
    err = _expect(p, _set(seed_image, 40, ">Q", far), "qcow2 L1 table")
    assert err.offset == far
    _expect(p, _set(seed_image, 40, ">Q", hdr.l1_table_offset + 8), "qcow2 L1 table")
    _expect(p, _set(seed_image, 48, ">Q", far), "qcow2 refcount table")
    _expect(p, _set(seed_image, 48, ">Q", 8), "qcow2 refcount table")
    # An L1 entry pointing past the end, or between clusters: names the entry's own offset.
    l1 = hdr.l1_table_offset
    err = _expect(p, _set(seed_image, l1, ">Q", (1 << 63) | far), "qcow2 L1 table")
    assert err.offset == l1
    # A data cluster past the end of the file: names the L2 entry.
    l2 = struct.unpack_from(">Q", seed_image, l1)[0] & 0x00FFFFFFFFFFFE00
    err = _expect(p, _set(seed_image, l2, ">Q", (1 << 63) | far), "qcow2 L2 table")
    assert err.offset == l2
    # A refcount block past the end (found when opening for writing).
    rt = hdr.refcount_table_offset
    err = _expect(p, _set(seed_image, rt, ">Q", far), "qcow2 refcount table", write=True)
    assert err.offset == rt
    # Compressed garbage.
    comp = (1 << 62) | (2 << 61 - 1) | (len(seed_image) - 600)
    _expect(p, _set(seed_image, l2, ">Q", comp), "qcow2 compressed cluster")


def test_table_at_offset_zero_says_it_overlaps_the_header(
    seed_image: bytes, tmp_path: Path
) -> None:
    """Offset 0 is inside the file: the message must not claim it "lies outside" it."""
    p = tmp_path / "z.qcow2"
    for field, structure in ((40, "qcow2 L1 table"), (48, "qcow2 refcount table")):
        err = _expect(p, _set(seed_image, field, ">Q", 0), structure)
        assert err.offset == 0
        assert "overlaps the header" in str(err) and "outside" not in str(err), str(err)


def test_unaligned_l2_and_data_offsets(tmp_path: Path) -> None:
    img = tmp_path / "4k.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, "1M")
    qemu_io(img, "write -P 0xab 0 3000")
    seed = img.read_bytes()
    hdr = parse_header(seed, len(seed))
    l1 = hdr.l1_table_offset
    l1e = struct.unpack_from(">Q", seed, l1)[0]
    err = _expect(img, _set(seed, l1, ">Q", l1e + 512), "qcow2 L1 table")
    assert err.offset == l1 and "unaligned" in err.detail
    l2 = l1e & 0x00FFFFFFFFFFFE00
    l2e = struct.unpack_from(">Q", seed, l2)[0]
    err = _expect(img, _set(seed, l2, ">Q", l2e + 1024), "qcow2 L2 table")
    assert err.offset == l2 and "unaligned" in err.detail


def test_absurd_header_fields(seed_image: bytes, tmp_path: Path) -> None:
    p = tmp_path / "h.qcow2"
    cases = [
        (24, ">Q", 1 << 62, "qcow2 header"),  # size
        (24, ">Q", 1 << 40, "qcow2 header"),  # size beyond what l1_size covers
        (36, ">I", 0xFFFFFFFF, "qcow2 header"),  # l1_size
        (20, ">I", 40, "qcow2 header"),  # cluster_bits
        (20, ">I", 0, "qcow2 header"),
        (56, ">I", 0xFFFFFFFF, "qcow2 header"),  # refcount_table_clusters
        (56, ">I", 0, "qcow2 header"),
        (60, ">I", 0xFFFFFFFF, "qcow2 header"),  # nb_snapshots
        (60, ">I", 3, "qcow2 snapshot table"),  # snapshots at offset 0
        (96, ">I", 7, "qcow2 header"),  # refcount_order
        (100, ">I", 0xFFFFFFF8, "qcow2 header"),  # header_length
        (100, ">I", 105, "qcow2 header"),
        (16, ">I", 5000, "qcow2 backing file name"),  # backing name longer than the cluster
    ]
    for off, fmt, value, structure in cases:
        data = _set(seed_image, off, fmt, value)
        if structure == "qcow2 backing file name":
            data = _set(data, 8, ">Q", 200)
        tracemalloc.start()
        try:
            err = _expect(p, data, structure)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, f"{structure} at {off}: {peak} bytes allocated"
        assert str(err)


def test_header_extension_overflow(seed_image: bytes, tmp_path: Path) -> None:
    p = tmp_path / "e.qcow2"
    hdr = parse_header(seed_image, len(seed_image))
    pos = hdr.header_length  # where the first extension goes
    data = _set(_set(seed_image, pos, ">I", 0x12345678), pos + 4, ">I", 0xFFFFFFF0)
    err = _expect(p, data, "qcow2 header extension")
    assert err.offset == pos


def test_thousands_of_mutated_images(seed_image: bytes, tmp_path: Path) -> None:
    """Mutated headers and tables through the fuzz harness: only BurrowError may escape."""
    seeds = [seed_image, *fuzz_qcow2.seeds(tmp_path)]
    rng = random.Random("qcow2-mutations")
    hdr = parse_header(seed_image, len(seed_image))
    l2 = struct.unpack_from(">Q", seed_image, hdr.l1_table_offset)[0] & 0x00FFFFFFFFFFFE00
    regions = [
        *fuzz_qcow2.REGIONS,
        (hdr.l1_table_offset, 64),
        (hdr.refcount_table_offset, 64),
        (l2, 512),
    ]
    failures = 0
    for i in range(2000):
        data = mutate(rng.choice(seeds), rng, regions if i % 3 else None)
        try:
            fuzz_qcow2.one_input(data)
        except BurrowError:
            failures += 1
    assert 0 < failures < 2000  # both outcomes happen: the mutations reach deep and shallow


def test_table_entries_set_to_hostile_values(seed_image: bytes, tmp_path: Path) -> None:
    """Every 8-byte entry of L1, L2 and the refcount table set to boundary values."""
    hdr = parse_header(seed_image, len(seed_image))
    l2 = struct.unpack_from(">Q", seed_image, hdr.l1_table_offset)[0] & 0x00FFFFFFFFFFFE00
    values = [1, 511, 512, 1 << 63, (1 << 63) | 512, (1 << 62) | 512, 2**64 - 1, 1 << 55]
    p = tmp_path / "v.qcow2"
    refused = tried = 0
    for table in (hdr.l1_table_offset, l2, hdr.refcount_table_offset):
        for slot in range(4):
            for v in values:
                image = _set(seed_image, table + slot * 8, ">Q", v)
                p.write_bytes(image)
                for write in (False, True):
                    tried += 1
                    try:
                        _open_all(p, write=write)
                    except BurrowError:
                        refused += 1
                    if not write:  # a read-only open never changes a byte
                        assert p.read_bytes() == image
    # unused slots may hold anything harmless, but the used ones must be refused
    assert 0 < refused < tried


def test_metadata_overlaps_refused_before_writing(seed_image: bytes, tmp_path: Path) -> None:
    """A corrupt table that points one structure at another must not make burrow overwrite
    metadata: opening for writing (or the write itself) refuses, and the file is unchanged."""
    hdr = parse_header(seed_image, len(seed_image))
    l1 = hdr.l1_table_offset
    l2 = struct.unpack_from(">Q", seed_image, l1)[0] & 0x00FFFFFFFFFFFE00
    rt = hdr.refcount_table_offset
    p = tmp_path / "m.qcow2"
    cases = [
        (_set(seed_image, l1, ">Q", (1 << 63) | l1), "qcow2 L1 table"),  # L2 = the L1 table
        (_set(seed_image, l1 + 8, ">Q", (1 << 63) | l2), "qcow2 L1 table"),  # shared L2 table
        (_set(seed_image, rt + 8, ">Q", l2), "qcow2 refcount table"),  # refblock = an L2
        (_set(seed_image, 48, ">Q", l1), "qcow2 refcount table"),  # reftable = the L1 table
        (_set(seed_image, l2, ">Q", (1 << 63) | rt), "qcow2 L2 table"),  # data = reftable
    ]
    for data, structure in cases:
        p.write_bytes(data)
        with pytest.raises(CorruptImage) as err, Qcow2Device(p, readonly=False) as dev:
            dev.pwrite(b"\xff" * 700, 0)
        assert err.value.structure == structure, err.value
        assert p.read_bytes() == data
