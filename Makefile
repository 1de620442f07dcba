# make demo      — the main job on the embedded default (DuckDB, SQLite Airflow metadata under .ehr/)
# make test      — the whole test suite (what CI runs: .ci/run)
# make test-fast — the unit tests only, while you work: no PostgreSQL, Redis, Airflow components or
#                  end-to-end runs (the tests marked slow, postgres, celery or e2e are left out)
# Each creates .venv and installs the pinned dependencies when needed.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

FAST_LANE := not slow and not postgres and not celery and not e2e
# two workers (pytest-xdist), a test file at a time each, the longest files first (tests/conftest.py; xdist
# would otherwise reorder files by their number of tests)
PYTEST_PARALLEL := -n 2 --dist loadfile --no-loadscope-reorder

.PHONY: demo test test-fast install lint services clean

$(STAMP): setup.cfg constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, on its own: 2.13.0 is the CPU wheel (any other version pulls a multi-GB CUDA build)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,postgres]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ehr-pipeline demo

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_PARALLEL) -m "$(FAST_LANE)"

lint: $(STAMP)
	$(BIN)/ruff check .

services:
	bash .ci/services

clean:
	rm -rf .ehr
