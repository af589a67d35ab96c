# The two commands: `make demo` (the main job on the local Neon) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy neonflow

test: lint
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/python -m neonflow.demo

bench: $(STAMP)
	$(BIN)/python bench/branch_clone.py
	$(BIN)/python bench/start.py
	$(BIN)/python bench/check.py

clean:
	-$(BIN)/neonflow local down
	rm -rf .neonflow $(VENV)
