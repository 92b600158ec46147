# Developer entry points. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the test-suite uses: promtool/amtool (alert + dashboard tests), PostgreSQL
# (connector tests), Java 17 + Maven (the local Apache Kafka broker).
APT_PACKAGES := prometheus prometheus-alertmanager postgresql openjdk-17-jre-headless maven

.DEFAULT_GOAL := help
.PHONY: help install system-deps test test-unit test-fast lint format bench bench-smoke soak demo broker-start broker-stop registry-start registry-stop test-cluster clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/.installed ## create .venv and install the package with dev dependencies

system-deps: ## install missing Debian packages (Java, Maven, Prometheus tools, PostgreSQL)
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v amtool >/dev/null || missing="$$missing prometheus-alertmanager"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test: install system-deps ## install everything, then run the whole test suite (real Kafka broker, Postgres, promtool)
	$(BIN)/pytest

test-unit: install ## unit tests only (no broker, seconds)
	$(BIN)/pytest tests/unit

lint: install ## ruff, ruff format --check, mypy --strict on stream/ and connectors/
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy stream connectors

format: install ## apply ruff format and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install ## full benchmark: ceiling, stream, Quix Streams, Faust per-event, Kafka Streams (1M events; ~20 min)
	$(BIN)/stream bench

bench-smoke: install ## small benchmark run (20k events) to check the harness
	$(BIN)/stream bench --events 20000

soak: install ## soak run: 30 min at half the measured capacity, keys growing to 1M; CSV, summary, plot in benchmarks/results/soak-<UTC>/
	$(BIN)/python -m tests.soak.driver --minutes $${SOAK_MINUTES:-30}

demo: install ## local broker + worker + load generator with a live summary (Ctrl-C to stop; DEMO_ARGS="--rate 5000 --duration 60")
	$(BIN)/stream demo $(DEMO_ARGS)

broker-start: install ## start the local Kafka broker on 127.0.0.1:9092
	$(BIN)/stream broker start

broker-stop: install ## stop the local Kafka broker
	$(BIN)/stream broker stop

test-cluster: install system-deps ## failure tests on a local 3-node Kafka cluster (netns as root; ~2 min)
	$(BIN)/pytest tests/integration/test_localbroker_cluster.py

registry-start: install ## start the local schema registry (Apicurio, Java 21+) on 127.0.0.1:8081
	$(BIN)/stream registry start

registry-stop: install ## stop the local schema registry
	$(BIN)/stream registry stop

clean: ## remove the venv and local state (broker data, caches)
	rm -rf $(VENV) .stream .pytest_cache .mypy_cache .ruff_cache
