"""The JSON report of a run: its layout, pytest-benchmark's rows, and writing it.

The report is plain dictionaries (``GuardResult.to_dict()``, pytest-benchmark's stats, the machine
description), so it never needs torch and a JSON written by one run can be rendered again later
(:func:`pytest_mmperf.report.html.render_html` reads the same structure). Layout (``schema`` =
``"pytest-mmperf/2"``; the figures are the records of :mod:`pytest_mmperf.report.figures`)::

    {
      "schema": "pytest-mmperf/2",
      "created": "2026-11-28T16:03:27+00:00",
      "machine": {...},            # devices.machine_info()
      "settings": {...},           # resolved mmperf settings of the run, and the isolation
                                   # the timing workers really got: isolation_used ("none" |
                                   # "fork" | "spawn" | "fork+spawn"), isolation_workers
                                   # {mode: count}, isolation_fallback (why spawn, or null)
      "guards": [{...}, ...],      # GuardResult.to_dict() in execution order
      "benchmarks": [{...}, ...],  # pytest-benchmark results, see benchmark_rows()
      "figures": [{...}, ...]      # {"kind": "family" | "breakdown" | "efficiency" | "scaling"
                                   #  | "claim" | any kind a test adds, ...}
    }
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_mmperf.files import write_text_atomic
from pytest_mmperf.report.figures import SCHEMA


def benchmark_rows(benchmarks: Iterable[Any]) -> list[dict[str, Any]]:
    """Flatten pytest-benchmark ``Metadata`` objects into JSON rows (seconds per call).

    Benchmarks that ran without timing (``--benchmark-disable``) have no stats and are left out.
    """
    rows: list[dict[str, Any]] = []
    for bench in benchmarks:
        stats = (getattr(getattr(bench, "stats", None), "stats", None)
                 or getattr(bench, "stats", None))
        median = getattr(stats, "median", None)
        if median is None:
            continue
        rows.append(
            {
                "name": bench.name,
                "fullname": bench.fullname,
                "group": bench.group,
                "median_s": float(median),
                "iqr_s": float(getattr(stats, "iqr", 0.0)),
                "q1_s": float(getattr(stats, "q1", median)),
                "q3_s": float(getattr(stats, "q3", median)),
                "min_s": float(getattr(stats, "min", median)),
                "max_s": float(getattr(stats, "max", median)),
                "rounds": int(getattr(stats, "rounds", 0)),
                "extra_info": dict(getattr(bench, "extra_info", {}) or {}),
            }
        )
    return rows


def build_report(
    *,
    guards: Sequence[Mapping[str, Any]],
    benchmarks: Sequence[Mapping[str, Any]] = (),
    figures: Sequence[Mapping[str, Any]] = (),
    machine: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the JSON-serialisable report of a run."""
    return {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": dict(machine or {}),
        "settings": dict(settings or {}),
        "guards": [dict(g) for g in guards],
        "benchmarks": [dict(b) for b in benchmarks],
        "figures": [dict(f) for f in figures],
    }


def write_json(path: str | os.PathLike[str], report: Mapping[str, Any]) -> Path:
    """Write the report as indented JSON, atomically. Non-finite floats become ``null``."""
    return write_text_atomic(path, json.dumps(_finite(report), indent=2, sort_keys=False) + "\n")


def _finite(value: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
