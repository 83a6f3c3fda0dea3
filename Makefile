# rnnstream: `make run` sets up .venv and runs the demo; `make test` runs lint, types and the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint bench clean

run: $(RUN_STAMP)
	$(PY) -m rnnstream demo

test: $(TEST_STAMP) lint
	$(PY) -m pytest

lint: $(TEST_STAMP)
	$(PY) -m ruff check src tests scripts
	$(PY) -m mypy

bench: $(RUN_STAMP)
	$(PY) -m rnnstream bench context

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@ $(RUN_STAMP)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
