# One place for every command CI and people run. `make test` is what CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Tests run in parallel processes (pytest-xdist); most of their time is spent waiting on git,
# workers and agents, so more processes than cores pays. Each starts its own redis-server on a free
# port (never the machine's 6379), so suites and other Redis users on one machine never collide.
TEST_JOBS ?= 4
PYTEST := $(BIN)/pytest -n $(TEST_JOBS) -m 'not hosts'
# The PostgreSQL pass: the whole suite again, each test's store a fresh database of this server.
POSTGRES_URL ?= postgresql+psycopg://postgres@/postgres?host=/var/run/postgresql

.PHONY: install check lint typecheck test test-postgres unit chaos hosts demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "cw needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

check: lint typecheck

test: check
	$(PYTEST)
	$(MAKE) test-postgres

# Without a reachable server every test that needs a store is skipped ("NO POSTGRESQL at ...");
# under CI=true that is a failure instead.
test-postgres: install
	CW_TEST_DATABASE_URL='$(POSTGRES_URL)' $(PYTEST)

unit: install
	$(PYTEST) tests/unit -q

# The long fault-injection run: a 20-task plan while workers are SIGKILLed 50 times in
# `git worktree add`, the agent, the commit and the merge (`make test` runs 4 such kills).
# The two-host kill test (issue 19): it failed once in two full runs; kept out of `make test`
# until the cause is found.
hosts: install
	$(BIN)/pytest -m hosts tests/integration/test_many_hosts.py -q

chaos: install
	CW_TEST_CHAOS_KILLS=50 $(BIN)/pytest tests/chaos/test_kills_everywhere.py -s -q

demo: install
	bash scripts/demo.sh

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache

# Outside the suite: submit each real GSD project in ../shared/corpus-real (skipped without it)
# and compare every plan file on disk with what was stored.
check-corpora: install
	$(BIN)/python scripts/check_corpora.py ../shared/corpus-real
