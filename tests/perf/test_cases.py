"""Every case of ``benchmarks/cases.py`` is guarded here as soon as it is registered.

The asv suite takes its ``params`` from the same registries, so adding one entry to
``PREPROCESS_CASES``, ``ATTENTION_CASES`` or ``LONG_CASES`` gives both: asv tracks the case per
commit, and this file snapshots its deterministic counters (dispatched ops, FLOPs, peak tensor
memory) per implementation, failing until the new case is recorded with
``pytest --mmperf-update-snapshots`` and whenever a counter moves afterwards. (Disk pipelines
have no counters to snapshot: their work happens in DataLoader worker processes.)
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.cases import (
    ATTENTION_CASES,
    ATTENTION_IMPLS,
    LONG_CASES,
    LONG_IMPLS,
    PREPROCESS_CASES,
    PREPROCESS_IMPLS,
)

CASES = (
    [pytest.param(case, impl, id=f"preprocess-{key}-{impl}")
     for key, case in PREPROCESS_CASES.items() for impl in PREPROCESS_IMPLS]
    + [pytest.param(case, impl, id=f"attention-{key}-{impl}")
       for key, case in ATTENTION_CASES.items() for impl in ATTENTION_IMPLS]
    + [pytest.param(case, impl, id=f"long-{key}-{impl}")
       for key, case in LONG_CASES.items() for impl in LONG_IMPLS]
)
@pytest.mark.parametrize(("case", "impl"), CASES)
def test_registered_case_counters(snapshot: Any, build_or_skip: Any, case: Any, impl: str
                                  ) -> None:
    work = build_or_skip(case, impl)
    # (the counters' own warm-up call keeps one-time allocations out of the peak)
    result = snapshot(f"case/{case.name}/{impl}", work.fn)
    assert result.extra["values"]["total_ops"] > 0, "a workload that dispatches no op"
