"""asv benchmark suite of pytest-mmperf (see asv.conf.json and tools/perf_gate.py).

``benchmarks.common`` is the single source of truth for the performance cases: the asv classes in
``bench_*.py`` and the pytest guards in ``tests/perf`` both build their workloads from it.
This package is imported by asv (``benchmark_dir``) and, from the repository root, by pytest.
"""
