"""The run's report as one self-contained HTML file (inline CSS and SVG, no scripts, no URLs).

:func:`render_html` reads the JSON structure of :mod:`pytest_mmperf.report` (so a saved JSON can
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
use :func:`report.format_number` (``*_s`` keys: :func:`report.format_seconds`, ``*_bytes`` keys:
:func:`report.format_bytes`); each cell's ``title`` holds the exact JSON value. Every bar carries
its number as text and stages are told apart by hatch patterns as well as colours, so the page
reads in greyscale too.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_mmperf.report import format_bytes, format_number, format_seconds, write_text_atomic

OTHER_STAGE = "other (unlabelled)"  # = pytest_mmperf.stages.OTHER_STAGE (not imported: torch-free)
KNOWN_KINDS = ("family", "breakdown", "scaling", "efficiency", "claim")
# Okabe-Ito colours (distinguishable with colour-vision deficiency) and hatch patterns.
_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")
_HATCHES = ("", "M0,8 L8,0", "M0,0 L8,8", "M0,4 L8,4", "M4,0 L4,8", "M0,8 L8,0 M0,0 L8,8")
_MARKERS = ("circle", "square", "triangle", "diamond")
_DASHES = ("", "6 3", "2 3", "8 3 2 3")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;
max-width:1100px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:2px solid #444;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.5em}table{border-collapse:collapse;margin:.6em 0;font-size:.9em;display:block;
overflow-x:auto;max-width:100%}
th,td{border:1px solid #bbb;padding:.25em .5em;vertical-align:top}
th{background:#eee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.verdict-fail,.verdict-bad{background:#fde2e1}.verdict-pass,.verdict-good{background:#e3f4e1}
.verdict-inconclusive,.verdict-neutral{background:#fff4d6}
.claim{border:3px solid #444;border-radius:6px;padding:.6em 1em;margin:1em 0}
.claim .verdict{font-size:1.25em;font-weight:bold}svg{display:block;margin:.5em 0;max-width:100%}
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
    """``rows`` hold ready-made ``<td>`` cells."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    attr = f' class="{_e(cls)}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv_table(mapping: Mapping[str, Any]) -> str:
    if not mapping:
        return '<p class="note">None recorded.</p>'
    return _table(("key", "value"), ([f"<th>{_e(k)}</th>", _td(v, str(k))]
                                     for k, v in mapping.items()))


def _generic_table(records: Sequence[Mapping[str, Any]]) -> str:
    """Records of any shape: one column per key (union, first-seen order)."""
    keys: list[str] = []
    for rec in records:
        keys.extend(str(k) for k in rec if str(k) not in keys)
    return _table(keys, ([_td(rec.get(k), k) for k in keys] for rec in records))


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


# ----------------------------------------------------------------------------- SVG helpers


