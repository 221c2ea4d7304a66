# fsx-stage: build, test bed and checks. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The hooks run this interpreter after dropping to the job user: prefer the system
# python (readable by every user) over e.g. a pyenv one under /root.
PYTHON  ?= $(or $(wildcard /usr/bin/python3),python3)
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
	$(CHECK_PYTHON)
	@# A venv made from another interpreter is rebuilt from scratch: laying a new
	@# python over it leaves a mix of two standard libraries.
	@realpy() { "$$1" -c 'import os, sys; print(os.path.realpath(sys._base_executable))' 2>/dev/null; }; \
	if [ -e $(VENV) ] && [ "$$(realpy $(PY))" != "$$(realpy $(PYTHON))" ]; then \
	  echo "rebuilding $(VENV) from $(PYTHON)"; rm -rf $(VENV); fi
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
	$(PY) -m pytest -m "not slurm and not chaos and not chaos_short"

test: venv check system-deps spank ## everything, including the real-Slurm end-to-end tests
	$(PY) -m pytest -m "not chaos"

# The chaos and soak suite (tests/chaos/) at full scale; `make test` runs it at scale 0.05.
CHAOS_SCALE ?= 1

.PHONY: chaos

chaos: venv system-deps spank ## fault, Slurm, load and hostile-input scenarios at CHAOS_SCALE; writes docs/reliability.md
	CHAOS_SCALE=$(CHAOS_SCALE) CHAOS_REPORT=$(CURDIR)/docs/reliability.md \
	  CHAOS_COMMAND="make chaos CHAOS_SCALE=$(CHAOS_SCALE)" \
	  $(PY) -m pytest tests/chaos -m chaos --timeout=3600 -p no:cacheprovider

# --- S3 test bed (SeaweedFS `weed mini` on loopback) and benchmarks ----------------
S3_DIR ?= $(TESTBED)/s3

.PHONY: s3-up s3-down

s3-up: venv ## start SeaweedFS on free loopback ports (state in $(TESTBED)/s3)
	$(PY) -m tests.testbed.seaweed up --dir $(S3_DIR)

s3-down: ## stop the SeaweedFS started by s3-up
	$(PY) -m tests.testbed.seaweed down --dir $(S3_DIR)

# awscli v1 pins botocore (conflicts with aiobotocore): it gets its own venv, for `make bench` only.
AWSCLI_VENV  ?= $(CURDIR)/.venv-bench-awscli
AWSCLI_STAMP := $(AWSCLI_VENV)/.installed-stamp

.PHONY: bench bench-awscli

bench-awscli: $(AWSCLI_STAMP) ## the aws CLI (v1, PyPI awscli) in .venv-bench-awscli
$(AWSCLI_STAMP):
	$(PYTHON) -m venv $(AWSCLI_VENV)
	$(AWSCLI_VENV)/bin/pip install -q --upgrade pip
	$(AWSCLI_VENV)/bin/pip install -q awscli
	touch $@

bench: venv $(AWSCLI_STAMP) ## benchmark fsx-stage vs s5cmd, aws CLI, rclone (BENCH_REPS, BENCH_QUICK=1)
	BENCH_AWS=$(AWSCLI_VENV)/bin/aws BENCH_INVOKED_AS="make bench" $(PY) -m tests.bench

# --- Slurm: system packages, SPANK plugin, single-node test cluster, install, demo -------
SLURM_DIR ?= $(TESTBED)/slurm
PREFIX    ?= /opt/fsx-stage
SPANK_SO  := spank/fsx_stage.so
CFLAGS    ?= -O2 -g
SPANK_CFLAGS := -std=c99 -Wall -Wextra -Werror -fPIC -shared

.PHONY: spank cluster-up cluster-down cluster-status install demo

system-deps: ## test bed only: install the Debian packages (Slurm, munge, gcc) if missing
	tests/testbed/install-system-deps.sh

# The plugin is built against the headers of the Slurm the site runs (rebuild it after
# every Slurm upgrade). `spank` and `install` never install a package: set
# SLURM_INCLUDE to the directory holding slurm/spank.h when it is not found next to the
# scontrol on PATH, in /opt/slurm/include (AWS ParallelCluster) or /usr/include.
SLURM_INCLUDE ?= $(patsubst %/slurm/spank.h,%,$(firstword $(wildcard \
  $(patsubst %/bin/scontrol,%/include/slurm/spank.h,$(shell command -v scontrol 2>/dev/null)) \
  /opt/slurm/include/slurm/spank.h /usr/local/include/slurm/spank.h /usr/include/slurm/spank.h)))

spank: $(SPANK_SO) ## build the SPANK plugin against the site's Slurm headers (SLURM_INCLUDE=)
# Build under a temporary name, then rename: overwriting a .so that a daemon has
# mapped can crash it; a rename leaves the old inode intact. Newer Slurm headers (an
# upgrade) rebuild it too.
$(SPANK_SO): spank/fsx_stage.c $(wildcard $(SLURM_INCLUDE)/slurm/spank.h $(SLURM_INCLUDE)/slurm/slurm_version.h)
	@if [ ! -f '$(SLURM_INCLUDE)/slurm/spank.h' ]; then \
	  echo "spank: slurm/spank.h not found$(if $(SLURM_INCLUDE), in $(SLURM_INCLUDE)): set SLURM_INCLUDE=DIR to the include directory of the Slurm you run (DIR/slurm/spank.h; /opt/slurm/include on AWS ParallelCluster; the slurm-devel or libslurm-dev package elsewhere)" >&2; \
	  exit 1; fi
	$(CC) $(CFLAGS) $(SPANK_CFLAGS) -I'$(SLURM_INCLUDE)' -o $@.tmp.$$$$ $< && mv -f $@.tmp.$$$$ $@

