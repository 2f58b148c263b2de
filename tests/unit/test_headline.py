"""The answer first: the headline lines of the terminal summary and the HTML's first screen."""

from __future__ import annotations

import math
import re
from typing import Any

from pytest_mmperf.report.figures import Claim, FamilyRow, format_interval, real_interval
from pytest_mmperf.report.headline import family_answers, headline_lines, roofline_flags
from pytest_mmperf.report.terminal import terminal_family_lines

FIGURES: list[dict[str, Any]] = [
    {"kind": "family", "family": "pre", "title": "Preprocessing", "baseline": "naive", "rows": [
        {"implementation": "naive", "median_s": 0.050, "speedup": 1.0, "speedup_ci": [1, 1],
         "baseline": True, "peak_fraction": 0.01},
        {"implementation": "batched", "median_s": 0.016, "speedup": 3.1,
         "speedup_ci": [2.8, 3.4], "peak_fraction": 0.045, "peak_unit": "GB/s (memory copy)"},
        {"implementation": "seed", "median_s": 0.049, "speedup": 1.02,
         "speedup_ci": [0.9, 1.1], "peak_fraction": 0.4},
        {"implementation": "seed_v2", "median_s": 0.049, "speedup": 1.02, "before": True,
         "speedup_ci": [0.9, 1.1], "peak_fraction": 0.02}]},
    {"kind": "breakdown", "family": "pre", "implementation": "batched", "total_s": 0.016,
     "stages": {"resize": 0.009, "normalize": 0.006, "other (unlabelled)": 0.001}},
    {"kind": "claim", "title": "30-50 % faster", "claimed": [1.3, 1.5], "unit": "x",
     "measured": {"seed": 1.02}, "interval": {"seed": [0.9, 1.1]}, "verdict": "refuted"},
    {"kind": "family", "family": "broken", "rows": [{"implementation": "x"}]},  # no times
]


def test_answers_name_fastest_speedup_bottleneck_and_peak() -> None:
    (answer,) = family_answers(FIGURES)  # the malformed family is left to the details
    assert answer.fastest == "batched" and answer.speedup_ci == (2.8, 3.4)
    assert [s for s, _ in answer.stages] == ["resize", "normalize"]  # "other" is not a stage
    lines = headline_lines(FIGURES)
    assert lines[0] == ("pre: fastest batched, 3.10x [2.80, 3.40] over naive; bottleneck "
                        "batched: resize 56 %, normalize 38 %; 4.5 % of peak (GB/s (memory copy))")
    assert lines[1] == ("CLAIM 30-50 % faster: REFUTED (claimed 1.30-1.50x, measured 1.02x "
                        "[0.9, 1.10])")
    # Below a quarter of its roofline, with its largest stage; the baseline and "before" versions
    # are never flagged and the seed (40 %) is above the line.
    assert lines[2:] == ["BELOW ROOFLINE pre/batched at 4.5 % of its peak (GB/s (memory copy), "
                         "< 25 %): largest stage resize 56 % (9.0 ms of 16.0 ms)"]


def test_a_stage_of_no_weight_is_not_named() -> None:
    """"bottleneck batched: resize+normalize 97 %, collate 0 %" named a stage of 0.2 %."""
    figures = [{"kind": "family", "family": "pre", "baseline": "naive", "rows": [
        {"implementation": "naive", "median_s": 0.03, "speedup": 1.0},
        {"implementation": "batched", "median_s": 0.0065, "speedup": 4.5,
         "speedup_ci": [3.5, 5.8]}]},
        {"kind": "breakdown", "family": "pre", "implementation": "batched", "total_s": 0.0065,
         "stages": {"collate": 0.00001, "resize+normalize": 0.0063,
                    "other (unlabelled)": 0.00019}}]
    assert headline_lines(figures)[0].endswith("bottleneck batched: resize+normalize 97 %")


def test_baseline_fastest_and_no_breakdown() -> None:
    figures = [{"kind": "family", "family": "f", "baseline": "a", "rows": [
        {"implementation": "a", "median_s": 1.0, "speedup": 1.0, "speedup_ci": [1, 1]},
        {"implementation": "b", "median_s": 2.0, "speedup": 0.5, "speedup_ci": [0.4, 0.6]}]}]
    assert headline_lines(figures) == ["f: fastest a (the baseline); bottleneck no stage "
                                       "breakdown"]


