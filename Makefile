# cf-images-exporter: every target works on a fresh machine with Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Exact versions and sha256 of every dependency (dev tools and the build backend included),
# resolved from pyproject.toml's ranges by `make lock`; installs take nothing else.
LOCK := requirements-dev.lock
UV := uv==0.13.9
UPGRADE ?=

.DEFAULT_GOAL := help
.PHONY: help install lock lint format test golden emulator demo bench clean

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with its dev tools, from the lock

# The lock is universal (markers for other platforms and Pythons) and keeps its current pins
# unless pyproject.toml's ranges exclude them; `make lock UPGRADE=1` takes the newest of all.
# The build backend (build-system.requires) is pinned too: the editable install uses it.
lock: ## re-resolve pyproject.toml into requirements-dev.lock and requirements.lock (UPGRADE=1: newest)
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet '$(UV)'; }
	$(PYTHON) -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'], sep='\n')" > .build-requires.txt
	$(BIN)/uv pip compile --quiet pyproject.toml .build-requires.txt --extra dev --universal --python-version 3.11 \
	    --generate-hashes --custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade) -o $(LOCK)
	# The container image's lock: the runtime and the Dask extra, same pins as the dev lock.
	$(BIN)/uv pip compile --quiet pyproject.toml .build-requires.txt --extra dask --universal --python-version 3.11 \
	    --generate-hashes --custom-compile-command 'make lock' --constraint $(LOCK) -o requirements.lock
	rm -f .build-requires.txt

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

demo: $(STAMP) ## export two nights of a 50,000-image emulated catalog; DuckDB shows what changed
	$(BIN)/cf-images-export demo

bench: $(STAMP) ## run the benchmark suite (tests/bench), print and save the table; BENCH_ARGS="--only nasty ..." picks scenarios
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

clean: ## remove the venv, caches, demo output and the examples' output directories
	rm -rf $(VENV) demo-output emulator-output out out-filtered out-active bench-results .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