cluster-up: system-deps venv spank ## start the single-node Slurm cluster in $(TESTBED)/slurm
	$(PY) -m tests.testbed.cluster up --dir $(SLURM_DIR)

cluster-down: system-deps venv spank ## stop the cluster started by cluster-up
	$(PY) -m tests.testbed.cluster down --dir $(SLURM_DIR)

cluster-status: venv ## show the cluster's daemons and node state
	$(PY) -m tests.testbed.cluster status --dir $(SLURM_DIR)

# PYTHON must be >= 3.11 and readable by every user (the hooks drop to the job user):
# Debian 12/13 and Ubuntu 24.04 have it as /usr/bin/python3; on Amazon Linux 2023 and
# RHEL/Rocky 8/9 install the python3.11 package and pass PYTHON=/usr/bin/python3.11.
CHECK_PYTHON = @$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
  echo "fsx-stage needs Python >= 3.11; PYTHON=$(PYTHON) is $$($(PYTHON) -V 2>&1 || echo missing). Install python3.11 (Amazon Linux 2023, RHEL/Rocky 8/9: dnf install python3.11) and run make PYTHON=/usr/bin/python3.11 ..." >&2; exit 1; }

# Offline installs: `make wheelhouse` (on a machine with PyPI access, same OS, CPU and
# Python as the nodes) puts fsx-stage and every dependency as wheels in WHEELHOUSE;
# `make install WHEELHOUSE=DIR` then installs from DIR alone (pip --no-index).
WHEELHOUSE ?=

.PHONY: wheelhouse
wheelhouse: ## fsx-stage and its dependencies as wheels in WHEELHOUSE=DIR, for an offline install
	@if [ -z '$(WHEELHOUSE)' ]; then echo "wheelhouse: set WHEELHOUSE=DIR" >&2; exit 1; fi
	$(CHECK_PYTHON)
	$(PYTHON) -m pip wheel -q --wheel-dir '$(WHEELHOUSE)' $(CURDIR)

install: spank ## install the plugin, a venv with the package and the hooks under PREFIX (PYTHON=, WHEELHOUSE=)
	$(CHECK_PYTHON)
	install -d $(PREFIX)/lib/fsx-stage $(PREFIX)/libexec/fsx-stage
	install -m 0755 $(SPANK_SO) $(PREFIX)/lib/fsx-stage/.fsx_stage.so.tmp
	mv -f $(PREFIX)/lib/fsx-stage/.fsx_stage.so.tmp $(PREFIX)/lib/fsx-stage/fsx_stage.so
	$(PYTHON) -m venv $(PREFIX)
ifeq ($(WHEELHOUSE),)
	$(PREFIX)/bin/python -m pip install -q --upgrade pip
	$(PREFIX)/bin/python -m pip install -q $(CURDIR)
else
	$(PREFIX)/bin/python -m pip install -q --no-index --find-links '$(WHEELHOUSE)' fsx-stage
endif
	for hook in prolog epilog; do \
	  sed 's|/opt/fsx-stage|$(PREFIX)|g' plugin/$$hook >$(PREFIX)/libexec/fsx-stage/.$$hook.tmp && \
	  chmod 0755 $(PREFIX)/libexec/fsx-stage/.$$hook.tmp && \
	  mv -f $(PREFIX)/libexec/fsx-stage/.$$hook.tmp $(PREFIX)/libexec/fsx-stage/$$hook; \
	done
	@# burst_buffer/lua mode (docs/modes.md): copy these next to slurm.conf on the controller.
	install -d $(PREFIX)/share/fsx-stage
	for f in burst_buffer.lua burst_buffer.conf sudoers.fsx-stage; do \
	  sed 's|/opt/fsx-stage|$(PREFIX)|g' slurm-conf-examples/$$f >$(PREFIX)/share/fsx-stage/.$$f.tmp && \
	  chmod 0644 $(PREFIX)/share/fsx-stage/.$$f.tmp && \
	  mv -f $(PREFIX)/share/fsx-stage/.$$f.tmp $(PREFIX)/share/fsx-stage/$$f; \
	done

# Slurm 24.11 (Debian 13) in a trixie chroot beside the host's 22.05: the real-Slurm tests again.
SLURM24_TESTS ?= -m "slurm and not chaos and not chaos_short" tests/

.PHONY: test-slurm24
test-slurm24: ## the real-Slurm tests on Slurm 24.11, in a Debian 13 chroot (.testbed/trixie)
	@command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap; }
	tests/testbed/slurm24.sh test $(SLURM24_TESTS)

demo: system-deps venv spank ## start S3 + Slurm, run a staged sample job, show what happened
	$(PY) -m tests.testbed.demo
