"""One rule per setting: the command line, GuardSettings, CompareSettings and the report API agree.

Each bad value is fed to the option parser (as text) and to the dataclass field (as a Python
value): both refuse it, and both messages carry the same ``accepted`` text. Each good value is
accepted by both and read the same.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from pytest_mmperf import settings as rules
from pytest_mmperf.baseline.compare import CompareSettings
from pytest_mmperf.glue.options import SETTINGS_BY_NAME, invalid
from pytest_mmperf.guards import Guard, GuardSettings
from pytest_mmperf.report.api import MmperfReport

# (setting of the command line, GuardSettings field, the text, the same value in Python)
BAD = [
    ("budget", "budget_s", "0", 0),
    ("budget", "budget_s", "-1", -1.0),
    ("budget", "budget_s", "nan", math.nan),
    ("budget", "budget_s", "inf", math.inf),
    ("budget", "budget_s", "fast", "fast"),
    ("processes", "processes", "0", 0),
    ("processes", "processes", "1.5", 1.5),
    ("confidence", "confidence", "0.5", 0.5),
    ("confidence", "confidence", "1", 1.0),
    ("confidence", "confidence", "0.2", 0.2),
    ("inconclusive", "inconclusive", "maybe", "maybe"),
    ("threads", "threads", "0", 0),
    ("threads", "threads", "many", "many"),
    ("seed", "seed", "-1", -1),
]
GOOD = [
    ("budget", "budget_s", "0.25", 0.25),
    ("processes", "processes", "2", 2),
    ("confidence", "confidence", "0.9", 0.9),
    ("inconclusive", "inconclusive", "skip", "skip"),
    ("threads", "threads", "auto", "auto"),
    ("threads", "threads", "2", 2),
    ("seed", "seed", "0", 0),
]
# GuardSettings field -> the CompareSettings field the pytest glue fills from the same setting
COMPARE_FIELD = {"budget_s": "budget_s", "processes": "pairs", "confidence": "confidence",
                 "inconclusive": "inconclusive", "threads": "threads", "seed": "seed"}


@pytest.mark.parametrize(("setting", "field", "text", "value"), BAD)
def test_the_option_parser_and_the_settings_refuse_the_same_values(
        setting: str, field: str, text: str, value: Any) -> None:
    option = SETTINGS_BY_NAME[setting]
    with pytest.raises(ValueError) as parsed:
        option.parse(text)
    usage = str(invalid(option, text, option.option, str(parsed.value)))
    assert f"invalid {setting} {text!r} from {option.option}" in usage
    accepted = option.accepted
    assert f"Accepted: {accepted}." in usage
    for owner, cls, name in (("GuardSettings", GuardSettings, field),
                             ("CompareSettings", CompareSettings, COMPARE_FIELD[field])):
        message = rf"^{owner} {name} must be {re.escape(accepted)}, got {re.escape(repr(value))}$"
        with pytest.raises(ValueError, match=message):
            cls(**{name: value})


@pytest.mark.parametrize(("setting", "field", "text", "value"), GOOD)
def test_the_option_parser_and_the_settings_accept_the_same_values(
        setting: str, field: str, text: str, value: Any) -> None:
    parsed = SETTINGS_BY_NAME[setting].parse(text)
    assert parsed == value
    assert getattr(GuardSettings(**{field: value}), field) == parsed
    compare_field = COMPARE_FIELD[field]
    assert getattr(CompareSettings(**{compare_field: value}), compare_field) == parsed


def test_guard_settings_refuse_what_the_command_line_refuses() -> None:
    with pytest.raises(ValueError, match=r"^GuardSettings budget_s must be a number of seconds "
                                         r"> 0, got 0$"):
        GuardSettings(budget_s=0)
    with pytest.raises(ValueError, match=r"^GuardSettings confidence must be a number strictly "
                                         r"between 0\.5 and 1, got 0\.5$"):
        GuardSettings(confidence=0.5)
    with pytest.raises(ValueError, match="GuardSettings processes must be an integer >= 1, got "
                                         "True"):
        GuardSettings(processes=True)  # type: ignore[arg-type]
    assert GuardSettings(threads=None).threads is None  # None: torch's own count, core only


def test_the_tolerance_rule_is_the_baseline_tolerance_option() -> None:
    option = SETTINGS_BY_NAME["baseline_tolerance"]
    assert option.accepted == rules.TOLERANCE.accepted
    for text, value in (("-0.1", -0.1), ("nan", math.nan)):
        with pytest.raises(ValueError):
            option.parse(text)
        with pytest.raises(ValueError, match="^CompareSettings tolerance must be a number >= 0"):
            CompareSettings(tolerance=value)
    assert option.parse("0") == CompareSettings(tolerance=0).tolerance == 0.0


@pytest.mark.parametrize(("budget_s", "processes", "message"), [
    (0, None, r"^family budget_s must be a number of seconds > 0, got 0$"),
    (True, None, r"^family budget_s must be a number of seconds > 0, got True$"),
    (None, 0, r"^family processes must be an integer >= 1, got 0$"),
])
def test_the_report_api_uses_the_same_rules(budget_s: Any, processes: Any, message: str) -> None:
    report = MmperfReport([], "t.py::test_x", Guard(), benchmark=False)
    with pytest.raises(ValueError, match=message):
        report._plan_with(budget_s, processes)
    plan = report._plan_with(0.5, 2)
    assert (plan.budget_s, plan.processes) == (0.5, 2)


def test_every_setting_with_a_rule_shows_the_rules_accepted_text() -> None:
    pairs = {"budget": rules.BUDGET_S, "processes": rules.PROCESSES, "seed": rules.SEED,
             "confidence": rules.CONFIDENCE, "inconclusive": rules.INCONCLUSIVE,
             "threads": rules.THREADS, "scale": rules.SCALE, "isolation": rules.ISOLATION,
             "baseline_tolerance": rules.TOLERANCE, "require_device": rules.BOOL,
             "json": rules.PATH}
    for name, rule in pairs.items():
        assert SETTINGS_BY_NAME[name].accepted == rule.accepted, name
        assert SETTINGS_BY_NAME[name].parse == rule.parse, name
