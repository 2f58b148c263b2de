"""The answer first: one line per family, the same at the top of the terminal summary and the HTML.

For each family: the fastest implementation, its speedup over the baseline with the interval,
the bottleneck (the largest stages of that implementation's breakdown with their shares, e.g.
``batched: resize 58 %, normalize 40 %``) and its fraction of the machine's peak. Then one line
per claim with its verdict. Works on the report's plain records (``--mmperf-json``), so a saved
report renders the same; torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from pytest_mmperf.constants import OTHER_STAGE
from pytest_mmperf.report.figures import claim_label_note, format_interval, real_interval
from pytest_mmperf.units import format_number

BOTTLENECK_STAGES = 2  # stages named per bottleneck
MIN_NAMED_SHARE = 0.005  # a stage under this share (printed "0 %") is no bottleneck to name


@dataclass(frozen=True)
class FamilyAnswer:
    """The headline of one family (``None`` where the record does not say)."""

    family: str
    title: str
    fastest: str
    baseline: str
    speedup: float | None
    speedup_ci: tuple[float, float] | None
    stages: tuple[tuple[str, float], ...]  # the fastest implementation's largest, with shares
    peak_fraction: float | None
    peak_unit: str | None

    def bottleneck(self) -> str:
        if not self.stages:
            return "no stage breakdown"
        return f"{self.fastest}: " + ", ".join(f"{s} {100 * share:.0f} %"
                                                for s, share in self.stages)

    def speedup_text(self) -> tuple[str, str] | None:
        """The speedup over the baseline and its interval as both renderers print them, e.g.
        ``("2.50x", " [2.10, 2.90]")`` (``""`` for the interval without a real one); ``None`` where
        the baseline itself is the fastest."""
        if self.fastest == self.baseline:
            return None
        interval = format_interval(self.speedup_ci)
        return f"{format_number(self.speedup)}x", f" {interval}" if interval else ""

    def text(self) -> str:
        speedup = self.speedup_text()
        if speedup is None:
            speed = f"fastest {self.fastest} (the baseline)"
        else:
            speed = f"fastest {self.fastest}, {''.join(speedup)} over {self.baseline}"
        parts = [speed, f"bottleneck {self.bottleneck()}"]
        if self.peak_fraction is not None:
            parts.append(f"{100 * self.peak_fraction:.1f} % of peak ({self.peak_unit})")
        return f"{self.family}: " + "; ".join(parts)


def _largest_stages(breakdown: Mapping[str, Any] | None) -> tuple[tuple[str, float], ...]:
    if not breakdown:
        return ()
    stages = {str(k): float(v) for k, v in (breakdown.get("stages") or {}).items()}
    total = float(breakdown.get("total_s") or sum(stages.values()))
    if total <= 0:
        return ()
    named = sorted(((s, v) for s, v in stages.items()
                    if s != OTHER_STAGE and v / total >= MIN_NAMED_SHARE),
                   key=lambda kv: kv[1], reverse=True)
    return tuple((s, v / total) for s, v in named[:BOTTLENECK_STAGES])


def family_answers(figures: Sequence[Mapping[str, Any]]) -> list[FamilyAnswer]:
    """One :class:`FamilyAnswer` per family record, in the report's order."""
    breakdowns = {(str(f.get("family")), str(f.get("implementation"))): f
                  for f in figures if f.get("kind") == "breakdown"}
    answers: list[FamilyAnswer] = []
    for record in figures:
        if record.get("kind") != "family":
            continue
        try:
            answers.append(_answer(record, breakdowns))
        except (TypeError, ValueError, KeyError, AttributeError, IndexError):
            continue  # a malformed record: the details section shows its raw values
    return answers


def _answer(record: Mapping[str, Any],
            breakdowns: Mapping[tuple[str, str], Mapping[str, Any]]) -> FamilyAnswer:
    rows = [r for r in record["rows"] if isinstance(r.get("median_s"), (int, float))]
    best = min(rows, key=lambda r: float(r["median_s"]))
    family = str(record.get("family"))
    ci = real_interval(best.get("speedup_ci"))
    fraction = best.get("peak_fraction")
    return FamilyAnswer(
        family=family, title=str(record.get("title") or family),
        fastest=str(best.get("implementation")), baseline=str(record.get("baseline")),
        speedup=best.get("speedup"), speedup_ci=ci,
        stages=_largest_stages(breakdowns.get((family, str(best.get("implementation"))))),
        peak_fraction=float(fraction) if isinstance(fraction, (int, float))
        and math.isfinite(fraction) else None,
        peak_unit=best.get("peak_unit"))


def claim_answers(figures: Sequence[Mapping[str, Any]]) -> list[str]:
    """``CLAIM <title>: <verdict> (claimed a-b<unit>, measured v<unit> [lo, hi])``."""
    lines: list[str] = []
    for claim in figures:
        if claim.get("kind") != "claim":
            continue
        unit = str(claim.get("unit", ""))
        low, high = (claim.get("claimed") or [None, None])[:2]
        measured = claim.get("measured") or {}
        first = next(iter(measured), None)
        shown = ""
        if first is not None:
            iv = format_interval((claim.get("interval") or {}).get(first))
            shown = (f", measured {format_number(measured[first])}{unit}"
                     + (f" {iv}" if iv else "") + claim_label_note(claim, first))
        lines.append(f"CLAIM {claim.get('title', '')}: {str(claim.get('verdict', '?')).upper()} "
                     f"(claimed {format_number(low)}-{format_number(high)}{unit}{shown})")
    return lines


