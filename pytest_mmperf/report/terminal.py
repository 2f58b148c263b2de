"""Text tables of the report's figure records for the terminal summary (at most ``width`` columns).

The same records as the HTML report (:mod:`pytest_mmperf.report.html`): claims first, then per
family
the implementation table, the stage breakdown (percent of each implementation's time) and the
efficiency figures. Scaling records are summarised by their fitted slope. No torch, no pytest.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_mmperf.report.figures import claim_budget_note, claim_label_note, format_interval
from pytest_mmperf.report.guard_table import TABLE_WIDTH
from pytest_mmperf.report.headline import headline_lines
from pytest_mmperf.units import format_bytes, format_number, format_seconds

KNOWN_KINDS = ("family", "breakdown", "scaling", "efficiency", "claim")
_MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError, ZeroDivisionError)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _row(cells: Sequence[tuple[str, int, str]], width: int) -> str:
    """``cells`` = (text, column width, '<' or '>'); the first column absorbs spare width."""
    first, rest = cells[0], cells[1:]
    fixed = sum(w + 1 for _, w, _ in rest)
    name_w = max(8, width - fixed)
    line = f"{_fit(first[0], name_w):<{name_w}}"
    line += "".join(f" {_fit(t, w):{a}{w}}" for t, w, a in rest)
    return _fit(line.rstrip(), width)


# Column widths after the implementation column: median, IQR, speedup, interval, throughput,
# GFLOP/s, %peak, peak memory.
_LAYOUT: tuple[tuple[int, str], ...] = ((0, "<"), (9, ">"), (9, ">"), (7, ">"), (14, ">"),
                                        (10, ">"), (7, ">"), (6, ">"), (10, ">"))


def _family_lines(rec: Mapping[str, Any], width: int) -> list[str]:
    def cells(row: Mapping[str, Any] | None) -> list[tuple[str, int, str]]:
        if row is None:
            heads = ("implementation", "median", "IQR", "speedup", "interval", thr_unit,
                     "GFLOP/s", "%peak", "peak mem")
            return [(h, w, a) for h, (w, a) in zip(heads, _LAYOUT, strict=True)]
        ci = row.get("speedup_ci")
        q1, q3 = row.get("q1_s"), row.get("q3_s")
        thr = row.get("throughput")
        fraction = row.get("peak_fraction")
        name = str(row.get("implementation", "?"))
        if name == rec.get("baseline"):
            name += " *"
        values = (
            name,
            format_seconds(row.get("median_s")),
            "-" if q1 is None or q3 is None else format_seconds(q3 - q1),
            "-" if row.get("speedup") is None else f"{format_number(row['speedup'])}x",
            format_interval(ci) or "-",
            format_number(thr),
            format_number(row.get("gflops")),
            "-" if fraction is None else f"{format_number(100 * fraction)}%",
            format_bytes(row.get("peak_memory_bytes")),
        )
        return [(v, w, a) for v, (w, a) in zip(values, _LAYOUT, strict=True)]

    units = {str(r.get("throughput_unit")) for r in rec["rows"] if r.get("throughput_unit")}
    thr_unit = units.pop() if len(units) == 1 else "throughput"
    title = str(rec.get("title") or rec.get("family"))
    lines = [_row(cells(None), width), "-" * min(width, 100)]
    lines += [_row(cells(row), width) for row in rec["rows"]]
    lines += textwrap.wrap(f"* baseline ({rec.get('baseline', '-')}); median and IQR (q3 - q1) "
                           f"of the time per call; interval: the speedup's confidence interval",
                           width)
    return [_fit(f"{title}", width)] + lines


def _breakdown_lines(records: Sequence[Mapping[str, Any]], width: int) -> list[str]:
    """``impl  total  stage 45% | stage 30% | ...`` wrapped to ``width``."""
    lines = ["stage breakdown (share of each implementation's time per call):"]
    for rec in records:
        total = float(rec.get("total_s") or sum(float(v) for v in rec["stages"].values()))
        name = _fit(str(rec.get("implementation", "?")), 22)
        head = f"  {name:<22} {format_seconds(total):>9}  "
        parts = [f"{stage} {100 * float(sec) / total:.0f}%" if total > 0 else f"{stage} -"
                 for stage, sec in rec["stages"].items()]
        line = head
        for part in parts:
            piece = part if line == head else " | " + part
            if len(line) + len(piece) > width and line != head:
                lines.append(line)
                line = " " * len(head) + part
            else:
                line += piece
        lines.append(_fit(line, width))
    return lines


def _efficiency_lines(records: Sequence[Mapping[str, Any]], width: int) -> list[str]:
    lines = ["efficiency against this machine's measured peaks:"]
    for r in records:
        unit = str(r.get("unit", ""))
        lines.append(_fit(
            f"  {_fit(str(r.get('implementation', '?')), 22):<22} "
            f"{format_number(r.get('achieved'))} of {format_number(r.get('peak'))} {unit} "
            f"= {format_number(100 * float(r['fraction']))}% of peak", width))
    return lines


def _scaling_lines(records: Sequence[Mapping[str, Any]], width: int) -> list[str]:
    lines = ["scaling (fitted log-log slope: 1 = linear, 2 = quadratic):"]
    for r in records:
        sizes = list(r.get("sizes") or [])
        span = f"{format_number(sizes[0])}..{format_number(sizes[-1])}" if sizes else "-"
        name = _fit(str(r.get("implementation", "?")), 22)
        lines.append(_fit(f"  {r.get('metric', '?')} {name}: slope "
                          f"{format_number(r.get('slope'))} over sizes {span}", width))
    return lines


def _claim_lines(claim: Mapping[str, Any], width: int) -> list[str]:
    unit = f" {claim['unit']}" if claim.get("unit") else ""
    lo, hi = claim["claimed"]
    lines = [_fit(f"CLAIM {claim.get('title', '')}: claimed {format_number(lo)} to "
                  f"{format_number(hi)}{unit}", width),
             _fit(f"  verdict: {claim.get('verdict', '?')}", width)]
    intervals = claim.get("interval") or {}
    for label, value in (claim.get("measured") or {}).items():
        ci = format_interval(intervals.get(label))
        lines += textwrap.wrap(f"measured {label}: {format_number(value)}{unit}"
                               f"{' ' + ci if ci else ''}{claim_label_note(claim, label)}",
                               width, initial_indent="  ", subsequent_indent="      ")
    for note in (claim.get("text"), claim_budget_note(claim)):
        if note:
            lines += textwrap.wrap(str(note), width, initial_indent="  ", subsequent_indent="  ")
    return lines


def terminal_family_lines(report: Mapping[str, Any], width: int = TABLE_WIDTH) -> list[str]:
    """Claims, then per family its table, stage breakdown, scaling slopes and efficiency, as
    lines of at most ``width`` characters (empty list when the report has no such figures).
    A malformed record becomes one line saying so instead of breaking the summary."""
    figures = [f for f in report.get("figures") or [] if isinstance(f, Mapping)]
    lines: list[str] = []
    answers = _guarded(headline_lines, figures, figures)
    if answers:  # the answer first: one line per family and per claim
        for line in answers:
            lines += textwrap.wrap(line, width, subsequent_indent="    ")
        lines.append("")
    for claim in (f for f in figures if f.get("kind") == "claim"):
        lines += _guarded(_claim_lines, [claim], claim, width)
    families: list[str] = []
    for f in figures:
        if f.get("kind") in KNOWN_KINDS and f.get("family") is not None \
                and str(f["family"]) not in families:
            families.append(str(f["family"]))
    for family in families:
        recs = [f for f in figures
                if str(f.get("family")) == family and f.get("kind") in KNOWN_KINDS]
        lines.append("")
        fam = [r for r in recs if r.get("kind") == "family"]
        if not fam:
            lines.append(_fit(f"{family}", width))
        for rec in fam:
            lines += _guarded(_family_lines, [rec], rec, width)
        for kind, render in (("breakdown", _breakdown_lines), ("scaling", _scaling_lines),
                             ("efficiency", _efficiency_lines)):
            group = [r for r in recs if r.get("kind") == kind]
            if group:
                lines += _guarded(render, group, group, width)
    return [_fit(line, width) for line in lines]


def _guarded(render: Any, records: Sequence[Mapping[str, Any]], *args: Any) -> list[str]:
    try:
        return list(render(*args))
    except _MALFORMED as exc:
        kinds = ", ".join(sorted({str(r.get("kind")) for r in records}))
        return [f"(could not format {len(records)} {kinds} record(s): "
                f"{type(exc).__name__}: {exc})"]
