# Nightfeed: `make run` sets up and runs the nightly job on the embedded default; `make test` runs the tests.
# Every command runs through bin/nightfeed, which sets the environment (venv, PYTHONPATH, Airflow home).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt | cksum | cut -d' ' -f1)
RUN_DATE ?= $(shell date -u -d yesterday +%F)
SCALE ?= default
NIGHTFEED := bin/nightfeed

.PHONY: run airflow test lint format install emulators clean

$(STAMP): requirements.txt constraints.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	@echo "== Installing the pinned stack into $(VENV) (a few minutes on a fresh machine)"
	set -o pipefail; $(VENV)/bin/python -m pip install -r requirements.txt -c constraints.txt \
	  | { grep --line-buffered -v '^Requirement already satisfied' || true; }
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: $(STAMP)
	$(NIGHTFEED) exec bash scripts/run_nightly.sh $(RUN_DATE) $(SCALE)

# The Airflow UI on http://127.0.0.1:8080 (scheduler included) for manual runs and backfills; after `make run`.
airflow: $(STAMP)
	AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__CORE__PARALLELISM=4 $(NIGHTFEED) airflow standalone

emulators:
	bash scripts/emulators.sh

lint: $(STAMP)
	$(NIGHTFEED) exec ruff check . && $(NIGHTFEED) exec ruff format --check .

test: $(STAMP) emulators lint
	$(NIGHTFEED) exec pytest -n 2 --dist loadfile --durations=15

format: $(STAMP)
	$(NIGHTFEED) exec ruff check --fix . && $(NIGHTFEED) exec ruff format .

clean:
	rm -rf data airflow_home .pytest_cache
