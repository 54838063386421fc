PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test lint typecheck check-migrations

## venv: create .venv and install the package with its dev extras (skipped when up to date)
venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

# The demo runs with DEBUG on (static files, a development secret); nothing else does.
DEMO_ENV := DJANGO_DEBUG=1

## demo: migrate the SQLite demo database, seed it and serve http://127.0.0.1:8000
demo: venv
	$(DEMO_ENV) $(BIN)/python manage.py migrate --noinput
	$(DEMO_ENV) $(BIN)/python manage.py seed_demo
	$(DEMO_ENV) $(BIN)/python manage.py runserver 127.0.0.1:8000

## test: run the test suite (PYTEST_ARGS="-k replay -x" to narrow it)
test: venv
	$(BIN)/pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy agentauth

check-migrations: venv
	$(DEMO_ENV) $(BIN)/python manage.py makemigrations agentauth support --check --dry-run
