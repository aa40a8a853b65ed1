"""``make bench``: run every ``benchmarks/bench_*.py`` and write ``docs/benchmarks.md`` + charts.

Usage: ``python -m benchmarks.run [-k SUBSTRING] [--repeat N]``. Inputs are generated in
``benchmarks/work/`` (ignored by git) and reused between runs when present.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import platform
import time
from pathlib import Path

from benchmarks.harness import Result, human_rate, run_case

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
WORK = ROOT / "benchmarks" / "work"


def _modules() -> list[str]:
    pkg = ROOT / "benchmarks"
    return sorted(
        f"benchmarks.{m.name}"
        for m in pkgutil.iter_modules([str(pkg)])
        if m.name.startswith("bench_")
    )


def _chart(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result.seconds)
    if result.unit == "s":
        values = [result.seconds[n] * 1000 for n in names]
        label = "milliseconds (lower is better)"
    else:
        values = [result.rate(n) / (1e6 if result.unit == "bytes" else 1) for n in names]
        label = ("MB/s" if result.unit == "bytes" else "ops/s") + " (higher is better)"
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.5 * len(names)))
    ax.barh(names, values, color=["#2a7" if n == "burrow" else "#888" for n in names])
    ax.set_xlabel(label)
    ax.set_title(result.case)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _merge(store: Path, results: list[Result]) -> list[Result]:
    """Keep earlier results of cases not run this time (``-k`` runs update only their rows)."""
    import json

    old: dict[str, dict[str, object]] = {}
    if store.exists():
        old = {r["case"]: r for r in json.loads(store.read_text())}
    for res in results:
        old[res.case] = {
            "case": res.case,
            "unit": res.unit,
            "target": res.target,
            "seconds": res.seconds,
            "amount": res.amount,
        }
    store.write_text(json.dumps(list(old.values()), indent=1) + "\n")
    return [
        Result(
            str(r["case"]),
            str(r["unit"]),
            str(r["target"]),
            dict(r["seconds"]),  # type: ignore[call-overload]
            dict(r["amount"]),  # type: ignore[call-overload]
        )
        for r in old.values()
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    charts = DOCS / "benchmarks"
    charts.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for modname in _modules():
        mod = importlib.import_module(modname)
        for case in mod.cases(WORK):
            if args.k not in case.name:
                continue
            print(f"running {case.name} ...", flush=True)
            res = run_case(case, args.repeat)
            results.append(res)
            for who in res.seconds:
                value = res.seconds[who] if res.unit == "s" else res.rate(who)
                print(f"  {who:24} {human_rate(value, res.unit)}")
    store = charts / "results.json"
    merged = _merge(store, results)
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"Python {platform.python_version()}; medians of repeated interleaved runs in one "
        "process. Ratios are burrow relative to each peer (> 1 means burrow is faster).",
        "",
        "| case | contender | result | ratio burrow/peer | target |",
        "|---|---|---|---|---|",
    ]
    for res in results:
        slug = "".join(c if c.isalnum() else "-" for c in res.case.lower()).strip("-")
        _chart(res, charts / f"{slug}.png")
    for res in merged:
        for who in res.seconds:
            if res.unit == "s":
                shown = human_rate(res.seconds[who], "s")
                ratio = res.seconds[who] / res.seconds["burrow"] if who != "burrow" else 1.0
            else:
                shown = human_rate(res.rate(who), res.unit)
                ratio = res.rate("burrow") / res.rate(who) if who != "burrow" else 1.0
            lines.append(f"| {res.case} | {who} | {shown} | {ratio:.2f} | {res.target} |")
    lines.append("")
    for res in merged:
        slug = "".join(c if c.isalnum() else "-" for c in res.case.lower()).strip("-")
        lines.append(f"![{res.case}](benchmarks/{slug}.png)")
    (DOCS / "benchmarks.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {DOCS / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
