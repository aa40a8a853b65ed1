"""qcow2 read/write against qemu's own tools.

Oracles: ``qemu-img check`` (no corruption, no leaks after a clean close), ``qemu-img compare``
against a raw file holding the bytearray model, ``qemu-io`` pattern reads/writes in both
directions, ``qemu-img info``/``snapshot``. Images come from burrow's ``create_qcow2`` and from
``qemu-img create/convert`` in every variant the issue names.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from blockconformance import SIZE, check_extents, ops_strategy, run_workload
from burrow import block
from burrow.block.device import ExtentFlags
from burrow.block.qcow2 import Qcow2Device, create_qcow2, open_qcow2
from burrow.errors import ReadOnly, Unsupported, UsageError
from images import qemu_img
from qcow2_helpers import check_clean, compare_with, fast_tmp_dir, info, pattern, qemu_io


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Overrides pytest's tmp_path with a tmpfs directory (see qcow2_helpers.fast_tmp_dir)."""
    yield from fast_tmp_dir()


pytestmark = pytest.mark.tool("qemu-img", "qemu-io")

SETTINGS = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _name(tmp: Path, stem: str) -> Path:
    return tmp / f"{stem}-{os.urandom(4).hex()}.qcow2"


# -- conformance on images burrow creates -------------------------------------------------------
@pytest.mark.parametrize("cluster_size", [512, 4096, 65536, 2 << 20])
@SETTINGS
@given(ops=ops_strategy())
def test_conformance_own_images(
    cluster_size: int, tmp_path: Path, ops: list[tuple[str, int, int, int]]
) -> None:
    img = _name(tmp_path, "own")
    with create_qcow2(img, SIZE, cluster_size=cluster_size) as dev:
        model = run_workload(dev, ops)
    check_clean(img)
    compare_with(img, model, tmp_path)
    with block.open(img) as dev:
        assert dev.pread(SIZE, 0) == model
    img.unlink()


@pytest.fixture(scope="module")
def backing_files() -> Iterator[dict[str, Path]]:
    for d in fast_tmp_dir():
        yield _make_backing_files(d)


def _make_backing_files(d: Path) -> dict[str, Path]:
    raw = d / "base.raw"
    data = bytearray(random.Random(7).randbytes(SIZE))
    data[300_000:500_000] = bytes(200_000)
    raw.write_bytes(bytes(data))
    mid = d / "mid.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "base.raw",
             "-F", "raw", mid)  # fmt: skip
    qemu_io(mid, "write -P 0x77 100000 70000", "write -z 600000 20000")
    return {"raw": raw, "qcow2": mid}


@pytest.mark.parametrize("kind", ["raw", "qcow2"])
@pytest.mark.parametrize("cluster_size", [4096, 65536])
@SETTINGS
@given(ops=ops_strategy())
def test_conformance_with_backing(
    kind: str,
    cluster_size: int,
    backing_files: dict[str, Path],
    tmp_path: Path,
    ops: list[tuple[str, int, int, int]],
) -> None:
    base = backing_files[kind]
    before = base.read_bytes()
    img = _name(base.parent, "top")
    try:
        with create_qcow2(img, SIZE, cluster_size=cluster_size, backing=base.name) as dev:
            model = run_workload(dev, ops)
        check_clean(img)
        compare_with(img, model, tmp_path)
        assert base.read_bytes() == before, "the backing file was written"
    finally:
        img.unlink(missing_ok=True)


