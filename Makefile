PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
PORT ?= 8000
DEMO_STAMP := $(VENV)/.demo-installed

.PHONY: venv demo test lint typecheck check-migrations bench messages

## venv: create .venv and install the package with its dev extras (skipped when up to date)
venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[all,dev]'
	touch $(STAMP) $(DEMO_STAMP)

# The demo runs with DEBUG on (static files, a development secret); nothing else does.
DEMO_ENV := DJANGO_DEBUG=1 AGENTAUTH_ISSUER=http://127.0.0.1:$(PORT)/api/auth

## demo: migrate the SQLite demo database, seed it and serve http://127.0.0.1:$(PORT)
## (make demo PORT=8001: the issuer, and so the discovery document, follows the port)
demo: $(DEMO_STAMP)
	$(DEMO_ENV) $(BIN)/python manage.py migrate --noinput
	$(DEMO_ENV) $(BIN)/python manage.py seed_demo
	$(DEMO_ENV) $(BIN)/python manage.py runserver 127.0.0.1:$(PORT)

# The demo needs the package with its extras only, not the development tools.
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[all]'
	touch $(DEMO_STAMP)

## test: run the test suite (PYTEST_ARGS="-k replay -x" to narrow it)
# PYTEST_WORKERS: pytest-xdist processes (auto = one per core; 0 = all in this process).
PYTEST_WORKERS ?= auto
test: venv
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy agentauth

check-migrations: venv
	$(DEMO_ENV) $(BIN)/python manage.py makemigrations agentauth support --check --dry-run

## bench: ours vs the TypeScript reference server, side by side (PostgreSQL, Node; < 5 minutes)
bench: venv
	$(BIN)/python -m benchmarks.compare $(BENCH_ARGS)

# Paths the translatable app does not own: the example project, tests and the agent-side client
# (its text is API text and stays English).
MESSAGES_IGNORE := -i 'example_project/*' -i 'tests/*' -i '$(VENV)/*' -i 'docs/*' -i 'artifacts/*' -i 'agentauth/client/*' -i 'build/*'

## messages: refresh agentauth/locale/*/django.po from the pages and mails, then compile the .mo
## files (needs GNU gettext: apt-get install -y gettext). The compiled .mo files are committed.
messages: venv
	$(DEMO_ENV) $(BIN)/python manage.py makemessages -l fr --no-obsolete $(MESSAGES_IGNORE)
	$(DEMO_ENV) $(BIN)/python manage.py compilemessages -i '$(VENV)' -i example_project -i tests
