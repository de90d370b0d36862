# fraudstream — `make demo` and `make test` work on a fresh Debian machine with Python 3.11, Java 17, Maven.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_TRANSACTIONS ?= 20000
PYTEST_ARGS ?=

.PHONY: help setup system-deps venv kafka-jars demo test test-chaos lint bench clean stack-down

help:
	@echo "make demo        set everything up, then run the main job (fraudstream demo)"
	@echo "make test        set up what the tests need, then run them"
	@echo "make test-chaos  the longer fault-injection suite"
	@echo "make lint        ruff + mypy"
	@echo "make bench       the benchmarks under bench/"

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

demo: setup
	$(BIN)/fraudstream demo --transactions $(DEMO_TRANSACTIONS) --summary-json .fraudstream/demo-summary.json

test: setup
	$(BIN)/pytest -q -m "not chaos" $(PYTEST_ARGS)

test-chaos: setup
	$(BIN)/pytest -q -m chaos $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/bench_reference.py --json
	$(BIN)/python bench/bench_features.py --json
	$(BIN)/fraudstream bench scoring --json
	$(BIN)/fraudstream bench e2e --json

stack-down:
	-$(BIN)/fraudstream stack down

clean: stack-down
	rm -rf .fraudstream .pytest_cache .mypy_cache .ruff_cache
