# The README's two commands, and the whole suite. Each sets up its own virtual environment on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Test processes: the interpreter runs one program at a time, so tests spread over the cores.
TEST_WORKERS ?= 2

.PHONY: sweep test test-all setup gpu-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first (on our machines it comes from local disk); GPU users bring their own.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	# The editable install builds with this setuptools, not in an isolated build env (10 s less).
	$(PY) -m pip install -q "setuptools>=70.1"
	$(PY) -m pip install -q --no-build-isolation -e ".[test,perf]"
	touch $@

setup: $(VENV)/.installed

sweep: $(VENV)/.installed
	$(PY) perf/sweep.py --quick

# The first GPU's bounded check (perf/gpu_check.py): the python that already has torch and
# triton (a lent GPU machine installs nothing big), no virtual environment. Without a GPU it
# runs its correctness sections in the interpreter at tiny sizes.
gpu-check:
	$(PYTHON) perf/gpu_check.py

# The default tier: one case of every property, the compile matrix's corners and a sample.
test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" tests

# Everything: the whole compile matrix on sm_80 and sm_90, and all the breadth.
test-all: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) tests
