# Two commands: `make run` (serve on the embedded SQLite) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint unit openapi bench load crash soak clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/alembic upgrade head
	$(BIN)/uvicorn --factory app.main:create_app --host $(HOST) --port $(PORT) --loop uvloop --http app.server:BoundedHttpToolsProtocol --timeout-keep-alive 5 --limit-concurrency 100

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider tests/unit

openapi: $(STAMP)
	$(BIN)/python -m app.openapi_export openapi.yaml

bench: $(STAMP)
	$(BIN)/python bench/outcomes_scale.py

load: $(STAMP)  # needs wrk (apt-get install wrk)
	$(BIN)/python bench/load.py

crash: $(STAMP)
	$(BIN)/python bench/crash.py

soak: $(STAMP)
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
