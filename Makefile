# attnrepro: `make demo` runs the default pipeline and builds its report; `make test` runs the tests.
# Both create .venv (Python 3.11) when it is missing.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.attnrepro-installed
PRESET ?= smoke
ABLATIONS ?= kernel radius_init placement baseline
FMNIST_DIR := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.PHONY: help venv data demo test test-fast bench tables report clean-runs gpu-check mutants

help:
	@echo "make demo   - venv + install + data + run the '$(PRESET)' pipeline + build its report"
	@echo "make test   - venv + install + the test suite"
	@echo "make bench  - attention cost benchmarks into reports/bench/"
	@echo "make tables - the papers' params/GFLOPs rows beside the built models, into reports/tables/"
	@echo "make mutants MODULE=lib/attnrepro/train/schedules.py - mutation testing of one module (slow; not in make test)"
	@echo "make gpu-check - on a GPU machine, with its own python and torch (no venv): reports/gpu-check/ (DRY=1: CPU)"

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name attnrepro --display-name "attnrepro (.venv)" >/dev/null
	@touch $@

# The embedded default data: Debian's dataset-fashion-mnist. Installed when missing and we can (root + apt-get);
# otherwise the suite falls back to torchvision's download or a --data-dir (see README).
data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing dataset-fashion-mnist (Debian)"; \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || \
	  echo "warning: could not install dataset-fashion-mnist; pass -p data_dir DIR or let torchvision download"; \
	else echo "note: $(FMNIST_DIR) missing and not root: the suite will use data_dir or torchvision's download"; fi

demo: $(STAMP) data
	$(BIN)/attnrepro run $(ABLATIONS) --preset $(PRESET)
	$(BIN)/attnrepro report --preset $(PRESET)
	@echo "report: reports/$(PRESET)/report.html"

test: $(STAMP) data
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# Mutation testing (mutmut) of one module against its fast tests (scripts/mutants.py; TESTS='...' names others,
# MUTANTS='attnrepro.analysis.claims.x_judge_cost_claim*' only some of its functions' mutants).
# Slow (minutes per module): never part of `make test` or CI. Results: mutants/ (`$(BIN)/python scripts/mutants.py
# results`, `... show NAME`).
MODULE ?=
TESTS ?=
MUTANTS ?=
mutants: $(STAMP)
	@test -n "$(MODULE)" || { echo "name a module: make mutants MODULE=lib/attnrepro/train/schedules.py"; exit 2; }
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,mutation]'
	$(BIN)/python scripts/mutants.py run $(MODULE) $(TESTS) $(foreach m,$(MUTANTS),'$(m)')
	$(BIN)/python scripts/mutants.py results

bench: $(STAMP)
	$(BIN)/attnrepro bench

tables: $(STAMP)
	$(BIN)/attnrepro tables

report: $(STAMP)
	$(BIN)/attnrepro report --preset $(PRESET)

# No venv and no network: the machine's own python (PYTHON=...) and torch, PYTHONPATH=lib.
gpu-check:
	PYTHON="$(if $(filter python3.11,$(PYTHON)),python3,$(PYTHON))" bash scripts/gpu_check.sh

clean-runs:
	rm -rf runs/$(PRESET)
