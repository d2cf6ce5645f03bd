# freight: the single entry point. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The package with the command line (typer + rich): what the demo needs.
$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[cli]'
	touch $@

# The package with what the tests, linters and benchmarks need.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP) $(VENV)/.installed-base

demo: $(VENV)/.installed-base
	$(BIN)/python examples/bulk_demo.py
	$(BIN)/python examples/stream_demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

# Branch coverage: the pure core must stay at 100 %, the whole package at 90 % or more.
# The core gate runs first and quietly, so pytest's summary stays the last line.
pytest: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider --cov=freight --cov-branch --cov-report= -q \
		tests/core > /dev/null || $(BIN)/python -m pytest -q tests/core
	@$(BIN)/coverage report --include='*/freight/_core/*' --fail-under=100 > /dev/null \
		|| ($(BIN)/coverage report --include='*/freight/_core/*'; \
		    echo "the pure core must stay at 100 % branch coverage"; exit 1)
	$(BIN)/python -m pytest --cov=freight --cov-branch \
		--cov-report=term-missing:skip-covered --cov-fail-under=90

test: lint pytest

# Each benchmark prints its figures and exits non-zero when it misses its target;
# the leading '-' runs them all anyway.
bench: $(STAMP)
	-$(BIN)/python bench/stream_overhead.py
	-$(BIN)/python bench/job_overhead.py
	-$(BIN)/python bench/job_memory.py
	-$(BIN)/python bench/pg_load.py
	-$(BIN)/python bench/flow_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage
