"""The answer first: one line per family, the same at the top of the terminal summary and the HTML.

For each family: the fastest implementation, its speedup over the baseline with the interval,
the bottleneck (the largest stages of that implementation's breakdown with their shares, e.g.
``batched: resize 58 %, normalize 40 %``) and its fraction of the machine's peak. Then one line
per claim with its verdict. Works on the report's plain records (``--mmperf-json``), so a saved
report renders the same; torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_mmperf.constants import OTHER_STAGE
from pytest_mmperf.units import format_number

BOTTLENECK_STAGES = 2  # stages named per bottleneck


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

    def text(self) -> str:
        if self.fastest == self.baseline:
            speed = f"fastest {self.fastest} (the baseline)"
        else:
            interval = ("" if self.speedup_ci is None else
                        f" [{format_number(self.speedup_ci[0])}, "
                        f"{format_number(self.speedup_ci[1])}]")
            speed = (f"fastest {self.fastest}, {format_number(self.speedup)}x{interval} over "
                     f"{self.baseline}")
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
    named = sorted(((s, v) for s, v in stages.items() if s != OTHER_STAGE),
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
    ci = best.get("speedup_ci")
    fraction = best.get("peak_fraction")
    return FamilyAnswer(
        family=family, title=str(record.get("title") or family),
        fastest=str(best.get("implementation")), baseline=str(record.get("baseline")),
        speedup=best.get("speedup"), speedup_ci=(float(ci[0]), float(ci[1])) if ci else None,
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
            iv = (claim.get("interval") or {}).get(first)
            shown = (f", measured {format_number(measured[first])}{unit}"
                     + (f" [{format_number(iv[0])}, {format_number(iv[1])}]" if iv else ""))
        lines.append(f"CLAIM {claim.get('title', '')}: {str(claim.get('verdict', '?')).upper()} "
                     f"(claimed {format_number(low)}-{format_number(high)}{unit}{shown})")
    return lines


def headline_lines(figures: Sequence[Mapping[str, Any]]) -> list[str]:
    """The summary: one line per family, then one per claim."""
    return [a.text() for a in family_answers(figures)] + claim_answers(figures)
