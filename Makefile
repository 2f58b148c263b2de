# Two commands on a fresh machine: `make bench` (the performance run and its report) and
# `make test` (the tests). Both create .venv on first use and reuse it afterwards.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mmperf-installed
# Keep torch's own thread pool at the machine's core count; tests that need one thread set it.
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv test bench perf-gate lint clean

venv: $(STAMP)

# Reinstall when the project metadata changes; torch is only downloaded/installed the first time.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	@echo "make bench: not yet available (needs the guards and regression-suite issues)"

lint: $(STAMP)
	$(PY) -m ruff check pytest_mmperf reference tests benchmarks

clean:
	rm -rf $(VENV) .asv .mmperf .pytest_cache .benchmarks
