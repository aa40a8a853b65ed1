"""FAT timestamps <-> nanoseconds since the epoch.

FAT stores local wall-clock time without a zone. burrow reads and writes it as **UTC**
(documented in ``docs/formats/fat.md``): images are moved between machines and CI runs with
``TZ=UTC``, so a fixed choice is reproducible, while mtools and the kernel use the host's
local time (identical when ``TZ=UTC``).

Resolution: modification time 2 s (rounded down), creation time 10 ms (``DIR_CrtTimeTenth``
holds 0..199 hundredths), access time is a date only. Range 1980-01-01 00:00:00 to
2107-12-31 23:59:58; times outside are clamped. Invalid stored dates (month 0, day 31 of
February...) are read as the nearest valid date rather than refused.
"""

from __future__ import annotations

import calendar
import time

__all__ = ["MAX_NS", "MIN_NS", "decode", "encode", "now_ns"]

MIN_NS = calendar.timegm((1980, 1, 1, 0, 0, 0)) * 1_000_000_000
MAX_NS = calendar.timegm((2107, 12, 31, 23, 59, 58)) * 1_000_000_000


def decode(date: int, tm: int = 0, hundredths: int = 0) -> int:
    """Nanoseconds for a FAT date/time (and optional 10 ms units)."""
    year = 1980 + (date >> 9)
    month = min(max((date >> 5) & 0x0F, 1), 12)
    day = max(date & 0x1F, 1)
    day = min(day, calendar.monthrange(year, month)[1])
    hour = min(tm >> 11, 23)
    minute = min((tm >> 5) & 0x3F, 59)
    sec = min((tm & 0x1F) * 2, 58)
    extra_ns = min(hundredths, 199) * 10_000_000
    return calendar.timegm((year, month, day, hour, minute, sec)) * 1_000_000_000 + extra_ns


def encode(ns: int) -> tuple[int, int, int]:
    """``(date, time, hundredths)`` for nanoseconds since the epoch (clamped to FAT's range)."""
    ns = min(max(ns, MIN_NS), MAX_NS)
    secs, rem = divmod(ns, 1_000_000_000)
    t = time.gmtime(secs)
    date = ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    tm = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    hundredths = (t.tm_sec % 2) * 100 + rem // 10_000_000
    return date, tm, hundredths


def now_ns() -> int:
    return time.time_ns()
