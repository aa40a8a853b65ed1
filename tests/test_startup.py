"""Start-up cost of the commands users run most: what ``burrow cat`` imports.

``burrow cat IMAGE:/etc/os-release`` is the whole-process case the disk-image issue times
(<= 100 ms): besides the ext4 driver it must not drag in heavy modules.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from burrow._crc32c import crc32c
from images import make_ext4

HEAVY_FOR_CAT = ("importlib.metadata", "email", "cryptography", "pyfuse3", "trio", "rich")


def test_crc32c_matches_the_package_and_the_check_value() -> None:
    import crc32c as package

    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    for data in (b"", b"a", bytes(range(256)) * 17):
        for seed in (0, 1, 0xFFFFFFFF):
            assert crc32c(data, seed) == package.crc32c(data, seed)


@pytest.mark.tool("mkfs.ext4")
def test_cat_of_an_ext4_image_imports_nothing_heavy(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "os-release").write_text("ID=burrow\n")
    image = make_ext4(tmp_path / "disk.img", tree, size="16M")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "burrow", "cat", f"{image}:/etc/os-release"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout == "ID=burrow\n"
    mods = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "burrow.fs.ext4.filesystem" in mods, "importtime output not understood"
    heavy = sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY_FOR_CAT))
    assert not heavy, f"burrow cat imported {heavy}"
