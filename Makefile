# Set-up and the main jobs. `make table3` and `make test` create the environment on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= proxy
SEEDS ?= 1

.PHONY: env table3 plan paper compare world test test-slow clean-results

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

env: $(STAMP)

table3: env
	$(BIN)/python -m repro table3 --profile $(PROFILE) --seeds $(SEEDS)

plan: env
	$(BIN)/python -m repro all --profile $(PROFILE) --seeds $(SEEDS) --plan

world: env
	$(BIN)/python -m repro world --profile $(PROFILE)

paper: env
	$(BIN)/python -m repro all --profile $(PROFILE) --seeds $(SEEDS) --plan
	$(BIN)/python -m repro all --profile $(PROFILE) --seeds $(SEEDS)
	$(BIN)/python -m repro compare --profile $(PROFILE)

compare: env
	$(BIN)/python -m repro compare --profile $(PROFILE)

test: env
	$(BIN)/python -m pytest -q

test-slow: env
	$(BIN)/python -m pytest -q -m slow

clean-results:
	rm -rf results/$(PROFILE)
