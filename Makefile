# Two commands matter: `make run` and `make test`. Both work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime
CONFIG ?= examples/inbound.toml

.PHONY: run test test-fast install tools kafka lint typecheck bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable '.[test]'
	touch $@

install: $(INSTALLED)

# What `make run` needs and no more: the runtime dependencies (a test install has them too).
$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable .
	touch $@

# The service with the embedded bus and the example config, plus the development webhook
# receiver it posts to. Ctrl-C stops both.
run: $(RUNTIME)
	$(BIN)/inbound init --config $(CONFIG)
	@$(BIN)/inbound devhook --config $(CONFIG) & hook=$$!; \
	trap 'kill $$hook 2>/dev/null' EXIT INT TERM; \
	$(BIN)/inbound serve --config $(CONFIG)

# What the tests need from Debian, installed only when missing: a JDK and Maven (Kafka's broker
# is fetched from Maven Central with mvn), swaks (a real SMTP client), docker-compose (parses
# compose.yaml without a Docker engine), SpamAssassin's spamd (the spam tests score with it),
# PostgreSQL (the activity store's contract suite starts a server; Debian keeps its binaries off
# PATH, under /usr/lib/postgresql/N/bin) and headless Chromium with its WebDriver (the web page
# is tested in a real browser).
TOOLS := openssl:openssl java:default-jdk-headless mvn:maven swaks:swaks docker-compose:docker-compose \
	spamd:spamassassin chromium:chromium chromedriver:chromium-driver
tools:
	@PATH="$$PATH:/usr/sbin"; missing=$$(for t in $(TOOLS); do command -v $${t%%:*} >/dev/null || echo $${t#*:}; done; \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo postgresql); \
	if [ -n "$$missing" ]; then \
	  echo "installing with apt-get:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

# A single-node Kafka broker on 127.0.0.1 for development (prints its address).
kafka: $(INSTALLED) tools
	$(BIN)/python tests/kafka_broker.py

lint: $(INSTALLED)
	$(BIN)/ruff check inbound tests bench
	$(BIN)/ruff format --check inbound tests bench

typecheck: $(INSTALLED)
	$(BIN)/mypy

# Everything: lint, types, and the whole suite (the Kafka tests start a real broker).
# Two workers, a test file each at a time: most end-to-end tests wait on servers, not on the CPU.
test: $(INSTALLED) tools lint typecheck
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

# The inner loop, under a minute: lint, types, and every test that starts no process or server.
test-fast: $(INSTALLED) lint typecheck
	$(BIN)/python -m pytest -m "not e2e" -q

bench: $(INSTALLED)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) .cache var .pytest_cache .mypy_cache .ruff_cache
