# sqlx-os: every target does its own set-up (virtualenv, packages, servers).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test lint bench docker clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

## run: the proxy on 127.0.0.1:6432 (embedded PostgreSQL unless --upstream/SQLX_UPSTREAM__DSN)
run: $(STAMP)
	$(BIN)/sqlxos proxy $(ARGS)

## test: lint, then the whole suite against real servers (started here when missing)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

## bench: pgbench -S direct vs PgBouncer vs sqlx-os; writes bench/RESULTS.md
bench: $(STAMP)
	$(BIN)/sqlxos bench pgbench --rounds 3 --seconds 15 --profile

docker:
	docker build -t sqlx-os .

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
