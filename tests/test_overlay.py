"""OverlayDevice: copy-on-write, commit, drop, and crash safety of commit.

Crash safety is tested with FaultFilter: the base "loses power" after the N-th write of a
commit, for every N; then ``recover()`` (or the next OverlayDevice open) must leave exactly the
new image. A journal that never became complete must leave exactly the old image.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from blockconformance import ops_strategy, run_workload
from burrow import block
from burrow.block.device import ExtentFlags
from burrow.block.filters import FaultFilter, ReadOnlyFilter
from burrow.block.memory import MemoryDevice
from burrow.block.overlay import OverlayDevice, journal_path_for, recover
from burrow.block.qcow2 import create_qcow2
from burrow.block.raw import RawDevice
from burrow.errors import IOFailure, ReadOnly, UsageError
from qcow2_helpers import fast_tmp_dir


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Overrides pytest's tmp_path with a tmpfs directory (see qcow2_helpers.fast_tmp_dir)."""
    yield from fast_tmp_dir()


SIZE = 1 << 20


def _base_file(tmp: Path, name: str = "base.img") -> tuple[Path, bytes]:
    data = random.Random(name).randbytes(SIZE)
    p = tmp / name
    p.write_bytes(data)
    return p, data


def _change(ov: OverlayDevice, seed: int = 0) -> None:
    """Several extents of data and zeros, some partial chunks, spread over the device."""
    rng = random.Random(seed)
    for i in range(6):
        ov.pwrite(bytes([i + 1]) * rng.randrange(1, 30_000), rng.randrange(0, SIZE - 30_000))
    ov.write_zeroes(40_000, 500_000)
    ov.discard(8192, 900_000)
    ov.pwrite(b"\xee" * 10, SIZE - 10)


@pytest.mark.parametrize("side", [False, True])
@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops_strategy())
def test_commit_applies_exactly_the_model(
    side: bool, tmp_path: Path, ops: list[tuple[str, int, int, int]]
) -> None:
    path, data = _base_file(tmp_path, f"b{os.urandom(3).hex()}.img")
    side_path = tmp_path / f"side{os.urandom(3).hex()}" if side else None
    with RawDevice(path, readonly=False) as base:
        ov = OverlayDevice(base, side_path=side_path)
        model = run_workload(ov, ops)
        assert path.read_bytes() == data, "the base was written before commit"
        ov.commit()
        assert not ov.dirty
        assert ov.pread(SIZE, 0) == model
        ov.close()
    assert path.read_bytes() == model
    assert not os.path.exists(journal_path_for(path))
    if side_path is not None:
        assert not side_path.exists()


def test_drop_and_dirty(tmp_path: Path) -> None:
    path, data = _base_file(tmp_path)
    with RawDevice(path) as base, OverlayDevice(base) as ov:
        assert not ov.dirty
        ov.pwrite(b"x" * 100, 1000)
        assert ov.dirty
        assert ov.pread(100, 1000) == b"x" * 100
        with pytest.raises(ReadOnly):
            ov.commit()  # the base is read-only
        ov.drop()
        assert not ov.dirty
        assert ov.pread(SIZE, 0) == data
    assert path.read_bytes() == data


def test_extents_reflect_both_layers(tmp_path: Path) -> None:
    p = tmp_path / "sparse.img"
    with open(p, "wb") as f:
        f.truncate(16 << 20)
        f.seek(4 << 20)
        f.write(b"d" * 65536)
    with RawDevice(p) as base, OverlayDevice(base, side_path=tmp_path / "side") as ov:
        ov.pwrite(b"o" * 8192, 8 << 20)
        ov.write_zeroes(65536, 4 << 20)
        exts = list(ov.extents(ov.size, 0))
        assert sum(e.length for e in exts) == 16 << 20

        def flags_at(off: int) -> ExtentFlags:
            return next(e.flags for e in exts if e.offset <= off < e.offset + e.length)

        assert flags_at(8 << 20) == ExtentFlags.DATA
        assert flags_at(4 << 20) & ExtentFlags.ZERO
        assert flags_at(12 << 20) & ExtentFlags.HOLE  # from the sparse base
        # The side file is sparse: only what was written takes space.
        assert os.stat(tmp_path / "side").st_blocks * 512 < 1 << 20


def _commit_writes(tmp: Path) -> int:
    """How many write-type requests one commit of ``_change`` makes to the base."""
    path, _ = _base_file(tmp, "count.img")
    with FaultFilter(RawDevice(path, readonly=False)) as fdev:
        ov = OverlayDevice(fdev)
        _change(ov)
        ov.commit()
        ov.close()
        n = fdev.writes_done
    os.unlink(path)
    return n


