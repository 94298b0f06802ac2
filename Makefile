# Cortex Core — every set-up step and check lives here.
#   make run    install the server's runtime dependencies and start it on the embedded defaults
#   make test   install the dev tools too and run every check (same as CI)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help install run migrate test check format lint typecheck layers pytest \
        test-unit test-integration test-e2e bench envoy cluster clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

PIP := $(PY) -m pip install --quiet --disable-pip-version-check

# Serving needs only the runtime dependencies; the dev tools (linters, type checker,
# code generators, test runners, Envoy) come with `make install`, `make test`, `make check`.
# The client distribution (clients/python: the generated stubs and helpers) is installed in
# the same pip run as the server, which depends on it; no index is asked for it.
CLIENT := clients/python
$(VENV)/.runtime: pyproject.toml $(CLIENT)/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e $(CLIENT) -e .
	@touch $@

$(VENV)/.installed: pyproject.toml $(CLIENT)/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e $(CLIENT) -e '.[dev]'
	@touch $@ $(VENV)/.runtime

install: $(VENV)/.installed ## create .venv and install the server and dev tools

include make/proto.mk
include make/console.mk

run: $(VENV)/.runtime ## install the runtime only, then serve on the embedded defaults
	$(BIN)/cortex-core serve

migrate: $(VENV)/.runtime ## apply database migrations to CORTEX_DATABASE_URL
	$(BIN)/cortex-core migrate

test: check ## everything CI runs

check: install tools format-check lint typecheck layers proto-check pytest ## the one gate

PY_SOURCES := src tests bench clients/python scripts
format: $(VENV)/.installed ## rewrite Python files in the house style
	$(BIN)/ruff format $(PY_SOURCES)
	$(BIN)/ruff check --fix $(PY_SOURCES)

format-check: $(VENV)/.installed
	$(BIN)/ruff format --check $(PY_SOURCES)

lint: $(VENV)/.installed ## ruff lint
	$(BIN)/ruff check $(PY_SOURCES)

typecheck: $(VENV)/.installed ## mypy --strict on src
	$(BIN)/mypy

layers: $(VENV)/.installed ## import-linter layer contract
	$(BIN)/lint-imports

pytest: $(VENV)/.installed tools ts-client console-build browser ## unit, integration and e2e tests
	$(BIN)/pytest

test-unit: $(VENV)/.installed
	$(BIN)/pytest tests/unit
test-integration: $(VENV)/.installed
	$(BIN)/pytest tests/integration
test-e2e: $(VENV)/.installed tools ts-client console-build browser
	$(BIN)/pytest tests/e2e

bench: $(VENV)/.installed ## Cortex vs bare grpc.aio: unary, auth, event fan-out; context windows; replies; InvokeTool vs the MCP SDK; tasks; the write path with its event in the transaction; a burst; the cluster through Envoy
	$(PY) -m bench.unary
	$(PY) -m bench.auth
	$(PY) -m bench.events
	$(PY) -m bench.context
	$(PY) -m bench.replies
	$(PY) -m bench.tool_replies
	$(PY) -m bench.tasks
	$(if $(BENCH_DATABASE_URL),$(PY) -m bench.tasks --database-url $(BENCH_DATABASE_URL))
	$(PY) -m bench.tools
	$(PY) -m bench.metrics
	$(PY) -m bench.outbox
	$(if $(BENCH_DATABASE_URL),$(if $(BENCH_REDIS_URL),$(PY) -m bench.outbox --database-url $(BENCH_DATABASE_URL) --redis-url $(BENCH_REDIS_URL)))
	$(PY) -m bench.burst $(if $(BENCH_DATABASE_URL),--database-url $(BENCH_DATABASE_URL))
	$(if $(BENCH_DATABASE_URL),$(PY) -m bench.cluster --database-url $(BENCH_DATABASE_URL))

# The addresses are set in envoy/envoy.yaml (see docs/envoy.md); the banner repeats them.
ENVOY_CONFIG ?= envoy/envoy.yaml
ENVOY_LOG_LEVEL ?= warn
envoy: $(VENV)/.installed ## run Envoy (gRPC-Web on :8080) in front of a server on :50051
	@echo "Envoy: gRPC-Web for browsers on http://127.0.0.1:8080, admin on http://127.0.0.1:9901"
	@echo "It forwards to the server on 127.0.0.1:50051: start that with 'make run' in another shell."
	@echo "Upstream health: curl -s http://127.0.0.1:9901/clusters | grep health_flags  (Ctrl-C stops)"
	$(BIN)/envoy -c $(ENVOY_CONFIG) --log-level $(ENVOY_LOG_LEVEL)

# N replicas on the local PostgreSQL and Redis behind Envoy (docs/deploy.md): REPLICAS=3 make
# cluster; CLUSTER_DATABASE_URL and CLUSTER_REDIS_URL override where they store;
# METRICS_BASE_PORT=9100 gives replica i Prometheus metrics on 9100+i-1.
REPLICAS ?= 2
METRICS_BASE_PORT ?= 0
cluster: $(VENV)/.installed ## N replicas (REPLICAS, default 2) behind Envoy on :8080 (gRPC and gRPC-Web)
	$(BIN)/cortex-core cluster --replicas $(REPLICAS) --metrics-base-port $(METRICS_BASE_PORT)

clean: ## remove the venv, caches and local data
	rm -rf $(VENV) .cortex .mypy_cache .ruff_cache .pytest_cache build tools/node_modules \
	  clients/typescript/node_modules clients/typescript/dist clients/typescript/dist-examples \
	  clients/typescript/src/gen console/node_modules console/dist \
	  generated/go/vendor clients/go/vendor tests/clients/go/vendor
