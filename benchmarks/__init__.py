"""asv benchmark suite of pytest-mmperf (see asv.conf.json and tools/perf_gate.py).

The suite, by job: :mod:`benchmarks.cases` and :mod:`benchmarks.training_cases` (the case
registry, the single source of truth shared with the pytest guards in ``tests/perf``),
:mod:`benchmarks.inputs` (seeded, cached inputs and the ``Workload`` a case builds),
:mod:`benchmarks.ratios` (in-process ratios and counters), :mod:`benchmarks.asv_base` (what the
asv classes share) and ``bench_*.py`` (the asv classes). This package is imported by asv
(``benchmark_dir``) and, from the repository root, by pytest.
"""
