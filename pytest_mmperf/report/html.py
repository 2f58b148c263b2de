"""The run's report as one self-contained HTML file (inline CSS and SVG, no scripts, no URLs).

:func:`render_html` reads the JSON structure of :mod:`pytest_mmperf.report.json_report` (so a saved
JSON can
be rendered again) and never imports torch. Sections: the machine and settings, claims (verdict
boxes), one section per family (table and speedup bars; stacked stage bars; efficiency; log-log
scaling plots), the guard table, the pytest-benchmark table, and any other figure records as plain
tables. Figure records understood (``report["figures"]``):

* ``family``: ``{family, title, baseline, rows: [{implementation, median_s, q1_s, q3_s, speedup,
  speedup_ci, throughput, throughput_unit, gflops, peak_fraction, peak_unit, peak_memory_bytes}]}``
* ``breakdown``: ``{family, implementation, stages: {stage: seconds}, total_s}``
* ``scaling``: ``{family, implementation, metric, unit, sizes, values, slope}``
* ``efficiency``: ``{family, implementation, achieved, peak, unit, fraction}``
* ``claim``: ``{title, claimed: [lo, hi], measured: {label: value}, interval: {label: [lo, hi]},
  verdict, text, unit?}``

Any other kind, and a known kind whose record is malformed, is shown as a generic table. Numbers
use units.format_number (``*_s`` keys: units.format_seconds, ``*_bytes`` keys:
units.format_bytes); each cell's ``title`` holds the exact JSON value. The SVG charts
come from :mod:`pytest_mmperf.report.charts`.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_mmperf.files import write_text_atomic
from pytest_mmperf.report.charts import (
    Fills,
    breakdown_chart,
    claim_chart,
    scaling_chart,
    speedup_chart,
    stage_union,
)
from pytest_mmperf.report.comparisons import comparison_section
from pytest_mmperf.report.figures import claim_budget_note, claim_label_note, format_interval
from pytest_mmperf.report.headline import family_answers, family_roofline_flags
from pytest_mmperf.units import format_bytes, format_number, format_seconds

KNOWN_KINDS = ("family", "breakdown", "scaling", "efficiency", "claim")
# Okabe-Ito colours (distinguishable with colour-vision deficiency) and hatch patterns.
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.4;overflow-wrap:break-word}
h1{font-size:1.6em}h2{border-bottom:2px solid #444;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.5em}.table-wrap{max-width:100%;overflow-x:auto;margin:.6em 0}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #bbb;padding:.2em .4em;vertical-align:top;overflow-wrap:break-word}
table.raw td,table.raw th,table.breakdown th{overflow-wrap:anywhere}
th{background:#eee;text-align:left;font-weight:600;font-size:.92em}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap;
overflow-wrap:normal}
td.num.wrap{white-space:normal}.nw{white-space:nowrap}
td.num .unit{font-size:.85em;color:#555}
.verdict-fail,.verdict-bad{background:#fde2e1}.verdict-pass,.verdict-good{background:#e3f4e1}
.verdict-inconclusive,.verdict-neutral{background:#fff4d6}
.claim{border:3px solid #444;border-radius:6px;padding:.6em 1em;margin:1em 0}
.claim .verdict{font-size:1.25em;font-weight:bold}
svg{display:block;margin:.5em 0;max-width:100%;height:auto}
svg text{font-family:inherit;font-size:12px}nav a{margin-right:1em}.note{color:#555;font-size:.9em}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def format_value(value: Any, key: str = "") -> str:
    """A JSON value as table text: seconds for ``*_s`` keys, bytes for ``*_bytes``, numbers with
    :func:`format_number`, lists and mappings inline."""
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, (int, float)):
        if key.endswith("_s") and math.isfinite(value):
            return format_seconds(value)
        if key.endswith("_bytes"):
            return format_bytes(value)
        return format_number(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={format_value(v, str(k))}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v, key) for v in value) + "]"
    return str(value)


def _td(value: Any, key: str = "") -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    cls = ' class="num"' if numeric or value is None else ""
    title = f' title="{_e(repr(value))}"' if numeric else ""
    return f"<td{cls}{title}>{_e(format_value(value, key))}</td>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """``rows`` hold ready-made ``<td>`` cells. Headers may break after ``_`` (``weighted_sum``,
    ``samples_per_process``); the table sits in a wrapper that scrolls only where a window is
    too narrow for it even so (the report's own tables fit at 760 px and wider)."""
    head = "".join(f"<th>{_e(h).replace('_', '_<wbr>')}</th>" for h in headers)
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    attr = f' class="{_e(cls)}"' if cls else ""
    return (f'<div class="table-wrap"><table{attr}><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _kv_table(mapping: Mapping[str, Any]) -> str:
    if not mapping:
        return '<p class="note">None recorded.</p>'
    return _table(("key", "value"), ([f"<th>{_e(k)}</th>", _td(v, str(k))]
                                     for k, v in mapping.items()), "raw")


def _generic_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Records of any shape: one column per key (union, first-seen order)."""
    keys: list[str] = []
    for rec in records:
        keys.extend(str(k) for k in rec if str(k) not in keys)
    return _table(keys, ([_td(rec.get(k), k) for k in keys] for rec in records), "raw")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "x"


def _verdict_class(verdict: str) -> str:
    v = verdict.lower()
    if v in ("pass", "fail", "inconclusive"):
        return f"verdict-{v}"
    if any(w in v for w in ("not ", "refut", "fail", "contradict", "slower", "no ")):
        return "verdict-bad"
    if any(w in v for w in ("confirm", "holds", "pass", "support", "true")):
        return "verdict-good"
    return "verdict-neutral"


# ----------------------------------------------------------------------------- sections

_RENDER_ERRORS = (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, AttributeError)


class _Doc:
    """Per-document state: unique SVG ids and the stage fills shared by all breakdown charts."""

    def __init__(self) -> None:
        self.count = 0
        self.fills = Fills()

    def new_id(self) -> str:
        self.count += 1
        return f"mm{self.count}"


def _num_unit(value: Any, unit: Any, text: str | None = None) -> str:
    """A number cell whose unit may wrap under it (long units never widen the table)."""
    if value is None:
        return '<td class="num">-</td>'
    shown = text if text is not None else format_number(value)
    tail = f' <span class="unit">{_e(unit)}</span>' if unit else ""
    return (f'<td class="num wrap" title="{_e(repr(value))}"><span class="nw">{_e(shown)}</span>'
            f"{tail}</td>")


def _interval_cell(interval: Any) -> str:
    """``[lo, hi]`` (:func:`format_interval`), which may break after the comma; ``-`` without
    a measured interval."""
    text = format_interval(interval)
    if not text:
        return '<td class="num">-</td>'
    low, high = text.split(", ")
    return (f'<td class="num wrap"><span class="nw">{_e(low)},</span> '
            f'<span class="nw">{_e(high)}</span></td>')


def _family_table(rec: Mapping[str, Any]) -> str:
    """The implementations' table; a column no row has a value for (GFLOP/s of a family
    without FLOPs, peak memory where it was not measured) is left out."""
    columns: list[tuple[str, Any]] = [
        ("implementation", lambda row: (
            f"<td>{_e(row.get('implementation', '?'))}"
            f"{' (baseline)' if row.get('implementation') == rec.get('baseline') else ''}</td>")),
        ("median", lambda row: _td(row.get("median_s"), "median_s")),
        ("q1 – q3", lambda row: (
            f'<td class="num wrap"><span class="nw">{_e(format_value(row.get("q1_s"), "q1_s"))}'
            f'</span> – <span class="nw">{_e(format_value(row.get("q3_s"), "q3_s"))}</span></td>')),
        ("speedup", lambda row: _td(row.get("speedup"))),
        ("interval", lambda row: _interval_cell(row.get("speedup_ci"))),
        ("throughput", lambda row: _num_unit(row.get("throughput"),
                                             row.get("throughput_unit"))),
        ("GFLOP/s", lambda row: _td(row.get("gflops"))),
        ("of peak", lambda row: _num_unit(
            row.get("peak_fraction"),
            f"({row['peak_unit']})" if row.get("peak_unit") else None,
            None if row.get("peak_fraction") is None
            else f"{format_number(100 * row['peak_fraction'])} %")),
        ("peak memory", lambda row: _td(row.get("peak_memory_bytes"), "peak_memory_bytes")),
    ]
    optional = {"GFLOP/s": "gflops", "of peak": "peak_fraction",
                "peak memory": "peak_memory_bytes"}
    kept = [(head, cell) for head, cell in columns
            if head not in optional
            or any(row.get(optional[head]) is not None for row in rec["rows"])]
    rows = [[cell(row) for _, cell in kept] for row in rec["rows"]]
    return _table([head for head, _ in kept], rows, "family")


def _family_section(rec: Mapping[str, Any], doc: _Doc) -> str:
    title = str(rec.get("title") or rec["family"])
    chart = speedup_chart(rec["rows"], f"speedup over {rec.get('baseline', 'the baseline')}: "
                          f"{title}", doc.new_id())
    note = (f'<p class="note">Baseline: {_e(rec.get("baseline", "-"))}. Median time per call, '
            f"its interquartile range, and the speedup over the baseline with its interval.</p>")
    return _family_table(rec) + note + chart


def _breakdown_section(records: Sequence[Mapping[str, Any]], family: str, doc: _Doc) -> str:
    chart = breakdown_chart(records, doc.fills, f"time per stage: {family}", doc.new_id())
    stages = stage_union(records)
    # One unit for the whole table (the cells carry numbers only, so that many stages fit).
    values = [float(v) for rec in records for v in (*rec["stages"].values(), rec.get("total_s"))
              if isinstance(v, (int, float)) and math.isfinite(v)]
    top = max(values, default=1.0)
    unit, scale = ("s", 1.0) if top >= 1 else ("ms", 1e3) if top >= 1e-3 else ("us", 1e6)

    def cell(value: Any) -> str:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return _td(value)
        return f'<td class="num" title="{_e(repr(value))}">{_e(format_number(value * scale))}</td>'

    rows = [[f"<td>{_e(rec.get('implementation', '?'))}</td>"]
            + [cell(rec["stages"].get(s)) for s in stages] + [cell(rec.get("total_s"))]
            for rec in records]
    return ("<h4>Where the time goes</h4>" + chart
            + f'<p class="note">Time per call in each stage, in {unit}.</p>'
            + _table(["implementation", *stages, "total"], rows, "breakdown"))


def _efficiency_section(records: Sequence[Mapping[str, Any]]) -> str:
    rows = [[f"<td>{_e(r.get('implementation', '?'))}</td>", _td(r.get("achieved")),
             _td(r.get("peak")), f"<td>{_e(r.get('unit', ''))}</td>",
             f'<td class="num" title="{_e(repr(r["fraction"]))}">'
             f'{_e(format_number(100 * float(r["fraction"])))} %</td>'] for r in records]
    return ("<h4>Efficiency against this machine's measured peaks</h4>"
            + _table(("implementation", "achieved", "peak", "unit", "fraction of peak"), rows))


def _scaling_section(records: Sequence[Mapping[str, Any]], family: str, doc: _Doc) -> str:
    out = []
    metrics: dict[str, list[Mapping[str, Any]]] = {}
    for rec in records:
        metrics.setdefault(str(rec.get("metric", "?")), []).append(rec)
    for metric, recs in metrics.items():
        unit = str(recs[0].get("unit", ""))
        out.append(f"<h4>Scaling of {_e(metric)} ({_e(unit)})</h4>")
        out.append(scaling_chart(recs, f"{metric} against size, log-log: {family}"))
        sizes: list[Any] = []
        for rec in recs:
            sizes.extend(s for s in rec["sizes"] if s not in sizes)
        rows = []
        for rec in recs:
            values = dict(zip(rec["sizes"], rec["values"], strict=True))
            key = "value_s" if unit in ("s", "seconds") else (
                "value_bytes" if unit in ("bytes", "B") else "value")
            rows.append([f"<td>{_e(rec.get('implementation', '?'))}</td>", _td(rec.get("slope"))]
                        + [_td(values.get(s), key) for s in sizes])
        out.append(_table(["implementation", "slope", *(format_number(s) for s in sizes)], rows))
    return "".join(out)


def _claim_box(claim: Mapping[str, Any], doc: _Doc) -> str:
    verdict = str(claim.get("verdict", "?"))
    unit = f" {claim['unit']}" if claim.get("unit") else ""
    lo, hi = claim["claimed"]
    intervals = claim.get("interval") or {}
    items = []
    for name, value in (claim.get("measured") or {}).items():
        ci = format_interval(intervals.get(name))
        items.append(f"<li>{_e(name)}: <b>{_e(format_number(value))}{_e(unit)}</b>"
                     f"{_e(' ' + ci if ci else '')}{_e(claim_label_note(claim, name))}</li>")
    title = str(claim.get("title", "claim"))
    chart = claim_chart(claim, f"claimed range and measured values: {title}", doc.new_id())
    return (f'<div class="claim {_verdict_class(verdict)}"><h3>{_e(title)}</h3>'
            f'<p class="verdict">Verdict: {_e(verdict)}</p>'
            f"<p>Claimed: {_e(format_number(lo))} to {_e(format_number(hi))}{_e(unit)}</p>"
            f"<ul>{''.join(items)}</ul><p>{_e(claim.get('text', ''))}</p>"
            + (f'<p class="note">{_e(budget)}</p>' if (budget := claim_budget_note(claim)) else "")
            + f"{chart}</div>")


def _safe(render: Any, records: Sequence[Mapping[str, Any]], *args: Any) -> str:
    """Render known records; a malformed record falls back to a generic table, never a crash."""
    try:
        return str(render(*args))
    except _RENDER_ERRORS as exc:
        return (f'<p class="note">Could not plot these records ({_e(type(exc).__name__)}: '
                f"{_e(exc)}); their raw values:</p>" + _generic_table(records))


def _guard_table(guards: Sequence[Mapping[str, Any]]) -> str:
    keys: list[str] = []
    for g in guards:
        keys.extend(str(k) for k in g if str(k) not in keys)
    rows = []
    for g in guards:
        cells = []
        for k in keys:
            cell = _td(g.get(k), k)
            if k == "verdict":
                cell = cell.replace("<td", f'<td class="{_verdict_class(str(g.get(k)))}"', 1)
            cells.append(cell)
        rows.append(cells)
    return _table(keys, rows, "guards raw")


def _benchmark_table(rows: Sequence[Mapping[str, Any]]) -> str:
    headers = ("name", "group", "median", "IQR", "q1", "q3", "min", "max", "rounds", "extra_info")
    keys = ("name", "group", "median_s", "iqr_s", "q1_s", "q3_s", "min_s", "max_s", "rounds",
            "extra_info")
    return _table(headers, ([_td(r.get(k), k) for k in keys] for r in rows), "benchmarks raw")


def _families_in_order(figures: Sequence[Mapping[str, Any]]) -> list[str]:
    order: list[str] = []
    for fig in figures:
        fam = fig.get("family")
        if fig.get("kind") in KNOWN_KINDS and fam is not None and str(fam) not in order:
            order.append(str(fam))
    return order


def _summary_list(figures: Sequence[Mapping[str, Any]]) -> str:
    answers = family_answers(figures)
    if not answers:
        return ""
    items = []
    for a in answers:
        speedup = a.speedup_text()
        if speedup is None:
            speed = f"<b>{_e(a.fastest)}</b> (the baseline) is fastest"
        else:
            factor, interval = speedup
            speed = (f"<b>{_e(a.fastest)}</b>: <b>{_e(factor)}</b>{_e(interval)} "
                     f"over {_e(a.baseline)}")
        peak = ("" if a.peak_fraction is None else
                f"; {_e(f'{100 * a.peak_fraction:.1f}')} % of peak ({_e(a.peak_unit or '')})")
        items.append(f'<li><a href="#family-{_e(_slug(a.family))}">{_e(a.family)}</a>: {speed}; '
                     f"bottleneck {_e(a.bottleneck())}{peak}</li>")
    items += [f'<li class="flag">Below roofline: {_e(line)}</li>'
              for line in family_roofline_flags(figures)]
    return '<ul class="summary">' + "".join(items) + "</ul>"


def render_html(report: Mapping[str, Any]) -> str:
    """The whole report as one offline HTML page (see the module docstring)."""
    doc = _Doc()
    figures = [f for f in report.get("figures") or [] if isinstance(f, Mapping)]
    machine, settings = report.get("machine") or {}, report.get("settings") or {}
    body = [f"<h1>pytest-mmperf report</h1><p>Created {_e(report.get('created', '-'))}; "
            f"schema {_e(report.get('schema', '-'))}.</p>",
            '<nav><a href="#summary">Summary</a><a href="#claims">Claims</a>'
            '<a href="#families">Families</a><a href="#guards">Guards</a>'
            '<a href="#benchmarks">Benchmarks</a><a href="#other">Other figures</a>'
            '<a href="#machine">Machine</a></nav>']
    # The answer first: comparisons across commits (slowest first), then per family the fastest
    # implementation, its speedup, the bottleneck and the fraction of peak; then the claims;
    # the details follow, the machine last.
    compared = _safe(comparison_section, report.get("guards") or [], report.get("guards") or [])
    if compared:
        body[-1] = body[-1].replace("<nav>", '<nav><a href="#baseline">vs baseline</a>', 1)
        body.append(compared)
    body.append('<h2 id="summary">Summary</h2>')
    answers = _safe(_summary_list, figures, figures)
    body.append(answers if answers else '<p class="note">No family was measured.</p>')
    claims = [f for f in figures if f.get("kind") == "claim"]
    body.append('<h2 id="claims">Claims</h2>')
    body.extend(_safe(_claim_box, [c], c, doc) for c in claims)
    if not claims:
        body.append('<p class="note">No claim was checked in this run.</p>')
    body.append('<h2 id="families">Families</h2>')
    for family in _families_in_order(figures):
        recs = [f for f in figures
                if f.get("kind") in KNOWN_KINDS and str(f.get("family")) == family]
        fam = [r for r in recs if r.get("kind") == "family"]
        title = str(fam[0].get("title") or family) if fam else family
        body.append(f'<h3 id="family-{_e(_slug(family))}">{_e(title)}</h3>')
        body.extend(_safe(_family_section, [r], r, doc) for r in fam)
        for kind, render in (("breakdown", _breakdown_section), ("scaling", _scaling_section)):
            group = [r for r in recs if r.get("kind") == kind]
            if group:
                body.append(_safe(render, group, group, family, doc))
        eff = [r for r in recs if r.get("kind") == "efficiency"]
        if eff:
            body.append(_safe(_efficiency_section, eff, eff))
    guards = report.get("guards") or []
    body += ['<h2 id="guards">Guards</h2>', _guard_table(guards) if guards
             else '<p class="note">No guard ran.</p>']
    benches = report.get("benchmarks") or []
    body += ['<h2 id="benchmarks">Benchmarks (pytest-benchmark)</h2>',
             _benchmark_table(benches) if benches else '<p class="note">No benchmark ran.</p>']
    other: dict[str, list[Mapping[str, Any]]] = {}
    for fig in figures:
        fig_kind = fig.get("kind")
        if fig_kind not in KNOWN_KINDS or (fig_kind != "claim" and fig.get("family") is None):
            other.setdefault(str(fig_kind), []).append(fig)
    body.append('<h2 id="other">Other figures</h2>')
    for kind, recs in other.items():
        body += [f"<h3>{_e(kind)}</h3>", _generic_table(recs)]
    if not other:
        body.append('<p class="note">None.</p>')
    body += ['<h2 id="machine">Machine and settings</h2>', _kv_table(machine),
             "<h3>Settings</h3>", _kv_table(settings)]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>pytest-mmperf report</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_html(path: str | os.PathLike[str], report: Mapping[str, Any]) -> Path:
    """Render ``report`` and write it to ``path`` atomically; return the path."""
    return write_text_atomic(path, render_html(report))
