# fsx-stage: build, test bed and checks. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON  ?= python3
VENV    ?= $(CURDIR)/.venv
PY      := $(VENV)/bin/python
# Everything the local test bed runs (SeaweedFS, Slurm, munge) lives here.
TESTBED ?= $(CURDIR)/.testbed
STAMP   := $(VENV)/.installed-stamp

export TESTBED

.PHONY: help venv system-deps lint fmt typecheck check test unit

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv with the package and its test tools
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

fmt: venv ## format the code
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests

lint: venv ## ruff lint and format check
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

typecheck: venv ## mypy --strict on src/
	$(VENV)/bin/mypy

check: lint typecheck ## lint and type checks

unit: venv ## the fast tests only (no Slurm, no long scenarios)
	$(PY) -m pytest -m "not slurm and not chaos"

test: venv check ## everything, including the real-Slurm end-to-end tests
	$(PY) -m pytest -m "not chaos"
