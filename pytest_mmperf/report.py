"""Reports of a run: the terminal table of guard results and the JSON file.

The report works on plain dictionaries (``GuardResult.to_dict()``, pytest-benchmark's stats, the
machine description) so that it never needs torch and so that the JSON written by one run can be
rendered again later (``render_html`` in :mod:`pytest_mmperf.html` reads the same structure).

JSON layout (``schema`` = ``"pytest-mmperf/2"``: figures are the typed records of
:mod:`pytest_mmperf.figures`)::

    {
      "schema": "pytest-mmperf/2",
      "created": "2026-11-28T16:03:27+00:00",
      "machine": {...},            # devices.machine_info()
      "settings": {...},           # resolved mmperf settings of the run
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

from pytest_mmperf.figures import SCHEMA
from pytest_mmperf.files import write_text_atomic
from pytest_mmperf.units import format_number

TABLE_WIDTH = 100

# Column layout of the guard table: (header, width, alignment). The test column absorbs the rest.
_COLUMNS: tuple[tuple[str, int, str], ...] = (
    ("metric", 11, "<"),
    ("estimate", 9, ">"),
    ("interval", 17, ">"),
    ("threshold", 9, ">"),
    ("verdict", 12, "<"),
    ("n x proc", 8, ">"),
    ("device", 7, "<"),
)


def _cell(text: str, width: int, align: str) -> str:
    if len(text) > width:
        text = text[: width - 1] + "…"
    return f"{text:{align}{width}}"


def guard_row(result: Mapping[str, Any]) -> dict[str, str]:
    """The table cells of one guard result (a ``GuardResult.to_dict()``)."""
    low, high = result.get("ci_low"), result.get("ci_high")
    interval = ("-" if low is None or high is None
                else f"[{format_number(low)}, {format_number(high)}]")
    verdict = str(result.get("verdict", "?"))
    if result.get("decided_by") == "estimate" and verdict in ("pass", "fail"):
        verdict += "~"  # decided by the point estimate after an inconclusive interval
    samples = result.get("samples_per_process") or []
    total = sum(int(s) for s in samples)
    n_proc = int(result.get("n_processes") or len(samples) or 0)
    counts = f"{total}x{n_proc}" if samples else "-"
    device = result.get("device") or "-"
    if isinstance(device, (list, tuple)):
        device = ",".join(str(d) for d in device)
    threshold = result.get("threshold")
    if result.get("kind") == "snapshot" and threshold is not None:  # relative tolerance(s)
        widest = max(threshold.values()) if isinstance(threshold, Mapping) else threshold
        threshold = f"±{float(widest):.0%}"
    elif isinstance(threshold, Mapping):  # max_ops: {op: limit}
        threshold = ",".join(f"{op.split('.')[-1]}<={n:g}" for op, n in threshold.items())
    return {
        "test": str(result.get("nodeid", "")),
        "metric": str(result.get("metric") or result.get("kind") or "-"),
        "estimate": format_number(result.get("estimate")),
        "interval": interval,
        "threshold": format_number(threshold) if not isinstance(threshold, str) else threshold,
        "verdict": verdict,
        "n x proc": counts,
        "device": str(device),
    }


def format_guard_table(results: Sequence[Mapping[str, Any]], width: int = TABLE_WIDTH) -> list[str]:
    """Render guard results as a fixed-width table (one line per guard) fitting ``width`` columns.

    ``~`` after a verdict means the confidence interval straddled the threshold when the budget ran
    out and the point estimate decided (see the README's decision rule).
    """
    fixed = sum(w for _, w, _ in _COLUMNS) + len(_COLUMNS)  # one space between columns
    test_width = max(16, width - fixed)
    header = _cell("test", test_width, "<") + "".join(
        " " + _cell(name, w, align) for name, w, align in _COLUMNS
    )
    lines = [header, "-" * len(header)]
    for result in results:
        cells = guard_row(result)
        name = result.get("name")
        test = cells["test"].split("::", 1)[-1] if "::" in cells["test"] else cells["test"]
        label = test if not name else f"{test} [{name}]"
        if len(label) > test_width:  # the whole test id on its own line, the numbers below it
            lines.append(cells["test"] if not name else f"{cells['test']} [{name}]")
            label = "  ↳"
        line = _cell(label, test_width, "<")
        line += "".join(" " + _cell(cells[col], w, align) for col, w, align in _COLUMNS)
        lines.append(line.rstrip())
    return lines


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