# -- images made by qemu-img in every variant --------------------------------------------------
VARIANTS: dict[str, list[str]] = {
    "v2-compat010": ["-o", "compat=0.10"],
    "cluster4k": ["-o", "cluster_size=4096"],
    "cluster2m": ["-o", "cluster_size=2M"],
    "cluster2m-refcount1": ["-o", "cluster_size=2M,refcount_bits=1"],
    "cluster512": ["-o", "cluster_size=512"],
    "extended-l2": ["-o", "extended_l2=on,cluster_size=65536"],
    "extended-l2-16k": ["-o", "extended_l2=on,cluster_size=16384"],
    "refcount1": ["-o", "refcount_bits=1,cluster_size=4096"],
    "refcount2": ["-o", "refcount_bits=2,cluster_size=4096"],
    "refcount8": ["-o", "refcount_bits=8,cluster_size=4096"],
    "refcount32": ["-o", "refcount_bits=32,cluster_size=4096"],
    "refcount64": ["-o", "refcount_bits=64,cluster_size=4096"],
    "lazy-refcounts": ["-o", "lazy_refcounts=on"],
    "zlib": ["-c", "-o", "cluster_size=4096"],
    "zstd": ["-c", "-o", "compression_type=zstd,cluster_size=4096"],
    "zstd-64k": ["-c", "-o", "compression_type=zstd"],
    "zlib-v2": ["-c", "-o", "compat=0.10,cluster_size=65536"],
    "zlib-extended-l2": ["-c", "-o", "extended_l2=on,cluster_size=32768"],
    "prealloc-metadata": ["-o", "preallocation=metadata,cluster_size=4096"],
    "prealloc-falloc": ["-o", "preallocation=falloc"],
}


def _qemu_image(tmp: Path, variant: str) -> tuple[Path, bytearray]:
    """A qemu-img convert of random-ish data into the variant; returns it and its contents."""
    rng = random.Random(variant)
    data = bytearray(SIZE)
    for _ in range(12):
        off = rng.randrange(SIZE - 70_000)
        n = rng.randrange(1, 70_000)
        data[off : off + n] = pattern(rng.randrange(256), n)[:n]
    data[0:5000] = b"\x42" * 5000
    raw = tmp / f"{variant}.raw"
    raw.write_bytes(bytes(data))
    img = tmp / f"{variant}.qcow2"
    qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", *VARIANTS[variant], raw, img)
    return img, data


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_qemu_variants_read(variant: str, tmp_path: Path) -> None:
    img, data = _qemu_image(tmp_path, variant)
    theirs = info(img)
    spec: dict[str, object] = theirs["format-specific"]["data"]  # type: ignore[index]
    with block.open(img) as dev:
        assert isinstance(dev, Qcow2Device)
        ours = dev.info()
        assert ours["virtual_size"] == theirs["virtual-size"] == dev.size == SIZE
        assert ours["cluster_size"] == theirs["cluster-size"]
        assert ours["version"] == (2 if spec["compat"] == "0.10" else 3)
        assert ours["refcount_bits"] == spec["refcount-bits"]
        assert ours["extended_l2"] == spec.get("extended-l2", False)
        assert ours["lazy_refcounts"] == spec.get("lazy-refcounts", False)
        assert ours["compression_type"] == spec.get("compression-type", "zlib")
        assert dev.pread(SIZE, 0) == data
        check_extents(dev, data)
        assert dev.pread(777, 123_457) == data[123_457 : 123_457 + 777]
        if "zlib" in variant or "zstd" in variant:
            assert dev.statistics()["compressed_reads"]
        ours_map = list(dev.extents(SIZE, 0))
    # Our allocation map agrees with qemu's: what we call data qemu calls data, what we call
    # zero qemu calls zero (qemu may see zeros inside data, e.g. fallocated clusters).
    qmap = json.loads(qemu_img("map", "--output=json", img).stdout)
    for ext in ours_map:
        for q in qmap:
            lo = max(ext.offset, q["start"])
            hi = min(ext.offset + ext.length, q["start"] + q["length"])
            if lo >= hi:
                continue
            if ext.flags & ExtentFlags.ZERO:
                assert q["zero"], (ext, q)
            else:
                assert q["data"], (ext, q)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops_strategy())
def test_qemu_variants_write(
    variant: str, tmp_path: Path, ops: list[tuple[str, int, int, int]]
) -> None:
    img, data = _qemu_image(tmp_path, variant)
    with open_qcow2(str(img), readonly=False) as dev:
        model = run_workload(dev, ops, bytearray(data))
    check_clean(img)
    compare_with(img, model, tmp_path)


