# Set-up and the main jobs. `make table3` and `make test` create the environment on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= proxy
# make paper: SEEDS= if given, else 3 (a claim's interval needs seeds; results/proxy/ holds 3, 5 for Tables 3 and A1), but 1 at
# PROFILE=paper, where each seed is every ImageNet training again
PAPER_SEEDS := $(or $(SEEDS),$(if $(filter paper,$(PROFILE)),1,3))
SEEDS ?= 1
# NPROC > 1: the experiments train under torchrun, one process per device; each word of SET is a --set change
NPROC ?= 1
SET ?=
REPRO := $(if $(filter-out 1,$(NPROC)),$(BIN)/torchrun --standalone --nproc_per_node $(NPROC) -m repro,$(BIN)/python -m repro)
SETS := $(if $(SET), $(addprefix --set ,$(SET)))

# Table 9's detection extra (mmcv built from source once into $(WHEELS), mmengine, mmdet): docs/detection.md
DETECTION := $(VENV)/.detection
WHEELS ?= .whl

.PHONY: env detection table3 table9 plan paper report compare world test test-slow clean-results

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -e '.[test,robustness]'
	touch $(STAMP)

env: $(STAMP)

$(DETECTION): $(STAMP) tools/install-detection tools/cxx20
	WHEELS=$(WHEELS) tools/install-detection $(BIN)/python -e '.[test,robustness,detection]'
	touch $(DETECTION)

detection: $(DETECTION)

table3: env
	$(REPRO) table3 --profile $(PROFILE) --seeds $(SEEDS)$(SETS)

table9: detection
	$(REPRO) table9 --profile $(PROFILE) --seeds $(SEEDS)$(SETS)

plan: env
	$(BIN)/python -m repro all --profile $(PROFILE) --seeds $(SEEDS)$(SETS) --plan

world: env
	$(BIN)/python -m repro world --profile $(PROFILE)

# every experiment through the shared run cache (an interrupted run goes on where it stopped), then the report;
# first every input and key left to set of all of them, in one list
paper: env detection
	$(BIN)/python -m repro check all --profile $(PROFILE) --processes $(NPROC)$(SETS)
	$(BIN)/python -m repro all --profile $(PROFILE) --seeds $(PAPER_SEEDS)$(SETS) --plan
	$(REPRO) all --profile $(PROFILE) --seeds $(PAPER_SEEDS)$(SETS)
	$(BIN)/python -m repro report --profile $(PROFILE)$(if $(filter proxy,$(PROFILE)), --readme README.md)
	$(BIN)/python -m repro compare --profile $(PROFILE)

report: env
	$(BIN)/python -m repro report --profile $(PROFILE)

compare: env
	$(BIN)/python -m repro compare --profile $(PROFILE)

test: env
	$(BIN)/python -m pytest -q

test-slow: env detection
	$(BIN)/python -m pytest -q -m slow

clean-results:
	rm -rf results/$(PROFILE)
