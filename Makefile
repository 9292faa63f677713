# The two commands a newcomer needs:
#   make demo   converge the demo policy (examples/demo) against a temporary root
#   make test   install what the tests need, then lint, type-check and run every test
# The floor is a fresh Debian 12: its own /usr/bin/python3 (3.11.2) builds the
# venv wherever it exists, so the suite never leans on a newer point release.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: demo test setup system-deps lint typecheck pytest

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

system-deps:
	@scripts/install-system-deps

demo: setup
	@scripts/demo

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest
