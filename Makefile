# cf-images-exporter: every target works on a fresh machine with Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install lint format test golden emulator demo bench clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with its dev tools

lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check exporter tests
	$(BIN)/ruff format --check exporter tests
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix exporter tests
	$(BIN)/ruff format exporter tests

test: lint ## lint, then the whole test suite (unit, emulator, CLI, end to end)
	$(BIN)/pytest -q

golden: $(STAMP) ## rewrite the pinned user contract (tests/contract_golden/); review the diff
	$(BIN)/pytest -q tests/test_contract.py --update-golden

emulator: $(STAMP) ## serve the Images API emulator on loopback (Ctrl-C stops it)
	$(BIN)/cf-images-export emulator

demo: $(STAMP) ## export a 50,000-image emulated catalog and query it with DuckDB
	$(BIN)/cf-images-export demo

bench: $(STAMP) ## run the benchmark suite (tests/bench), print and save the table
	$(BIN)/python -m tests.bench

clean: ## remove the venv, caches and demo output
	rm -rf $(VENV) demo-output bench-results .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
