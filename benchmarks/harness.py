"""Benchmark harness: run burrow and its peer tools on the same input, in one run.

A benchmark module (``benchmarks/bench_*.py``) defines ``cases(workdir) -> list[Case]``. A
``Case`` names what is measured and holds one callable per contender (``"burrow"`` plus
peers like ``"qemu-img"``); each callable performs the work once and returns the number of
bytes (or items) processed, so the harness can report throughput. The harness runs each
contender ``repeat`` times, interleaved, takes medians and reports ratios to burrow, because
ratios measured side by side survive a noisy shared machine; absolute timings do not.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Case:
    name: str
    unit: str  # "bytes", "ops" or "s" (latency: the callable's return value is ignored)
    contenders: dict[str, Callable[[], float]]
    target: str = ""  # the target, printed next to the result
    setup: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None


@dataclass
class Result:
    case: str
    unit: str
    target: str
    seconds: dict[str, float] = field(default_factory=dict)  # median seconds per run
    amount: dict[str, float] = field(default_factory=dict)  # work per run

    def rate(self, who: str) -> float:
        return self.amount[who] / self.seconds[who] if self.seconds[who] else float("inf")


def run_case(case: Case, repeat: int = 5) -> Result:
    if case.setup:
        case.setup()
    times: dict[str, list[float]] = {k: [] for k in case.contenders}
    amount: dict[str, float] = {}
    try:
        for _ in range(repeat):
            for who, fn in case.contenders.items():
                t0 = time.perf_counter()
                amount[who] = float(fn() or 0)
                times[who].append(time.perf_counter() - t0)
    finally:
        if case.teardown:
            case.teardown()
    return Result(
        case.name,
        case.unit,
        case.target,
        {k: statistics.median(v) for k, v in times.items()},
        amount,
    )


def human_rate(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 1e6:,.0f} MB/s"
    if unit == "ops":
        return f"{value:,.0f} ops/s"
    return f"{value * 1000:.2f} ms"
