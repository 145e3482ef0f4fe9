# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
# protoc for `make gen`/`make check-gen`: grpcio-tools pinned in tools/gen-requirements.txt,
# in a venv of its own so its grpcio and protobuf never meet the server's pins.
GEN_VENV := $(VENV)/gen
GEN_STAMP := $(GEN_VENV)/.installed
## Test processes of `make test` (pytest-xdist): the tests mostly wait on real servers,
## so three share two cores well; TEST_PROCESSES=0 runs them in this process.
TEST_PROCESSES ?= 3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
LISTEN ?= 127.0.0.1:50051
DATA_DIR ?= ./var

IMAGE ?= dispatchd:dev
BASE_IMAGE ?= python:3.11-slim-bookworm
NODE_DIR := clients/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed
## axe-core for the dashboard's accessibility checks (tests/browser/package-lock.json).
AXE_DIR := tests/browser
AXE_STAMP := $(AXE_DIR)/node_modules/.installed

.PHONY: help run test check install gen check-gen lint breaking typecheck unit bench bench-startup bench-coalescing
.PHONY: bench-queues bench-schedules bench-throttle bench-dashboard bench-callgrind chaos image
.PHONY: base-image clean
.PHONY: node-tools node-deps node-build node-test browser-tools browser-deps screenshot redis-tools bench-redis
.PHONY: prometheus-tools check-alerts

## List the targets and what each does.
help:
	@awk '/^## /{doc = doc (doc ? " " : "") substr($$0, 4); next} \
	     /^[a-z][a-z-]*:/{if (doc) printf "  %-18s %s\n", substr($$1, 1, length($$1) - 1), doc; doc = ""; next} \
	     {doc = ""}' $(MAKEFILE_LIST)

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python venv module missing: installing python3-venv with apt"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && \
	  $(PYTHON) -m venv $(VENV); }

## Two distributions, both editable: dispatchd-client (clients/python) and dispatchd (the
## server, which depends on it). One pip call, so the server's pin resolves to the local client.
$(STAMP): pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=77'
	$(BIN)/python -m pip install -q -e ./clients/python -e '.[dev]'
	@touch $@

$(GEN_STAMP): tools/gen-requirements.txt | $(BIN)/python
	$(PYTHON) -m venv $(GEN_VENV)
	$(GEN_VENV)/bin/python -m pip install -q -r tools/gen-requirements.txt
	@touch $@

install: $(STAMP)

## Start the server with the embedded default (snapshot under ./var); Ctrl-C drains it.
run: $(STAMP)
	@mkdir -p $(DATA_DIR)
	$(BIN)/dispatchd --listen $(LISTEN) --data-dir $(DATA_DIR)

## Lint, type-check, stub drift check, then every test. pytest's exit 5 (no tests) fails too.
## The Node client is built first: pytest's interop test runs its worker; the dashboard's
## browser tests need Chromium and its driver and axe-core; the Redis backend's tests,
## redis-server; the alerting rules' and /metrics lint tests, promtool.
test: $(STAMP) node-build browser-tools browser-deps redis-tools prometheus-tools
	$(MAKE) --no-print-directory lint typecheck check-gen
	$(BIN)/pytest -q -n $(TEST_PROCESSES)
	$(MAKE) --no-print-directory node-test

