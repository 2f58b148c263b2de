"""The report's figure records: typed, versioned, and equal to what the JSON holds.

Every record has a ``kind``; ``to_dict()`` is exactly the record written under ``figures`` in
``--mmperf-json`` (schema :data:`SCHEMA`) and rendered by the terminal summary and the HTML:

* :class:`Family` (``"family"``): implementations of one operation measured against a baseline:
  one :class:`FamilyRow` per implementation (median and quartiles of seconds per call, speedup
  over the baseline with its interval, throughput, GFLOP/s or GB/s and the fraction of the
  machine's calibrated peak, peak tensor memory).
* :class:`Breakdown` (``"breakdown"``): seconds per call in each ``mmperf::<stage>`` label.
* :class:`Efficiency` (``"efficiency"``): achieved against peak, one per row with a peak.
* :class:`Scaling` (``"scaling"``): a metric against size with its fitted log-log slope.
* :class:`Claim` (``"claim"``): a claimed range, what was measured, the verdict.

**No degenerate intervals.** An interval is a measured one or none: a zero-width ``[x, x]``
(a value derived from two medians, a baseline against itself, a number given bare) says nothing
about its spread and reads as certainty. Records drop such intervals when built (the baseline
row's ``speedup_ci`` and a bare number's claim interval are ``None`` / absent), and every
renderer prints intervals through :func:`format_interval`, which prints nothing for them and adds
digits where a real interval's ends would round to the same text.

Torch-free and pytest-free: a report read back from JSON renders with the same code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from pytest_mmperf.units import format_number

SCHEMA = "pytest-mmperf/2"
CLAIM_VERDICTS = ("confirmed", "refuted", "inconclusive")


class _Record:
    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Any:
        """The record of a JSON report (unknown keys are ignored, as a newer writer may add)."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in record.items() if k in names})


@dataclass(kw_only=True)
class FamilyRow(_Record):
    """One implementation of a family. Times are seconds per call of this implementation's
    callable; ``speedup`` is t_baseline / t_implementation with its ``speedup_ci`` interval
    (``None`` for the baseline, whose 1.0 is a definition, not a measurement).

    ``work_rate`` / ``work_unit``: the achieved rate in the unit of the family's own roofline
    (``roofline=``, e.g. ``images/s`` of an antialiased resize); ``peak_fraction`` is that rate,
    else GFLOP/s or GB/s, over the machine's calibrated peak named by ``peak_unit``."""

    kind: ClassVar[str] = "family-row"
    implementation: str
    median_s: float
    q1_s: float
    q3_s: float
    speedup: float
    speedup_ci: list[float] | None
    rounds: int
    processes: int = 1
    baseline: bool = False
    before: bool = False  # a "before" version kept for comparison (never flagged as optimised)
    throughput: float | None = None
    throughput_unit: str | None = None
    gflops: float | None = None
    achieved_gbps: float | None = None
    work_rate: float | None = None
    work_unit: str | None = None
    peak_fraction: float | None = None
    peak_unit: str | None = None
    peak_memory_bytes: int | None = None

    def __post_init__(self) -> None:
        found = real_interval(self.speedup_ci)
        self.speedup_ci = None if found is None else list(found)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class Family(_Record):
    """A family: ``rows`` in the caller's order, the baseline's row included."""

    kind: ClassVar[str] = "family"
    family: str
    title: str
    baseline: str
    unit: str
    items: float | None = None
    rows: list[FamilyRow] = field(default_factory=list)
    peaks: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str | None = None
    nodeid: str = ""

    def row(self, implementation: str) -> FamilyRow:
        for row in self.rows:
            if row.implementation == implementation:
                return row
        raise KeyError(f"family {self.family!r} has no implementation {implementation!r}; it has "
                       f"{[r.implementation for r in self.rows]}")

    @property
    def fastest(self) -> FamilyRow:
        """The row with the lowest median time."""
        return min(self.rows, key=lambda r: r.median_s)

    def to_dict(self) -> dict[str, Any]:
        record = {"kind": self.kind, **{f.name: getattr(self, f.name) for f in fields(self)}}
        record["rows"] = [r.to_dict() for r in self.rows]
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Family:
        family: Family = super().from_dict(record)
        family.rows = [r if isinstance(r, FamilyRow) else FamilyRow.from_dict(r)
                       for r in record.get("rows", [])]
        return family


@dataclass(kw_only=True)
class Breakdown(_Record):
    """Seconds per call in each stage (``mmperf::<stage>`` labels; the rest under
    ``other (unlabelled)``); the values add up to ``total_s``."""

    kind: ClassVar[str] = "breakdown"
    family: str
    implementation: str
    stages: dict[str, float]
    total_s: float
    repeats: int = 1
    device: str = "cpu"
    cpu_stages: dict[str, float] | None = None
    device_stages: dict[str, float] | None = None
    nodeid: str = ""

    def largest(self) -> tuple[str, float] | None:
        """The largest stage and its share of ``total_s`` (None without stages)."""
        if not self.stages or self.total_s <= 0:
            return None
        stage, seconds = max(self.stages.items(), key=lambda kv: kv[1])
        return stage, seconds / self.total_s


