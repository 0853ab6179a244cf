# The README's two commands. Each sets up its own virtual environment on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: sweep test setup

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first (on our machines it comes from local disk); GPU users bring their own.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,perf]"
	touch $@

setup: $(VENV)/.installed

sweep: $(VENV)/.installed
	$(PY) perf/sweep.py --quick

test: $(VENV)/.installed
	$(PY) -m pytest -q tests
