# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv, install the package with its dev extras and make sure a
# redis-server binary exists (apt-get when missing and root); `make test` also
# makes sure Debian's chromium exists for the dashboard's browser tests.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: chromium test lint typecheck pytest test-floor docs demo bench bench-quick bench-venvs bench-web wrk chaos redis-server clean format

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server with apt-get"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) || exit 1; \
	  else \
	    echo "redis-server is missing: install it (e.g. 'sudo apt-get install redis-server' or 'brew install redis')"; exit 1; \
	  fi; }

# The dashboard's browser tests (tests/test_web_*.py) drive Debian's chromium through
# Playwright (its Python package brings the driver; `playwright install` is never run).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium with apt-get"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || exit 1; \
	  else \
	    echo "chromium is missing: install it (e.g. 'sudo apt-get install chromium')"; exit 1; \
	  fi; }

SOURCES := aioqueue tests $(wildcard examples benchmarks)

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)

typecheck: $(STAMP)
	$(BIN)/mypy

# examples/migrate_arq/arq_app.py runs under arq, which needs redis-py < 6: a venv of its
# own (about 10 s once), for tests/test_migrate_examples.py
ARQ_VENV := .venv-arq
$(ARQ_VENV)/.installed: examples/migrate_arq/requirements-arq.txt
	test -x $(ARQ_VENV)/bin/python || $(PYTHON) -m venv $(ARQ_VENV)
	$(ARQ_VENV)/bin/python -m pip install -q -r examples/migrate_arq/requirements-arq.txt
	touch $@

pytest: $(STAMP) redis-server chromium $(ARQ_VENV)/.installed
	$(BIN)/pytest -q

# The user guide (docs/, mkdocs.yml) into site/; --strict turns every warning
# (a broken link or anchor, a page missing from the nav) into a failure.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# The oldest dependencies pyproject.toml allows (each `>=X` installed as `==X`,
# see tests/floor_pins.py) in a venv of their own, running a representative
# part of the suite: round trips on both event loops, bad input and errors
# (ACL refusals), the lean command path, delays and locks, cron, Sentinel, the
# aioqueue.testing plugin, a job's anyio deadline racing a fast stop (anyio 4.10
# still has anyio#1214) and the CLI as real processes. Click 8.1's test runner
# mixes stderr into stdout, so the CLI is tested there through subprocesses
# only. About 45 s from a fresh clone (the venv takes ~20 s), so `make test` runs it.
FLOOR_VENV := .venv-floor
FLOOR_TESTS := tests/test_core.py tests/test_bad_input.py tests/test_errors.py \
	tests/test_lane.py tests/test_scheduling.py tests/test_cron.py tests/test_sentinel.py \
	tests/test_testing_clock.py tests/test_testing_guard.py tests/test_concurrency.py
# the longest tests (a Sentinel failover, three cron processes, 1,000 jobs through the
# test clock) stay in `make pytest`
FLOOR_SKIP := not primary_killed_mid_run and not across_three_processes and not thousand
FLOOR_CLI := tests/test_cli.py tests/test_cli_garbage.py tests/test_cli_safety.py
FLOOR_CLI_SELECT := real_process or cron_ or run_in_process or flag_beats or console or printable or refused

$(FLOOR_VENV)/.installed: pyproject.toml tests/floor_pins.py
	test -x $(FLOOR_VENV)/bin/python || $(PYTHON) -m venv $(FLOOR_VENV)
	$(PYTHON) tests/floor_pins.py > $(FLOOR_VENV)/floor.txt
	$(FLOOR_VENV)/bin/python -m pip install -q -e . -r $(FLOOR_VENV)/floor.txt "pytest>=8.3" "pytest-timeout>=2.3"
	touch $@

test-floor: $(FLOOR_VENV)/.installed redis-server
	$(FLOOR_VENV)/bin/pytest -q $(FLOOR_TESTS) -k "$(FLOOR_SKIP)"
	$(FLOOR_VENV)/bin/pytest -q $(FLOOR_CLI) -k "$(FLOOR_CLI_SELECT)"

test: lint typecheck docs pytest test-floor

format: $(STAMP)
	$(BIN)/ruff format $(SOURCES)
	$(BIN)/ruff check --fix $(SOURCES)

demo: $(STAMP) redis-server
	$(BIN)/python examples/demo.py

# Benchmarks (issue #5): aioqueue and its peers, each from PyPI into its own
# virtualenv under benchmarks/ (pinned in benchmarks/requirements-*.txt).
# `make bench` is the full run (about an hour); `make bench ARGS=--quick` or
# `make bench-quick` a smoke run of a few minutes.
BENCH := benchmarks
BENCH_VENVS := $(BENCH)/.venv-aq/.installed $(BENCH)/.venv-a/.installed $(BENCH)/.venv-t/.installed

$(BENCH)/.venv-%/.installed: $(BENCH)/requirements-%.txt
	test -x $(BENCH)/.venv-$*/bin/python || $(PYTHON) -m venv $(BENCH)/.venv-$*
	cd $(BENCH) && .venv-$*/bin/python -m pip install -q -r requirements-$*.txt
	touch $@

$(BENCH)/.venv-aq/.installed: $(BENCH)/requirements-aq.txt pyproject.toml
$(BENCH)/.venv-a/.installed: $(BENCH)/requirements-a.txt
$(BENCH)/.venv-t/.installed: $(BENCH)/requirements-t.txt

bench-venvs: $(BENCH_VENVS)

bench: bench-venvs redis-server
	$(BENCH)/.venv-aq/bin/python $(BENCH)/run.py $(ARGS)

bench-quick: bench-venvs redis-server
	$(BENCH)/.venv-aq/bin/python $(BENCH)/run.py --quick $(ARGS)

# The web benchmark (issue #18): each library behind one Starlette app under
# uvicorn, driven by wrk at 100, 500 and 1,000 connections.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing wrk with apt-get"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) || exit 1; \
	  else \
	    echo "wrk is missing: install it (e.g. 'sudo apt-get install wrk' or 'brew install wrk')"; exit 1; \
	  fi; }

bench-web: bench-venvs redis-server wrk
	$(BENCH)/.venv-aq/bin/python $(BENCH)/web.py $(ARGS)

clean:
	rm -rf $(VENV) $(FLOOR_VENV) $(ARQ_VENV) .mypy_cache .ruff_cache site

# The chaos suite's long form (the short form runs in `make test`).
chaos: $(STAMP) redis-server
	AIOQUEUE_CHAOS=long $(BIN)/pytest -q -s tests/chaos
