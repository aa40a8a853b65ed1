"""qcow2 writing in depth: qemu-made backing chains, refcount widths with growth, zero flags
as qemu sees them, concurrent writers, huge virtual sizes, and crash consistency of the
engine's own write ordering (a crash at any write leaves no corruption, only leaks)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from blockconformance import SIZE, ops_strategy, run_workload
from burrow import block
from burrow.block.qcow2 import create_qcow2, hostfile, open_qcow2
from images import qemu_img
from qcow2_helpers import check_clean, compare_with, fast_tmp_dir, pattern, qemu_io


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Overrides pytest's tmp_path with a tmpfs directory (see qcow2_helpers.fast_tmp_dir)."""
    yield from fast_tmp_dir()


pytestmark = pytest.mark.tool("qemu-img", "qemu-io")

TOP_OPTIONS = {
    "v3": "cluster_size=4096",
    "v2": "compat=0.10,cluster_size=4096",
    "extended-l2": "extended_l2=on,cluster_size=16384",
    "extended-l2-64k": "extended_l2=on,cluster_size=65536",
}


@pytest.fixture(scope="module")
def chain() -> Iterator[Path]:
    """raw <- qcow2 (qemu-made, with data and zeros): the lower part of a chain."""
    for d in fast_tmp_dir():
        yield _make_chain(d)


def _make_chain(d: Path) -> Path:
    raw = d / "base.raw"
    raw.write_bytes(random.Random(2).randbytes(SIZE))
    mid = d / "mid.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", "-b", "base.raw",
             "-F", "raw", mid)  # fmt: skip
    qemu_io(mid, "write -P 0x5a 70000 100000", "write -z 400000 131072")
    return mid


@pytest.mark.parametrize("variant", sorted(TOP_OPTIONS))
@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops_strategy())
def test_qemu_made_top_over_chain(
    variant: str, chain: Path, tmp_path: Path, ops: list[tuple[str, int, int, int]]
) -> None:
    top = chain.parent / f"top-{os.urandom(4).hex()}.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", TOP_OPTIONS[variant], "-b", chain.name,
             "-F", "qcow2", top)  # fmt: skip
    qemu_io(top, "write -P 0x33 0 5000", "write -z 200000 40000")
    lower = (chain.read_bytes(), (chain.parent / "base.raw").read_bytes())
    try:
        with open_qcow2(str(top), readonly=False) as dev:
            model = run_workload(dev, ops)
        check_clean(top)
        compare_with(top, model, tmp_path)
        assert (chain.read_bytes(), (chain.parent / "base.raw").read_bytes()) == lower
    finally:
        top.unlink()


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16, 32, 64])
def test_refcount_widths_with_growth(bits: int, tmp_path: Path) -> None:
    """Small clusters and many writes: new refcount blocks (and, for wide refcounts, a moved
    refcount table) in every refcount width; then frees and reuse."""
    img = tmp_path / "r.qcow2"
    size = 8 << 20
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"cluster_size=512,refcount_bits={bits}",
             img, str(size))  # fmt: skip
    rng = random.Random(bits)
    model = bytearray(size)
    with open_qcow2(str(img), readonly=False) as dev:
        for _ in range(30):
            off = rng.randrange(size - 300_000)
            n = rng.randrange(1, 300_000)
            data = pattern(rng.randrange(256), n)[:n]
            dev.pwrite(data, off)
            model[off : off + n] = data
            if rng.random() < 0.3:
                off = rng.randrange(size - 100_000)
                dev.discard(100_000, off)
                dev.flush()
                model[off : off + 100_000] = dev.pread(100_000, off)
        assert dev.pread(size, 0) == model
    check_clean(img)
    compare_with(img, model, tmp_path)


def _map(img: Path) -> list[dict[str, object]]:
    out = qemu_img("map", "--output=json", img).stdout
    return list(json.loads(out))


