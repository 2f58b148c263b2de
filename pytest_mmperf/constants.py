"""The names and defaults that several modules share, each defined here once.

Torch-free and pytest-free: the plugin, the settings table, the guards, the report and the asv
suite all import it. Why the defaults are what they are: ``docs/measurements.md``.
"""

from __future__ import annotations

# Scales of the synthetic data (the ``scale`` setting; ``synthetic.default_batch_spec``).
SCALES = ("smoke", "default", "full")
DEVICE_KINDS = ("cpu", "cuda", "mps", "xpu")

# Timing guards. The defaults are those whose error rates tools/guard_error_rates.py measures.
DEFAULT_BUDGET_S = 2.0  # measuring seconds per process for one ratio guard
DEFAULT_PROCESSES = 3  # the parent + up to 2 fresh workers, added only while unclear
BENCHMARK_BUDGET_S = 8.0  # the same in the performance run (the ``benchmark`` setting)
BENCHMARK_PROCESSES = 5
DEFAULT_CONFIDENCE = 0.95
INCONCLUSIVE_POLICIES = ("estimate", "fail", "skip")
DEFAULT_INCONCLUSIVE = "estimate"
ISOLATIONS = ("fork", "spawn")  # how timing-guard workers start (the ``isolation`` setting)

# Guard metrics: what the counter guards and snapshots count, what scaling() can fit.
COUNTER_METRICS = ("ops", "flops", "bytes", "peak_memory", "syncs")
SCALING_METRICS = ("time", "memory", "ops", "flops")
# Counter metric -> its name in a CounterReport's scalars and in the snapshot file.
SCALAR_NAMES = {"ops": "total_ops", "flops": "flops", "bytes": "bytes_materialized",
                "peak_memory": "peak_memory_bytes", "syncs": "syncs"}

# The stage breakdown's bucket for time outside every ``mmperf::`` label.
OTHER_STAGE = "other (unlabelled)"

DEFAULT_SNAPSHOTS = "mmperf-snapshots.json"
# Set in the side processes of a comparison across commits (pytest_mmperf.baseline.side).
SIDE_ENV = "PYTEST_MMPERF_SIDE"
