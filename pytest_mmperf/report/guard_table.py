"""The terminal table of guard results: one fixed-width line per guard call.

Works on ``GuardResult.to_dict()`` dictionaries, so a saved JSON report renders the same table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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