def test_zero_clusters_as_qemu_sees_them(chain: Path, tmp_path: Path) -> None:
    top = tmp_path / "z.qcow2"
    with create_qcow2(top, SIZE, cluster_size=4096, backing=str(chain)) as dev:
        dev.pwrite(b"\x01" * 65536, 0)
        dev.write_zeroes(16384, 8192)  # v3 with a backing file: zero clusters
        dev.discard(8192, 81920)  # over backing data: zero clusters too (never backing data)
        assert dev.pread(8192, 81920) == bytes(8192)
    check_clean(top)
    entries = _map(top)

    def at(off: int) -> dict[str, object]:
        return next(e for e in entries if e["start"] <= off < e["start"] + e["length"])  # type: ignore[operator]

    for off in (8192, 20480, 81920, 86016):
        assert at(off)["zero"] is True and at(off)["data"] is False, at(off)
        assert at(off)["depth"] == 0
    assert at(0)["data"] is True and at(0)["depth"] == 0
    qemu_io(top, "read -P 0 8192 16384", "read -P 0 81920 8192", "read -P 1 0 8192")


def test_burrow_image_roundtrip_with_qemu_io(tmp_path: Path) -> None:
    img = tmp_path / "rt.qcow2"
    with block.create(img, 16 << 20, cluster_size=65536) as dev:
        dev.pwrite(b"\xaa" * 100_000, 12345)
    qemu_io(img, "write -P 0xbb 50000 20000", "write -z 1M 64k", "write -P 0xcc 15M 1M")
    with block.open(img, readonly=False) as dev:
        assert dev.pread(37655, 12345) == b"\xaa" * 37655
        assert dev.pread(20000, 50000) == b"\xbb" * 20000
        assert dev.pread(42345, 70000) == b"\xaa" * 42345
        assert dev.pread(1 << 20, 15 << 20) == b"\xcc" * (1 << 20)
        dev.pwrite(b"\xdd" * 10, (15 << 20) + 5)
    qemu_io(img, "read -P 0xcc 15M 5", "read -P 0xdd 15728645 10", "read -P 0xcc 15728655 1000")
    check_clean(img)


