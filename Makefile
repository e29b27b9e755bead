# The course's entry points. `make report` and `make test` set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

# numba (UMAP) compiles once into this cache instead of in every process; headless plots
export NUMBA_CACHE_DIR ?= $(CURDIR)/data/.numba_cache
export MPLBACKEND ?= Agg
export PYTHONUNBUFFERED := 1
# progress bars: live on a terminal, one line per 10 s when logged to a file (CI, nohup)
ifeq ($(shell test -t 2 && echo tty),)
export TQDM_MININTERVAL ?= 10
endif

MODELS := self_supervised labels clicks
PYTEST_ARGS ?=
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help setup data models index report test test-fast lint format lab serve bench clean-reports

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

setup: $(STAMP) data  ## create .venv, install requirements, obtain data and build the database

data: $(STAMP)  ## the Fashion-MNIST corpus and the platform database (idempotent)
	$(PY) -m vs_lib data

models: setup  ## train (or reuse) the three contrastive encoders and the fine-tuned EfficientNet (epochs, seeded)
	@start=$$(date +%s); \
	for p in $(MODELS); do $(PY) -m vs_lib train --positives $$p || exit 1; done; \
	$(PY) -m vs_lib train --positives labels --backbone efficientnet || exit 1; \
	echo "make models: $$(( $$(date +%s) - start )) s (load average now: $$(cut -d' ' -f1-3 /proc/loadavg))"

index: models  ## embed and index every image in the database (incremental)
	$(PY) -m vs_lib index --rebuild-stale --model labels
	$(PY) -m vs_lib index --rebuild-stale --model self_supervised

report: index  ## run every notebook (full profile) into reports/ (.ipynb + .html) and figures/
	$(PY) -m vs_lib report --profile full

test: setup lint  ## lint and type check, then the whole test suite (unit tests + every notebook in the smoke profile)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff (lint + format check) and mypy on the library, tests and benchmarks
	$(VENV)/bin/ruff check vs_lib tests benchmarks
	$(VENV)/bin/ruff format --check vs_lib tests benchmarks
	$(VENV)/bin/mypy

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix vs_lib tests benchmarks
	$(VENV)/bin/ruff format vs_lib tests benchmarks

test-fast: setup  ## unit tests only, no notebooks or browser
	$(PY) -m pytest -m "not notebooks and not browser and not slow" $(PYTEST_ARGS)

lab: setup  ## JupyterLab on notebooks/
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --allow-root --no-browser

DEMO_USER ?= user00001
serve: index  ## the HTTP search service and web page on $(HOST):$(PORT); prints a sign-in link for $(DEMO_USER)
	$(PY) -m vs_lib serve --host $(HOST) --port $(PORT) --model labels --demo-user $(DEMO_USER)

bench: index  ## every benchmark, JSON into reports/benchmarks/
	@mkdir -p reports/benchmarks
	@for b in benchmarks/*.py; do n=$$(basename $$b .py); echo "== $$n"; \
	  $(PY) $$b > reports/benchmarks/$$n.json || exit 1; cat reports/benchmarks/$$n.json; done

clean-reports:  ## remove executed notebooks and figures (keeps data and models)
	rm -rf reports/*.ipynb reports/*.html reports/smoke figures/*/