def test_intervals_are_measured_or_absent() -> None:
    """Never a degenerate [x, x]: zero-width, missing or non-finite intervals print nothing, and
    a real interval whose ends round alike gets the digits that tell them apart."""
    assert real_interval([1.12, 1.12]) is None and format_interval([1.12, 1.12]) == ""
    assert format_interval(None) == "" and format_interval([math.nan, 2.0]) == ""
    assert format_interval([2.0, 1.0]) == "" and format_interval([1, True]) == ""
    assert format_interval([1.18, 2.34]) == "[1.18, 2.34]"
    assert format_interval([1.001, 1.004]) == "[1.001, 1.004]"  # format_number: 1.00 both
    assert format_interval([1234.41, 1234.47]) == "[1234.4, 1234.5]"
    # records drop them when built, also from a JSON written before this rule
    row = FamilyRow.from_dict({"implementation": "a", "median_s": 1.0, "q1_s": 1.0, "q3_s": 1.0,
                               "speedup": 1.0, "speedup_ci": [1.0, 1.0], "rounds": 3})
    assert row.speedup_ci is None
    claim = Claim(title="t", claimed=[1.25, 3.0], measured={"a": 1.12, "b": 1.5},
                  interval={"a": [1.12, 1.12], "b": [1.2, 1.8]}, verdict="inconclusive")
    assert claim.interval == {"b": [1.2, 1.8]}


def test_old_report_with_derived_claim_renders_no_degenerate_interval() -> None:
    """The report of issue 24 (a claim row of two medians, a baseline row with [1, 1]), read
    back from JSON: no line of the headline or the terminal tables prints [x, x]."""
    figures = [
        {"kind": "family", "family": "training step", "baseline": "math float32", "rows": [
            {"implementation": "math float32", "median_s": 0.2, "q1_s": 0.19, "q3_s": 0.21,
             "speedup": 1.0, "speedup_ci": [1.0, 1.0], "baseline": True},
            {"implementation": "sdpa bfloat16", "median_s": 0.1, "q1_s": 0.09, "q3_s": 0.11,
             "speedup": 2.0, "speedup_ci": [1.8, 2.2]}]},
        {"kind": "claim", "title": "mixed precision", "claimed": [1.25, 3.0], "unit": "x",
         "measured": {"math": 1.66, "sdpa": 1.12, "local": 0.779},
         "interval": {"math": [1.18, 2.34], "sdpa": [1.12, 1.12], "local": [0.779, 0.779]},
         "verdict": "inconclusive"}]
    text = "\n".join(headline_lines(figures) + terminal_family_lines({"figures": figures}))
    pairs = re.findall(r"\[([^\[\],]+), ([^\[\],]+)\]", text)
    assert ("1.18", "2.34") in pairs and ("1.80", "2.20") in pairs
    assert all(lo != hi for lo, hi in pairs), pairs
    assert "measured sdpa: 1.12 x (no interval)" in text


def test_loader_family_names_its_stall_fraction_as_the_bottleneck() -> None:
    """The loader family's breakdown is the loop's own clock (data stall vs step): the headline
    names the stall fraction instead of "no stage breakdown"."""
    figures = [
        {"kind": "family", "family": "loader -> step", "baseline": "seed DataLoader", "rows": [
            {"implementation": "seed DataLoader", "median_s": 2.0, "speedup": 1.0},
            {"implementation": "fast loader", "median_s": 1.0, "speedup": 2.0,
             "speedup_ci": [1.7, 2.3]}]},
        {"kind": "breakdown", "family": "loader -> step", "implementation": "fast loader",
         "stages": {"data stall": 0.3, "training step": 0.7}, "total_s": 1.0, "repeats": 3},
        {"kind": "breakdown", "family": "loader -> step", "implementation": "seed DataLoader",
         "stages": {"data stall": 1.5, "training step": 0.5}, "total_s": 2.0, "repeats": 3}]
    assert headline_lines(figures) == [
        "loader -> step: fastest fast loader, 2.00x [1.70, 2.30] over seed DataLoader; "
        "bottleneck fast loader: training step 70 %, data stall 30 %"]


def test_roofline_flag_needs_the_gap_at_the_faster_quartile_too() -> None:
    """A busy machine slows a row's median, not the peak (a best block): a row at 20 % of its
    peak at the median but 30 % at its faster quartile is noise, not a finding."""
    def row(median: float, q1: float, fraction: float) -> dict[str, Any]:
        return {"family": "pre", "implementation": "batched", "median_s": median, "q1_s": q1,
                "peak_fraction": fraction, "peak_unit": "images/s (antialiased uint8 resize)"}

    assert roofline_flags([row(0.015, 0.010, 0.20)]) == []  # 30 % at q1
    (line,) = roofline_flags([row(0.011, 0.010, 0.10)])  # 11 % at q1
    assert line.startswith("pre/batched at 10.0 % of its peak (images/s (antialiased uint8 "
                           "resize), < 25 %)")
