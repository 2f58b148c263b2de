"""The report's "vs REV" part: comparisons across commits, slowest first.

Reads the guard rows of kind ``baseline`` (:mod:`pytest_mmperf.baseline.compare`) from the JSON
report's ``guards`` and renders one bar per comparison with its interval (the time ratio of the
working tree to REV; right of 1 is slower), a table, and the terminal's summary lines. No torch,
no pytest.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_mmperf.report.charts import _nice_ticks, _short, _Svg
from pytest_mmperf.units import format_number, format_seconds

KIND = "baseline"
_COLOURS = {"slower": "#D55E00", "faster": "#009E73", "same": "#0072B2", "undecided": "#999999"}


def comparison_rows(guards: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The baseline rows, slowest first; those without a ratio (new, errors) last."""
    rows = [g for g in guards if g.get("kind") == KIND]
    return sorted(rows, key=lambda g: (g.get("estimate") is None,
                                       -float(g.get("estimate") or 0.0)))


def row_label(row: Mapping[str, Any]) -> str:
    test = str(row.get("nodeid", "")).split("::", 1)[-1]
    return f"{test} [{row['name']}]" if row.get("name") else test


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def comparison_chart(rows: Sequence[Mapping[str, Any]], revision: str) -> str:
    """Horizontal bars of ``t(working tree) / t(REV)`` from 1x, whiskers for the interval, a
    dashed line at the tolerated ratio. Bars are ``<rect class="bar" data-test=...>``."""
    left, right, row_h, top = 260.0, 90.0, 26.0, 10.0
    plot_w = 420.0
    measured = [r for r in rows if _finite(r.get("estimate"))]
    values = [1.0] + [float(r["estimate"]) for r in measured]
    values += [float(r["ci_high"]) for r in measured if _finite(r.get("ci_high"))]
    values += [float(r["threshold"]) for r in measured if _finite(r.get("threshold"))]
    values += [float(r["ci_low"]) for r in measured if _finite(r.get("ci_low"))]
    lo, hi = min(values) * 0.95, max(values) * 1.05
    scale = plot_w / max(hi - lo, 1e-9)
    height = top + row_h * max(1, len(rows)) + 40

    def px(value: float) -> float:
        return left + (value - lo) * scale

    svg = _Svg(left + plot_w + right, height, f"time ratio against {revision}")
    for tick in _nice_ticks(hi):
        if tick >= lo:
            svg.el("line", x1=px(tick), x2=px(tick), y1=top, y2=height - 32, stroke="#e5e5e5")
            svg.el("text", f"{tick:g}x", x=px(tick), y=height - 18, text_anchor="middle")
    for i, row in enumerate(rows):
        y = top + i * row_h
        label = row_label(row)
        short = str(row.get("name") or label.split("[")[0].strip())  # the chart's own label
        svg.el("text", _short(short, 38), x=left - 6, y=y + 17, text_anchor="end")
        if not _finite(row.get("estimate")):
            svg.el("text", str(row.get("verdict", "-")), x=px(1.0) + 4, y=y + 17, fill="#555")
            continue
        ratio = float(row["estimate"])
        change = str((row.get("extra") or {}).get("change", "undecided"))
        x0, x1 = sorted((px(1.0), px(ratio)))
        svg.el("rect", x=x0, y=y + 5, width=max(x1 - x0, 1.0), height=16.0, class_="bar",
               data_test=label, data_ratio=repr(ratio),
               fill=_COLOURS.get(change, "#999999"), stroke="#000", stroke_width="0.5")
        end = x1
        if _finite(row.get("ci_low")) and _finite(row.get("ci_high")) \
                and float(row["ci_low"]) < float(row["ci_high"]):
            a, b = px(float(row["ci_low"])), px(float(row["ci_high"]))
            svg.el("line", x1=a, x2=b, y1=y + 13, y2=y + 13, stroke="#000", stroke_width="1.5",
                   class_="whisker")
            for x in (a, b):
                svg.el("line", x1=x, x2=x, y1=y + 7, y2=y + 19, stroke="#000", stroke_width="1.5")
            end = max(end, b)
        svg.el("text", f"{format_number(ratio)}x", x=end + 5, y=y + 17)
    svg.el("line", x1=px(1.0), x2=px(1.0), y1=top - 4, y2=height - 32, stroke="#000",
           class_="one-x")
    limits = {float(r["threshold"]) for r in measured if _finite(r.get("threshold"))}
    for limit in sorted(limits):
        svg.el("line", x1=px(limit), x2=px(limit), y1=top - 4, y2=height - 32, stroke="#D55E00",
               stroke_dasharray="4 3", class_="tolerance")
    svg.el("text", f"time at the working tree / time at {revision} (right of 1x: slower; "
                   "dashed: tolerated)", x=left, y=height - 4, fill="#555")
    return svg.render()


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def comparison_section(guards: Sequence[Mapping[str, Any]]) -> str:
    """The HTML section (empty string when the run compared nothing)."""
    rows = comparison_rows(guards)
    if not rows:
        return ""
    extra = rows[0].get("extra") or {}
    revision = str(extra.get("revision", "REV"))
    commit = str(extra.get("commit", ""))[:12]
    counts: dict[str, int] = {}
    for row in rows:
        key = str((row.get("extra") or {}).get("change") or row.get("verdict"))
        counts[key] = counts.get(key, 0) + 1
    summary = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    body = [f'<h2 id="baseline">vs {_e(revision)}</h2>',
            f"<p>The working tree against {_e(revision)} ({_e(commit)}), both measured in this "
            f"run in lockstep: {len(rows)} comparison{'s' if len(rows) != 1 else ''} "
            f"({_e(summary)}), slowest first.</p>",
            f'<div class="chart">{comparison_chart(rows, revision)}</div>']
    lines = []
    for row in rows:
        ex = row.get("extra") or {}
        interval = ("-" if not _finite(row.get("ci_low")) else
                    f"[{format_number(row['ci_low'])}, {format_number(row['ci_high'])}]")
        heads, revs = ex.get("candidate_median_s") or [], ex.get("baseline_median_s") or []
        lines.append(
            f"<tr><td>{_e(row_label(row))}</td><td>{_e(row.get('verdict'))}</td>"
            f'<td class="num">{_e(format_number(row.get("estimate")))}</td>'
            f'<td class="num wrap">{_e(interval)}</td>'
            f'<td class="num">{_e(_median_text(heads))}</td>'
            f'<td class="num">{_e(_median_text(revs))}</td>'
            f'<td class="num">{_e(row.get("n_processes"))}</td></tr>')
    body.append('<div class="table-wrap"><table class="comparisons raw"><thead><tr><th>test</th>'
                "<th>verdict</th><th>ratio</th><th>interval</th><th>working tree</th>"
                f"<th>{_e(revision)}</th><th>pairs</th></tr></thead><tbody>"
                + "".join(lines) + "</tbody></table></div>")
    return "\n".join(body)


def _median_text(values: Sequence[float]) -> str:
    finite = sorted(float(v) for v in values if _finite(v))
    if not finite:
        return "-"
    return format_seconds(finite[len(finite) // 2])


def terminal_lines(guards: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per comparison, slowest first, under a heading naming REV."""
    rows = comparison_rows(guards)
    if not rows:
        return []
    extra = rows[0].get("extra") or {}
    out = [f"vs {extra.get('revision', 'REV')} ({str(extra.get('commit', ''))[:12]}), "
           "slowest first: time ratio of the working tree to it"]
    for row in rows:
        if _finite(row.get("estimate")):
            text = (f"{format_number(row['estimate'])}x [{format_number(row.get('ci_low'))}, "
                    f"{format_number(row.get('ci_high'))}] "
                    f"{(row.get('extra') or {}).get('change', '')}")
        else:
            text = str(row.get("verdict"))
        out.append(f"  {row_label(row)}: {text}")
    return out
