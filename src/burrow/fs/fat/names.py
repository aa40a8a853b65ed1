"""VFAT names: long names (UTF-16 in LFN entries), 8.3 short names, checksums, case flags.

The rules follow the Linux ``vfat`` driver with its default ``shortname=mixed``:

* A name that is a valid 8.3 name whose basename and extension are each all upper case or all
  lower case is stored as a short entry only; lower-case parts are flagged in ``DIR_NTRes``
  (0x08 basename, 0x10 extension), so ``readme.txt`` needs no long entry.
* Anything else gets long entries plus a generated short alias ``BASIS~N.EXT`` (basis: the
  first 6 valid characters, upper-cased; ``N`` counts up until the alias is unique).
* Lookups ignore case (``str.lower``) on both the long name and the short alias, like vfat.
* Short names are decoded with code page 437 (the kernel's default ``codepage=437``).
"""

from __future__ import annotations

import itertools

from burrow.errors import InvalidArgument, NameTooLong
from burrow.fs.fat.ondisk import (
    ATTR_LONG_NAME,
    KANJI_E5,
    LAST_LONG_ENTRY,
    LDIR,
    NTRES_LOWER_BASE,
    NTRES_LOWER_EXT,
)

__all__ = [
    "MAX_LFN",
    "build_lfn_entries",
    "checksum",
    "display_short",
    "fold",
    "lfn_chars",
    "make_short",
    "needs_lfn",
    "normalize",
    "short_form",
]

MAX_LFN = 255  # UTF-16 code units
OEM = "cp437"
_SHORT_SPECIAL = set("!#$%&'()-@^_`{}~")
_LFN_FORBIDDEN = set('"*/:<>?\\|')


def checksum(short: bytes) -> int:
    """The LFN checksum of an 11-byte short name (``LDIR_Chksum``)."""
    s = 0
    for c in short:
        s = (((s & 1) << 7) + (s >> 1) + c) & 0xFF
    return s


def fold(name: str) -> str:
    """Case-folding key for lookups (vfat matches names case-insensitively)."""
    return name.lower()


def normalize(name: str) -> str:
    """Validate a name for a new entry and drop trailing dots and spaces as vfat does.

    Raises ``InvalidArgument`` for names vfat refuses (control characters, ``"*/:<>?\\|``,
    undecodable bytes) and ``NameTooLong`` beyond 255 UTF-16 units.
    """
    stripped = name.rstrip(". ")
    if stripped in ("", ".", ".."):
        raise InvalidArgument(f"invalid FAT file name {name!r}")
    for ch in stripped:
        if ch in _LFN_FORBIDDEN or ord(ch) < 0x20 or 0xDC80 <= ord(ch) <= 0xDCFF:
            raise InvalidArgument(f"character {ch!r} is not allowed in FAT names")
    try:
        units = len(stripped.encode("utf-16-le")) // 2
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"FAT names must be valid Unicode: {name!r}") from exc
    if units > MAX_LFN:
        raise NameTooLong(path=name)
    return stripped


def _short_ok(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch in _SHORT_SPECIAL)


def short_form(name: str) -> tuple[bytes, int] | None:
    """``(11-byte short name, NTRes case flags)`` when ``name`` needs no long entries."""
    if name.startswith(".") or name.count(".") > 1:
        return None
    base, _, ext = name.partition(".")
    if not 1 <= len(base) <= 8 or len(ext) > 3 or (_ and not ext):
        return None
    if not all(_short_ok(c) for c in base + ext):
        return None
    flags = 0
    for part, bit in ((base, NTRES_LOWER_BASE), (ext, NTRES_LOWER_EXT)):
        if part.lower() == part and part.upper() != part:
            flags |= bit
        elif part.upper() != part:
            return None  # mixed case needs a long name to be preserved
    raw = (base.upper().ljust(8) + ext.upper().ljust(3)).encode("ascii")
    if raw[0] == 0xE5:  # pragma: no cover - ASCII names cannot start with 0xE5
        raw = bytes([KANJI_E5]) + raw[1:]
    return raw, flags


