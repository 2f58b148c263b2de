"""The HTML report in a real browser: at a laptop's width and a narrow window, no table or chart
is cut at the page's right edge, and no script error occurs.

Headless Chromium renders a copy of the report (realistic records: the families, breakdowns,
claims, guards and benchmarks of ``make bench``, long names and units included) into which this
test alone adds a probe script; the report itself has no scripts. The probe measures, after
layout, every table and SVG chart against its container and the viewport, and writes what it
found into the DOM, which ``--dump-dom`` prints. Skips, with the reason, where no Chromium is
installed (``apt-get install chromium`` on Debian/Ubuntu; ``MMPERF_CHROMIUM`` names another
binary).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_mmperf.report.figures import (
    Breakdown,
    Claim,
    Efficiency,
    Family,
    FamilyRow,
    Scaling,
)
from pytest_mmperf.report.html import render_html
from pytest_mmperf.report.json_report import build_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LAPTOP = (1280, 900)
NARROW = (760, 900)


def _browser() -> str:
    named = os.environ.get("MMPERF_CHROMIUM")
    if named:
        return named
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(f"no headless browser installed (looked for {', '.join(BROWSERS)} on PATH and "
                "MMPERF_CHROMIUM): install one with `apt-get install chromium` (Debian/Ubuntu) "
                "to run the layout test of the HTML report")


# Written into the test's copy only. An error listener first (in <head>), then, after the
# page is laid out, every table and chart is measured against its container and the viewport.
PROBE_HEAD = """<script>window.__mmperfErrors = [];
window.addEventListener('error', function (e) { window.__mmperfErrors.push(String(e.message)); });
</script>"""
PROBE_BODY = """<script>(function () {
  var view = document.documentElement.clientWidth;
  var found = {errors: window.__mmperfErrors, viewport: view,
               page: document.documentElement.scrollWidth, cut: [], scrolls: [], count: {}};
  function name(el) {
    var head = el.closest('section, .claim, div') ;
    var title = el.getAttribute('aria-label') || el.className.baseVal || el.className || '';
    var h = el.previousElementSibling;
    return el.tagName.toLowerCase() + '.' + title + ' after ' +
      (h ? h.tagName + ':' + (h.textContent || '').slice(0, 60) : '-');
  }
  ['table', 'svg'].forEach(function (tag) {
    var all = document.querySelectorAll(tag);
    found.count[tag] = all.length;
    all.forEach(function (el) {
      var box = el.getBoundingClientRect();
      var parent = el.parentElement.getBoundingClientRect();
      if (box.right > view + 0.5 || box.right > parent.right + 0.5) {
        found.cut.push({what: name(el), right: box.right, container: parent.right});
      }
    });
  });
  document.querySelectorAll('*').forEach(function (el) {
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'visible') {
      found.scrolls.push({what: name(el.querySelector('table, svg') || el),
                          scroll: el.scrollWidth, width: el.clientWidth});
    }
  });
  var out = document.createElement('pre');
  out.id = 'mmperf-probe';
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
})();</script>"""


def _row(impl: str, median: float, speedup: float, ci: list[float] | None, **kw: Any
         ) -> FamilyRow:
    return FamilyRow(implementation=impl, median_s=median, q1_s=median * 0.97,
                     q3_s=median * 1.04, speedup=speedup, speedup_ci=ci, rounds=42,
                     processes=3, **kw)


def baseline_rows() -> list[dict[str, Any]]:
    """Comparisons against a revision (``--mmperf-baseline``), long test ids included."""
    extra = {"revision": "origin/main", "commit": "0123456789abcdef" * 2 + "01234567",
             "candidate_median_s": [0.0123, 0.0125], "baseline_median_s": [0.0101, 0.0102]}
    rows = []
    for i, (est, low, high, change, verdict) in enumerate((
            (1.21, 1.15, 1.27, "slower", "fail"), (0.998, 0.93, 1.07, "same", "pass"),
            (0.61, 0.57, 0.66, "faster", "pass"), (None, None, None, None, "new"))):
        rows.append({"nodeid": f"tests/perf/test_report_figures.py::test_family_preprocessing"
                               f"_with_a_long_name[cpu-{i}]", "kind": "baseline",
                     "name": f"preprocessing/batched-with-a-long-implementation-name-{i}",
                     "metric": "vs baseline", "estimate": est, "ci_low": low, "ci_high": high,
                     "threshold": 1.1 if est else None, "verdict": verdict,
                     "decided_by": "interval", "samples_per_process": [12, 9, 11],
                     "n_processes": 3, "device": "cpu", "budget_s": 2.0, "message": "",
                     "extra": {**extra, "change": change}})
    return rows


def realistic_report() -> dict[str, Any]:
    """The records of a ``make bench`` run, long labels included."""
    resize = "images/s (antialiased uint8 resize)"
    figures: list[dict[str, Any]] = []
    claim = Claim(
        title="Seed: mixed precision significantly reduces training time", claimed=[1.25, 3.0],
        measured={"math (explicit attention)": 1.41, "sdpa": 1.10, "local": 0.73},
        interval={"math (explicit attention)": [1.27, 1.58], "sdpa": [0.99, 1.22],
                  "local": [0.53, 1.0]},
        verdict="confirmed", processes={"math (explicit attention)": 6, "sdpa": 5, "local": 1},
        seconds={"math (explicit attention)": 97.0, "sdpa": 80.1, "local": 14.2},
        decided={"math (explicit attention)": True, "sdpa": True, "local": True},
        budget={"max_processes": 10, "max_seconds": 120.0, "per_process_s": 1.5},
        text="bf16 autocast against fp32 for the same training step (long-1024), backend by "
             "backend; 'significant' read as at least 25 % faster. Hardware: Example CPU 9000 "
             "96-Core Processor: native bf16 (AVX512-BF16 / AMX or a bf16 GPU).")
    figures.append(claim.to_dict())
    families = [
        Family(family="preprocessing", baseline="naive", unit="images", items=16,
               title="In-memory preprocessing: 16 images of 480-800 px -> (B, 3, 224, 224)",
               rows=[_row("naive", 0.0354, 1.0, None, baseline=True, throughput=452.0,
                          throughput_unit="images/s", peak_fraction=0.119, peak_unit=resize,
                          peak_memory_bytes=19_300_000),
                     _row("seed", 0.0334, 1.02, [0.937, 1.12], before=True, throughput=478.0,
                          throughput_unit="images/s", peak_fraction=0.126, peak_unit=resize,
                          peak_memory_bytes=19_300_000),
                     _row("batched", 0.00562, 6.3, [5.6, 7.1], throughput=2847.0,
                          throughput_unit="images/s", work_rate=2847.0, work_unit="images/s",
                          peak_fraction=0.748, peak_unit=resize,
                          peak_memory_bytes=12_800_000)]),
        Family(family="attention (CLIP)", baseline="math", unit="tokens", items=2532,
               title="Cross-attention block at CLIP size: B=4, 77 text -> 577 image tokens, "
                     "D=768, 12 heads",
               rows=[_row(impl, med, sp, ci, throughput=2532 / med, throughput_unit="tokens/s",
                          gflops=gf, peak_fraction=fr, peak_unit=unit, before=impl == "seed",
                          baseline=impl == "math", peak_memory_bytes=mem)
                     for impl, med, sp, ci, gf, fr, unit, mem in (
                         ("math", 0.00412, 1.0, None, 61.2, 0.321,
                          "GFLOP/s (float32 matmul)", 31_900_000),
                         ("seed", 0.00377, 1.09, [1.01, 1.18], 38.0, 0.199,
                          "GFLOP/s (float32 matmul)", 29_100_000),
                         ("sdpa", 0.00359, 1.15, [1.08, 1.22], 70.3, 0.368,
                          "GFLOP/s (float32 matmul)", 9_400_000),
                         ("mha", 0.00391, 1.05, [0.98, 1.13], 64.5, 0.338,
                          "GFLOP/s (float32 matmul)", 11_200_000),
                         ("sdpa bfloat16", 0.00161, 2.56, [2.31, 2.84], 156.8, 0.412,
                          "GFLOP/s (bfloat16 matmul)", 4_700_000))]),
        Family(family="training step", baseline="math float32", unit="images", items=2,
               title="Training step (forward, backward, AdamW): B=2, 1024 image tokens, D=64; "
                     "fp32 and bf16 per backend", note="bf16: Example CPU: native bf16",
               rows=[_row(f"{b} {d}", 0.1 / s, s, None if b == "math" and d == "float32"
                          else [s * 0.9, s * 1.1], throughput=2 * s / 0.1,
                          throughput_unit="images/s", before=b == "seed_sparse",
                          baseline=b == "math" and d == "float32", peak_memory_bytes=95_000_000)
                     for b in ("math", "sdpa", "mha", "local", "seed_sparse")
                     for d, s in (("float32", 1.0 if b == "math" else 1.4),
                                  ("bfloat16", 1.35 if b == "math" else 1.7))]),
        Family(family="loader -> step", baseline="seed DataLoader", unit="images", items=128,
               title="Loader feeding the step: 128 JPEGs of 640-800 px, batches of 32, "
                     "4 steps a call",
               rows=[_row("seed DataLoader", 2.91, 1.0, None, baseline=True, throughput=44.0,
                          throughput_unit="images/s"),
                     _row("fast loader", 1.43, 2.03, [1.81, 2.29], throughput=89.5,
                          throughput_unit="images/s")])]
    train_stages = ("optimizer", "forward", "projections", "scores", "softmax", "weighted_sum",
                    "output", "backward", "other (unlabelled)")
    for family in families:
        figures.append(family.to_dict())
        for row in family.rows:
            if family.family == "training step":
                stages = {s: row.median_s / len(train_stages) for s in train_stages}
            elif family.family == "loader -> step":
                stages = {"data stall": 0.3 * row.median_s, "training step": 0.7 * row.median_s}
            else:
                stages = {"convert": 0.2 * row.median_s, "resize+normalize": 0.7 * row.median_s,
                          "collate": 0.05 * row.median_s,
                          "other (unlabelled)": 0.05 * row.median_s}
            figures.append(Breakdown(family=family.family, implementation=row.implementation,
                                     stages=stages, total_s=row.median_s).to_dict())
            if row.peak_fraction is not None:
                figures.append(Efficiency(family=family.family,
                                          implementation=row.implementation,
                                          achieved=row.work_rate or row.gflops or 1.0,
                                          peak=3808.0, unit=str(row.peak_unit),
                                          fraction=row.peak_fraction).to_dict())
    for impl, slope, base in (("math", 1.98, 2.3e-3), ("sdpa", 1.9, 1.2e-3),
                              ("local", 1.02, 0.9e-3)):
        for metric, unit, values in (("time", "s", [base * 4**k for k in range(4)]),
                                     ("memory", "bytes", [16.8e6 * 4**k for k in range(4)])):
            figures.append(Scaling(family="attention (long sequence)", implementation=impl,
                                   metric=metric, unit=unit, sizes=[512, 1024, 2048, 4096],
                                   values=values, slope=slope).to_dict())
    figures.append({"kind": "stall", "family": "loader -> step",
                    "title": "Data-stall fraction (share of the loop's wall time spent waiting "
                             "for the next batch), 3 runs each",
                    "stall_fraction": {"seed DataLoader": [0.61, 0.63, 0.66],
                                       "fast loader": [0.12, 0.18, 0.3]}})
    message = ("faster(sdpa vs math N=4096): PASS: speedup 1.87x, 95 % interval [1.62, 2.11] >= "
               "1.25 (decided by the interval), 40 x 2 rounds in 2 processes on cpu, median "
               "times 3.12 ms vs 5.83 ms, per process 1.85x, 1.90x")
    guards = [{"nodeid": "tests/perf/test_timing.py::test_sdpa_faster_than_math_at_4096[cpu]",
               "kind": "faster", "name": "sdpa vs math N=4096", "metric": "speedup",
               "estimate": 1.87, "ci_low": 1.62, "ci_high": 2.11, "threshold": 1.25,
               "verdict": "pass", "decided_by": "interval", "samples_per_process": [40, 38],
               "n_processes": 2, "device": "cpu", "budget_s": 1.0, "message": message,
               "extra": {"guard_wall_s": 4.21, "per_process": [1.85, 1.9],
                         "other_cpu_cores": [0.02, 0.05], "faults_per_call": [0.0, 0.0]}}] * 6
    guards += baseline_rows()
    benchmarks = [{"name": f"test_preprocess_batched[cpu-varied16-{i}]",
                   "fullname": f"tests/perf/test_bench.py::test_preprocess_batched[cpu-{i}]",
                   "group": "preprocess", "median_s": 0.00731, "iqr_s": 0.00042,
                   "q1_s": 0.00712, "q3_s": 0.00754, "min_s": 0.00698, "max_s": 0.00911,
                   "rounds": 57, "extra_info": {"throughput": 1094.4,
                                                "throughput_unit": "images/s",
                                                "strategy": "Pillow pixels zero-copy (Arrow C "
                                                            "interface), torch uint8 resize"}}
                  for i in range(3)]
    machine = {"cpu_model": "Example CPU 9000 96-Core Processor", "cpu_capability": "AVX512",
               "cpu_flags": "avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 "
                            "avx512vbmi avx512_vnni",
               "threads": 2, "gpus": [], "torch": "2.14.1+cu130", "torchvision": "0.29.1"}
    return build_report(guards=guards, benchmarks=benchmarks, figures=figures,
                        machine=machine, settings={"device": "cpu", "scale": "default",
                                                   "benchmark": True, "budget": 1.0})


def probe(page: str, tmp_path: Path, size: tuple[int, int]) -> dict[str, Any]:
    """Render ``page`` (plus the probe) in headless Chromium at ``size``; the probe's findings."""
    browser = _browser()
    copy = page.replace("</head>", PROBE_HEAD + "</head>", 1)
    copy = copy.replace("</body>", PROBE_BODY + "</body>", 1)
    path = tmp_path / f"report-{size[0]}.html"
    path.write_text(copy, encoding="utf-8")
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={size[0]},{size[1]}",
               "--dump-dom", path.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="mmperf-probe">(.*?)</pre>', done.stdout, flags=re.S)
    assert done.returncode == 0 and found, (
        f"{browser} exited {done.returncode} without the probe's result; stderr:\n"
        f"{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(found.group(1).replace("&quot;", '"')
                                        .replace("&lt;", "<").replace("&gt;", ">")
                                        .replace("&amp;", "&"))
    return result


@pytest.fixture(scope="module")
def page() -> str:
    return render_html(realistic_report())


def test_report_has_no_scripts(page: str) -> None:
    """The promise the browser test must not break: self-contained, offline, no scripts."""
    assert "<script" not in page.lower() and "http" not in page.lower()


@pytest.mark.parametrize("size", [LAPTOP, NARROW], ids=["laptop-1280", "narrow-760"])
def test_tables_and_charts_fit_in_a_browser(page: str, tmp_path: Path,
                                            size: tuple[int, int]) -> None:
    found = probe(page, tmp_path, size)
    assert found["errors"] == [], found["errors"]
    assert found["viewport"] <= size[0] and found["count"]["table"] >= 15, found
    assert found["count"]["svg"] >= 10, found  # the probe saw the charts
    assert found["page"] <= found["viewport"], f"the page scrolls sideways: {found}"
    assert found["cut"] == [], "cut at the right edge:\n" + "\n".join(map(str, found["cut"]))
    # Nothing hides behind a horizontal scroll bar either: every column visible at once.
    assert found["scrolls"] == [], "scrolls sideways:\n" + "\n".join(map(str, found["scrolls"]))


def test_probe_sees_a_cut_table(tmp_path: Path) -> None:
    """The probe is not blind: a table wider than the page is reported."""
    wide = render_html({"figures": [{"kind": "wide", "values": "x" * 400, "more": "y" * 400}]})
    wide = wide.replace("</style>", "td{white-space:nowrap;overflow-wrap:normal}</style>", 1)
    found = probe(wide, tmp_path, NARROW)
    assert found["cut"] or found["scrolls"] or found["page"] > found["viewport"], found