def test_qemu_io_writes_read_back_in_burrow(tmp_path: Path) -> None:
    img = tmp_path / "q.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, "8M")
    qemu_io(img, "write -P 0xab 0 64k", "write -P 0xcd 1M 4k", "write -z 2M 64k",
            "write -P 0x11 3000000 100000")  # fmt: skip
    with block.open(img) as dev:
        assert dev.pread(65536, 0) == b"\xab" * 65536
        assert dev.pread(4096, 1 << 20) == b"\xcd" * 4096
        assert dev.pread(65536, 2 << 20) == bytes(65536)
        assert dev.pread(100_000, 3_000_000) == b"\x11" * 100_000
        assert dev.pread(100, 70_000) == bytes(100)


@pytest.mark.parametrize("compat", ["0.10", "1.1"])
def test_burrow_writes_verified_by_qemu_io(compat: str, tmp_path: Path) -> None:
    img = tmp_path / "b.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"compat={compat},cluster_size=4096", img, "8M")
    with block.open(img, readonly=False) as dev:
        dev.pwrite(b"\xab" * 65536, 0)
        dev.pwrite(b"\xcd" * 4096, 1 << 20)
        dev.pwrite(b"\xee" * 100, 1 << 20)  # partial cluster over existing data
        dev.pwrite(b"\x11" * 10000, 5_000_000)  # partial clusters into fresh ones
        dev.write_zeroes(8192, 4096)
    check_clean(img)
    qemu_io(img, "read -P 0xab 0 4096", "read -P 0 4096 8192", "read -P 0xab 12288 53248",
            "read -P 0xee 1M 100", "read -P 0xcd 1048676 3996", "read -P 0x11 5000000 10000",
            "read -P 0 4990000 10000")  # fmt: skip


def test_create_matches_qemu_expectations(tmp_path: Path) -> None:
    img = tmp_path / "new.qcow2"
    with block.create(img, 1 << 30) as dev:
        assert dev.size == 1 << 30
    meta = info(img)
    assert meta["virtual-size"] == 1 << 30
    assert meta["cluster-size"] == 65536
    assert meta["format-specific"]["data"]["compat"] == "1.1"  # type: ignore[index]
    check_clean(img)
    with pytest.raises(FileExistsError):
        block.create(img, 1 << 20)
    with pytest.raises(UsageError):
        block.create(tmp_path / "odd.qcow2", 1000)
    with pytest.raises(UsageError):
        block.create(tmp_path / "odd.qcow2", 1 << 20, cluster_size=3000)


def test_backing_chain_and_format_rules(tmp_path: Path) -> None:
    base = tmp_path / "base.raw"
    base.write_bytes(b"B" * (4 << 20))
    mid = tmp_path / "mid.qcow2"
    with create_qcow2(mid, 4 << 20, backing="base.raw", backing_format="raw") as dev:
        dev.pwrite(b"M" * 4096, 8192)
    top = tmp_path / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", top)
    qemu_io(top, "write -P 0x54 0 512")
    with block.open(top, readonly=False) as dev:
        assert dev.pread(512, 0) == b"T" * 512
        assert dev.pread(100, 600) == b"B" * 100
        assert dev.pread(4096, 8192) == b"M" * 4096
        dev.pwrite(b"W" * 10, 8190)  # partial write: copy-on-write from the chain
        assert dev.pread(14, 8188) == b"BBWWWWWWWWWWMM"
    assert base.read_bytes() == b"B" * (4 << 20)
    qemu_io(top, "read -P 0x42 0x1ffc 2", "read -P 0x57 8190 10", "read -P 0x4d 8200 4088")
    check_clean(top)
    check_clean(mid)
    # A backing file named without its format is opened only when probing is allowed.
    noformat = tmp_path / "nofmt.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", noformat, "4M")
    raw = noformat.read_bytes()
    ext = (0xE2792ACA).to_bytes(4, "big")  # backing format extension -> an unknown type
    assert raw.count(ext) == 1
    noformat.write_bytes(raw.replace(ext, (0x0BADF00D).to_bytes(4, "big")))
    assert info(noformat).get("backing-filename-format") is None
    with pytest.raises(Unsupported):
        block.open(noformat)
    with block.open(noformat, allow_probe_backing=True) as dev:
        assert dev.pread(3, 0) == b"BBB"


