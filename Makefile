# Two commands on a fresh machine: `make run` (install + serve on :8000) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch for development and CI; the package itself accepts any torch >= 2.4.
	$(PIP) install -q torch==2.13.0
	# The SDK's distribution first (the server depends on it; it is not on PyPI); then the server,
	# editable with the repository root on sys.path, so that `memsvc` is always this checkout's
	# package and never only the memsvc/client namespace portion memsvc-client installs.
	$(PIP) install -q ./clients/python
	$(PIP) install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

run: install
	$(VENV)/bin/memsvc serve

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check memsvc api workers kernels bench tests migrations
	$(VENV)/bin/ruff format --check memsvc api workers kernels bench tests migrations
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/search_latency.py
	$(PY) bench/ingest.py
	$(PY) bench/locomo.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
