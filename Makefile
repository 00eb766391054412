# sweeplab: `make demo` runs a learning-rate sweep end to end; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install install-dev demo up down status test lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[server]'
	touch $@

# torch==2.13.0 (CPU) is a test-only reference; pip takes it from this machine's disk.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[server,dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# up, then the sweep through the CLI: live progress, the leaderboard, the MLflow compare link
demo: install
	$(BIN)/sweeplab demo examples/lr_sweep.json

up: install
	$(BIN)/python -m services.stack up

down:
	$(BIN)/python -m services.stack down

status:  # (python -m services.stack status exits 1 while the API is down, for scripts)
	@$(BIN)/python -m services.stack status || true

test: install-dev
	$(BIN)/python -m services.stack redis
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (rules and format), the architecture contracts (import-linter), types (mypy)
lint: install-dev
	$(BIN)/ruff check services api worker client tests benchmarks migrations examples
	$(BIN)/ruff format --check services api worker client tests benchmarks migrations examples
	$(BIN)/lint-imports
	$(BIN)/mypy services api worker client

clean: down
	rm -rf var
