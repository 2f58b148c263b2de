"""SVG charts of the HTML report: speedup bars, stacked stage bars, log-log scaling, claims.

Each chart function takes figure records (see :mod:`pytest_mmperf.report.html`) and returns one
inline
``<svg>`` string: no scripts, no external resources. Every bar carries its number as text and
stages are told apart by hatch patterns as well as colours, so charts read in greyscale too.
This module imports neither torch nor pytest.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_mmperf.constants import OTHER_STAGE
from pytest_mmperf.report.figures import real_interval
from pytest_mmperf.units import format_bytes, format_number, format_seconds

_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")
_HATCHES = ("", "M0,8 L8,0", "M0,0 L8,8", "M0,4 L8,4", "M4,0 L4,8", "M0,8 L8,0 M0,0 L8,8")
_MARKERS = ("circle", "square", "triangle", "diamond")
_DASHES = ("", "6 3", "2 3", "8 3 2 3")



def _e(value: object) -> str:
    return html.escape(str(value), quote=True)



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


class Fills:
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
        ci = real_interval(row.get("speedup_ci"))
        if ci is not None:  # a measured interval; none is drawn for a value without one
            lo, hi = left + ci[0] * scale, left + ci[1] * scale
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


def stage_union(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Stages of all records in first-seen order, the unlabelled remainder last."""
    stages: list[str] = []
    for rec in records:
        stages.extend(s for s in rec["stages"] if s not in stages and s != OTHER_STAGE)
    return stages + [OTHER_STAGE] * any(OTHER_STAGE in rec["stages"] for rec in records)


def breakdown_chart(records: Sequence[Mapping[str, Any]], fills: Fills, label: str,
                    doc_id: str) -> str:
    """One stacked bar per implementation; segment widths proportional to seconds on a scale
    shared by the bars (so totals compare too); a legend with the stages' fills."""
    left, plot_w, right, row_h, top = 190.0, 480.0, 90.0, 28.0, 8.0
    totals = [max(float(r.get("total_s") or 0.0), sum(float(v) for v in r["stages"].values()))
              for r in records]
    scale = plot_w / max(max(totals), 1e-12)
    stages = stage_union(records)
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
        iv = real_interval(intervals.get(name))
        if iv is not None:
            svg.el("line", x1=px(iv[0]), x2=px(iv[1]), y1=y, y2=y, stroke="#000",
                   stroke_width="1.5", class_="interval")
        svg.el("circle", cx=px(value), cy=y, r=4.5, fill="#0072B2", stroke="#000")
        svg.el("text", format_number(value), x=px(max(value, iv[1] if iv else value)) + 8,
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
