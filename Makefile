# Kintsugi: two commands matter.
#   make run   sets up everything on the embedded default (SQLite + local blobs under var/) and serves
#   make test  sets up everything and runs the whole suite (PostgreSQL tests skip loudly when it is down)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared
ORACLE := .cache/xform-oracle
PORT ?= 8080
HOST ?= 127.0.0.1
PYTEST_ARGS ?=

.PHONY: help run test lint fmt venv oracle bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/.installed ## Create .venv and install the project with its test extras

# ODK's own form engines (Web Forms + JavaRosa), copied out of the read-only shared folder.
$(ORACLE)/.installed: $(wildcard $(SHARED)/tools/xform-oracle/package-lock.json)
	@test -d $(SHARED)/tools/xform-oracle || { echo "xform-oracle not found under $(SHARED)/tools (set SHARED=...)"; exit 1; }
	rm -rf $(ORACLE) && mkdir -p .cache
	cp -r $(SHARED)/tools/xform-oracle $(ORACLE) && chmod -R u+w $(ORACLE)
	cd $(ORACLE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

oracle: $(ORACLE)/.installed ## Install the XForm oracle (ODK engines) under .cache/

run: venv ## Set up the embedded default (SQLite under var/), seed the demo project and serve on $(HOST):$(PORT)
	KINTSUGI_BASE_URL=$${KINTSUGI_BASE_URL:-http://$(HOST):$(PORT)} $(BIN)/kintsugi setup --demo
	@echo "Admin pages: http://$(HOST):$(PORT)/admin/ (user: admin, password: var/admin-password.txt)"
	$(BIN)/kintsugi serve --host $(HOST) --port $(PORT)

test: venv oracle ## Set up and run the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	KINTSUGI_ORACLE_DIR=$(CURDIR)/$(ORACLE) KINTSUGI_SHARED_DIR=$(abspath $(SHARED)) \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv ## ruff check + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: venv ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv ## Run the benchmarks (prints figures; see bench/)
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean: ## Remove the venv, caches and local data
	rm -rf $(VENV) .cache var .pytest_cache .ruff_cache .hypothesis
