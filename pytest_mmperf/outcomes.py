"""What a guard call ends in: its :class:`GuardResult`, and the exceptions and warning that
carry it out of the test (a failure, a skip outside pytest, an undecided timing guard).

Public through :mod:`pytest_mmperf`; re-exported by :mod:`pytest_mmperf.guards`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class GuardFailure(AssertionError):
    """A guard's verdict is *fail*. ``str(exc)`` is the guard's message; ``exc.result`` the
    :class:`GuardResult` (estimate, interval, threshold, samples)."""

    def __init__(self, message: str, result: GuardResult) -> None:
        super().__init__(message)
        self.result = result


# reads `pytest_mmperf.GuardFailure: ...` in reports and `-W error::pytest_mmperf.Mmperf...`
GuardFailure.__module__ = "pytest_mmperf"


class GuardSkipped(Exception):  # noqa: N818 - it is an outcome, like pytest's Skipped
    """Raised outside pytest where a pytest run would skip the test: a guard that cannot run
    here (``no_sync`` off CUDA) or an inconclusive timing guard under policy ``"skip"``."""

    def __init__(self, reason: str, result: GuardResult | None = None) -> None:
        super().__init__(reason)
        self.result = result


class MmperfInconclusiveWarning(UserWarning):
    """A timing guard's interval straddled its threshold when the budget ran out."""


MmperfInconclusiveWarning.__module__ = "pytest_mmperf"  # as filterwarnings spells it


@dataclass(kw_only=True)
class GuardResult:
    """One guard call, as shown in the terminal table and written to the JSON report."""

    nodeid: str
    kind: str  # faster | not_slower | max_ops | ops_constant | max_memory | max_flops | ...
    name: str | None
    metric: str
    estimate: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    threshold: float | str | dict[str, float] | None  # dict: per-op limits, per-metric tolerances
    verdict: str  # pass | fail | inconclusive | skipped; comparisons: new | rev-error | error
    decided_by: str  # interval | estimate | count | skip | worker | worker-error | a side's error
    samples_per_process: list[int] = field(default_factory=list)
    n_processes: int = 1
    device: str
    budget_s: float | None = None
    message: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

