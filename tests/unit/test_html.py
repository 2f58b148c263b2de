"""The HTML report: content consistent with the JSON, inline well-formed SVG, nothing external."""

from __future__ import annotations

import html as htmllib
import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pytest_mmperf.report.charts import _log_ticks
from pytest_mmperf.report.html import format_value, render_html, write_html
from pytest_mmperf.report.json_report import build_report
from pytest_mmperf.report.terminal import terminal_family_lines
from pytest_mmperf.units import format_bytes, format_number, format_seconds

EVIL = '<script>alert("x")</script>&'


def sample_report() -> dict[str, Any]:
    """A report with known numbers for every figure kind (and one kind the renderer lacks)."""
    family_rows = [
        {"implementation": "naive", "median_s": 0.0412, "q1_s": 0.0401, "q3_s": 0.0433,
         "speedup": 1.0, "speedup_ci": None, "throughput": 194.2, "throughput_unit": "images/s",
         "gflops": None, "peak_fraction": None, "peak_unit": None,
         "peak_memory_bytes": 16_800_000},
        {"implementation": "batched", "median_s": 0.0131, "q1_s": 0.0127, "q3_s": 0.0139,
         "speedup": 3.15, "speedup_ci": [2.87, 3.42], "throughput": 610.7,
         "throughput_unit": "images/s", "gflops": 12.6, "peak_fraction": 0.0421,
         "peak_unit": "GB/s", "peak_memory_bytes": 3_300_000},
        {"implementation": "seed optimised", "median_s": 0.0517, "q1_s": 0.0498, "q3_s": 0.0541,
         "speedup": 0.797, "speedup_ci": [0.741, 0.853], "throughput": 154.7,
         "throughput_unit": "images/s", "gflops": None, "peak_fraction": None,
         "peak_unit": None, "peak_memory_bytes": None},
    ]
    figures: list[dict[str, Any]] = [
        {"kind": "claim", "title": "Seed: 30-50 % faster data processing", "claimed": [30, 50],
         "unit": "%", "measured": {"seed optimised": -20.3, "ours (batched)": 215.0},
         "interval": {"seed optimised": [-25.9, -14.7], "ours (batched)": [187.0, 242.0]},
         "verdict": "not confirmed for the seed's code",
         "text": "The seed's own optimised pipeline is slower than the naive loop."},
        {"kind": "family", "family": "preprocess", "title": "In-memory preprocessing",
         "baseline": "naive", "rows": family_rows},
        {"kind": "breakdown", "family": "preprocess", "implementation": "naive",
         "stages": {"resize": 0.0251, "convert": 0.0083, "normalize": 0.0061,
                    "other (unlabelled)": 0.0017}, "total_s": 0.0412},
        {"kind": "breakdown", "family": "preprocess", "implementation": "batched",
         "stages": {"resize": 0.0072, "convert": 0.0021, "normalize": 0.0019, "collate": 0.0013,
                    "other (unlabelled)": 0.0006}, "total_s": 0.0131},
        {"kind": "efficiency", "family": "preprocess", "implementation": "batched",
         "achieved": 1.93, "peak": 45.8, "unit": "GB/s", "fraction": 0.0421},
        {"kind": "scaling", "family": "attention-long", "implementation": "math", "metric": "time",
         "unit": "s", "sizes": [512, 1024, 2048, 4096],
         "values": [0.00231, 0.00874, 0.0352, 0.141], "slope": 1.98},
        {"kind": "scaling", "family": "attention-long", "implementation": "sdpa", "metric": "time",
         "unit": "s", "sizes": [512, 1024, 2048, 4096],
         "values": [0.00118, 0.00412, 0.0158, 0.0611], "slope": 1.90},
        {"kind": "scaling", "family": "attention-long", "implementation": "math",
         "metric": "memory", "unit": "bytes", "sizes": [512, 1024, 2048],
         "values": [16_800_000, 67_100_000, 268_400_000], "slope": 2.0},
        {"kind": "scaling", "family": "attention-long", "implementation": "sdpa",
         "metric": "memory", "unit": "bytes", "sizes": [512, 1024, 2048],
         "values": [1_400_000, 3_300_000, 5_400_000], "slope": 0.97},
        {"kind": "mystery", "note": "unknown kind", "answer": 42.5, "name": EVIL},
    ]
    guards: list[dict[str, Any]] = [
        {"nodeid": f"tests/perf/test_x.py::test_fast[{EVIL}]", "kind": "faster", "name": "sdpa",
         "metric": "time ratio", "estimate": 1.87, "ci_low": 1.62, "ci_high": 2.11,
         "threshold": 1.25, "verdict": "pass", "decided_by": "interval",
         "samples_per_process": [40, 38], "n_processes": 2, "device": "cpu", "budget_s": 1.0,
         "message": "1.87x faster", "extra": {"blocks": 78}},
        {"nodeid": "tests/perf/test_x.py::test_ops", "kind": "max_ops", "name": None,
         "metric": "ops", "estimate": 12, "ci_low": None, "ci_high": None, "threshold": 16,
         "verdict": "fail", "decided_by": "count", "samples_per_process": [], "n_processes": 1,
         "device": "cpu", "budget_s": None, "message": "12 ops", "extra": {}},
    ]
    benchmarks = [
        {"name": "test_resize[batched]", "fullname": "tests/perf/test_p.py::test_resize[batched]",
         "group": "preprocess", "median_s": 0.00731, "iqr_s": 0.00042, "q1_s": 0.00712,
         "q3_s": 0.00754, "min_s": 0.00698, "max_s": 0.00911, "rounds": 57,
         "extra_info": {"throughput": 1094.4, "throughput_unit": "images/s"}},
    ]
    machine = {"cpu_model": "Example CPU 9000", "cpu_capability": "AVX512",
               "threads": 2, "gpus": [], "torch": "2.14.1", "torchvision": "0.29.1"}
    report = build_report(guards=guards, benchmarks=benchmarks, figures=figures,
                          machine=machine, settings={"device": "cpu", "scale": "smoke"})
    return json.loads(json.dumps(report))  # what a saved JSON file holds


@pytest.fixture(scope="module")
def rendered() -> tuple[dict[str, Any], str]:
    report = sample_report()
    return report, render_html(report)


def _svgs(page: str) -> list[ET.Element]:
    blocks = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    return [ET.fromstring(b) for b in blocks]  # raises ParseError if not well-formed


def _text(page: str) -> str:
    """Visible text with tags dropped and whitespace collapsed."""
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_every_family_number_appears_formatted(rendered: tuple[dict[str, Any], str]) -> None:
    report, page = rendered
    text = _text(page)
    fam = next(f for f in report["figures"] if f["kind"] == "family")
    for row in fam["rows"]:
        assert row["implementation"] in text
        for key in ("median_s", "q1_s", "q3_s"):
            assert format_seconds(row[key]) in text, (key, row)
        assert format_number(row["speedup"]) in text
        assert f"{format_number(row['throughput'])} images/s" in text
        if row["speedup_ci"]:
            lo, hi = row["speedup_ci"]
            assert f"[{format_number(lo)}, {format_number(hi)}]" in text
        if row["gflops"] is not None:
            assert format_number(row["gflops"]) in text
        if row["peak_fraction"] is not None:
            assert f"{format_number(100 * row['peak_fraction'])} % (GB/s)" in text
        if row["peak_memory_bytes"] is not None:
            assert format_bytes(row["peak_memory_bytes"]) in text
    assert "naive (baseline)" in text


def test_exact_values_kept_in_titles(rendered: tuple[dict[str, Any], str]) -> None:
    """Each number cell carries the JSON value: the page and the JSON cannot disagree."""
    report, page = rendered
    titles = {float(t) for t in re.findall(r'title="(-?[0-9.e+-]+)"', page)}
    fam = next(f for f in report["figures"] if f["kind"] == "family")
    for row in fam["rows"]:
        assert {row["median_s"], row["speedup"], row["throughput"]} <= titles


def test_breakdown_efficiency_scaling_claim_numbers(rendered: tuple[dict[str, Any], str]) -> None:
    report, page = rendered
    text = _text(page)
    for fig in report["figures"]:
        if fig["kind"] == "breakdown":  # in ms, the unit the table names once
            assert "Time per call in each stage, in ms." in text
            for stage, seconds in fig["stages"].items():
                assert stage in text and f">{format_number(seconds * 1e3)}</td>" in page
            assert format_seconds(fig["total_s"]) in text
        elif fig["kind"] == "efficiency":
            assert format_number(fig["achieved"]) in text and format_number(fig["peak"]) in text
            assert f"{format_number(100 * fig['fraction'])} %" in text
        elif fig["kind"] == "scaling":
            fmt = format_seconds if fig["unit"] == "s" else format_bytes
            assert all(fmt(v) in text for v in fig["values"])
            assert f"{fig['implementation']} (slope {format_number(fig['slope'])})" in text
        elif fig["kind"] == "claim":
            assert f"Verdict: {fig['verdict']}" in text
            assert fig["text"] in text
            for label, value in fig["measured"].items():
                assert f"{label}: {format_number(value)} %" in text
            lo, hi = fig["claimed"]
            assert f"Claimed: {format_number(lo)} to {format_number(hi)} %" in text


def test_guard_and_benchmark_tables(rendered: tuple[dict[str, Any], str]) -> None:
    report, page = rendered
    text = _text(page)
    guard_html = page[page.index('id="guards"'):page.index('id="benchmarks"')]
    for field in report["guards"][0]:  # every GuardResult field is a column (may break at _)
        assert f"<th>{field.replace('_', '_<wbr>')}</th>" in guard_html
    assert "1.87" in text and "[40, 38]" in text and "blocks=78" in text
    bench = report["benchmarks"][0]
    for key in ("median_s", "iqr_s", "q1_s", "q3_s", "min_s", "max_s"):
        assert format_seconds(bench[key]) in text
    assert "throughput=1094" in text and ">57<" in page


def test_machine_settings_and_unknown_kind(rendered: tuple[dict[str, Any], str]) -> None:
    report, page = rendered
    text = _text(page)
    assert "Example CPU 9000" in text and "AVX512" in text and "2.14.1" in text
    assert report["created"] in text and "smoke" in text
    other = page[page.index('id="other"'):]
    assert "mystery" in other and "unknown kind" in other and "42.5" in other


def test_svgs_inline_and_well_formed(rendered: tuple[dict[str, Any], str]) -> None:
    _, page = rendered
    svgs = _svgs(page)
    # claim, speedup bars, stacked stages, 2 scaling plots (time, memory)
    assert len(svgs) == 5
    for svg in svgs:
        assert svg.find("title") is not None and float(svg.get("width", "0")) > 0
    ids = re.findall(r'<pattern id="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "pattern ids must be unique across the page"
    for ref in re.findall(r"url\(#([^)]+)\)", page):
        assert ref in ids


def test_speedup_bars_proportional(rendered: tuple[dict[str, Any], str]) -> None:
    report, page = rendered
    fam = next(f for f in report["figures"] if f["kind"] == "family")
    bars = [r for svg in _svgs(page) for r in svg.iter("rect") if r.get("class") == "bar"]
    widths = {r.get("data-implementation"): float(r.get("width", "nan")) for r in bars}
    speedups = {row["implementation"]: row["speedup"] for row in fam["rows"]}
    assert set(widths) == set(speedups)
    px_per_x = widths["naive"] / speedups["naive"]
    for name, speedup in speedups.items():
        assert widths[name] == pytest.approx(speedup * px_per_x, rel=2e-3, abs=0.02), name
    # the 1x line sits where a bar of speedup 1 ends
    one = next(line for svg in _svgs(page) for line in svg.iter("line")
               if line.get("class") == "one-x")
    bar = next(r for r in bars if r.get("data-implementation") == "naive")
    assert float(one.get("x1", "nan")) == pytest.approx(float(bar.get("x", "0")) + px_per_x,
                                                        abs=0.02)


def test_stacked_segments_proportional_and_consistent_fills(
        rendered: tuple[dict[str, Any], str]) -> None:
    report, page = rendered
    segs = [r for svg in _svgs(page) for r in svg.iter("rect") if r.get("class") == "segment"]
    naive = next(f for f in report["figures"] if f.get("implementation") == "naive"
                 and f["kind"] == "breakdown")
    naive_segs = segs[: len(naive["stages"])]
    px_per_s = float(naive_segs[0].get("width", "nan")) / naive["stages"]["resize"]
    for seg, (stage, seconds) in zip(naive_segs, naive["stages"].items(), strict=True):
        assert seg.get("data-stage") == stage
        assert float(seg.get("width", "nan")) == pytest.approx(seconds * px_per_s, rel=5e-3,
                                                               abs=0.02)
    fill: dict[str | None, str | None] = {}
    for seg in segs:  # a stage has one fill in every bar
        assert fill.setdefault(seg.get("data-stage"), seg.get("fill")) == seg.get("fill")


def test_scaling_plot_log_axes(rendered: tuple[dict[str, Any], str]) -> None:
    _, page = rendered
    time_plot = _svgs(page)[3]
    labels = [t.text for t in time_plot.iter("text")]
    for tick in ("512", "1024", "2048", "4096"):  # sizes are powers of 2: ticks at 2^k
        assert tick in labels
    lines = [p for p in time_plot.iter("polyline") if p.get("class") == "series"]
    assert [p.get("data-implementation") for p in lines] == ["math", "sdpa"]
    # log-log: doubling the size is a constant x step
    xs = [float(pt.split(",")[0]) for pt in lines[0].get("points", "").split()]
    steps = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    assert max(steps) - min(steps) < 0.05


def test_no_external_resources_and_escaping(rendered: tuple[dict[str, Any], str]) -> None:
    _, page = rendered
    lowered = page.lower()
    for bad in ("http://", "https://", "src=", "<script", "@import", "<link", "//fonts"):
        assert bad not in lowered, bad
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page


def test_malformed_known_kind_falls_back_to_table() -> None:
    report = sample_report()
    report["figures"] = [{"kind": "family", "family": "f", "title": "Broken", "baseline": "a",
                          "rows": "fast?"},
                         {"kind": "scaling", "family": "f", "implementation": "x",
                          "metric": "time", "unit": "s", "sizes": [1, 2], "values": [1.0]}]
    page = render_html(report)
    assert page.count("Could not plot these records") == 2
    assert "fast?" in page


def test_log_ticks_and_format_value() -> None:
    assert _log_ticks(512, 4096, 2) == [512.0, 1024.0, 2048.0, 4096.0]
    assert _log_ticks(0.0012, 0.14, 10) == pytest.approx([1e-3, 1e-2, 1e-1, 1.0])
    wide = _log_ticks(2.0, 2.0**30, 2)
    assert len(wide) <= 10 and wide[0] <= 2.0 and wide[-1] >= 2.0**30
    assert format_value(0.0123, "median_s") == "12.30 ms"
    assert format_value(2048, "peak_memory_bytes") == "2.0 KiB"
    assert format_value({"a": 1.5, "b": [1, 2]}) == "a=1.50, b=[1, 2]"
    assert format_value(math.inf, "x_s") == "inf"


def test_write_html_atomic_file(tmp_path: Path) -> None:
    out = write_html(tmp_path / "sub" / "report.html", sample_report())
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary file left


def test_html_module_does_not_import_torch() -> None:
    code = "import sys, pytest_mmperf.report.html; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_breakdown_table_puts_unlabelled_last(rendered: tuple[dict[str, Any], str]) -> None:
    _, page = rendered
    table = re.search(r'<table class="breakdown">.*?</thead>', page, flags=re.S)
    assert table is not None
    heads = re.findall(r"<th>([^<]*)</th>", table.group(0))
    assert heads == ["implementation", "resize", "convert", "normalize", "collate",
                     "other (unlabelled)", "total"]


@pytest.mark.parametrize("width", [100, 72])
def test_terminal_lines_fit_and_carry_the_numbers(width: int) -> None:
    report = sample_report()
    lines = terminal_family_lines(report, width=width)
    assert lines and all(len(line) <= width for line in lines)
    text = "\n".join(lines)
    assert "verdict: not confirmed for the seed's code" in text
    assert "measured seed optimised: -20.3 % [-25.9, -14.7]" in text
    rows = {line.split()[0]: line for line in lines if line.startswith(("naive", "batched"))}
    assert format_seconds(0.0412) in rows["naive"] and "1.00x" in rows["naive"]
    if width == 100:  # all columns fit at the terminal width the report promises
        assert "[2.87, 3.42]" in rows["batched"] and "611" in rows["batched"]
        assert "4.21%" in rows["batched"] and format_bytes(3_300_000) in rows["batched"]
    assert "resize 61%" in text  # 25.1 ms of 41.2 ms
    assert "1.93 of 45.8 GB/s = 4.21% of peak" in text
    assert "time sdpa: slope 1.90" in text


def test_terminal_lines_survive_malformed_records() -> None:
    report = {"figures": [{"kind": "breakdown", "family": "f", "implementation": "x",
                           "stages": None, "total_s": 1.0}]}
    lines = terminal_family_lines(report)
    assert any("could not format 1 breakdown record" in line for line in lines)
    assert terminal_family_lines({"figures": []}) == []


def test_missing_and_non_finite_values_do_not_break_plots() -> None:
    nan = float("nan")
    page = render_html({"figures": [
        {"kind": "family", "family": "f", "title": "t", "baseline": "a", "rows": [
            {"implementation": "a", "speedup": nan, "speedup_ci": [nan, 2.0]},
            {"implementation": "b", "speedup": 2.0, "speedup_ci": None}]},
        {"kind": "scaling", "family": "f", "implementation": "x", "metric": "time", "unit": "s",
         "sizes": [1, 2, 4], "values": [0.0, None, 1.0], "slope": None},
        {"kind": "breakdown", "family": "f", "implementation": "x", "stages": {}, "total_s": 0.0},
        {"kind": "claim", "title": "c", "claimed": [1, 1], "measured": {}, "verdict": "?",
         "text": ""}]})
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(svgs) == 4 and "Could not plot" not in page
    for svg in svgs:
        ET.fromstring(svg)
        assert "nan" not in svg.lower() and "inf" not in svg.lower()
    assert ">nan<" in page  # the table still shows the value as it is
    assert render_html({}).startswith("<!DOCTYPE html>")