def headline_lines(figures: Sequence[Mapping[str, Any]]) -> list[str]:
    """The summary: one line per family, then one per claim, then one per optimised
    implementation below a quarter of its roofline (:func:`roofline_flags`)."""
    return ([a.text() for a in family_answers(figures)] + claim_answers(figures)
            + [f"BELOW ROOFLINE {line}" for line in family_roofline_flags(figures)])


def family_roofline_flags(figures: Sequence[Mapping[str, Any]]) -> list[str]:
    """:func:`roofline_flags` over the report's family rows and breakdowns (baselines, the
    "before" versions, are not flagged)."""
    rows = [{**row, "family": record.get("family")} for record in figures
            if record.get("kind") == "family" for row in record.get("rows") or []
            if isinstance(row, Mapping)]
    try:
        return roofline_flags(rows, [f for f in figures if f.get("kind") == "breakdown"])
    except (TypeError, ValueError, KeyError, AttributeError):
        return []  # a malformed record: the details section shows its raw values


ROOFLINE_FLAG_BELOW = 0.25  # an optimised implementation under 25 % of its peak gets a line


def roofline_flags(rows: Iterable[Mapping[str, Any]],
                   breakdowns: Iterable[Mapping[str, Any]] = (), *,
                   threshold: float = ROOFLINE_FLAG_BELOW,
                   baselines: Collection[str] = ()) -> list[str]:
    """One line per optimised implementation below ``threshold`` of its roofline, naming its
    largest stage, so a real gap is seen in the report instead of read off a table.

    A flag is a finding only if the roofline is the work's own kind of limit: the family
    declares it (``roofline=`` for its own kernel, e.g. an antialiased resize; ``flops=`` for a
    matmul; ``bytes=`` for a copy), and a compute-bound stage read against a copy is not one.
    And only if the gap is the code's, not the neighbours': a busy machine slows the row's
    median while the peak is a best block, so a row is flagged only when it stays below the
    threshold at its faster quartile too (``q1_s``, when the row has one).

    Args:
        rows: figure rows, each with ``family``, ``implementation`` and ``peak_fraction``
            (achieved at the median / peak, e.g. from :func:`efficiency`); ``peak_unit`` is shown
            when present; ``median_s`` and ``q1_s`` give the fraction at the faster quartile.
            Rows without a finite ``peak_fraction``, with ``baseline: True`` or ``before: True``,
            or whose implementation is in ``baselines`` (the "before" versions) are not flagged.
        breakdowns: breakdown records (``StageBreakdown.to_figure(family, implementation)``:
            ``family``, ``implementation``, ``stages``, ``total_s``); the largest stage of the
            matching record is named, else "no stage breakdown".
        threshold: the fraction under which a row is flagged (default 25 %).

    Returns:
        Lines such as ``"preprocessing/batched at 4.5 % of its peak (GB/s, < 25 %): largest
        stage normalize 46 % (7.6 ms of 16.5 ms)"``, in the order of ``rows``.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0 < threshold <= 1:
        raise ValueError(f"roofline_flags(threshold={threshold!r}) must be a fraction in (0, 1]")
    by_key: dict[tuple[str, str], Mapping[str, Any]] = {}
    for record in breakdowns:
        by_key[(str(record.get("family")), str(record.get("implementation")))] = record
    lines: list[str] = []
    for row in rows:
        fraction = row.get("peak_fraction")
        impl = str(row.get("implementation"))
        if row.get("baseline") or row.get("before") or impl in baselines \
                or not _finite(fraction) or _at_best(row, fraction) >= threshold:
            continue
        family = str(row.get("family"))
        unit = f"{row['peak_unit']}, " if row.get("peak_unit") else ""
        head = (f"{family}/{impl} at {100 * fraction:.1f} % of its peak "
                f"({unit}< {100 * threshold:.0f} %)")
        found = by_key.get((family, impl))
        stages = dict(found.get("stages") or {}) if found is not None else {}
        if found is None or not stages:
            lines.append(f"{head}: no stage breakdown")
            continue
        stage, seconds = max(stages.items(), key=lambda kv: kv[1])
        total = float(found.get("total_s") or sum(stages.values()))
        share = f"{100 * seconds / total:.0f} % " if total > 0 else ""
        lines.append(f"{head}: largest stage {stage} {share}({_ms(seconds)} of {_ms(total)})")
    return lines


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _at_best(row: Mapping[str, Any], fraction: float) -> float:
    """The row's fraction of peak at its faster quartile (``q1_s``), else at its median."""
    median, q1 = row.get("median_s"), row.get("q1_s")
    if _finite(median) and _finite(q1) and 0 < q1 <= median:
        return fraction * median / q1
    return fraction


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} us"