def needs_lfn(name: str) -> bool:
    return short_form(name) is None


def _basis_chars(text: str) -> tuple[str, bool]:
    """Upper-cased short-name characters of ``text`` and whether anything was lost."""
    out: list[str] = []
    lossy = False
    for ch in text:
        if ch == " ":
            lossy = True
            continue
        up = ch.upper()
        if len(up) == 1 and _short_ok(up):
            out.append(up)
        else:
            out.append("_")
            lossy = True
    return "".join(out), lossy


def make_short(name: str, taken: set[bytes], hints: dict[str, int] | None = None) -> bytes:
    """Generate a unique short alias ``BASIS~N.EXT`` for a name that needs long entries.

    ``hints`` (per directory) remembers the last tail used for each basis, so that filling
    a directory with many similar names does not retry ``~1, ~2, ...`` every time.
    """
    stripped = name.lstrip(".")
    dot = stripped.rfind(".")
    if dot > 0:
        base_src, ext_src = stripped[:dot], stripped[dot + 1 :]
    else:
        base_src, ext_src = stripped, ""
    base, lossy_base = _basis_chars(base_src.replace(".", ""))
    ext, lossy_ext = _basis_chars(ext_src)
    lossy = (
        lossy_base or lossy_ext or len(base) > 8 or len(ext) > 3 or stripped != name
        or stripped.count(".") > 1 or not base
    )  # fmt: skip
    base = base[:8] or "_"
    ext = ext[:3]
    if not lossy:  # e.g. "Makefile", "Read.Me": upper-casing alone gives a unique 8.3 alias
        raw = (base.ljust(8) + ext.ljust(3)).encode("ascii")
        if raw not in taken:
            return raw
    key = base + "." + ext
    first = hints.get(key, 1) if hints is not None else 1
    for n in itertools.chain(range(first, 1_000_000), range(1, first)):
        tail = f"~{n}"
        candidate = (base[: 8 - len(tail)] + tail).ljust(8) + ext.ljust(3)
        raw = candidate.encode("ascii")
        if raw not in taken:
            if hints is not None:
                hints[key] = n + 1
            return raw
    raise InvalidArgument("no free short name alias left in this directory")  # pragma: no cover


def display_short(raw: bytes, ntres: int) -> str:
    """The name a short entry shows: ``BASE.EXT`` with the NTRes lower-case flags applied."""
    first = b"\xe5" if raw[0] == KANJI_E5 else raw[:1]
    base = (first + raw[1:8]).rstrip(b" ").decode(OEM)
    ext = raw[8:11].rstrip(b" ").decode(OEM)
    if ntres & NTRES_LOWER_BASE:
        base = base.lower()
    if ntres & NTRES_LOWER_EXT:
        ext = ext.lower()
    return f"{base}.{ext}" if ext else base


def lfn_chars(entry: bytes) -> bytes:
    """The 26 bytes of UTF-16 a long entry carries (Name1 + Name2 + Name3)."""
    return entry[1:11] + entry[14:26] + entry[28:32]


def build_lfn_entries(name: str, short: bytes) -> list[bytes]:
    """Long entries for ``name``, in on-disk order (last part, flagged 0x40, first)."""
    data = name.encode("utf-16-le")
    units = len(data) // 2
    count = (units + 12) // 13
    if units % 13:
        data += b"\x00\x00"
        pad = 13 - units % 13 - 1
        data += b"\xff\xff" * pad
    chk = checksum(short)
    out: list[bytes] = []
    for i in range(count, 0, -1):
        part = data[(i - 1) * 26 : i * 26]
        order = i | (LAST_LONG_ENTRY if i == count else 0)
        out.append(
            LDIR.pack(order, part[0:10], ATTR_LONG_NAME, 0, chk, part[10:22], 0, part[22:26])
        )
    return out
