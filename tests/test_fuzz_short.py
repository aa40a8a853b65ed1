"""Every fuzz harness, briefly, inside the normal test suite: mutated real-tool seeds and
random bytes must only ever raise BurrowError (long runs: ``make fuzz``)."""

from __future__ import annotations

import random
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from fuzz.common import checked, harness_names, load, mutate

ROUNDS = 300
PER_INPUT_SECONDS = 10


@pytest.fixture
def alarm() -> Iterator[None]:
    def _timeout(signum: int, frame: object) -> None:
        raise TimeoutError("one fuzz input took too long: a hang")

    old = signal.signal(signal.SIGALRM, _timeout)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("name", harness_names())
def test_harness_survives_mutations(name: str, tmp_path: Path, alarm: None) -> None:
    module = load(name)
    seeds = module.seeds(tmp_path)
    assert seeds, f"harness {name} produced no seeds"
    rng = random.Random(f"burrow-{name}")
    regions = getattr(module, "REGIONS", None)
    for seed in seeds:
        signal.alarm(PER_INPUT_SECONDS)
        checked(module, seed)  # real-tool output must parse cleanly too
    for i in range(ROUNDS):
        data = (
            mutate(rng.choice(seeds), rng, regions)
            if i % 10
            else rng.randbytes(rng.randint(0, 4096))
        )
        signal.alarm(PER_INPUT_SECONDS)
        checked(module, data)
    signal.alarm(0)
