# The two commands: `make demo` (the main job on the local Neon) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint dogfood bench clean

# neonflow, and beside it the sample app: a small project of its own (sample_app/pyproject.toml).
$(STAMP): pyproject.toml sample_app/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -e './sample_app[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy neonflow

test: lint
	$(BIN)/pytest -q
	$(MAKE) --no-print-directory dogfood

# Our own CI runs `neonflow check` on the sample app, against a local Neon of its own.
DOGFOOD := NEONFLOW_LOCAL__STATE_DIR=.neonflow-ci
dogfood: $(STAMP)
	$(DOGFOOD) $(BIN)/neonflow check; status=$$?; $(DOGFOOD) $(BIN)/neonflow local down; exit $$status

# The main job on the local Neon: a branch for a feature, the app on it, its status and diff.
demo: $(STAMP)
	$(BIN)/neonflow local up
	$(BIN)/neonflow branch start demo-feature
	$(BIN)/python -m sample_app.demo
	$(BIN)/neonflow branch status
	$(BIN)/neonflow branch list
	$(BIN)/neonflow branch diff demo-feature
	@echo
	@echo "next: .venv/bin/neonflow check; .venv/bin/neonflow branch promote demo-feature --yes;"
	@echo "      .venv/bin/neonflow branch delete demo-feature --yes; .venv/bin/neonflow local down"

bench: $(STAMP)
	$(BIN)/python bench/branch_clone.py
	$(BIN)/python bench/start.py
	$(BIN)/python bench/check.py
	$(BIN)/python bench/list.py
	$(BIN)/python bench/proxy.py

clean:
	-$(BIN)/neonflow local down
	-$(DOGFOOD) $(BIN)/neonflow local down
	rm -rf .neonflow .neonflow-ci $(VENV)