## The fast loop while you work (half a minute): lint, types, stub drift, unit tests.
check: $(STAMP) $(GEN_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(GEN_VENV)/bin/python tools/gen_protos.py --check
	$(BIN)/pytest -q tests/unit

## The engine's unit tests only.
unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

gen: $(GEN_STAMP) node-deps
	$(GEN_VENV)/bin/python tools/gen_protos.py
	$(GEN_VENV)/bin/python tools/gen_node.py

check-gen: $(GEN_STAMP) node-deps
	$(GEN_VENV)/bin/python tools/gen_protos.py --check
	$(GEN_VENV)/bin/python tools/gen_node.py --check

## Node.js 18+ and npm: Debian's packages when missing (CI machines start without them).
node-tools:
	@missing=""; \
	command -v node >/dev/null || missing=" nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' || \
	  { echo "Node.js 18 or newer is needed, found $$(node --version)"; exit 1; }

## Headless Chromium and the chromedriver of the same build (Debian's packages) for the
## dashboard's browser tests, when missing (CI machines start without them).
browser-tools:
	@missing=""; \
	command -v chromium >/dev/null || missing=" chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

## axe-core from npm at the locked version, for the browser tests (nothing is fetched
## while they run: the harness reads node_modules/axe-core/axe.min.js).
browser-deps: $(AXE_STAMP)

$(AXE_STAMP): $(AXE_DIR)/package.json $(AXE_DIR)/package-lock.json | node-tools
	cd $(AXE_DIR) && npm ci --no-audit --no-fund --silent
	@touch $@

## Regenerate the dashboard's screenshots in docs/ (docs/dashboard.png, the README's
## picture, and docs/dashboard-*.png: overview, queue, job, workers, light and dark).
screenshot: $(STAMP) browser-tools browser-deps
	DISPATCHD_SCREENSHOT=docs $(BIN)/pytest -q tests/browser/test_screenshot.py

## redis-server and redis-sentinel for the Redis backend's tests (each test session starts
## its own on free ports, a Cluster and Sentinels too): Debian's packages when missing (CI
## machines start without them).
redis-tools:
	@missing=""; \
	command -v redis-server >/dev/null || missing=" redis-server"; \
	command -v redis-sentinel >/dev/null || missing="$$missing redis-sentinel"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@redis-server --version

## promtool for the alerting rules' unit tests and `promtool check metrics` on a scrape:
## Debian's prometheus package when missing (CI machines start without it).
prometheus-tools:
	@command -v promtool >/dev/null || { \
	  echo "installing prometheus (for promtool) with apt"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	@promtool --version | head -1

## The alerting rules: `promtool check rules` and their unit tests.
check-alerts: prometheus-tools
	promtool check rules helm/dispatchd/files/dispatchd-alerts.yaml
	cd tests/prometheus && promtool test rules alerts.test.yaml

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json | node-tools
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	@touch $@

## The Node client's npm dependencies, exactly as locked.
node-deps: node-tools $(NODE_STAMP)

node-build: node-deps
	cd $(NODE_DIR) && npm run --silent build

## The Node client's tests (node --test) against a real server; needs the Python venv.
node-test: $(STAMP) node-build
	cd $(NODE_DIR) && npm test

lint: $(STAMP) node-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/buf lint
	$(BIN)/buf format --exit-code --diff
	$(BIN)/hadolint Dockerfile
	cd $(NODE_DIR) && npm run --silent lint
	@$(MAKE) --no-print-directory breaking

## The contract may only grow: compare the protos with where this branch left main (on main
## itself that is HEAD, so the check bites on branches, before they merge).
breaking: $(STAMP)
	@if git rev-parse --verify -q main >/dev/null; then \
	  base=$$(git merge-base HEAD main) && echo "buf breaking against main (merge base $${base:0:12})" && \
	  $(BIN)/buf breaking --against ".git#ref=$$base"; \
	else echo "buf breaking: skipped, this clone has no main branch to compare with"; fi

typecheck: $(STAMP)
	$(BIN)/mypy

## Throughput, latency, CPU per job against a raw grpc.aio baseline (bench/run.py), the
## Redis path as ratios of the embedded one in the same run (bench/redis_path.py), and the
## idle cost of 10,000 schedules (bench/schedules_idle.py), and how adaptive queues follow a
## provider's hidden limit (bench/throttle.py).
bench: $(STAMP) redis-tools
	$(BIN)/python bench/run.py
	$(BIN)/python -m bench.redis_path
	$(BIN)/python -m bench.schedules_idle
	$(BIN)/python -m bench.throttle
	$(BIN)/python -m bench.dashboard

## Every dashboard page's answer time with 1,000,000 pending jobs in one queue and 1,000
## queues (target 200 ms), and dispatch p99 with overview tabs polling vs none (within
## 10 %); about two minutes. JSON in bench/results/dashboard.json.
bench-dashboard: $(STAMP)
	$(BIN)/python -m bench.dashboard

## What 10,000 schedules cost a server (idle, and hourly ticks firing), embedded and Redis,
## against the < 5 % of one core target; JSON in bench/results/schedules.json.
## A provider with a hidden limit (40/s, then 15/s; 429 + Retry-After above it) against
## adaptive and fixed-rate queues, HTTP push and worker (about a minute); JSON in
## bench/results/throttle.json.
bench-throttle: $(STAMP) redis-tools
	$(BIN)/python -m bench.throttle

bench-schedules: $(STAMP) redis-tools
	$(BIN)/python -m bench.schedules_idle

## The Redis path (--backend redis, 1 and 3 replicas) as ratios of the embedded one, with
## dispatchd and redis-server CPU per job; JSON in bench/results/redis_path.json.
bench-redis: $(STAMP) redis-tools
	$(BIN)/python -m bench.redis_path

## Start-up time of a server on a journal of 1,000,000 pending jobs, and the journal's size
## (about a minute; `make bench` skips it). JSON in bench/results/startup.json.
bench-startup: $(STAMP)
	$(BIN)/python bench/run.py --only-startup --startup-jobs 1000000

## A healthy queue's round trip with no other queue and with 20,000 idle one-job queues
## (embedded backend), and the ratio (target: within 2x); see bench/idle_queues.py.
bench-queues: $(STAMP)
	$(BIN)/python -m bench.idle_queues

## Submit coalescing of the blocking Python Client (threads) and the Node Client (promises):
## coalesced vs one Submit per call, medians of 3 alternating runs each (a few minutes).
bench-coalescing: $(STAMP) node-build
	$(BIN)/python -m bench.sync_coalescing
	cd $(NODE_DIR) && node dist/bench/coalescing.js

## Instructions per job (submit + dispatch + ack) of the server's own code under callgrind:
## deterministic, so small regressions show (about a minute). valgrind comes from apt when
## missing. JSON in bench/results/callgrind.json; see bench/callgrind.py.
bench-callgrind: $(STAMP)
	@command -v valgrind >/dev/null || { echo "installing valgrind with apt"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
	$(BIN)/python -m bench.callgrind --annotate 15

## kill -9 checker: 20 SIGKILLs of a journaled server under 10,000 jobs; prints the table.
chaos: $(STAMP)
	$(BIN)/python -m tests.e2e.chaos --kills 20 --jobs 10000

## Build the container image with docker or buildah (see docs/deploy.md).
image:
	IMAGE=$(IMAGE) BASE_IMAGE=$(BASE_IMAGE) tools/image.sh

## A local base image (Debian bookworm + python3.11) for building without a registry; needs root.
base-image:
	tools/base_image.sh

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache $(NODE_DIR)/node_modules $(NODE_DIR)/dist
