"""The report's "vs baseline" part: comparisons across commits, slowest first, in the HTML page
and the terminal."""

from __future__ import annotations

import re

from test_html_browser import baseline_rows  # tests/unit is on sys.path (rootdir imports)

from pytest_mmperf.report.comparisons import comparison_rows, comparison_section, terminal_lines
from pytest_mmperf.report.html import render_html
from pytest_mmperf.report.json_report import build_report


def test_rows_are_slowest_first_with_the_unmeasured_last() -> None:
    rows = comparison_rows([{"kind": "faster", "estimate": 9.0}, *baseline_rows()[::-1]])
    assert [r["estimate"] for r in rows] == [1.21, 0.998, 0.61, None]


def test_the_section_has_one_bar_per_measured_comparison_and_no_degenerate_interval() -> None:
    html = comparison_section(baseline_rows())
    assert html.startswith('<h2 id="baseline">vs origin/main</h2>')
    assert "(0123456789ab)" in html and "4 comparisons (1 faster, 1 new, 1 same, 1 slower)" in html
    ratios = [float(r) for r in re.findall(r'class="bar" data-test="[^"]*" data-ratio="([^"]+)"',
                                           html)]
    assert ratios == [1.21, 0.998, 0.61]
    assert html.count('class="whisker"') == 3 and 'class="tolerance"' in html
    assert not re.search(r"\[([\d.]+), \1\]", html)
    assert comparison_section([{"kind": "faster", "estimate": 2.0}]) == ""


def test_the_page_leads_with_the_comparisons() -> None:
    page = render_html(build_report(guards=baseline_rows()))
    assert page.index('id="baseline"') < page.index('id="summary"')
    assert '<a href="#baseline">vs baseline</a>' in page
    plain = render_html(build_report(guards=[]))
    assert 'id="baseline"' not in plain and "#baseline" not in plain


def test_terminal_lines() -> None:
    lines = terminal_lines(baseline_rows())
    assert lines[0].startswith("vs origin/main (0123456789ab), slowest first")
    assert lines[1].endswith("1.21x [1.15, 1.27] slower") and lines[-1].endswith(": new")
    assert terminal_lines([]) == []