def _expected_new(tmp: Path, data: bytes) -> bytes:
    with OverlayDevice(MemoryDevice(SIZE, data=data)) as ov:
        _change(ov)
        return ov.pread(SIZE, 0)


def test_crash_after_every_write_of_a_commit_recovers_to_new(tmp_path: Path) -> None:
    total = _commit_writes(tmp_path)
    assert total >= 5
    for n in range(total):
        path, old = _base_file(tmp_path, "crash.img")
        new = _expected_new(tmp_path, old)
        fdev = FaultFilter(RawDevice(path, readonly=False), crash_after_writes=n)
        ov = OverlayDevice(fdev)
        _change(ov)
        with pytest.raises(IOFailure):
            ov.commit()
        assert fdev.crashed
        ov.close()
        with pytest.raises(IOFailure):
            fdev.close()  # the flush at close hits the "power loss" too
        assert os.path.exists(journal_path_for(path))
        if n % 2:
            assert recover(path) == "replayed"
        else:  # the next overlay opened on the base finishes the commit itself
            with RawDevice(path, readonly=False) as base, OverlayDevice(base):
                pass
        assert path.read_bytes() == new, f"crash after write {n}: not the new image"
        assert recover(path) == "none"
        path.unlink()


def test_incomplete_journal_leaves_old_image(tmp_path: Path) -> None:
    path, old = _base_file(tmp_path, "torn.img")
    # Produce a real journal by crashing before the first base write, keep a copy.
    fdev = FaultFilter(RawDevice(path, readonly=False), crash_after_writes=0)
    ov = OverlayDevice(fdev)
    _change(ov)
    with pytest.raises(IOFailure):
        ov.commit()
    ov.close()
    with pytest.raises(IOFailure):
        fdev.close()
    journal = Path(journal_path_for(path))
    full = journal.read_bytes()
    assert path.read_bytes() == old
    rng = random.Random(4)
    cuts = sorted({0, 1, 20, 40, len(full) - 1, len(full) - 40, *rng.sample(range(len(full)), 30)})
    for cut in cuts:
        journal.write_bytes(full[:cut])
        assert recover(path) == "discarded"
        assert not journal.exists()
        assert path.read_bytes() == old
    # A flipped byte anywhere makes the checksum fail: discarded, old image.
    for pos in rng.sample(range(len(full)), 20):
        bad = bytearray(full)
        bad[pos] ^= 0x40
        journal.write_bytes(bytes(bad))
        assert recover(path) == "discarded"
        assert path.read_bytes() == old
    # Only a temporary journal (crash before the rename): discarded too.
    Path(str(journal) + ".tmp").write_bytes(full)
    assert recover(path) == "discarded"
    assert not Path(str(journal) + ".tmp").exists()
    # The complete journal replays.
    journal.write_bytes(full)
    assert recover(path) == "replayed"
    assert path.read_bytes() == _expected_new(tmp_path, old)


def test_pending_journal_refuses_read_only_open(tmp_path: Path) -> None:
    path, _ = _base_file(tmp_path, "pending.img")
    fdev = FaultFilter(RawDevice(path, readonly=False), crash_after_writes=2)
    ov = OverlayDevice(fdev)
    _change(ov)
    with pytest.raises(IOFailure):
        ov.commit()
    ov.close()
    with pytest.raises(IOFailure):
        fdev.close()
    with RawDevice(path) as ro, pytest.raises(UsageError):
        OverlayDevice(ro)


@pytest.mark.tool("qemu-img")
def test_crash_during_commit_to_qcow2(tmp_path: Path) -> None:
    from qcow2_helpers import check_clean, compare_with

    img = tmp_path / "base.qcow2"
    old = random.Random(1).randbytes(SIZE)
    with create_qcow2(img, SIZE, cluster_size=4096) as dev:
        dev.pwrite(old, 0)
    pristine = img.read_bytes()
    new = _expected_new(tmp_path, old)
    for n in (0, 1, 3, 6):
        img.write_bytes(pristine)
        with block.open(img, readonly=False) as q:
            fdev = FaultFilter(q, crash_after_writes=n, owns_base=False)
            ov = OverlayDevice(fdev)
            _change(ov)
            with pytest.raises(IOFailure):
                ov.commit()
            ov.close()
        check_clean(img)
        assert recover(img) == "replayed"
        check_clean(img)
        compare_with(img, new, tmp_path)


