"""Reports of a run: the terminal table of guard results and the JSON file.

The report works on plain dictionaries (``GuardResult.to_dict()``, pytest-benchmark's stats, the
machine description) so that it never needs torch and so that the JSON written by one run can be
rendered again later (``render_html`` in :mod:`pytest_mmperf.html` reads the same structure).

JSON layout (``schema`` = ``"pytest-mmperf/1"``)::

    {
      "schema": "pytest-mmperf/1",
      "created": "2026-11-28T16:03:27+00:00",
      "machine": {...},            # devices.machine_info()
      "settings": {...},           # resolved mmperf settings of the run
      "guards": [{...}, ...],      # GuardResult.to_dict() in execution order
      "benchmarks": [{...}, ...],  # pytest-benchmark results, see benchmark_rows()
      "figures": [{...}, ...]      # free-form records: efficiency, stage breakdowns, claims
    }
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA = "pytest-mmperf/1"
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


def format_number(value: float | int | None) -> str:
    """Format a figure compactly: ``1.23``, ``45.6``, ``1.2e+06``, ``-`` for missing values."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) and abs(value) < 100_000:
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.2e}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if a < 1 else f"{v:.2f}"


def format_bytes(n: float | int | None) -> str:
    """``1536`` -> ``1.5 KiB``; ``None`` -> ``-``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_seconds(t: float | None) -> str:
    """Human time: ``12.3 us``, ``4.56 ms``, ``1.23 s``."""
    if t is None:
        return "-"
    if t < 1e-3:
        return f"{t * 1e6:.1f} us"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


def _short_test_name(nodeid: str, width: int) -> str:
    """Keep the end of a node id (the test name and its parameters), which is what differs."""
    name = nodeid.split("::", 1)[-1] if "::" in nodeid else nodeid
    if len(name) <= width:
        return name
    return "…" + name[-(width - 1) :]


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
        label = f"{cells['test']}" if not name else f"{cells['test']} [{name}]"
        line = _cell(_short_test_name(label, test_width), test_width, "<")
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


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``.

    An interrupted run leaves any previous file intact: the rename is the only visible step.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; reports are meant to be shared (CI artifacts)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


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
