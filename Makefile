# The two commands in the README are `make demo` and `make test`; each sets everything up first.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:/usr/sbin:/sbin:$(PATH)

.PHONY: setup demo test lint typecheck unit bench soak fuzz clean

setup:
	@./scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts examples fuzz
	$(VENV)/bin/ruff format --check src tests benchmarks scripts examples fuzz

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest -n 2 --dist loadgroup

test: lint typecheck unit

bench: setup
	$(PY) -m benchmarks.run

soak: setup
	BURROW_SOAK=1 $(VENV)/bin/pytest -m slow -p no:randomly

fuzz: setup
	$(PY) -m fuzz.run

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
