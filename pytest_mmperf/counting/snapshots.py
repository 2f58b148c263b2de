"""Committed snapshots of deterministic counters: compare, report the diff, update on request.

A snapshot file is JSON, sorted and indented so that a change reads well in a diff::

    {
      "cases": {
        "attention/sdpa-cpu": {"flops": 134217728, "total_ops": 1}
      },
      "version": 1
    }

:meth:`SnapshotStore.check` compares the values of one named case with the recorded ones. A
metric that moves beyond its relative tolerance in *either* direction is ``"changed"``: a counter
that dropped without anyone updating the snapshot means the snapshot no longer describes the code
(an unexplained improvement is as suspicious as a regression). Values within tolerance are a
``"match"`` and are not rewritten, even when updating, so snapshots do not churn. A case with no
record is ``"new"``; with ``update=True`` new and changed cases are recorded (``"updated"``) and
:meth:`SnapshotStore.save` writes the file. The guard decides what fails: ``SnapshotOutcome.failed``
is true for ``"changed"`` and ``"new"``, whose ``message`` says how to record the new values
(the store's ``update_hint``: the pytest plugin names its command-line option there).

This module needs neither torch nor pytest.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pytest_mmperf.files import write_atomic

SNAPSHOT_VERSION = 1
STATUSES = ("match", "changed", "new", "updated")
# How to accept a change, for callers outside pytest (the plugin passes its option's spelling).
UPDATE_HINT = "check again with GuardSettings(update_snapshots=True) to record the new values"

Value = int | float | str | bool | None
Tolerance = float | int | Mapping[str, float | int]


@dataclass(frozen=True)
class SnapshotOutcome:
    """Result of :meth:`SnapshotStore.check` for one case.

    ``old`` is the recorded metrics (``None`` for a new case), ``new`` the values checked, ``diff``
    a readable table of the metrics that moved (empty for a match).
    """

    name: str
    status: str
    diff: str
    old: dict[str, Value] | None
    new: dict[str, Value]
    path: Path | None = None
    update_hint: str = UPDATE_HINT

    @property
    def failed(self) -> bool:
        """True when a guard should fail: a counter moved, or there is nothing to compare with."""
        return self.status in ("changed", "new")

    @property
    def message(self) -> str:
        """Failure (or update) message: the diff plus, when failing, how to accept the change."""
        where = f" in {self.path}" if self.path is not None else ""
        if self.status == "new":
            return f"no snapshot recorded for case {self.name!r}{where}; {self.update_hint}"
        if self.status == "changed":
            return f"{self.diff}\nIf the change is intended, {self.update_hint}."
        if self.status == "updated":
            return f"snapshot of case {self.name!r}{where} updated\n{self.diff}".rstrip()
        return f"snapshot of case {self.name!r}{where} matches"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _format(value: Value) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}"


def _check_value(value: object, where: str) -> Value:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not finite; snapshots hold finite numbers")
        return value
    raise TypeError(
        f"{where}: {value!r} ({type(value).__name__}) is not a snapshot value; accepted: int, "
        "float, str, bool, None"
    )


def _relative_change(old: float, new: float) -> float:
    if old == new:
        return 0.0
    if old == 0:
        return math.inf
    return (new - old) / abs(old)


def _tolerances(tolerance: Tolerance, metrics: Iterable[str], name: str) -> dict[str, float]:
    def valid(tol: object, where: str) -> float:
        if not isinstance(tol, int | float) or isinstance(tol, bool) or not 0 <= tol < math.inf:
            raise ValueError(
                f"SnapshotStore.check({name!r}): {where} {tol!r} is not a relative tolerance; "
                "expected a finite number >= 0 (0.05 = 5 %)"
            )
        return float(tol)

    metrics = list(metrics)
    if isinstance(tolerance, Mapping):
        unknown = sorted(set(tolerance) - set(metrics))
        if unknown:
            raise ValueError(
                f"SnapshotStore.check({name!r}): tolerance names unknown metric(s) {unknown}; "
                f"the case has {sorted(metrics)}"
            )
        return {m: valid(tolerance.get(m, 0.0), f"tolerance[{m!r}]") for m in metrics}
    tol = valid(tolerance, "tolerance")
    return dict.fromkeys(metrics, tol)


def _diff(
    name: str, old: Mapping[str, Value], new: Mapping[str, Value], tolerances: Mapping[str, float]
) -> list[tuple[str, str, str, str, str]]:
    """Rows (metric, old, new, change, tolerance) of the metrics that moved beyond tolerance."""
    rows = []
    for metric in sorted(set(old) | set(new)):
        tol = tolerances.get(metric, 0.0)
        if metric not in old:
            rows.append((metric, "-", _format(new[metric]), "added", ""))
        elif metric not in new:
            rows.append((metric, _format(old[metric]), "-", "removed", ""))
        else:
            a, b = old[metric], new[metric]
            if _is_number(a) and _is_number(b):
                change = _relative_change(float(a), float(b))  # type: ignore[arg-type]
                if abs(change) > tol:
                    shown = "from 0" if math.isinf(change) else f"{change:+.1%}"
                    rows.append((metric, _format(a), _format(b), shown, f"{tol:.1%}"))
            elif a != b or type(a) is not type(b):
                rows.append((metric, _format(a), _format(b), "differs", ""))
    return rows


def _table(name: str, rows: list[tuple[str, str, str, str, str]], total: int) -> str:
    header = ("metric", "old", "new", "change", "tolerance")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    lines = [f"snapshot {name!r}: {len(rows)} of {total} metric(s) moved beyond tolerance"]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


class SnapshotStore:
    """Snapshots of named cases in one JSON file; a missing file is an empty store.

    ``SnapshotStore(path)`` raises ``ValueError`` naming the path and the problem when the file
    is malformed. Recorded cases are changed only through ``check(..., update=True)`` and
    :meth:`remove`, and written by :meth:`save`. ``update_hint`` ends the message of a new or
    changed case: how the caller records the new values.
    """

    def __init__(self, path: str | os.PathLike[str], update_hint: str = UPDATE_HINT) -> None:
        self.path = Path(path)
        self.update_hint = update_hint
        self._cases: dict[str, dict[str, Value]] = self._load()
        self._updated: dict[str, dict[str, Value]] = {}
        self._removed: set[str] = set()
        self._seen: set[str] = set()

    def _load(self) -> dict[str, dict[str, Value]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"snapshot file {self.path}: cannot be read ({exc})") from None
        return parse_snapshot_text(text, str(self.path))

    @property
    def cases(self) -> dict[str, dict[str, Value]]:
        """A copy of the current cases (recorded plus updated in this session)."""
        return {name: dict(values) for name, values in sorted(self._cases.items())}

    @property
    def dirty(self) -> bool:
        """Whether :meth:`save` has anything to write."""
        return bool(self._updated or self._removed)

    def __contains__(self, name: object) -> bool:
        return name in self._cases

    def check(
        self,
        name: str,
        values: Mapping[str, Value],
        tolerance: Tolerance = 0.0,
        update: bool = False,
    ) -> SnapshotOutcome:
        """Compare ``values`` (metric -> number/str/bool/None) with the snapshot of ``name``.

        ``tolerance`` is a relative tolerance for every numeric metric (0.0 = exact) or a mapping
        metric -> tolerance (metrics it leaves out are exact). Adding or removing a metric is a
        change. With ``update=True`` a new or changed case is recorded and reported "updated".
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"SnapshotStore.check: case name must be a non-empty str, got {name!r}"
            )
        if not isinstance(values, Mapping) or not values:
            raise ValueError(
                f"SnapshotStore.check({name!r}): values must be a non-empty mapping metric -> "
                f"value, got {values!r}"
            )
        new: dict[str, Value] = {}
        for metric, value in values.items():
            if not isinstance(metric, str) or not metric:
                raise ValueError(
                    f"SnapshotStore.check({name!r}): metric names must be non-empty str, "
                    f"got {metric!r}"
                )
            new[metric] = _check_value(value, f"SnapshotStore.check({name!r}) metric {metric!r}")
        new = dict(sorted(new.items()))
        tolerances = _tolerances(tolerance, new, name)
        self._seen.add(name)
        old = self._cases.get(name)
        if old is None:
            if not update:
                return SnapshotOutcome(name, "new", "", None, new, self.path, self.update_hint)
            self._record(name, new)
            diff = f"snapshot {name!r}: new case recorded: " + ", ".join(
                f"{m}={_format(v)}" for m, v in new.items()
            )
            return SnapshotOutcome(name, "updated", diff, None, new, self.path, self.update_hint)
        rows = _diff(name, old, new, tolerances)
        if not rows:
            return SnapshotOutcome(name, "match", "", dict(old), new, self.path, self.update_hint)
        diff = _table(name, rows, len(set(old) | set(new)))
        status = "updated" if update else "changed"
        if update:
            self._record(name, new)
        return SnapshotOutcome(name, status, diff, dict(old), new, self.path, self.update_hint)

    def record(self, name: str, values: Mapping[str, Value]) -> None:
        """Record ``values`` as case ``name`` without comparing, as ``check(..., update=True)``
        does for a new or changed case (validated the same way; written by :meth:`save`).

        The pytest-xdist controller uses it to take over the cases its workers updated: a worker
        never writes the file, so the controller saves once, as a run without xdist would.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"SnapshotStore.record: case name must be a non-empty str, got "
                             f"{name!r}")
        if not isinstance(values, Mapping) or not values:
            raise ValueError(f"SnapshotStore.record({name!r}): values must be a non-empty "
                             f"mapping metric -> value, got {values!r}")
        checked = {str(m): _check_value(v, f"SnapshotStore.record({name!r}) metric {m!r}")
                   for m, v in values.items()}
        self._record(name, dict(sorted(checked.items())))

    def _record(self, name: str, values: dict[str, Value]) -> None:
        self._cases[name] = dict(values)
        self._updated[name] = dict(values)
        self._removed.discard(name)

    def remove(self, name: str) -> None:
        """Drop a case (e.g. a stale one when updating); ``KeyError`` if it is not recorded."""
        if name not in self._cases:
            raise KeyError(f"snapshot file {self.path} has no case {name!r}")
        del self._cases[name]
        self._updated.pop(name, None)
        self._removed.add(name)

    def stale_cases(self, seen: Iterable[str] | None = None) -> list[str]:
        """Recorded cases not in ``seen`` (default: names checked through this store), sorted."""
        checked = set(self._seen if seen is None else seen)
        return sorted(name for name in self._cases if name not in checked)

    def save(self) -> bool:
        """Write the file atomically if anything changed; return whether it was written.

        The file is re-read first and only this store's updates and removals are applied to it,
        so concurrent sessions (pytest-xdist workers) updating different cases keep each other's
        records. The write goes to a temporary file in the same directory and is moved into place
        with ``os.replace``: an interrupted save leaves the previous file intact.
        """
        if not self.dirty:
            return False
        current = self._load()
        merged = {n: v for n, v in current.items() if n not in self._removed}
        merged.update(self._updated)
        if self.path.exists() and merged == current:
            self._updated.clear()
            self._removed.clear()
            return False
        # None: a committed file keeps its mode (or gets the usual 0644).
        write_atomic(self.path, format_snapshot(merged), mode=None)
        self._cases = merged
        self._updated.clear()
        self._removed.clear()
        return True


def format_snapshot(cases: Mapping[str, Mapping[str, Value]]) -> str:
    """The file text for ``cases``: sorted keys, 2-space indent, trailing newline."""
    payload = {"version": SNAPSHOT_VERSION, "cases": {n: dict(v) for n, v in cases.items()}}
    return json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def parse_snapshot_text(text: str, source: str) -> dict[str, dict[str, Value]]:
    """Validate snapshot file text; ``ValueError`` names ``source`` and the problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"snapshot file {source}: invalid JSON at line {exc.lineno} column {exc.colno}: "
            f"{exc.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"snapshot file {source}: expected a JSON object with 'version' and 'cases', got "
            f"{type(data).__name__}"
        )
    version = data.get("version")
    if version != SNAPSHOT_VERSION or isinstance(version, bool):
        raise ValueError(
            f"snapshot file {source}: unsupported 'version' {version!r}; accepted: "
            f"{SNAPSHOT_VERSION}"
        )
    extra = sorted(set(data) - {"version", "cases"})
    if extra:
        raise ValueError(
            f"snapshot file {source}: unknown top-level key(s) {extra}; accepted: 'version', "
            "'cases'"
        )
    cases = data.get("cases")
    if not isinstance(cases, dict):
        raise ValueError(
            f"snapshot file {source}: 'cases' must be an object name -> {{metric: value}}, got "
            f"{type(cases).__name__}"
        )
    parsed: dict[str, dict[str, Value]] = {}
    for name, metrics in cases.items():
        if not isinstance(metrics, dict):
            raise ValueError(
                f"snapshot file {source}: case {name!r} must be an object metric -> value, got "
                f"{type(metrics).__name__}"
            )
        try:
            parsed[name] = {
                m: _check_value(v, f"case {name!r} metric {m!r}") for m, v in metrics.items()
            }
        except (TypeError, ValueError) as exc:
            raise ValueError(f"snapshot file {source}: {exc}") from None
    return parsed
