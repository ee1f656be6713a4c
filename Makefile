# framewatch: `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
# The venv measured 6.7 GB (torch 2.14.1 is a CUDA build with its nvidia-* wheels); an install
# into less free disk failed in CI after 22 s with pip's OSError 28 deep in a traceback.
INSTALL_FREE_GB ?= 7
PYTEST_ARGS ?=

.PHONY: install chromium test test-slow test-reliability lint demo clean services-down

install: $(STAMP)

# Reinstalls only when pyproject.toml changes; a second `make install` is a no-op.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "framewatch needs Python >= 3.11")'
	@$(PYTHON) scripts/check_disk.py . $(INSTALL_FREE_GB)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[worker,train,dashboard,dev]'
	@$(MAKE) --no-print-directory chromium
	touch $(STAMP)

# Debian's chromium for the dashboard's real-browser tests (Playwright drives /usr/bin/chromium;
# `playwright install` is never run). Installed where apt can; elsewhere the browser tests skip.
chromium:
	@if command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the real-browser tests"; \
	  timeout 900 apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { timeout 300 apt-get update -q >/dev/null 2>&1 && timeout 900 apt-get install -y -q chromium >/dev/null 2>&1; } || \
	  echo "chromium could not be installed: the real-browser tests will be skipped"; \
	else echo "chromium is not installed (needs root and apt): the real-browser tests will be skipped"; fi

# mypy checks the installed layout (framewatch.worker, …), mirrored by links in .typecheck/
# because it cannot follow pyproject's package-dir mapping.
MYPY := $(PY) scripts/typecheck_tree.py .typecheck >/dev/null && cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml --cache-dir ../.mypy_cache

lint: install
	$(BIN)/ruff check .
	$(MYPY)

# The default run: lint, types, unit and integration tests (real broker, Redis, ONNX model).
# Services are started and stopped by the pytest fixtures; nothing is left running.
# One OpenMP thread per process: tests run torch beside worker processes, and oversubscribed
# OpenMP spin-waits made tiny models 10-30x slower on 2 cores.
TEST_ENV := OMP_NUM_THREADS=1
test: install
	$(BIN)/ruff check .
	$(MYPY)
	$(TEST_ENV) $(BIN)/pytest -m "not slow" --durations=10 $(PYTEST_ARGS)

test-slow: install
	$(TEST_ENV) $(BIN)/pytest -m "slow" $(PYTEST_ARGS)

# The full reliability suite (five kills, 5000 fuzz cases); `make test` runs it reduced.
test-reliability: install
	$(TEST_ENV) FRAMEWATCH_RELIABILITY_FULL=1 $(BIN)/pytest tests/reliability $(PYTEST_ARGS)

# DEMO_ARGS: e.g. DEMO_ARGS="--seconds 60" (default: the dashboard stays up until Ctrl-C in a terminal).
DEMO_ARGS ?=
demo: install
	$(BIN)/framewatch demo $(DEMO_ARGS)

services-down:
	-$(BIN)/framewatch dev down

clean: services-down
	rm -rf $(VENV) .framewatch demo .pytest_cache .mypy_cache .ruff_cache .typecheck
