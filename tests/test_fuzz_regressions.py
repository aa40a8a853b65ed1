"""Every crash the fuzzers found (and those found while writing them), replayed: only
``BurrowError`` may escape, within a time bound. Harness inputs live in
``tests/data/fuzz-regressions/<harness>/`` (the raw bytes libFuzzer wrote, minimized); each
file is fed to that harness's ``one_input`` exactly as the fuzzer did. Crashes that need a
whole image or a memory bound have their own tests below. See docs/robustness.md.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.common import checked, harness_names, load

DATA = Path(__file__).resolve().parent / "data" / "fuzz-regressions"
SECONDS = 10

# inputs whose bug is not fixed yet: "harness/file" -> reason (strict xfail: fixing the bug
# makes the test pass, and then this entry must go)
KNOWN: dict[str, str] = {}


def _cases() -> list[tuple[str, Path]]:
    return sorted(
        (d.name, f)
        for d in DATA.iterdir()
        if d.is_dir()
        for f in d.iterdir()
        if f.is_file() and not f.name.startswith(".")
    )


@pytest.fixture
def alarm() -> Iterator[None]:
    def _timeout(signum: int, frame: object) -> None:
        raise TimeoutError(f"a regression input took more than {SECONDS}s: a hang")

    old = signal.signal(signal.SIGALRM, _timeout)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_every_regression_belongs_to_a_harness() -> None:
    names = set(harness_names())
    assert {h for h, _ in _cases()} <= names


@pytest.mark.parametrize(
    ("harness", "path"),
    [
        pytest.param(h, p, id=f"{h}/{p.name}", marks=[pytest.mark.xfail(reason=KNOWN[key])])
        if (key := f"{h}/{p.name}") in KNOWN
        else pytest.param(h, p, id=f"{h}/{p.name}")
        for h, p in _cases()
    ],
)
def test_fuzz_regression(harness: str, path: Path, alarm: None) -> None:
    module = load(harness)
    signal.alarm(SECONDS)
    checked(module, path.read_bytes())


# -- crashes that need a whole image (not a harness input) ---------------------------------

_INSPECT_SPARSE = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # a regression fails, never swaps
import burrow
from burrow.inspect import inspect_disk
with burrow.open(sys.argv[1]) as disk:
    report = inspect_disk(disk)
print(report["operating_systems"][0]["packages"]["format"])
"""


@pytest.mark.tool("mkfs.ext4")
def test_inspect_skips_a_huge_sparse_package_database(tmp_path: Path) -> None:
    """An image whose dpkg status claims 64 GiB (a sparse file: the image is 16 MiB) made
    ``inspect`` allocate all of it: MemoryError (fixed in inspect._read_text_whole)."""
    import subprocess
    import sys

    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "os-release").write_text('NAME="Debian"\nID=debian\n')
    status = src / "var" / "lib" / "dpkg" / "status"
    status.parent.mkdir(parents=True)
    status.write_text("Package: x\nStatus: install ok installed\n")
    os.truncate(status, 64 << 30)
    image = tmp_path / "sparse-db.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", src, image, "16M"],
                   check=True, capture_output=True)  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", _INSPECT_SPARSE, str(image)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "dpkg"


def test_tar_long_name_record_cannot_claim_memory() -> None:
    """A 64 KiB .tar.gz whose GNU long-name record claims 64 MiB made tarfile read the
    whole record into memory (gigabytes for a 500 KiB archive claiming 4 GiB). Refused before
    any of it is read (fixed in burrow.fs.tario)."""
    import gzip
    import io
    import tarfile
    import tracemalloc

    from burrow.errors import CorruptImage
    from burrow.fs.memfs import MemoryFilesystem
    from burrow.fs.paths import PathFS
    from burrow.fs.tario import extract_tar

    claim = 64 << 20
    record = tarfile.TarInfo("././@LongLink")
    record.type = tarfile.GNUTYPE_LONGNAME
    record.size = claim
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as gz:
        gz.write(record.tobuf(format=tarfile.GNU_FORMAT))
        block = b"n" * (1 << 20)
        for _ in range(claim >> 20):
            gz.write(block)
        gz.write(bytes(1024))
    archive = raw.getvalue()
    assert len(archive) < claim // 256
    pfs = PathFS(MemoryFilesystem(capacity=1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(CorruptImage):
            extract_tar(pfs, io.BytesIO(archive))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"extracting a hostile archive peaked at {peak} bytes"


@pytest.mark.tool("qemu-img")
def test_qcow2_backing_name_with_nul_is_corruption(tmp_path: Path) -> None:
    """``backing_chain`` (``burrow info``) passed a backing file name holding a NUL byte to
    ``os.open``: ValueError (fixed in burrow.disk._qcow2_backing)."""
    import struct
    import subprocess

    from burrow.disk import backing_chain
    from burrow.errors import CorruptImage

    image = tmp_path / "nul.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512",
                    image, "1M"], check=True, capture_output=True)  # fmt: skip
    data = bytearray(image.read_bytes())
    name, where = b"base\0.raw", 0x1F0
    data[where : where + len(name)] = name
    struct.pack_into(">QI", data, 8, where, len(name))
    image.write_bytes(data)
    with pytest.raises(CorruptImage):
        backing_chain(image)


@pytest.mark.tool("mkfs.ext4")
def test_copy_out_never_leaves_the_destination(tmp_path: Path) -> None:
    """A directory entry named ``../PWND`` in an ext4 image made ``burrow cp -a IMG:/ DEST``
    write ``DEST/../PWND`` (outside the destination); a name or a symlink target holding NUL
    raised ValueError. Each is now a reported CorruptImage and the rest is copied (fixed in
    burrow.fs.copy._join and _HostSink.symlink)."""
    import subprocess

    from burrow.block.raw import RawDevice
    from burrow.errors import CorruptImage
    from burrow.fs.copy import copy_out
    from burrow.fs.ext4 import open_ext4
    from burrow.fs.paths import PathFS

    src = tmp_path / "src"
    src.mkdir()
    (src / "aaaaaaa").write_text("escaped\n")
    (src / "bbbb").write_text("nul name\n")
    (src / "kept.txt").write_text("kept\n")
    os.symlink("target", src / "link")
    image = tmp_path / "names.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal,^metadata_csum", "-d", src,
                    image, "4M"], check=True, capture_output=True)  # fmt: skip
    with RawDevice(image) as dev:
        fs = open_ext4(dev)
        root = fs.inode(fs.root_ino)
        blk = fs._map_block(root, 0) * fs.block_size
        block = fs.dev.pread(fs.block_size, blk)
        _raw, link_at = fs.read_raw_inode(fs.lookup(fs.root_ino, "link"))
    data = bytearray(image.read_bytes())
    for old, new in ((b"aaaaaaa", b"../PWND"), (b"bbbb", b"b\0bb")):
        at = blk + block.index(old)
        data[at : at + len(old)] = new
    data[link_at + 0x28 + 2] = 0  # fast symlink target "ta\0get"
    image.write_bytes(data)

    dest = tmp_path / "out" / "inner"
    dest.mkdir(parents=True)
    errors: list[BaseException] = []
    with RawDevice(image) as dev:
        copy_out(PathFS(open_ext4(dev)), "/", dest / "copy", archive=True, on_error=errors.append)
    assert not (tmp_path / "out" / "PWND").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["inner"]
    assert (dest / "copy" / "kept.txt").read_text() == "kept\n"
    assert len(errors) == 3 and all(isinstance(e, CorruptImage) for e in errors), errors
