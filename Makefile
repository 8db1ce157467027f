# The README's two commands: `make run` (the whole local stack) and `make test` (every check).
# Everything the project needs is installed here: the venv, pip packages, Azurite (npm ci)
# and, for the browser test, Debian's chromium.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
INFRA_VENV := .venv-infra
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run run-deps test deps lint typecheck unit infra-check browser-deps bench demo clean

# `make run` needs the app and the devstack only; `make test` adds the test and lint tools.
$(VENV)/.devstack: requirements.txt requirements-devstack.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-devstack.txt
	@touch $@

$(VENV)/.deps: $(VENV)/.devstack requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

local.settings.json:
	cp local.settings.json.example $@

deps: $(VENV)/.deps node_modules/.package-lock.json

run-deps: $(VENV)/.devstack node_modules/.package-lock.json local.settings.json

## run: Azurite, Key Vault emulator, Graph simulator and the Functions devhost, in the foreground.
run:
	@$(MAKE) --no-print-directory -j3 run-deps
	$(PY) -m devstack

## test: lint, types, then unit, function, integration and end-to-end tests, then the infra checks.
test:
	@$(MAKE) --no-print-directory -j4 deps browser-deps $(INFRA_VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest --ignore=tests/infra $(PYTEST_ARGS)
	$(MAKE) --no-print-directory infra-check

# checkov and pycep-parser pin packages the app's venv must not share: a venv of their own.
$(INFRA_VENV)/.installed: requirements-infra.txt
	@test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-infra.txt
	@touch $@

## infra-check: Bicep templates parse, settings in step with shared/config.py, checkov clean.
infra-check: $(INFRA_VENV)/.installed
	$(INFRA_VENV)/bin/python -m pytest --confcutdir=tests/infra tests/infra

lint: deps
	$(PY) -m ruff check .

typecheck: deps
	$(PY) -m mypy

unit: deps
	$(PY) -m pytest tests/unit tests/functions $(PYTEST_ARGS)

# The browser test drives Debian's chromium; the locked-down connect test moves the
# devhost's clock with Debian's libfaketime. Install them when they are missing.
FAKETIME_LIB := /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && test -e $(FAKETIME_LIB) || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver faketime >/dev/null; \
	  else \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver faketime >/dev/null; \
	  fi; }

## bench: every benchmark, each printing its figures (needs nothing running); the failed ones are named at the end.
bench: deps
	@failed=""; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || failed="$$failed $$b"; done; \
	  test -z "$$failed" || { echo "failed:$$failed"; exit 1; }

## demo: with `make run` up, connect a simulated mailbox and watch its CloudEvents arrive.
demo: deps
	$(PY) -m devstack.demo

clean:
	rm -rf .devstack .pytest_cache .mypy_cache .ruff_cache $(INFRA_VENV)