def test_backing_loops_and_depth(tmp_path: Path) -> None:
    a, b = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", a, "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", b)
    qemu_img("rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", a)
    from burrow.errors import CorruptImage

    with pytest.raises(CorruptImage) as err:
        block.open(b)
    assert err.value.structure == "qcow2 backing chain"
    self_loop = tmp_path / "self.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", self_loop, "1M")
    qemu_img("rebase", "-u", "-b", "self.qcow2", "-F", "qcow2", self_loop)
    with pytest.raises(CorruptImage):
        block.open(self_loop)
    prev = "base.raw"
    (tmp_path / prev).write_bytes(bytes(1 << 20))
    fmt = "raw"
    for i in range(20):
        name = f"chain{i}.qcow2"
        qemu_img("create", "-q", "-f", "qcow2", "-b", prev, "-F", fmt, tmp_path / name)
        prev, fmt = name, "qcow2"
    with pytest.raises(CorruptImage) as err:
        block.open(tmp_path / prev)
    assert "deeper" in str(err.value)
    with block.open(tmp_path / "chain10.qcow2") as dev:
        assert dev.pread(10, 0) == bytes(10)


@pytest.mark.parametrize("options", ["cluster_size=4096", "cluster_size=65536,extended_l2=on"])
@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops_strategy())
def test_snapshots_listed_and_preserved_by_writes(
    options: str, tmp_path: Path, ops: list[tuple[str, int, int, int]]
) -> None:
    """Writing the active layer of an image with internal snapshots copies shared clusters:
    qemu-img check stays clean and every snapshot still holds exactly its old contents."""
    img = _name(tmp_path, "snap")
    qemu_img("create", "-q", "-f", "qcow2", "-o", options, img, str(SIZE))
    qemu_io(img, "write -P 0x01 0 300k", "write -P 0x0a 700k 100k")
    qemu_img("snapshot", "-c", "first", img)
    qemu_io(img, "write -P 0x02 100k 300k", "write -z 750k 20k")
    qemu_img("snapshot", "-c", "second", img)
    qemu_io(img, "write -P 0x03 200k 8k")
    snaps = {}
    for name in ("first", "second"):
        out = tmp_path / f"{name}.raw"
        qemu_img("convert", "-l", f"snapshot.name={name}", "-O", "raw", img, out)
        snaps[name] = out.read_bytes()
        out.unlink()
    with open_qcow2(str(img)) as dev:
        assert [s.name for s in dev.snapshots] == ["first", "second"]
        assert all(s.disk_size == SIZE for s in dev.snapshots)
        assert dev.pread(4, 200 << 10) == b"\x03" * 4
    with open_qcow2(str(img), readonly=False) as dev:
        model = run_workload(dev, ops)
    check_clean(img)
    compare_with(img, model, tmp_path)
    for name, content in snaps.items():
        out = tmp_path / f"{name}.raw"
        qemu_img("convert", "-l", f"snapshot.name={name}", "-O", "raw", img, out)
        assert out.read_bytes() == content, f"snapshot {name} changed"
        out.unlink()
    qemu_img("snapshot", "-d", "first", img)  # qemu's refcount bookkeeping agrees with ours
    check_clean(img)
    compare_with(img, model, tmp_path)
    img.unlink()


