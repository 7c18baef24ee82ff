# Nightfeed: `make run` sets up and runs the nightly job on the embedded default; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt | cksum | cut -d' ' -f1)
RUN_DATE ?= $(shell date -u -d yesterday +%F)
SCALE ?= default

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONPATH := $(CURDIR)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export AIRFLOW_HOME ?= $(CURDIR)/airflow_home
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT := false

.PHONY: run airflow test lint format install emulators clean

$(STAMP): requirements.txt constraints.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.txt -c constraints.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: $(STAMP)
	bash scripts/run_nightly.sh $(RUN_DATE) $(SCALE)

# The Airflow UI on http://127.0.0.1:8080 (scheduler included) for manual runs and backfills; after `make run`.
airflow: $(STAMP)
	AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__CORE__PARALLELISM=4 airflow standalone

emulators:
	bash scripts/emulators.sh

lint: $(STAMP)
	ruff check . && ruff format --check .

test: $(STAMP) emulators lint
	pytest -n 2 --dist loadfile --durations=15

format: $(STAMP)
	ruff check --fix . && ruff format .

clean:
	rm -rf data airflow_home .pytest_cache
