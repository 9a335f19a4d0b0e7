# streamheal — the two set-up commands are `make demo` and `make test`.
# Needs only Python 3.11+, Java 17+ and Maven: everything else is installed here.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# `make test` runs its own broker on other ports, so a dev broker (`make kafka-up`) is untouched.
# Two test runs at once on one machine need two ports (`make test TEST_KAFKA_PORT=19692`):
# each stops and purges its own broker at the end.
TEST_KAFKA_PORT ?= 19192
TEST_KAFKA := STREAMHEAL_LOCAL_KAFKA__PORT=$(TEST_KAFKA_PORT) STREAMHEAL_LOCAL_KAFKA__CONTROLLER_PORT=$(shell expr $(TEST_KAFKA_PORT) + 1)

.PHONY: install demo test lint bench chromium prometheus kafka-up kafka-down kafka-status clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py src/streamheal/detectors/_loops.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,report,mlflow]'
	touch $(STAMP)

# Headless Chromium renders report.html in a test; Debian's package, installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium missing (and not root): the report screenshot test will be skipped"; fi; }

# Prometheus (promtool) and Alertmanager (amtool) check config/ and scrape a worker in tests;
# Debian's packages, installed when missing (without them those tests skip, saying why).
prometheus:
	@{ command -v prometheus && command -v promtool && command -v amtool; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends prometheus prometheus-alertmanager; \
	  else echo "prometheus/promtool/amtool missing (and not root): their tests will be skipped"; fi; }

demo: install kafka-up
	$(BIN)/python -m streamheal.dev.demo

test: install lint chromium prometheus
	$(TEST_KAFKA) $(BIN)/streamheal kafka up
	status=0; \
	STREAMHEAL_TEST_BOOTSTRAP=127.0.0.1:$(TEST_KAFKA_PORT) $(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	$(TEST_KAFKA) $(BIN)/streamheal kafka down --purge; \
	exit $$status

lint: install
	$(BIN)/ruff check src tests producers bench
	$(BIN)/ruff format --check src tests producers bench

bench: install
	$(BIN)/streamheal bench --json

kafka-up: install
	$(BIN)/streamheal kafka up

kafka-down: install
	$(BIN)/streamheal kafka down

kafka-status: install
	$(BIN)/streamheal kafka status

clean:
	rm -rf $(VENV) build dist src/*.egg-info
