# One place for every command CI and people run. `make test` is what CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Tests run in parallel processes (pytest-xdist); most of their time is spent waiting on git,
# workers and agents, so more processes than cores pays. Each starts its own redis-server on a free
# port (never the machine's 6379), so suites and other Redis users on one machine never collide.
TEST_JOBS ?= 4
PYTEST := $(BIN)/pytest -n $(TEST_JOBS)
# The local PostgreSQL server for the PostgreSQL passes (docs/postgres.md).
POSTGRES_URL ?= postgresql+psycopg://postgres@/postgres?host=/var/run/postgresql

.PHONY: install check lint typecheck test test-postgres unit chaos hosts demo bench bench-quick bench-stop bench-hosts bench-load bench-train bench-cap clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "cw needs Python 3.11+")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# Python writes no bytecode where PYTHONDONTWRITEBYTECODE is set (it is on some machines): every
# `cw` command and worker would then compile cw's modules again at start-up. Compiled here, as a
# non-editable `pip install` would; a module changed since is compiled again in memory.
install: $(STAMP)
	$(BIN)/python -m compileall -q cw workers bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

check: lint typecheck

# The slowest tests are listed at the end: the suite should stay near 12 minutes.
test: check
	$(PYTEST) --durations=15

# The whole suite again on PostgreSQL (CI runs it after `make test`): each test's store a fresh
# database of this server. Without a reachable server every test that needs a store is skipped
# ("NO POSTGRESQL at ..."); under CI=true that is a failure instead.
test-postgres: install
	CW_TEST_DATABASE_URL='$(POSTGRES_URL)' $(PYTEST)

unit: install
	$(PYTEST) tests/unit -q

# The two-host tests alone (also part of `make test`).
hosts: install
	$(BIN)/pytest tests/integration/service/test_many_hosts.py -q

# The long fault-injection run: a 20-task plan while workers are SIGKILLed 50 times in
# `git worktree add`, the agent, the commit and the merge (`make test` runs 4 such kills).
chaos: install
	CW_TEST_CHAOS_KILLS=50 $(BIN)/pytest tests/chaos/test_kills_everywhere.py -s -q

demo: install
	bash scripts/demo.sh

# The goals table of issue 18 (docs/benchmarks.md): every row, 20-30 minutes on 2 cores;
# bench-quick runs the same rows at smaller sizes in under 3 minutes. Both write bench/results.json.
bench: install
	$(BIN)/python bench/run.py

bench-quick: install
	$(BIN)/python bench/run.py --quick

# `cw server stop` on an idle district (docs/benchmarks.md): five runs, about 15 s each.
bench-stop: install
	$(BIN)/python bench/stop.py 5

# Recovery after a host dies (docs/benchmarks.md): five runs, about a minute each.
bench-hosts: install
	$(BIN)/python bench/hosts.py 5

# The merge path under load: 500 tasks, 12 agent slots, two rounds (about 6 minutes).
bench-load: install
	$(BIN)/python bench/load.py 500 2

bench-train: install
	$(BIN)/python bench/train.py 500 3

# A cap on agents in flight against none, under the same load (about 10 minutes).
bench-cap: install
	$(BIN)/python bench/cap.py 500 2

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache

# Outside the suite: submit each real GSD project in ../shared/corpus-real (skipped without it)
# and compare every plan file on disk with what was stored.
check-corpora: install
	$(BIN)/python scripts/check_corpora.py ../shared/corpus-real
