# omgkit — the two commands: `make demo` and `make test`.
# Both set themselves up on a fresh machine (virtual environment, pinned
# packages, optional Debian TTS engines) and are quick on the second run.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSDEPS_STAMP := .cache/sysdeps.stamp
ART ?= artifacts
PROFILE ?= quick
MODEL ?= ds_cnn_s
DEMO_DIR := $(ART)/demo
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONHASHSEED := 0
# the demo's boards, keys and vendor live with its artifacts, not in ~/.omgkit
demo: export OMG_HOME := $(abspath $(ART))/omg-home

CORE_LIB := ta/optee/build/host/libomgcore.so

.PHONY: demo test test-fast lint venv sysdeps clean help reproduce kick lab core

help:
	@echo "make demo   - corpus, training, int8 conversion and evaluation (quick profile)"
	@echo "make test   - the whole test suite"
	@echo "make lint   - ruff"
	@echo "make reproduce - the paper artifact (paper profile), resumable; make kick - the same on tiny data"
	@echo "make lab    - JupyterLab on notebooks/ with the project's environment as kernel"
	@echo "make core   - the TA's C core as a host library (make test and make demo build it)"

$(STAMP): requirements/board.txt requirements/workbench.txt requirements/constraints.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: python3.11 is required (python3 not found)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || \
	  { echo "error: omgkit pins packages for Python 3.11; found $$($(PYTHON) --version). Set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -r requirements/workbench.txt -c requirements/constraints.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

venv: $(STAMP)

# The TA's portable C core as a host library (the "c" runtime, omg plan), with
# the system compiler; `check` proves it imports nothing a TA lacks.
$(CORE_LIB): $(wildcard ta/optee/core/*.c ta/optee/core/*.h ta/optee/include/*.h) ta/optee/hostlib/Makefile
	@command -v $${CC:-cc} >/dev/null || { echo "error: a C compiler is needed for the TA's core (Debian: apt-get install gcc)"; exit 1; }
	$(MAKE) -s -C ta/optee/hostlib all check

core: $(CORE_LIB)

$(SYSDEPS_STAMP): tools/sysdeps.py
	@mkdir -p .cache
	$(PYTHON) tools/sysdeps.py tts tts-nonfree ssh optee browser
	@touch $@

sysdeps: $(SYSDEPS_STAMP)

demo: $(STAMP) $(SYSDEPS_STAMP) $(CORE_LIB)
	$(BIN)/omg data synth --profile $(PROFILE) --out $(ART)/corpus-$(PROFILE)
	$(BIN)/omg train --data $(ART)/corpus-$(PROFILE) --model $(MODEL) --out $(DEMO_DIR)
	$(BIN)/omg convert --run $(DEMO_DIR)
	$(BIN)/omg evaluate --run $(DEMO_DIR) --json $(DEMO_DIR)/evaluation.json --conditions
	$(BIN)/omg guard demo --run $(DEMO_DIR) --workdir $(DEMO_DIR)/guard
	@$(BIN)/omg board status demo >/dev/null 2>&1 || $(BIN)/omg board create demo
	$(BIN)/omg board up demo
	$(BIN)/omg deploy --board emu://demo --run $(DEMO_DIR)
	$(BIN)/omg run --board emu://demo --data $(ART)/corpus-$(PROFILE) --split testing --json $(DEMO_DIR)/board_run.json
	$(BIN)/omg bench --board emu://demo --json $(DEMO_DIR)/bench_board.json
	$(BIN)/omg board down demo
	@echo "demo: results in $(DEMO_DIR)/ (evaluation.json, confusion_int8.png, guard/)"
	@echo "demo: its board lives in OMG_HOME=$(OMG_HOME): OMG_HOME=$(OMG_HOME) omg board list"

reproduce: $(STAMP) $(SYSDEPS_STAMP) $(CORE_LIB)
	$(BIN)/omg reproduce --profile $(or $(REPRO_PROFILE),paper) --model $(MODEL) --artifacts $(ART) --results results --optee

# JupyterLab on the notebooks; the kernel is this virtual environment's Python
# (jupyter_client starts "python3" kernels with the server's interpreter).
# Boards, keys and the vendor live with the artifacts, as for make demo.
lab: export OMG_HOME := $(abspath $(ART))/omg-home
lab: $(STAMP) $(SYSDEPS_STAMP)
	@echo "lab: open the URL below, then notebooks 01 to 06 in order (Ctrl-C stops the server)"
	@echo "lab: notebooks are saved without their outputs (omgkit/lab.py): the committed ones stay clean"
	$(BIN)/jupyter lab --notebook-dir=notebooks --ServerApp.open_browser=False \
	  --FileContentsManager.pre_save_hook=omgkit.lab.scrub_outputs \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# kick the tires: the whole chain on the tiny profile, a few minutes
kick: $(STAMP) $(SYSDEPS_STAMP) $(CORE_LIB)
	$(BIN)/omg reproduce --profile tiny --model $(MODEL) --artifacts $(ART) --results results

test: $(STAMP) $(SYSDEPS_STAMP) $(CORE_LIB)
	$(BIN)/python -m pytest -q --timeout=1200 --durations=25

test-fast: $(STAMP) $(CORE_LIB)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check omgkit ta tests tools notebooks benchmarks
	$(BIN)/ruff format --check omgkit ta tests tools notebooks benchmarks

clean:
	rm -rf $(VENV) .cache $(ART) ta/optee/build
