"""``mmperf_report`` from a repository with no conftest: its own callables, its own stage labels,
its own throughput unit, in the terminal, ``--mmperf-json`` and ``--mmperf-html`` alike."""

from __future__ import annotations

import html as htmllib
import json
import re
from typing import Any

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import json
import torch
from torch.profiler import record_function

X = torch.randn(32, 128)
W1 = torch.randn(128, 256)
W2 = torch.randn(256, 128)


def mlp_per_row():
    rows = []
    for row in X:
        with record_function("mmperf::mlp"):
            rows.append(torch.relu(row @ W1) @ W2)
    with record_function("mmperf::gather"):
        return torch.stack(rows)


def mlp_batched():
    with record_function("mmperf::mlp"):
        hidden = torch.relu(X @ W1)
    with record_function("mmperf::readout"):
        return hidden @ W2


def test_my_mlp(mmperf_report):
    family = mmperf_report.family(
        "my-mlp", {"per_row": mlp_per_row, "batched": mlp_batched}, baseline="per_row",
        items=32, unit="rows", flops=2 * 2 * 32 * 128 * 256)
    assert family.row("batched").throughput_unit == "rows/s"
    with open("family.json", "w") as handle:
        json.dump(family.to_dict(), handle)
    claim = mmperf_report.claim("batching pays", claimed=(1.5, 10),
                                measured={"batched": family.row("batched")})
    assert claim.verdict in ("confirmed", "refuted", "inconclusive")
"""


def _visible(page: str) -> str:
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_family_of_a_users_own_code(pytester: pytest.Pytester,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    run = pytester.runpytest("-p", "no:cacheprovider", "--mmperf-json=r.json",
                             "--mmperf-html=r.html")
    run.assert_outcomes(passed=1)
    report = json.loads((pytester.path / "r.json").read_text())
    assert report["schema"] == "pytest-mmperf/2"
    (family,) = [f for f in report["figures"] if f["kind"] == "family"]
    returned: dict[str, Any] = json.loads((pytester.path / "family.json").read_text())
    assert returned == family  # the typed record is what the JSON holds
    rows = {r["implementation"]: r for r in family["rows"]}
    assert set(rows) == {"per_row", "batched"} and family["baseline"] == "per_row"
    for row in rows.values():
        assert row["q1_s"] <= row["median_s"] <= row["q3_s"]
        assert row["speedup_ci"][0] <= row["speedup"] <= row["speedup_ci"][1]
        assert row["throughput"] == pytest.approx(32 / row["median_s"])
        assert row["throughput_unit"] == "rows/s"
        assert 0 < row["peak_fraction"] <= 1
    assert rows["per_row"]["speedup"] == 1.0
    stages = {b["implementation"]: set(b["stages"]) for b in report["figures"]
              if b["kind"] == "breakdown"}
    assert {"mlp", "gather"} <= stages["per_row"] and {"mlp", "readout"} <= stages["batched"]
    # The answer first, in the terminal and the HTML: fastest, speedup, bottleneck, % of peak.
    fastest = min(rows.values(), key=lambda r: r["median_s"])["implementation"]
    text = run.stdout.str()
    summary = text[text.index("mmperf report"):]
    first = summary.splitlines()[1]
    assert first.startswith(f"my-mlp: fastest {fastest}") and "bottleneck" in first
    page = _visible((pytester.path / "r.html").read_text())
    assert page.index("Summary") < page.index("Claims") < page.index("Machine and settings")
    assert f"my-mlp : {fastest}" in page or f"my-mlp: {fastest}" in page
    for stage in ("mlp", "gather", "readout"):
        assert stage in page
    assert "rows/s" in page and "CLAIM batching pays" in summary


def test_family_bad_arguments_are_clear(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import pytest

def test_bad(mmperf_report):
    with pytest.raises(ValueError, match="baseline 'x' is not one of the implementations"):
        mmperf_report.family("f", {"a": lambda: 1, "b": lambda: 2}, baseline="x")
    with pytest.raises(TypeError, match="implementation 'b' must be a zero-argument callable"):
        mmperf_report.family("f", {"a": lambda: 1, "b": 3}, baseline="a")
    with pytest.raises(ValueError, match="flops\\\\['a'\\\\] must be a finite number >= 0"):
        mmperf_report.family("f", {"a": lambda: 1, "b": lambda: 2}, baseline="a",
                             flops={"a": -1})
    with pytest.raises(ValueError, match="before \\\\['z'\\\\] are not implementations"):
        mmperf_report.family("f", {"a": lambda: 1, "b": lambda: 2}, baseline="a", before=["z"])
    with pytest.raises(ValueError, match="claimed must be \\\\(low, high\\\\)"):
        mmperf_report.claim("c", claimed=(3, 1), measured={"x": 1.0})
""")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
