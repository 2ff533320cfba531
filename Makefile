# agent-api. `make run` serves; `make test` runs every test tier. Both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run serve test test-unit test-integration test-e2e lint format migrate lock clean docker-up docker-down node-deps bench bench-deps bench-quick bench-baseline test-browser browser-deps

help:
	@echo "make run      serve on http://127.0.0.1:8000 (embedded Postgres, demo LLM unless configured)"
	@echo "make test     install and run every test tier (real Postgres and Redis)"
	@echo "make test-browser  the console in headless Chromium (installs Debian's chromium and playwright-core)"
	@echo "make lint     ruff, mypy --strict, import-linter"
	@echo "make migrate  upgrade the database schema to head"
	@echo "make bench    the gateway against a mock upstream, DIRECT vs THROUGH; writes docs/benchmarks.md"
	@echo "make bench-quick  the CI gate: fails when gateway CPU per request doubles vs bench/baseline.json"
	@echo "make docker-up [LLM=litellm]  the docker compose stack (settings and secrets from .env)"
	@echo "make docker-down              stop it (the data volumes are kept)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Dependencies come from the committed lock (hashes of versions fixed by `make lock`).
$(INSTALLED): requirements-dev.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)" || true
	if [ -x $(BIN)/uv ]; then \
	  $(BIN)/uv pip install -q --python $(BIN)/python -r requirements-dev.lock && \
	  $(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e . ; \
	else \
	  $(BIN)/python -m pip install -q -r requirements-dev.lock && \
	  $(BIN)/python -m pip install -q --no-deps -e . ; \
	fi
	touch $(INSTALLED)

install: $(INSTALLED)

run: $(INSTALLED)
	$(BIN)/agent-api serve

serve: run

migrate: $(INSTALLED)
	$(BIN)/agent-api migrate

# The official openai npm package for the node client test (skipped only when node is absent).
NODE_DEPS := tests/node/node_modules/.package-lock.json
$(NODE_DEPS): tests/node/package.json tests/node/package-lock.json
	@if command -v node >/dev/null && command -v npm >/dev/null; then \
	  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error; \
	else echo "node/npm not found: the node SDK test will be skipped"; fi

node-deps: $(NODE_DEPS)

# The console's browser tests (tests/browser): Debian's Chromium (apt; never a browser download)
# and playwright-core from the committed lock, which drives it with an explicit executable path.
CHROMIUM ?= /usr/bin/chromium
BROWSER_DEPS := tests/browser/node_modules/.package-lock.json
$(BROWSER_DEPS): tests/browser/package.json tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

browser-deps: $(BROWSER_DEPS) $(CHROMIUM)

test: $(INSTALLED) node-deps browser-deps
	$(BIN)/pytest

test-browser: $(INSTALLED) browser-deps
	$(BIN)/pytest tests/browser

test-unit: $(INSTALLED)
	$(BIN)/pytest tests/unit

test-integration: $(INSTALLED)
	$(BIN)/pytest tests/integration

test-e2e: $(INSTALLED) node-deps
	$(BIN)/pytest tests/e2e

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# wrk (Debian's package) drives the non-streaming load where it can be installed; without it the
# Python generator in bench/loadgen.py does (the report says which).
bench-deps:
	@command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null 2>&1; } || \
	  echo "wrk could not be installed: non-streaming load comes from bench/loadgen.py"

# docs/benchmarks.md. The gateway runs pinned to core 0, the mock and load generator to core 1.
bench: $(INSTALLED) bench-deps
	$(BIN)/python -m bench.run

# A few seconds of load: gateway CPU ms per request and per stream against bench/baseline.json.
bench-quick: $(INSTALLED)
	$(BIN)/python -m bench.run --quick

# Re-record bench/baseline.json (after a deliberate, reviewed change in cost).
bench-baseline: $(INSTALLED)
	$(BIN)/python -m bench.run --write-baseline

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: | $(BIN)/python
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 -q -o requirements.lock --custom-compile-command "make lock"
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -q -o requirements-dev.lock --custom-compile-command "make lock"

# docker compose full stack (deployments/docker-compose.yml, docs/operations.md). `.env` holds the
# settings and secrets; LLM=litellm also starts the LiteLLM proxy and points the api at it.
LLM ?= demo
COMPOSE_CMD = docker compose --env-file .env -f deployments/docker-compose.yml
ifeq ($(LLM),litellm)
COMPOSE_UP_ENV := COMPOSE_PROFILES=litellm LLM_BASE_URL=http://litellm:4000/v1
endif

docker-up:
	@test -f .env || { echo ".env is missing: copy .env.example, set JWT_SECRET, API_KEY_PEPPER and POSTGRES_PASSWORD"; exit 2; }
	$(COMPOSE_UP_ENV) $(COMPOSE_CMD) up --detach --build
	$(COMPOSE_UP_ENV) $(COMPOSE_CMD) ps

docker-down:
	COMPOSE_PROFILES=litellm $(COMPOSE_CMD) down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