def test_refused_features(tmp_path: Path) -> None:
    data_file = tmp_path / "ext.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'ext.data'}",
             data_file, "1M")  # fmt: skip
    with pytest.raises(Unsupported) as err:
        block.open(data_file)
    assert err.value.feature == "external data file"
    img = tmp_path / "feat.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, "1M")
    raw = bytearray(img.read_bytes())
    raw[72:80] = (1 << 40).to_bytes(8, "big")  # an incompatible feature nobody knows
    img.write_bytes(bytes(raw))
    with pytest.raises(Unsupported):
        block.open(img)
    raw[72:80] = (2).to_bytes(8, "big")  # qemu's corrupt bit: readable, not writable
    img.write_bytes(bytes(raw))
    with block.open(img) as dev:
        assert dev.pread(10, 0) == bytes(10)
    with pytest.raises(Unsupported) as err:
        block.open(img, readonly=False)
    assert err.value.feature == "corrupt bit"
    # Persistent bitmaps: writing would invalidate them, so it is refused; reading works.
    bm = tmp_path / "bitmap.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", bm, "1M")
    qemu_img("bitmap", "--add", bm, "b0")
    with pytest.raises(Unsupported) as err:
        block.open(bm, readonly=False)
    assert err.value.feature == "bitmaps"
    with block.open(bm) as dev:
        assert dev.pread(10, 0) == bytes(10)
    check_clean(bm)
    # ... and a dirty image with bitmaps could not have its refcounts rebuilt either.
    raw = bytearray(bm.read_bytes())
    raw[72:80] = (1).to_bytes(8, "big")
    bm.write_bytes(bytes(raw))
    with pytest.raises(Unsupported) as err:
        block.open(bm, readonly=False)
    assert err.value.feature in ("bitmaps", "dirty bit")


def test_readonly_never_writes(tmp_path: Path) -> None:
    img = tmp_path / "ro.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", img, "4M")
    qemu_io(img, "write -P 0x33 0 8k")
    before = img.read_bytes()
    with block.open(img) as dev:
        with pytest.raises(ReadOnly):
            dev.pwrite(b"x", 0)
        dev.pread(dev.size, 0)
        dev.flush()
    assert img.read_bytes() == before


def test_growth_reftable_and_refblocks(tmp_path: Path) -> None:
    """512-byte clusters: one refcount block covers 128 KiB and the first table only 8 MiB,
    so writing 12 MiB allocates many blocks and moves the refcount table."""
    img = tmp_path / "grow.qcow2"
    size = 16 << 20
    with create_qcow2(img, size, cluster_size=512) as dev:
        first = dev.hdr.refcount_table_offset
        blob = random.Random(1).randbytes(12 << 20)
        for off in range(0, len(blob), 1 << 20):
            dev.pwrite(blob[off : off + (1 << 20)], off)
        dev.flush()
        assert dev.hdr.refcount_table_offset != first
    check_clean(img)
    model = blob + bytes(size - len(blob))
    compare_with(img, model, tmp_path)
    meta = info(img)
    assert meta["virtual-size"] == size


def test_l2_cache_makes_random_reads_metadata_free(tmp_path: Path) -> None:
    img = tmp_path / "rand.qcow2"
    raw = tmp_path / "rand.raw"
    raw.write_bytes(random.Random(3).randbytes(64 << 20))
    qemu_img("convert", "-q", "-O", "qcow2", "-o", "cluster_size=65536", raw, img)
    data = raw.read_bytes()
    rng = random.Random(5)
    offsets = [rng.randrange(0, (64 << 20) - 4096) & ~4095 for _ in range(3000)]
    with block.open(img) as dev:
        dev.cache(dev.size, 0)  # NBD_CMD_CACHE loads every L2 table of the range
        warm = dev.statistics()["metadata_reads"]
        for off in offsets:
            assert dev.pread(4096, off) == data[off : off + 4096]
        stats = dev.statistics()
    assert stats["metadata_reads"] == warm, stats
    assert stats["l2_cache_hits"] >= 3000  # type: ignore[operator]


