# Two commands matter: `make run` and `make test`. Both work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CONFIG ?= examples/inbound.toml

.PHONY: run test install java kafka lint typecheck bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable '.[test]'
	touch $@

install: $(INSTALLED)

# The service with the embedded bus and the example config, plus the development webhook
# receiver it posts to. Ctrl-C stops both.
run: $(INSTALLED)
	$(BIN)/inbound init --config $(CONFIG)
	@$(BIN)/inbound devhook --config $(CONFIG) & hook=$$!; \
	trap 'kill $$hook 2>/dev/null' EXIT INT TERM; \
	$(BIN)/inbound serve --config $(CONFIG)

# Kafka's broker runs on the JDK and is fetched from Maven Central with mvn.
java:
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  echo "installing a JDK and Maven with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless maven; }

# A single-node Kafka broker on 127.0.0.1 for development (prints its address).
kafka: $(INSTALLED) java
	$(BIN)/python tests/kafka_broker.py

lint: $(INSTALLED)
	$(BIN)/ruff check inbound tests bench
	$(BIN)/ruff format --check inbound tests bench

typecheck: $(INSTALLED)
	$(BIN)/mypy

# Everything: lint, types, and the whole suite (the Kafka tests start a real broker).
test: $(INSTALLED) java lint typecheck
	$(BIN)/python -m pytest

bench: $(INSTALLED)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .cache var .pytest_cache .mypy_cache .ruff_cache
