# One place for every command CI and people run. `make test` is what CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The PostgreSQL pass: the tests that exercise the store, each on a fresh database of this server.
POSTGRES_URL ?= postgresql+psycopg://postgres@/postgres?host=/var/run/postgresql
POSTGRES_TESTS := tests/unit/test_db.py tests/unit/test_store.py tests/unit/test_messages.py \
	tests/unit/test_mirror.py tests/integration/test_dispatch.py \
	tests/integration/test_merge_coordination.py tests/integration/test_messages.py \
	tests/integration/test_attempts.py tests/integration/test_reconcile.py \
	tests/integration/test_merge_crash.py tests/integration/test_hub.py

.PHONY: install check lint typecheck test test-postgres unit demo bench clean

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
	$(BIN)/pytest
	$(MAKE) test-postgres

# Without a reachable server every test of the pass is skipped ("NO POSTGRESQL at ..."); under
# CI=true that is a failure instead.
test-postgres: install
	CW_TEST_DATABASE_URL='$(POSTGRES_URL)' $(BIN)/pytest $(POSTGRES_TESTS)

unit: install
	$(BIN)/pytest tests/unit -q

demo: install
	bash scripts/demo.sh

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
