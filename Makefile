# fraudstream — `make demo` and `make test` work on a fresh Debian machine with Python 3.11, Java 17, Maven.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_TRANSACTIONS ?= 20000
PYTEST_ARGS ?=
# helm v4, built once from the Go module proxy into Go's bin directory (make lint and the chart's tests use it)
HELM_VERSION := v4.3.2
HELM := $(shell go env GOPATH 2>/dev/null || echo $(HOME)/go)/bin/helm
CHART := deploy/helm/fraudstream
# Toxiproxy (Shopify's TCP fault proxy) for the chaos suite's network faults, built once from the Go module
# proxy into Go's bin directory as `server` (fraudstream/stack/toxiproxy.py finds it there)
TOXIPROXY_VERSION := v2.12.0
TOXIPROXY := $(dir $(HELM))server

.PHONY: help setup system-deps venv kafka-jars helm toxiproxy demo test test-chaos lint bench clean stack-down

help:
	@echo "make demo        set everything up, then run the main job (fraudstream demo)"
	@echo "make test        set up what the tests need, then run them"
	@echo "make test-chaos  the longer fault-injection suite"
	@echo "make lint        ruff + mypy + import contracts (lint-imports) + helm lint --strict"
	@echo "make helm        build helm $(HELM_VERSION) once (Go module proxy) into $(HELM)"
	@echo "make toxiproxy   build Toxiproxy $(TOXIPROXY_VERSION) once (Go module proxy) into $(TOXIPROXY)"
	@echo "make bench       the benchmarks (fraudstream/bench/)"

setup: system-deps venv kafka-jars

# redis-server comes from Debian's packages. Without root we cannot install it: say what to run.
system-deps:
	@if ! command -v redis-server >/dev/null; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing redis-server (Debian package)…"; \
	    (apt-get install -y -q redis-server >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null)); \
	    systemctl disable --now redis-server >/dev/null 2>&1 || true; \
	  else \
	    echo "redis-server is missing. Run as root: apt-get install -y redis-server  (or: sudo make setup)"; exit 1; \
	  fi; \
	fi
	@if ! command -v openssl >/dev/null; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing openssl (Debian package, for the Redis TLS test's throwaway CA)…"; \
	    (apt-get install -y -q openssl >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q openssl >/dev/null)); \
	  else \
	    echo "openssl is missing (the Redis TLS test needs it): sudo apt-get install -y openssl"; exit 1; \
	  fi; \
	fi
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing chromium (Debian package, for the dashboard's browser test)…"; \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); \
	  else \
	    echo "chromium is missing (the dashboard browser test will be skipped): sudo apt-get install -y chromium"; \
	  fi; \
	fi
	@command -v java >/dev/null || { echo "Java 17 is missing: apt-get install -y openjdk-17-jre-headless"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is missing (needed once for the Kafka jars): apt-get install -y maven"; exit 1; }

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

kafka-jars: venv
	@$(BIN)/python -c "from fraudstream.stack.kafka import ensure_jars, default_jar_cache; print('Kafka jars in', ensure_jars(default_jar_cache()))"

# Once: a few minutes of compiling; any helm v4 already at $(HELM) is kept.
helm:
	@if ! "$(HELM)" version --short 2>/dev/null | grep -q '^v4\.'; then \
	  command -v go >/dev/null || { echo "Go is needed once to build helm $(HELM_VERSION): install Go 1.21 or newer (it fetches the Go 1.26 toolchain helm needs), then run make helm"; exit 1; }; \
	  echo "building helm $(HELM_VERSION) from the Go module proxy into $(HELM) (once, a few minutes)…"; \
	  GOBIN="$(dir $(HELM))" go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION); \
	fi

# Once, under a minute of compiling. Without Go, setup goes on (only the network fault tests need it, and they
# fail saying to run this); `make toxiproxy` itself then fails.
toxiproxy:
	@if ! "$(TOXIPROXY)" -version 2>/dev/null | grep -q toxiproxy-server; then \
	  if ! command -v go >/dev/null; then \
	    echo "Go is needed once to build Toxiproxy $(TOXIPROXY_VERSION) (network fault tests): install Go 1.21 or newer, then run make toxiproxy"; \
	    case "$(MAKECMDGOALS)" in *toxiproxy*) exit 1;; esac; exit 0; \
	  fi; \
	  echo "building Toxiproxy $(TOXIPROXY_VERSION) from the Go module proxy into $(TOXIPROXY) (once)…"; \
	  GOBIN="$(dir $(TOXIPROXY))" go install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION); \
	fi

demo: setup
	$(BIN)/fraudstream demo --transactions $(DEMO_TRANSACTIONS) --summary-json .fraudstream/demo-summary.json

test: setup helm
	$(BIN)/pytest -q -m "not chaos" $(PYTEST_ARGS)

test-chaos: setup toxiproxy
	$(BIN)/pytest -q -m chaos $(PYTEST_ARGS)

lint: venv helm
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	"$(HELM)" lint --strict $(CHART)
	"$(HELM)" lint --strict $(CHART) --values $(CHART)/ci/production-values.yaml

bench: setup
	$(BIN)/python -m fraudstream.bench.reference --json
	$(BIN)/python -m fraudstream.bench.features --json
	$(BIN)/python -m fraudstream.bench.validation --json
	$(BIN)/fraudstream bench scoring --json
	$(BIN)/fraudstream bench e2e --json

stack-down:
	-$(BIN)/fraudstream stack down

clean: stack-down
	rm -rf .fraudstream .pytest_cache .mypy_cache .ruff_cache
