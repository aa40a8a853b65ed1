"""Long and short names: arbitrary Unicode names round-trip, aliases are valid and unique."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.fat_helpers import fsck_clean

from burrow.block.raw import RawDevice
from burrow.errors import Exists
from burrow.fs.fat import names, open_fat
from burrow.fs.fat.mkfs import mkfs

_FORBIDDEN = set('"*/:<>?\\|')
name_chars = st.characters(
    blacklist_categories=("Cs", "Cc"),  # no lone surrogates, no control characters
    blacklist_characters="".join(_FORBIDDEN),
)
valid_names = st.text(name_chars, min_size=1, max_size=60).filter(
    lambda n: n.rstrip(". ") not in ("", ".", "..")
)


def test_checksum_and_case_flags() -> None:
    # the LFN checksum of "FOO     BAR" as every implementation computes it (rotate-right sum)
    s = 0
    for c in b"FOO     BAR":
        s = (((s & 1) << 7) + (s >> 1) + c) & 0xFF
    assert names.checksum(b"FOO     BAR") == s
    assert names.short_form("readme.txt") == (b"README  TXT", 0x18)
    assert names.short_form("README.txt") == (b"README  TXT", 0x10)
    assert names.short_form("readme.TXT") == (b"README  TXT", 0x08)
    assert names.short_form("ReadMe.txt") is None  # mixed case needs a long name
    assert names.short_form("a.b.c") is None
    assert names.short_form("toolongname.txt") is None
    assert names.display_short(b"README  TXT", 0x18) == "readme.txt"
    assert names.display_short(b"\x05ABC    TXT", 0) == "\u03c3ABC.TXT"  # 0x05 stands for 0xE5


def test_alias_generation() -> None:
    taken: set[bytes] = set()
    hints: dict[str, int] = {}
    first = names.make_short("Long File Name.txt", taken, hints)
    assert first == b"LONGFI~1TXT"
    taken.add(first)
    assert names.make_short("Long File Nothing.txt", taken, hints) == b"LONGFI~2TXT"
    assert names.make_short("Makefile", taken) == b"MAKEFILE   "
    assert names.make_short(".bashrc", taken) == b"BASHRC~1   "
    assert names.make_short("a.b.c", taken) == b"AB~1    C  "
    assert names.make_short("名前.txt", taken) == b"__~1    TXT"
    taken.update(b"X" * 0 + f"LONGFI~{n}TXT".encode() for n in range(1, 10))
    assert names.make_short("Long File Name.txt", taken) == b"LONGF~10TXT"


@pytest.mark.tool("fsck.fat")
@settings(
    max_examples=int(os.environ.get("BURROW_FAT_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(valid_names, min_size=1, max_size=12))
def test_any_unicode_names_round_trip(batch: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "n.img"
        with open(img, "wb") as f:
            f.truncate(4 << 20)
        expected: dict[str, str] = {}  # folded -> name as stored
        with RawDevice(img, readonly=False) as dev:
            mkfs(dev, fat_bits=12)
            with open_fat(dev, readonly=False) as fs:
                for raw in batch:
                    name = names.normalize(raw)
                    key = names.fold(name)
                    clash = key in expected or any(
                        names.fold(names.display_short(e.short, 0)) == key
                        for e in fs._directory(fs.root_ino)
                    )
                    if clash:
                        with pytest.raises(Exists):
                            fs.create(fs.root_ino, raw, 0o644)
                        continue
                    fs.create(fs.root_ino, raw, 0o644)
                    expected[key] = name
        fsck_clean(img)
        with RawDevice(img) as dev, open_fat(dev) as fs:
            shown = sorted(e.name for e in fs.readdir(fs.root_ino))
            assert shown == sorted(expected.values())
            shorts = [e.short for e in fs._directory(fs.root_ino)]
            assert len(set(shorts)) == len(shorts)  # aliases are unique
            for short in shorts:
                assert all(c == 0x20 or 0x21 <= c < 0x7F for c in short)
            for name in expected.values():
                other = name.upper()
                if names.fold(other) == names.fold(name):  # upper() does not always fold back
                    assert fs.lookup(fs.root_ino, other) == fs.lookup(fs.root_ino, name)
