# Two commands on a fresh machine: `make bench` (the performance run and its report) and
# `make test` (the tests). Both create .venv on first use and reuse it afterwards.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mmperf-installed
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: venv test bench compare perf-gate regression-proof lint clean

venv: $(STAMP)

# Reinstall when the project metadata changes; torch is only downloaded/installed the first time.
# torchvision comes with ./reference (the guarded code uses it); the plugin itself does not.
$(STAMP): pyproject.toml reference/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile -e '.[dev]' -e ./reference
	@# Bytecode on every core (pip compiles one file at a time); as with pip, a file written for
	@# another Python version (torch ships some) is left uncompiled.
	$(PY) -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_paths()['purelib'], quiet=2, workers=0)"
	$(PY) -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

# The tests; asv's checks and one quick pass of the asv suite in one process (a broken benchmark
# fails CI); the proof that the regression suite catches known regressions of reference/ (first
# guard each).
test: $(STAMP)
	$(PY) -m pytest
	$(PY) tools/perf_gate.py --check
	$(PY) tools/regression_proof.py --quick

# The performance run: pytest --benchmark over the regression suite, then the report files.
bench: $(STAMP)
	@mkdir -p .mmperf
	$(PY) -m pytest tests/perf --benchmark -v -p no:cacheprovider \
		--mmperf-json=.mmperf/report.json --mmperf-html=.mmperf/report.html \
		--benchmark-json=.mmperf/benchmarks.json
	@echo "mmperf report: $(CURDIR)/.mmperf/report.html (data: .mmperf/report.json)"

# The regression suite's benchmarks and report families against BASE (any git revision) in the
# same run: `make compare BASE=origin/main` (docs/across-commits.md). Without BASE: the merge base
# with main (an A/A run on main itself).
compare: $(STAMP)
	@mkdir -p .mmperf
	$(PY) -m pytest tests/perf --benchmark -p no:cacheprovider \
		--mmperf-baseline=$(or $(BASE),$(shell git merge-base HEAD main 2>/dev/null || echo HEAD~1)) \
		--mmperf-json=.mmperf/compare.json --mmperf-html=.mmperf/compare.html
	@echo "mmperf comparison: $(CURDIR)/.mmperf/compare.html (data: .mmperf/compare.json)"

# asv continuous between BASE (default: merge base with main, or HEAD~1) and HEAD; exits 1 on a
# confirmed slowdown beyond the factor (tools/perf_gate.py, README "Tracking across commits").
BASE ?=
perf-gate: $(STAMP)
	$(PY) tools/perf_gate.py $(BASE)

# Every known regression against a patched copy of reference/, every guard that catches it.
regression-proof: $(STAMP)
	$(PY) tools/regression_proof.py

lint: $(STAMP)
	$(PY) -m ruff check pytest_mmperf reference tests benchmarks

clean:
	rm -rf $(VENV) .asv .mmperf .pytest_cache .benchmarks