def test_huge_virtual_size(tmp_path: Path) -> None:
    img = tmp_path / "huge.qcow2"
    size = 4 << 40  # 4 TiB
    with block.create(img, size) as dev:
        dev.pwrite(b"end!", size - 4)
        dev.pwrite(b"mid!", size // 2)
        exts = [e for e in dev.extents(size, 0) if e.is_data]
        assert sum(e.length for e in exts) == 2 * 65536
    check_clean(img)
    qemu_io(img, f"read -P 0x21 {size - 1} 1", f"read -P 0 {size - 65536} 65532")
    assert img.stat().st_size < 2 << 20


def test_concurrent_writers(tmp_path: Path) -> None:
    img = tmp_path / "cw.qcow2"
    with create_qcow2(img, 8 << 20, cluster_size=4096) as dev:
        errors: list[BaseException] = []

        def writer(k: int) -> None:
            try:
                rng = random.Random(k)
                base = k * (1 << 20)
                for _ in range(100):
                    off = base + rng.randrange((1 << 20) - 9000)
                    dev.pwrite(bytes([k + 1]) * 9000, off)
                    if rng.random() < 0.1:
                        dev.flush()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        data = dev.pread(8 << 20, 0)
    for k in range(8):
        assert set(data[k << 20 : (k + 1) << 20]) <= {0, k + 1}
    check_clean(img)


class _Crash(Exception):
    pass


def test_crash_at_every_metadata_write_leaves_no_corruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop the engine at its n-th write or sync, for every n: qemu-img check must find no
    corruption (leaks are allowed), and data flushed before the crash must read back."""
    budget = [10**9]
    real_write, real_writev, real_sync = (
        hostfile.HostFile.write,
        hostfile.HostFile.writev,
        hostfile.HostFile.sync,
    )

    def spend() -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise _Crash

    def write(self: hostfile.HostFile, data: object, offset: int) -> None:
        spend()
        real_write(self, data, offset)  # type: ignore[arg-type]

    def writev(self: hostfile.HostFile, bufs: list[memoryview], offset: int) -> None:
        spend()
        real_writev(self, bufs, offset)

    def sync(self: hostfile.HostFile) -> None:
        spend()
        real_sync(self)

    monkeypatch.setattr(hostfile.HostFile, "write", write)
    monkeypatch.setattr(hostfile.HostFile, "writev", writev)
    monkeypatch.setattr(hostfile.HostFile, "sync", sync)

    def workload(img: Path) -> None:
        dev = open_qcow2(str(img), readonly=False)
        try:
            rng = random.Random(7)
            for i in range(12):
                off = rng.randrange(0, (4 << 20) - 200_000)
                dev.pwrite(pattern(i, 150_000)[:150_000], off)
                if i % 3 == 2:
                    dev.discard(65536 * 2, rng.randrange(0, 60) * 65536)
                    dev.write_zeroes(4096, rng.randrange(0, (4 << 20) - 4096))
                if i % 2:
                    dev.flush()
            dev.close()
        finally:
            if not dev.closed:  # the "power" went: drop the device without flushing
                dev._closed = True
                dev.f.close()

    def _read(img: Path) -> bytes:
        with open_qcow2(str(img)) as ro:
            return ro.pread(ro.size, 0)

    pristine = tmp_path / "pristine.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", pristine, "4M")
    qemu_io(pristine, "write -P 0x11 0 1M")
    img = tmp_path / "crash.qcow2"
    img.write_bytes(pristine.read_bytes())
    budget[0] = 10**9
    workload(img)
    final = _read(img)
    total = 10**9 - budget[0]
    assert total > 20
    for n in range(0, total, max(1, total // 60)):
        img.write_bytes(pristine.read_bytes())
        budget[0] = n
        crashed = False
        try:
            workload(img)
        except _Crash:
            crashed = True
        budget[0] = 10**9
        proc = subprocess.run(
            ["qemu-img", "check", "--output=json", str(img)], capture_output=True, text=True
        )
        assert proc.returncode in (0, 3), f"crash at write {n}: {proc.stdout}{proc.stderr}"
        report = json.loads(proc.stdout)
        assert not report.get("corruptions"), (n, report)
        contents = _read(img)  # burrow reads every crashed image without complaint
        if not crashed:
            assert contents == final


def test_create_layout_with_many_refcount_blocks(tmp_path: Path) -> None:
    """512-byte clusters and 64 GiB: a 16 MiB L1 table that needs 129 refcount blocks and a
    3-cluster refcount table already at creation."""
    img = tmp_path / "big-l1.qcow2"
    size = 64 << 30
    with create_qcow2(img, size, cluster_size=512) as dev:
        assert dev.hdr.refcount_table_clusters == 3
        dev.pwrite(b"\x42" * 5000, size - 5000)
    check_clean(img)
    qemu_io(img, f"read -P 0x42 {size - 5000} 5000", "read -P 0 0 4096")


def test_sessions_interleaved_with_qemu(tmp_path: Path) -> None:
    """burrow and qemu-io take turns writing the same image; every session sees the other's
    data, and qemu-img check stays clean after each burrow session."""
    img = tmp_path / "turns.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, str(SIZE))
    model = bytearray(SIZE)
    rng = random.Random(8)
    for turn in range(4):
        ops = [
            (rng.choice(["write", "write", "zero", "discard", "read"]), rng.randrange(SIZE),
             rng.randrange(1, 80_000), rng.randrange(256))
            for _ in range(25)
        ]  # fmt: skip
        with open_qcow2(str(img), readonly=False) as dev:
            assert dev.pread(SIZE, 0) == model, f"turn {turn}: qemu's writes not seen"
            model = run_workload(dev, ops, model)
        check_clean(img)
        off, n, val = rng.randrange(SIZE - 70_000), rng.randrange(1, 70_000), rng.randrange(256)
        qemu_io(img, f"write -P {val} {off} {n}", f"write -z {n} 4096")
        model[off : off + n] = bytes([val]) * n
        model[n : n + 4096] = bytes(4096)
    compare_with(img, model, tmp_path)


DIRTY_VARIANTS = {
    "plain": "cluster_size=4096",
    "refcount1": "cluster_size=4096,refcount_bits=1",
    "refcount64-512": "cluster_size=512,refcount_bits=64",
    "extended-l2": "cluster_size=65536,extended_l2=on",
}


@pytest.mark.parametrize("variant", sorted(DIRTY_VARIANTS))
def test_dirty_lazy_refcount_images_are_repaired(variant: str, tmp_path: Path) -> None:
    """qemu-io killed by SIGKILL with lazy refcounts on leaves a dirty image whose refcounts
    are stale (qemu-img check reports errors). Read-only, burrow reads it untouched; for
    writing it rebuilds the refcounts first, after which qemu-img check is clean."""
    img = tmp_path / "dirty.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"lazy_refcounts=on,{DIRTY_VARIANTS[variant]}",
             img, str(SIZE))  # fmt: skip
    qemu_io(img, "write -P 0x0a 0 100k")
    if variant == "plain":
        qemu_img("snapshot", "-c", "s1", img)
    proc = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0x0b 50k 300k", "-c", "write -z 600k 64k",
         "-c", "write -P 0x0c 800k 100k", "-c", "sigraise 9", str(img)],
        capture_output=True,
    )  # fmt: skip
    assert proc.returncode != 0  # killed
    model = bytearray(SIZE)
    model[0 : 100 << 10] = b"\x0a" * (100 << 10)
    model[50 << 10 : 350 << 10] = b"\x0b" * (300 << 10)
    model[800 << 10 : 900 << 10] = b"\x0c" * (100 << 10)
    before = subprocess.run(["qemu-img", "check", str(img)], capture_output=True)
    assert before.returncode != 0, "the killed qemu-io should leave stale refcounts"
    raw = img.read_bytes()
    with open_qcow2(str(img)) as dev:
        assert dev.info()["dirty"]
        assert dev.pread(SIZE, 0) == model
    assert img.read_bytes() == raw  # read-only never repairs
    rng = random.Random(variant)
    ops = [
        (rng.choice(["write", "zero", "discard"]), rng.randrange(SIZE), rng.randrange(1, 90_000), i)
        for i in range(30)
    ]
    with open_qcow2(str(img), readonly=False) as dev:
        assert dev.statistics()["repaired_refcount_blocks"]
        assert not dev.info()["dirty"]
        model = run_workload(dev, ops, model)
    check_clean(img)
    compare_with(img, model, tmp_path)


@pytest.mark.parametrize("options", ["compat=1.1", "compat=0.10", "extended_l2=on"])
def test_write_zeroes_keeps_or_frees_allocation(options: str, tmp_path: Path) -> None:
    """NBD's NO_HOLE: write_zeroes without may_unmap keeps the clusters allocated (zero flag
    or zero subclusters on the same host cluster); with may_unmap they are freed."""
    from burrow.block.device import ExtentFlags

    img = tmp_path / "nohole.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"{options},cluster_size=65536", img, "4M")
    with open_qcow2(str(img), readonly=False) as dev:
        dev.pwrite(b"\x55" * (2 << 20), 0)
        dev.write_zeroes(256 << 10, 256 << 10, may_unmap=False)
        dev.write_zeroes(256 << 10, 1 << 20, may_unmap=True)
        assert dev.pread(256 << 10, 256 << 10) == bytes(256 << 10)
        kept = [e for e in dev.extents(256 << 10, 256 << 10)]
        freed = [e for e in dev.extents(256 << 10, 1 << 20)]
    if options != "compat=0.10":  # v2 has no zero flag: zeros are written as data
        assert all(e.flags == ExtentFlags.ZERO for e in kept), kept
    assert all(e.flags == ExtentFlags.HOLE | ExtentFlags.ZERO for e in freed), freed
    check_clean(img)
    entries = _map(img)

    def at(off: int) -> dict[str, object]:
        return next(e for e in entries if e["start"] <= off < e["start"] + e["length"])  # type: ignore[operator]

    assert "offset" in at(300 << 10), at(300 << 10)  # still allocated in the file
    assert "offset" not in at((1 << 20) + 4096), at((1 << 20) + 4096)
    qemu_io(img, "read -P 0 256k 256k", "read -P 0 1M 256k", "read -P 0x55 0 256k")