def _n(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


class _Svg:
    """A tiny SVG writer: element strings with escaped attributes and text."""

    def __init__(self, width: float, height: float, label: str) -> None:
        self.width, self.height, self.label = width, height, label
        self.defs: list[str] = []
        self.parts: list[str] = []

    def el(self, tag: str, text: str | None = None, **attrs: object) -> None:
        items = "".join(
            f' {k.rstrip("_").replace("_", "-")}="{_e(_n(v) if isinstance(v, float) else v)}"'
            for k, v in attrs.items() if v is not None)
        end = "/>" if text is None else f">{_e(text)}</{tag}>"
        self.parts.append(f"<{tag}{items}{end}")

    def render(self) -> str:
        defs = f"<defs>{''.join(self.defs)}</defs>" if self.defs else ""
        return (f'<svg width="{_n(self.width)}" height="{_n(self.height)}" '
                f'viewBox="0 0 {_n(self.width)} {_n(self.height)}" role="img" '
                f'aria-label="{_e(self.label)}"><title>{_e(self.label)}</title>{defs}'
                f'{"".join(self.parts)}</svg>')


class _Fills:
    """Stage/series name -> SVG fill (colour + hatch), the same for the whole document."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def fill(self, svg: _Svg, name: str, doc_id: str) -> str:
        if name == OTHER_STAGE:
            colour, hatch = "#dddddd", "M0,2 L8,2 M0,6 L8,6"
        else:
            i = self.index.setdefault(name, len(self.index))
            colour, hatch = _COLOURS[i % len(_COLOURS)], _HATCHES[i % len(_HATCHES)]
        pid = f"{doc_id}-p{len(svg.defs)}"
        path = f'<path d="{hatch}" stroke="#000" stroke-opacity="0.45"/>' if hatch else ""
        svg.defs.append(f'<pattern id="{pid}" patternUnits="userSpaceOnUse" width="8" height="8">'
                        f'<rect width="8" height="8" fill="{colour}"/>{path}</pattern>')
        return f"url(#{pid})"


def _nice_ticks(top: float, count: int = 5) -> list[float]:
    """Ticks 0, step, 2 step, ... up to ``top``, with a 1/2/5 x 10^k step."""
    if top <= 0:
        return [0.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def speedup_chart(rows: Sequence[Mapping[str, Any]], label: str, doc_id: str) -> str:
    """Horizontal bars, length proportional to ``speedup``; whiskers for ``speedup_ci``; a dashed
    line at 1x. Bars are ``<rect class="bar" data-implementation=...>``."""
    left, right, row_h, top = 190.0, 90.0, 26.0, 10.0
    plot_w = 480.0
    highs = [1.0] + [float(r["speedup"]) for r in rows if _finite(r.get("speedup"))]
    highs += [float(r["speedup_ci"][1]) for r in rows
              if r.get("speedup_ci") and _finite(r["speedup_ci"][1])]
    scale = plot_w / (max(highs) * 1.05)
    height = top + row_h * len(rows) + 40
    svg = _Svg(left + plot_w + right, height, label)
    for tick in _nice_ticks(max(highs) * 1.05):
        x = left + tick * scale
        svg.el("line", x1=x, x2=x, y1=top, y2=height - 32, stroke="#e5e5e5")
        svg.el("text", f"{tick:g}x", x=x, y=height - 18, text_anchor="middle")
    for i, row in enumerate(rows):
        y = top + i * row_h
        name = str(row.get("implementation", "?"))
        svg.el("text", _short(name, 28), x=left - 6, y=y + 17, text_anchor="end")
        if not _finite(row.get("speedup")):
            svg.el("text", "no speedup", x=left + 4, y=y + 17, fill="#555")
            continue
        speedup = float(row["speedup"])
        width = speedup * scale
        svg.el("rect", x=left, y=y + 5, width=width, height=16.0, class_="bar",
               data_implementation=name, data_speedup=repr(speedup),
               fill="#0072B2" if speedup >= 1 else "#D55E00", stroke="#000", stroke_width="0.5")
        end = width
        ci = row.get("speedup_ci")
        if ci and _finite(ci[0]) and _finite(ci[1]):
            lo, hi = left + float(ci[0]) * scale, left + float(ci[1]) * scale
            svg.el("line", x1=lo, x2=hi, y1=y + 13, y2=y + 13, stroke="#000", stroke_width="1.5",
                   class_="whisker")
            for x in (lo, hi):
                svg.el("line", x1=x, x2=x, y1=y + 7, y2=y + 19, stroke="#000", stroke_width="1.5")
            end = max(end, hi - left)
        svg.el("text", f"{format_number(speedup)}x", x=left + end + 5, y=y + 17)
    one = left + scale
    svg.el("line", x1=one, x2=one, y1=top - 4, y2=height - 32, stroke="#000",
           stroke_dasharray="4 3", class_="one-x")
    svg.el("text", "speedup over the baseline (1x = baseline; longer is faster)", x=left,
           y=height - 4, fill="#555")
    return svg.render()


def _stage_union(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Stages of all records in first-seen order, the unlabelled remainder last."""
    stages: list[str] = []
    for rec in records:
        stages.extend(s for s in rec["stages"] if s not in stages and s != OTHER_STAGE)
    return stages + [OTHER_STAGE] * any(OTHER_STAGE in rec["stages"] for rec in records)


def breakdown_chart(records: Sequence[Mapping[str, Any]], fills: _Fills, label: str,
                    doc_id: str) -> str:
    """One stacked bar per implementation; segment widths proportional to seconds on a scale
    shared by the bars (so totals compare too); a legend with the stages' fills."""
    left, plot_w, right, row_h, top = 190.0, 480.0, 90.0, 28.0, 8.0
    totals = [max(float(r.get("total_s") or 0.0), sum(float(v) for v in r["stages"].values()))
              for r in records]
    scale = plot_w / max(max(totals), 1e-12)
    stages = _stage_union(records)
    legend_rows = math.ceil(len(stages) / 3)
    height = top + row_h * len(records) + 10 + 18 * legend_rows
    svg = _Svg(left + plot_w + right, height, label)
    fill_of = {s: fills.fill(svg, s, doc_id) for s in stages}
    for i, (rec, total) in enumerate(zip(records, totals, strict=True)):
        y = top + i * row_h
        svg.el("text", _short(str(rec.get("implementation", "?")), 28), x=left - 6, y=y + 17,
               text_anchor="end")
        x = left
        for stage, seconds in rec["stages"].items():
            w = float(seconds) * scale
            svg.el("rect", x=x, y=y + 4, width=w, height=18.0, fill=fill_of[stage], stroke="#000",
                   stroke_width="0.5", class_="segment", data_stage=stage)
            if w > 60:
                svg.el("text", _short(stage, int(w / 7)), x=x + 3, y=y + 17, fill="#000",
                       stroke="#fff", stroke_width="3", paint_order="stroke")
            x += w
        svg.el("text", format_seconds(total), x=x + 5, y=y + 17)
    y0 = top + row_h * len(records) + 8
    for j, stage in enumerate(stages):
        lx, ly = left + (j % 3) * 170.0 - 180.0 + 10.0, y0 + (j // 3) * 18
        svg.el("rect", x=lx, y=ly, width=22.0, height=12.0, fill=fill_of[stage], stroke="#000",
               stroke_width="0.5")
        svg.el("text", _short(stage, 22), x=lx + 27, y=ly + 10)
    return svg.render()


def _log_ticks(lo: float, hi: float, base: int) -> list[float]:
    """Powers of ``base`` spanning [lo, hi] (at most ~9: every k-th power when wider)."""
    k0, k1 = math.floor(math.log(lo, base) + 1e-9), math.ceil(math.log(hi, base) - 1e-9)
    k1 = max(k1, k0 + 1)
    step = max(1, math.ceil((k1 - k0) / 8))
    k0 -= k0 % step if step > 1 else 0
    return [float(base) ** k for k in range(k0, k1 + step, step) if k <= k1 + step - 1]


def _axis_label(value: float, unit: str) -> str:
    if unit in ("s", "seconds"):
        return format_seconds(value)
    if unit in ("bytes", "B"):
        return format_bytes(value)
    if value >= 1 and float(value).is_integer() and value < 1e5:
        return str(int(value))
    return format_number(value)


def _marker(svg: _Svg, shape: str, x: float, y: float, colour: str) -> None:
    if shape == "circle":
        svg.el("circle", cx=x, cy=y, r=3.5, fill=colour, stroke="#000", stroke_width="0.5")
    elif shape == "square":
        svg.el("rect", x=x - 3.5, y=y - 3.5, width=7.0, height=7.0, fill=colour, stroke="#000",
               stroke_width="0.5")
    else:
        pts = ([(x, y - 4.5), (x + 4.5, y + 3.5), (x - 4.5, y + 3.5)] if shape == "triangle"
               else [(x, y - 5), (x + 4.5, y), (x, y + 5), (x - 4.5, y)])
        svg.el("polygon", points=" ".join(f"{_n(a)},{_n(b)}" for a, b in pts), fill=colour,
               stroke="#000", stroke_width="0.5")


def scaling_chart(records: Sequence[Mapping[str, Any]], label: str) -> str:
    """Log-log plot, one line per implementation (non-positive points are left out); x ticks at
    powers of 2 when every size is one, else of 10; y ticks at powers of 2 for bytes, else 10."""
    left, top, plot_w, plot_h = 80.0, 12.0, 470.0, 240.0
    series = []
    for rec in records:
        pts = [(float(s), float(v)) for s, v in zip(rec["sizes"], rec["values"], strict=True)
               if _finite(s) and _finite(v) and float(s) > 0 and float(v) > 0]
        series.append((rec, pts))
    xs = [p[0] for _, pts in series for p in pts] or [1.0, 2.0]
    ys = [p[1] for _, pts in series for p in pts] or [1.0, 10.0]
    unit = str(records[0].get("unit", ""))
    powers_of_2 = all(float(x).is_integer() and int(x) & (int(x) - 1) == 0 for x in xs)
    xt = _log_ticks(min(xs), max(xs), 2 if powers_of_2 else 10)
    yt = _log_ticks(min(ys), max(ys), 2 if unit in ("bytes", "B") else 10)
    lx0, lx1, ly0, ly1 = (math.log(xt[0]), math.log(xt[-1]), math.log(yt[0]), math.log(yt[-1]))

    def px(x: float) -> float:
        return left + (math.log(x) - lx0) / (lx1 - lx0) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (math.log(y) - ly0) / (ly1 - ly0) * plot_h

    height = top + plot_h + 44 + 18 * len(series)
    svg = _Svg(left + plot_w + 30, height, label)
    for t in xt:
        svg.el("line", x1=px(t), x2=px(t), y1=top, y2=top + plot_h, stroke="#e5e5e5")
        svg.el("text", _axis_label(t, ""), x=px(t), y=top + plot_h + 15, text_anchor="middle")
    for t in yt:
        svg.el("line", x1=left, x2=left + plot_w, y1=py(t), y2=py(t), stroke="#e5e5e5")
        svg.el("text", _axis_label(t, unit), x=left - 5, y=py(t) + 4, text_anchor="end")
    svg.el("rect", x=left, y=top, width=plot_w, height=plot_h, fill="none", stroke="#000")
    svg.el("text", f"size (log scale); {records[0].get('metric', '')} in {unit} (log scale)",
           x=left, y=top + plot_h + 32, fill="#555")
    for i, (rec, pts) in enumerate(series):
        colour, dash = _COLOURS[i % len(_COLOURS)], _DASHES[i % len(_DASHES)]
        shape = _MARKERS[i % len(_MARKERS)]
        if len(pts) > 1:
            svg.el("polyline", points=" ".join(f"{_n(px(x))},{_n(py(y))}" for x, y in pts),
                   fill="none", stroke=colour, stroke_width="2", stroke_dasharray=dash or None,
                   class_="series", data_implementation=str(rec.get("implementation", "?")))
        for x, y in pts:
            _marker(svg, shape, px(x), py(y), colour)
        ly = top + plot_h + 50 + 18 * i
        svg.el("line", x1=left, x2=left + 30, y1=ly - 4, y2=ly - 4, stroke=colour,
               stroke_width="2", stroke_dasharray=dash or None)
        _marker(svg, shape, left + 15, ly - 4, colour)
        slope = rec.get("slope")
        text = str(rec.get("implementation", "?"))
        if slope is not None:
            text += f" (slope {format_number(float(slope))})"
        svg.el("text", text, x=left + 38, y=ly)
    return svg.render()


def claim_chart(claim: Mapping[str, Any], label: str, doc_id: str) -> str:
    """The claimed range as a hatched band; each measured value as a dot with its interval."""
    left, plot_w, row_h, top = 190.0, 520.0, 24.0, 22.0
    raw_lo, raw_hi = claim["claimed"]
    lo, hi = float(raw_lo), float(raw_hi)
    measured = {str(k): float(v) for k, v in claim.get("measured", {}).items()}
    intervals = claim.get("interval") or {}
    values = [lo, hi, 0.0] + list(measured.values())
    values += [float(v) for iv in intervals.values() if iv for v in iv]
    vmin, vmax = min(values), max(values)
    span = (vmax - vmin) or 1.0
    vmin, vmax = vmin - 0.05 * span, vmax + 0.05 * span

    def px(v: float) -> float:
        return left + (v - vmin) / (vmax - vmin) * plot_w

    height = top + row_h * max(1, len(measured)) + 24
    svg = _Svg(left + plot_w + 80, height, label)
    pid = f"{doc_id}-band"
    svg.defs.append(f'<pattern id="{pid}" patternUnits="userSpaceOnUse" width="8" height="8">'
                    f'<rect width="8" height="8" fill="#fff4d6"/>'
                    f'<path d="M0,8 L8,0" stroke="#b08800"/></pattern>')
    svg.el("rect", x=px(lo), y=top - 4, width=px(hi) - px(lo), height=row_h * len(measured) + 4,
           fill=f"url(#{pid})", stroke="#b08800", class_="claimed")
    svg.el("text", f"claimed {format_number(raw_lo)} to {format_number(raw_hi)}", x=px(lo),
           y=top - 8)
    for i, (name, value) in enumerate(measured.items()):
        y = top + i * row_h + 10
        svg.el("text", _short(name, 28), x=left - 6, y=y + 4, text_anchor="end")
        iv = intervals.get(name)
        if iv:
            svg.el("line", x1=px(float(iv[0])), x2=px(float(iv[1])), y1=y, y2=y, stroke="#000",
                   stroke_width="1.5")
        svg.el("circle", cx=px(value), cy=y, r=4.5, fill="#0072B2", stroke="#000")
        svg.el("text", format_number(value), x=px(max(value, float(iv[1]) if iv else value)) + 8,
               y=y + 4)
    last = -math.inf
    for tick in sorted({0.0, lo, hi}):
        if px(tick) - last < 30:  # keep tick labels apart; the band's caption names lo and hi
            continue
        last = px(tick)
        svg.el("line", x1=px(tick), x2=px(tick), y1=height - 18, y2=height - 14, stroke="#000")
        svg.el("text", f"{tick:g}", x=px(tick), y=height - 3, text_anchor="middle",
               fill="#555")
    return svg.render()


# ----------------------------------------------------------------------------- sections

_RENDER_ERRORS = (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, AttributeError)


class _Doc:
    """Per-document state: unique SVG ids and the stage fills shared by all breakdown charts."""

    def __init__(self) -> None:
        self.count = 0
        self.fills = _Fills()

    def new_id(self) -> str:
        self.count += 1
        return f"mm{self.count}"


def _family_table(rec: Mapping[str, Any]) -> str:
    headers = ("implementation", "median", "q1 – q3", "speedup", "interval", "throughput",
               "GFLOP/s", "of peak (unit)", "peak memory")
    rows = []
    for row in rec["rows"]:
        name = str(row.get("implementation", "?"))
        ci = row.get("speedup_ci")
        unit = row.get("throughput_unit") or ""
        thr = row.get("throughput")
        fraction = row.get("peak_fraction")
        rows.append([
            f"<td>{_e(name)}{' (baseline)' if name == rec.get('baseline') else ''}</td>",
            _td(row.get("median_s"), "median_s"),
            f'<td class="num">{_e(format_value(row.get("q1_s"), "q1_s"))} – '
            f'{_e(format_value(row.get("q3_s"), "q3_s"))}</td>',
            _td(row.get("speedup")),
            "<td class=\"num\">-</td>" if not ci else
            f'<td class="num">[{_e(format_number(ci[0]))}, {_e(format_number(ci[1]))}]</td>',
            "<td class=\"num\">-</td>" if thr is None else
            f'<td class="num" title="{_e(repr(thr))}">{_e(format_number(thr))} {_e(unit)}</td>',
            _td(row.get("gflops")),
            "<td class=\"num\">-</td>" if fraction is None else
            f'<td class="num" title="{_e(repr(fraction))}">{_e(format_number(100 * fraction))} %'
            f'{_e(" (" + str(row["peak_unit"]) + ")" if row.get("peak_unit") else "")}</td>',
            _td(row.get("peak_memory_bytes"), "peak_memory_bytes"),
        ])
    return _table(headers, rows, "family")


def _family_section(rec: Mapping[str, Any], doc: _Doc) -> str:
    title = str(rec.get("title") or rec["family"])
    chart = speedup_chart(rec["rows"], f"speedup over {rec.get('baseline', 'the baseline')}: "
                          f"{title}", doc.new_id())
    note = (f'<p class="note">Baseline: {_e(rec.get("baseline", "-"))}. Median time per call, '
            f"its interquartile range, and the speedup over the baseline with its interval.</p>")
    return _family_table(rec) + note + chart


def _breakdown_section(records: Sequence[Mapping[str, Any]], family: str, doc: _Doc) -> str:
    chart = breakdown_chart(records, doc.fills, f"time per stage: {family}", doc.new_id())
    stages = _stage_union(records)
    rows = [[f"<td>{_e(rec.get('implementation', '?'))}</td>"]
            + [_td(rec["stages"].get(s), "stage_s") for s in stages]
            + [_td(rec.get("total_s"), "total_s")] for rec in records]
    return ("<h4>Where the time goes</h4>" + chart
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
        iv = intervals.get(name)
        ci = f" [{format_number(iv[0])}, {format_number(iv[1])}]" if iv else ""
        items.append(f"<li>{_e(name)}: <b>{_e(format_number(value))}{_e(unit)}</b>{_e(ci)}</li>")
    title = str(claim.get("title", "claim"))
    chart = claim_chart(claim, f"claimed range and measured values: {title}", doc.new_id())
    return (f'<div class="claim {_verdict_class(verdict)}"><h3>{_e(title)}</h3>'
            f'<p class="verdict">Verdict: {_e(verdict)}</p>'
            f"<p>Claimed: {_e(format_number(lo))} to {_e(format_number(hi))}{_e(unit)}</p>"
            f"<ul>{''.join(items)}</ul><p>{_e(claim.get('text', ''))}</p>{chart}</div>")


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
    return _table(keys, rows, "guards")


def _benchmark_table(rows: Sequence[Mapping[str, Any]]) -> str:
    headers = ("name", "group", "median", "IQR", "q1", "q3", "min", "max", "rounds", "extra_info")
    keys = ("name", "group", "median_s", "iqr_s", "q1_s", "q3_s", "min_s", "max_s", "rounds",
            "extra_info")
    return _table(headers, ([_td(r.get(k), k) for k in keys] for r in rows), "benchmarks")


def _families_in_order(figures: Sequence[Mapping[str, Any]]) -> list[str]:
    order: list[str] = []
    for fig in figures:
        fam = fig.get("family")
        if fig.get("kind") in KNOWN_KINDS and fam is not None and str(fam) not in order:
            order.append(str(fam))
    return order


def render_html(report: Mapping[str, Any]) -> str:
    """The whole report as one offline HTML page (see the module docstring)."""
    doc = _Doc()
    figures = [f for f in report.get("figures") or [] if isinstance(f, Mapping)]
    machine, settings = report.get("machine") or {}, report.get("settings") or {}
    body = [f"<h1>pytest-mmperf report</h1><p>Created {_e(report.get('created', '-'))}; "
            f"schema {_e(report.get('schema', '-'))}.</p>",
            '<nav><a href="#machine">Machine</a><a href="#claims">Claims</a>'
            '<a href="#families">Families</a><a href="#guards">Guards</a>'
            '<a href="#benchmarks">Benchmarks</a><a href="#other">Other figures</a></nav>',
            '<h2 id="machine">Machine and settings</h2>', _kv_table(machine),
            "<h3>Settings</h3>", _kv_table(settings)]
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
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>pytest-mmperf report</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_html(path: str | os.PathLike[str], report: Mapping[str, Any]) -> Path:
    """Render ``report`` and write it to ``path`` atomically; return the path."""
    return write_text_atomic(path, render_html(report))