@dataclass(kw_only=True)
class Efficiency(_Record):
    kind: ClassVar[str] = "efficiency"
    family: str
    implementation: str
    achieved: float
    peak: float
    unit: str
    fraction: float
    nodeid: str = ""


@dataclass(kw_only=True)
class Scaling(_Record):
    """``values`` of ``metric`` (in ``unit``) at ``sizes``; ``slope``: the log-log exponent."""

    kind: ClassVar[str] = "scaling"
    family: str
    implementation: str
    metric: str
    unit: str
    sizes: list[float]
    values: list[float]
    slope: float
    r2: float = math.nan
    nodeid: str = ""


@dataclass(kw_only=True)
class Claim(_Record):
    """``claimed``: the range [low, high] of a claim (in ``unit``); ``measured`` and ``interval``:
    value and interval per label, the first label being the claim's own subject. A label without
    a measured interval (a number given bare) has no ``interval`` entry.

    ``processes``: fresh processes pooled per label where the claim measured a pair itself
    (``mmperf_report.claim`` with ``(candidate, baseline)``), ``seconds`` the wall time that
    took, and ``budget`` the limits it measured under (``max_processes``, ``max_seconds`` per
    pair, ``per_process_s``); ``decided``: per such label, whether its interval cleared the
    claimed low end before the budget ran out.
    """

    kind: ClassVar[str] = "claim"
    title: str
    claimed: list[float]
    measured: dict[str, float]
    interval: dict[str, list[float]]
    verdict: str
    text: str = ""
    unit: str = "x"
    processes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    decided: dict[str, bool] = field(default_factory=dict)
    budget: dict[str, float] = field(default_factory=dict)
    nodeid: str = ""

    def __post_init__(self) -> None:
        kept = {label: real_interval(iv) for label, iv in self.interval.items()}
        self.interval = {label: list(iv) for label, iv in kept.items() if iv is not None}


KINDS: dict[str, type[_Record]] = {c.kind: c for c in (Family, Breakdown, Efficiency, Scaling,
                                                       Claim)}


def real_interval(interval: Any) -> tuple[float, float] | None:
    """``(low, high)`` when ``interval`` is a measured interval: two finite numbers with
    ``low < high``. ``None`` for anything else: missing, malformed, non-finite, or zero-width
    (``[x, x]``, a value without a measured spread)."""
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return None
    low, high = interval
    for end in (low, high):
        if isinstance(end, bool) or not isinstance(end, (int, float)) or not math.isfinite(end):
            return None
    if not float(low) < float(high):
        return None
    return float(low), float(high)


def format_interval(interval: Any) -> str:
    """``"[low, high]"`` of a measured interval, with :func:`format_number`'s digits or, where
    both ends would print the same, as many more as tell them apart; ``""`` without a real
    interval (:func:`real_interval`): the renderers never print a degenerate ``[x, x]``."""
    found = real_interval(interval)
    if found is None:
        return ""
    low, high = found
    lo_text, hi_text = format_number(low), format_number(high)
    digits = 3
    while lo_text == hi_text and digits <= 17:
        lo_text, hi_text = f"{low:.{digits}g}", f"{high:.{digits}g}"
        digits += 1
    return f"[{lo_text}, {hi_text}]"


def claim_verdict(claimed: tuple[float, float] | list[float],
                  interval: list[float] | tuple[float, float]) -> str:
    """``refuted`` when the interval lies below the claimed range's low end, ``confirmed`` when
    it lies at or above it, else ``inconclusive``. A value without an interval (an exact
    number) is passed as ``[value, value]``."""
    low = float(claimed[0])
    if interval[1] < low:
        return "refuted"
    if interval[0] >= low:
        return "confirmed"
    return "inconclusive"


def claim_budget_note(claim: Mapping[str, Any]) -> str:
    """The budget a claim's own pairs were measured under, in words (``""`` if it measured
    none): what a reader needs to weigh an inconclusive verdict."""
    budget = claim.get("budget") or {}
    if not claim.get("processes") or not budget:
        return ""
    low = (claim.get("claimed") or [None])[0]
    most = int(budget.get("max_processes", 0))
    return (f"Pairs measured here, interleaved; fresh processes added until the interval cleared "
            f"the claimed low end {format_number(low)} or the budget was spent: at most "
            f"{most} process{'es' if most != 1 else ''} and "
            f"{format_number(budget.get('max_seconds'))} s per pair, "
            f"{format_number(budget.get('per_process_s'))} s of rounds per process.")


def claim_label_note(claim: Mapping[str, Any], label: str) -> str:
    """``" (4 processes in 31 s)"``, ``" (10 processes in 90 s, budget spent undecided)"`` for a
    pair the claim
    measured; ``" (no interval)"`` for a value given without one; else ``""``."""
    processes = (claim.get("processes") or {}).get(label)
    if processes is not None:
        undecided = not (claim.get("decided") or {}).get(label, True)
        seconds = (claim.get("seconds") or {}).get(label)
        took = f" in {seconds:.0f} s" if isinstance(seconds, (int, float)) else ""
        return (f" ({processes} process{'es' if processes != 1 else ''}{took}"
                + (", budget spent undecided)" if undecided else ")"))
    if real_interval((claim.get("interval") or {}).get(label)) is None:
        return " (no interval)"
    return ""