def test_concurrent_reads_from_threads(tmp_path: Path) -> None:
    img = tmp_path / "thr.qcow2"
    raw = tmp_path / "thr.raw"
    raw.write_bytes(random.Random(9).randbytes(8 << 20))
    qemu_img("convert", "-q", "-c", "-O", "qcow2", "-o", "cluster_size=4096", raw, img)
    data = raw.read_bytes()
    errors: list[BaseException] = []
    with block.open(img) as dev:

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(150):
                    off = rng.randrange(0, (8 << 20) - 70000)
                    n = rng.randrange(1, 70000)
                    assert dev.pread(n, off) == data[off : off + n]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]


def test_concurrent_reads_during_writes(tmp_path: Path) -> None:
    img = tmp_path / "rw.qcow2"
    with create_qcow2(img, 4 << 20, cluster_size=4096) as dev:
        dev.pwrite(b"\x01" * (2 << 20), 0)
        stop = threading.Event()
        errors: list[BaseException] = []

        def reader() -> None:
            try:
                while not stop.is_set():
                    chunk = dev.pread(2 << 20, 0)
                    assert set(chunk) <= {1, 2, 0}, set(chunk)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        for i in range(200):
            dev.pwrite(b"\x02" * 5000, (i * 9973) % ((2 << 20) - 5000))
            dev.pwrite(b"\x03" * 4096, (2 << 20) + i * 4096)
            if i % 20 == 0:
                dev.discard(8192, (2 << 20) + i * 4096)
                dev.flush()
        stop.set()
        t.join()
    assert not errors, errors[0]
    check_clean(img)


def test_zero_and_discard_use_metadata(tmp_path: Path) -> None:
    img = tmp_path / "z.qcow2"
    with create_qcow2(img, 8 << 20, cluster_size=65536) as dev:
        dev.pwrite(b"\xff" * (4 << 20), 0)
        dev.write_zeroes(1 << 20, 1 << 20, may_unmap=True)
        dev.discard(1 << 20, 2 << 20)
        dev.flush()
        assert dev.pread(1 << 20, 1 << 20) == bytes(1 << 20)
    check_clean(img)
    allocated = [e for e in block.open(img).extents(8 << 20, 0) if e.is_data]
    assert sum(e.length for e in allocated) == 2 << 20
    # The freed clusters are reused by the next writes: the file does not grow.
    size_before = img.stat().st_size
    with block.open(img, readonly=False) as dev:
        dev.pwrite(b"\x07" * (2 << 20), 5 << 20)
    assert img.stat().st_size == size_before
    check_clean(img)


def test_size_not_a_multiple_of_the_cluster(tmp_path: Path) -> None:
    size = 1954 * 512  # 977 KiB: the last 64 KiB cluster is partly outside the device
    rng = random.Random(3)
    ops = [
        (
            rng.choice(["write", "zero", "discard", "read"]),
            rng.randrange(size),
            rng.randrange(1, 90_000),
            i,
        )
        for i in range(60)
    ]
    ops += [("write", size - 100, 100, 1), ("zero", size - 70_000, 70_000, 0)]
    img = tmp_path / "odd.qcow2"
    with create_qcow2(img, size) as dev:
        model = run_workload(dev, ops)
    check_clean(img)
    compare_with(img, model, tmp_path)
    qimg = tmp_path / "qodd.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "compat=0.10", qimg, str(size))
    with open_qcow2(str(qimg), readonly=False) as dev:
        model = run_workload(dev, ops)
    check_clean(qimg)
    compare_with(qimg, model, tmp_path)


@pytest.mark.root
@pytest.mark.tool("losetup")
def test_qcow2_inside_a_block_device(tmp_path: Path) -> None:
    """A qcow2 image stored on a block device (st_size is 0 there): sized by SEEK_END."""
    import subprocess

    img = tmp_path / "on-loop.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", img, "4M")
    qemu_io(img, "write -P 0x5c 1M 8k")
    loop = subprocess.run(
        ["losetup", "-f", "--show", str(img)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        with block.open(loop) as dev:
            assert isinstance(dev, Qcow2Device)
            assert dev.pread(8192, 1 << 20) == b"\x5c" * 8192
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
