"""Run one harness coverage-guided with atheris (libFuzzer).

    python -m fuzz.run NAME [-runs=1000000] [-max_total_time=600] [more libFuzzer flags]

The corpus lives in ``fuzz/corpus/NAME`` (git-ignored) and is seeded from the harness's
``seeds()`` the first time. Any exception other than ``BurrowError`` stops the run with a
crash file, as libFuzzer does; add each crash as a regression test.
"""

from __future__ import annotations

import hashlib
import sys

from fuzz.common import FUZZ_DIR, checked, harness_names, load


def _run_all(seconds: int = 120) -> int:
    """``make fuzz``: every harness for ``seconds`` each (override with BURROW_FUZZ_SECONDS)."""
    import os
    import subprocess

    seconds = int(os.environ.get("BURROW_FUZZ_SECONDS", seconds))
    failed = []
    for name in harness_names():
        print(f"== fuzz {name} for {seconds}s", flush=True)
        cmd = [sys.executable, "-m", "fuzz.run", name, f"-max_total_time={seconds}"]
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(name)
    print("failed:", failed or "none")
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) == 1:
        return _run_all()
    if sys.argv[1] not in harness_names():
        print(f"usage: python -m fuzz.run NAME [libFuzzer flags]; NAME in {harness_names()}")
        return 2
    name = sys.argv[1]
    corpus = FUZZ_DIR / "corpus" / name
    work = FUZZ_DIR / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    module = load(name)
    if not corpus.exists():
        corpus.mkdir(parents=True)
        for seed in module.seeds(work):
            (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    import atheris

    def test_one(data: bytes) -> None:
        checked(module, data)

    atheris.instrument_all()
    atheris.Setup([sys.argv[0], *sys.argv[2:], str(corpus)], test_one)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