def test_readonly_filter_base_and_side_file_cleanup(tmp_path: Path) -> None:
    path, data = _base_file(tmp_path)
    side = tmp_path / "side.bin"
    with OverlayDevice(ReadOnlyFilter(RawDevice(path)), side_path=side, owns_base=True) as ov:
        ov.pwrite(b"z" * 5000, 4000)
        assert side.exists()
        with pytest.raises(ReadOnly):
            ov.commit()
    assert not side.exists()
    assert path.read_bytes() == data
    # An existing side file is never clobbered.
    side.write_bytes(b"precious")
    with RawDevice(path) as base, pytest.raises(FileExistsError):
        OverlayDevice(base, side_path=side)
    assert side.read_bytes() == b"precious"


def test_reads_from_threads_during_writes_and_commits(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "threads.img"
    path.write_bytes(bytes(SIZE))
    errors: list[BaseException] = []
    stop = threading.Event()
    with RawDevice(path, readonly=False) as base:
        ov = OverlayDevice(base, side_path=tmp_path / "side")

        def reader() -> None:
            try:
                while not stop.is_set():
                    chunk = ov.pread(65536, 0)
                    for s in range(0, 65536, 512):  # old or new per sector, nothing else
                        assert len(set(chunk[s : s + 512])) == 1, s
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for k in range(1, 40):
            ov.pwrite(bytes([k]) * 65536, 0)
            if k % 3 == 0:
                ov.commit()
            if k % 7 == 0:
                ov.drop()
        stop.set()
        for t in threads:
            t.join()
        ov.close()
    assert not errors, errors[0]
    assert path.read_bytes()[:65536] == bytes([39]) * 65536


def test_commit_and_drop_are_not_starved_by_overlapping_readers(tmp_path: Path) -> None:
    """commit()/drop() wait for reads in flight; readers that keep overlapping (an NBD server
    or FUSE mount under load) must not keep them waiting for ever: new reads queue behind a
    pending commit. The base is slow so two readers always overlap."""
    import threading
    import time

    from burrow.block.filters.base import FilterDevice

    class SlowReads(FilterDevice):
        def _preadinto(self, buf: memoryview, offset: int) -> None:
            time.sleep(0.02)
            super()._preadinto(buf, offset)

    path, old = _base_file(tmp_path, "starve.img")
    stop = threading.Event()
    seen: list[bytes] = []
    with SlowReads(RawDevice(path, readonly=False)) as base:
        ov = OverlayDevice(base, side_path=tmp_path / "side")

        def reader(delay: float) -> None:
            time.sleep(delay)
            while not stop.is_set():
                seen.append(ov.pread(4096, 8192))  # base data: always a (slow) base read

        readers = [threading.Thread(target=reader, args=(d,)) for d in (0.0, 0.01)]
        for t in readers:
            t.start()
        try:
            time.sleep(0.1)
            for action in ("commit", "drop"):
                ov.pwrite(b"\x5a" * 4096, 0)
                done = threading.Event()

                def run(name: str = action, finished: threading.Event = done) -> None:
                    getattr(ov, name)()
                    finished.set()

                worker = threading.Thread(target=run)
                worker.start()
                assert done.wait(10), f"{action}() starved by overlapping readers"
                worker.join()
        finally:
            stop.set()
            for t in readers:
                t.join()
        ov.close()
    assert path.read_bytes()[:4096] == b"\x5a" * 4096  # committed; the dropped write is not
    assert all(chunk == old[8192 : 8192 + 4096] for chunk in seen)


def test_mutated_journals_give_old_or_new_never_a_mix(tmp_path: Path) -> None:
    from burrow.errors import BurrowError
    from fuzz.common import mutate

    path, old = _base_file(tmp_path, "mut.img")
    new = _expected_new(tmp_path, old)
    fdev = FaultFilter(RawDevice(path, readonly=False), crash_after_writes=0)
    ov = OverlayDevice(fdev)
    _change(ov)
    with pytest.raises(IOFailure):
        ov.commit()
    ov.close()
    with pytest.raises(IOFailure):
        fdev.close()
    journal = Path(journal_path_for(path))
    full = journal.read_bytes()
    rng = random.Random(12)
    regions = [(0, 32), (32, 24 * 10), (len(full) - 40, 40)]
    outcomes = set()
    for _ in range(300):
        path.write_bytes(old)
        journal.write_bytes(mutate(full, rng, regions))
        try:
            outcomes.add(recover(path))
        except BurrowError:
            outcomes.add("refused")
            journal.unlink(missing_ok=True)
        assert path.read_bytes() in (old, new)
    assert "discarded" in outcomes
