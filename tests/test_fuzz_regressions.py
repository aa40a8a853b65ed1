"""Every crash the fuzzers found, replayed: only ``BurrowError`` may escape, within a time
bound. The inputs live in ``tests/data/fuzz-regressions/<harness>/`` (the raw bytes libFuzzer
wrote, minimized); each file is fed to that harness's ``one_input`` exactly as the fuzzer did.
See docs/robustness.md for what each one was.
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
