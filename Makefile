# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: demo test lint bench soak clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-demo: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e ".[testing]"  # example/ws_client.py uses websockets
	touch $@

$(VENV)/.installed-dev: $(BIN)/activate setup.cfg pyproject.toml
	$(BIN)/pip install --quiet -e ".[dev,certbot]"
	touch $@ $(VENV)/.installed-demo

# sslyze (AGPL, test-only) pins another cryptography than certbot: its own venv.
SSLYZE_VENV := .venv-sslyze
$(SSLYZE_VENV)/bin/sslyze:
	$(PYTHON) -m venv $(SSLYZE_VENV)
	$(SSLYZE_VENV)/bin/pip install --quiet "sslyze>=6,<7"

## Serve the example chat on http://127.0.0.1:$(PORT)/ (SQLite, in-memory layer, no Redis).
demo: $(VENV)/.installed-demo
	cd example && ../$(BIN)/python manage.py migrate --verbosity 0
	cd example && ../$(BIN)/python manage.py demo_setup --port $(PORT)
	cd example && ../$(BIN)/daphne -b 127.0.0.1 -p $(PORT) chatproject.asgi:application

## Run the whole suite (starts its own redis-server, daphne and nginx).
test: $(VENV)/.installed-dev $(SSLYZE_VENV)/bin/sslyze
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

## Benchmarks: real daphne + Redis, prints a table and writes bench/results/latest.json.
bench: $(VENV)/.installed-dev
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## Soak: 1,000 sockets + abusers through the real nginx to two daphne workers (2 minutes).
soak: $(VENV)/.installed-dev
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(SSLYZE_VENV) build dist *.egg-info example/db.sqlite3 .pytest_cache
