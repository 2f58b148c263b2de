"""One validator per setting, shared by every place that takes the setting.

A :class:`Rule` owns what a setting accepts: :meth:`Rule.check` validates a Python value
(``GuardSettings``, ``CompareSettings``, ``mmperf_report.family(budget_s=...)``) and
:meth:`Rule.parse` a text (command line, ini file, environment variable) with the same check. A bad
value raises ``ValueError`` with a short reason that names the value; :meth:`Rule.field` words it
for a dataclass field (``GuardSettings budget_s must be a number of seconds > 0, got 0``). The
pytest glue (:mod:`pytest_mmperf.glue.options`) adds the option, where the value came from and the
``accepted`` text.

Pytest-free and torch-free.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pytest_mmperf.constants import INCONCLUSIVE_POLICIES, ISOLATIONS, SCALES

T = TypeVar("T")

THREADS_AUTO = "auto"
Threads = int | str | None  # "auto", a number of intra-op threads, or None: leave torch's setting

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
DEVICE_RE = re.compile(r"(?P<kind>cpu|mps|cuda|xpu)(?::(?P<index>\d+))?")


@dataclass(frozen=True)
class Rule(Generic[T]):
    """What one setting accepts: ``accepted`` (words), ``check`` (a Python value -> the value,
    or ``ValueError`` with a reason) and ``from_text`` (a text -> the Python value to check)."""

    accepted: str
    check: Callable[[object], T]
    from_text: Callable[[str], object]

    def parse(self, text: str) -> T:
        """The value written in ``text`` (CLI, ini, env), checked; ``ValueError`` with a reason."""
        return self.check(self.from_text(text))

    def field(self, owner: str, name: str, value: object) -> T:
        """``value`` checked as field ``name`` of ``owner``; the ``ValueError`` names both."""
        try:
            return self.check(value)
        except ValueError:
            raise ValueError(f"{owner} {name} must be {self.accepted}, got {value!r}") from None


# --------------------------------------------------------------------------- text -> value
def _number_text(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _int_text(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def _word_text(text: str) -> str:
    return text.strip().lower()


def _threads_text(text: str) -> int | str:
    word = _word_text(text)
    return THREADS_AUTO if word == THREADS_AUTO else _int_text(text)


# --------------------------------------------------------------------------- checks
def _number(value: object) -> float:
    """A finite real number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{number:g} is not finite")
    return number


def _integer(value: object, minimum: int) -> int:
    """An integer (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{value!r} is not an integer")
    number = int(value)
    if number < minimum:
        raise ValueError(f"{number} is below the minimum {minimum}")
    return number


def _positive_seconds(value: object) -> float:
    number = _number(value)
    if number <= 0:
        raise ValueError(f"{number:g} is not > 0")
    return number


def _fraction(value: object) -> float:
    number = _number(value)
    if number < 0:
        raise ValueError(f"{number:g} is below 0")
    return number


def _confidence(value: object) -> float:
    number = _number(value)
    if not 0.5 < number < 1.0:
        raise ValueError(f"{number:g} is not strictly between 0.5 and 1")
    return number


def _threads(value: object) -> int | str:
    if value == THREADS_AUTO:
        return THREADS_AUTO
    if isinstance(value, str):
        raise ValueError(f"{value!r} is neither 'auto' nor an integer")
    return _integer(value, 1)


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not a boolean")
    return value


def _bool_text(text: str) -> bool | str:
    word = _word_text(text)
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return text  # _bool names it


def _path(value: object) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(os.fspath(value)).strip():
        raise ValueError("the path is empty")
    return Path(os.path.expanduser(str(os.fspath(value)).strip()))


# --------------------------------------------------------------------------- the rules
BUDGET_S: Rule[float] = Rule("a number of seconds > 0", _positive_seconds, _number_text)
PROCESSES: Rule[int] = Rule("an integer >= 1", lambda v: _integer(v, 1), _int_text)
SEED: Rule[int] = Rule("an integer >= 0", lambda v: _integer(v, 0), _int_text)
CONFIDENCE: Rule[float] = Rule("a number strictly between 0.5 and 1", _confidence, _number_text)
INCONCLUSIVE: Rule[str] = Rule("one of " + ", ".join(INCONCLUSIVE_POLICIES),
                               _choice(INCONCLUSIVE_POLICIES), _word_text)
THREADS: Rule[int | str] = Rule("auto or an integer >= 1", _threads, _threads_text)
TOLERANCE: Rule[float] = Rule("a number >= 0 (0.10 means 10 percent)", _fraction, _number_text)
SCALE: Rule[str] = Rule("one of " + ", ".join(SCALES), _choice(SCALES), _word_text)
ISOLATION: Rule[str] = Rule("one of " + ", ".join(ISOLATIONS), _choice(ISOLATIONS), _word_text)
BOOL: Rule[bool] = Rule("1/true/yes/on or 0/false/no/off", _bool, _bool_text)
PATH: Rule[Path] = Rule("a file path", _path, lambda text: text)


# Where None is allowed too: leave torch's thread count as it is (GuardSettings, time_pair).
THREADS_OR_NONE: Rule[int | str | None] = Rule(
    THREADS.accepted, lambda v: None if v is None else THREADS.check(v), THREADS.from_text)


def check_threads(value: object, owner: str, name: str = "threads") -> Threads:
    """:data:`THREADS_OR_NONE` for field ``name`` of ``owner``."""
    return THREADS_OR_NONE.field(owner, name, value)


def check_fields(obj: object, owner: str, **field_rules: Rule[Any]) -> None:
    """Check each field of the frozen dataclass ``obj`` by its rule and store the checked value
    (``2`` seconds become ``2.0``); the ``ValueError`` names ``owner`` and the field."""
    for name, rule in field_rules.items():
        object.__setattr__(obj, name, rule.field(owner, name, getattr(obj, name)))


# --------------------------------------------------------------------------- devices, revisions
DEVICES_ACCEPTED = ("auto, cpu, cuda, cuda:N, mps, xpu, xpu:N (N >= 0), or a comma-separated "
                    "list of these, e.g. cpu,cuda:0")
REVISION_ACCEPTED = ("a git revision such as origin/main, v1.2 or HEAD~1 (not starting with "
                     "'-')")


def parse_device(text: str) -> str:
    """One device: ``auto``, ``cpu``, ``mps``, ``cuda[:N]``, ``xpu[:N]`` -> canonical form.

    ``cuda`` and ``xpu`` mean index 0 (torch's "current device" at start-up), so test ids are
    always ``cuda:0`` rather than an ambiguous ``cuda``. No torch import: availability is checked
    later, per test, by :func:`pytest_mmperf.devices.check_available`.
    """
    item = text.strip().lower()
    if item == "auto":
        return item
    match = DEVICE_RE.fullmatch(item)
    if match is None:
        if re.fullmatch(r"(cuda|xpu):-\d+", item):
            raise ValueError(f"{item!r} has a negative device index")
        raise ValueError(f"{text.strip()!r} is not a device")
    kind, index = match["kind"], match["index"]
    if kind in ("cpu", "mps"):
        if index not in (None, "0"):  # torch accepts only index 0 for these
            raise ValueError(f"{item!r}: {kind} has no index {index}")
        return kind
    return f"{kind}:{int(index or 0)}"


def parse_device_list(text: str) -> tuple[str, ...]:
    """``"cpu,cuda:0"`` -> ``("cpu", "cuda:0")``: canonical, in order, without duplicates."""
    items = text.split(",")
    if any(not item.strip() for item in items):
        raise ValueError(f"{text!r} has an empty entry")
    devices: list[str] = []
    for item in items:
        device = parse_device(item)
        if device not in devices:
            devices.append(device)
    return tuple(devices)


def parse_revision(text: str) -> str:
    """A git revision that cannot be read as an option (``baseline.revision.check_name``)."""
    from pytest_mmperf.baseline.revision import check_name

    return check_name(text)
