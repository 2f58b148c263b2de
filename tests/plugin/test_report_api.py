"""``mmperf_report`` from a repository with no conftest: its own callables, its own stage labels,
its own throughput unit, in the terminal, ``--mmperf-json`` and ``--mmperf-html`` alike."""

from __future__ import annotations

import html as htmllib
import json
import math
import random
import re
import time
import types
from typing import Any

import pytest

from pytest_mmperf.guards import Guard, GuardResult, GuardSettings, Instruments
from pytest_mmperf.report.api import MmperfReport
from pytest_mmperf.report.headline import headline_lines
from pytest_mmperf.report.html import render_html
from pytest_mmperf.report.terminal import terminal_family_lines
from pytest_mmperf.timing.measure import PairSamples

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
        if row["implementation"] == "per_row":  # the baseline: 1.0 by definition, no interval
            assert row["speedup_ci"] is None
        else:
            assert row["speedup_ci"][0] < row["speedup"] < row["speedup_ci"][1]
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


# --------------------------------------------------------------------------- claims: own pairs
# A claim that measures (candidate, baseline) itself, with fake timers and a fake spawner: the
# pooling rule (processes until the interval clears the claimed low end, or the budget is
# spent) is tested without real timing; the pytester test below runs real worker processes.


def _fake_samples(ratio: float, seed: int, *, rounds: int = 12,
                  quiet: bool = True) -> PairSamples:
    """One process's rounds: speedup ``ratio`` (t_baseline / t_candidate) with 2 % noise."""
    rng = random.Random(seed)
    base = [1e-3 * (1 + 0.02 * rng.random()) for _ in range(rounds)]
    cand = [b / ratio * math.exp(rng.gauss(0.0, 0.02)) for b in base]
    return PairSamples(candidate_s=cand, baseline_s=base, candidate_number=1,
                       baseline_number=1, order="cb" * (rounds // 2), device="cpu", threads=1,
                       inference_mode=False, budget_s=0.01,
                       other_cpu_cores=0.0 if quiet else 1.0)


class _World:
    """Per-process speedups ``true * exp(N(0, spread))``: the between-process spread that only
    more processes can average out. Records which processes were spawned."""

    def __init__(self, true: float, spread: float, *, pause_s: float = 0.0) -> None:
        self.true, self.spread, self.pause_s = true, spread, pause_s
        self.spawned: list[tuple[int, int]] = []

    def ratio(self, seed: int) -> float:
        return self.true * math.exp(random.Random(seed * 7919).gauss(0.0, self.spread))

    def measure_pair(self, candidate: Any, baseline: Any, device: str, *, seed: int = 0,
                     **_: Any) -> PairSamples:
        return _fake_samples(self.ratio(seed), seed)

    def spawner(self, index: int, k: int, budget_s: float, seed: int) -> PairSamples:
        self.spawned.append((index, k))
        time.sleep(self.pause_s)
        return _fake_samples(self.ratio(seed), seed)


def _report(world: _World, figures: list[dict[str, Any]]) -> MmperfReport:
    guard = Guard(GuardSettings(), instruments=Instruments(measure_pair=world.measure_pair),
                  spawner=world.spawner)
    return MmperfReport(figures, "test_claim", guard, benchmark=True)


def _work() -> None:
    return None


def test_claim_pair_pools_processes_until_its_interval_clears_the_claim() -> None:
    world = _World(true=1.45, spread=0.08)
    figures: list[dict[str, Any]] = []
    claim = _report(world, figures).claim("bf16 pays", claimed=(1.25, 3.0),
                                          measured={"sdpa": (_work, _work)})
    low, high = claim.interval["sdpa"]
    assert claim.verdict == "confirmed" and low >= 1.25 and low < claim.measured["sdpa"] < high
    n = claim.processes["sdpa"]
    # one process (quiet) would do only for a clear-cut ratio; this one needed more, and no
    # more were spawned once the interval cleared 1.25
    assert 2 <= n < 10 and len(world.spawned) == n - 1 and claim.decided == {"sdpa": True}
    assert [k for _, k in world.spawned] == list(range(1, n))
    assert claim.budget == {"max_processes": 10, "max_seconds": 120.0, "per_process_s": 1.5}
    assert figures == [claim.to_dict()]


def test_claim_pair_refuted_as_soon_as_the_interval_lies_below() -> None:
    world = _World(true=0.8, spread=0.05)
    claim = _report(world, []).claim("bf16 pays", claimed=(1.25, 3.0),
                                     measured={"local": (_work, _work)})
    assert claim.verdict == "refuted" and claim.interval["local"][1] < 1.25
    assert claim.decided == {"local": True} and claim.processes["local"] <= 2


def test_claim_pair_stops_at_its_process_budget_and_says_so() -> None:
    world = _World(true=1.25, spread=0.12)  # on the claimed low end: never decidable
    claim = _report(world, []).claim("bf16 pays", claimed=(1.25, 3.0),
                                     measured={"math": (_work, _work)}, processes=4)
    assert claim.verdict == "inconclusive" and claim.processes == {"math": 4}
    assert claim.decided == {"math": False} and len(world.spawned) == 3
    lines = "\n".join(terminal_family_lines({"figures": [claim.to_dict()]}, width=100))
    assert "(4 processes in " in lines and "budget spent undecided" in lines
    assert "at most 4 processes and 120 s per pair" in lines


def test_claim_pair_stops_at_its_time_limit() -> None:
    world = _World(true=1.25, spread=0.12, pause_s=0.05)
    claim = _report(world, []).claim("bf16 pays", claimed=(1.25, 3.0),
                                     measured={"math": (_work, _work)}, time_limit_s=0.12)
    # 0, 0.05, 0.10 s: a fourth process (ending near 0.15 s) would overrun 0.12 s: not started
    assert claim.decided == {"math": False} and 2 <= claim.processes["math"] <= 3
    assert claim.budget["max_seconds"] == 0.12


def test_claim_bare_number_records_no_interval() -> None:
    """A number derived from two medians has no measured spread: no [x, x] in the record, the
    terminal, the headline or the HTML; a real interval whose ends round alike gets digits."""
    world = _World(true=1.6, spread=0.1)
    report = _report(world, [])
    claim = report.claim("derived", claimed=(1.25, 3.0),
                         measured={"ratio of medians": 1.12, "given": (1.002, (1.001, 1.004)),
                                   "zero width": (0.779, (0.779, 0.779))})
    assert claim.interval == {"given": [1.001, 1.004]} and claim.verdict == "refuted"
    assert claim.measured == {"ratio of medians": 1.12, "given": 1.002, "zero width": 0.779}
    record = claim.to_dict()
    text = "\n".join(terminal_family_lines({"figures": [record]}) + headline_lines([record]))
    page = render_html({"figures": [record]})
    for rendered in (text, _visible(page)):
        pairs = re.findall(r"\[([^\[\],]+), ([^\[\],]+)\]", rendered)
        assert pairs and all(lo != hi for lo, hi in pairs), pairs
        assert "[1.001, 1.004]" in rendered and "(no interval)" in rendered
    with pytest.raises(ValueError, match="outside its interval"):
        report.claim("bad", claimed=(1, 2), measured={"x": (3.0, (1.0, 2.0))})
    with pytest.raises(ValueError, match="unit must be 'x'"):
        report.claim("bad", claimed=(30, 50), unit="%", measured={"x": (_work, _work)})
    with pytest.raises(ValueError, match="claim 'bad' processes must be an integer >= 1, got 0"):
        report.claim("bad", claimed=(1, 2), measured={"x": 1.0}, processes=0)
    with pytest.raises(ValueError, match="claim 'bad' time_limit_s must be a number of seconds"):
        report.claim("bad", claimed=(1, 2), measured={"x": 1.0}, time_limit_s=0)


CLAIM_TESTS = """
import pytest

def work():
    return sum(range(2000))

@pytest.mark.mmperf_timing
def test_claim(mmperf_report):
    # identical work against a claimed low end of 1.0: the interval straddles it in every
    # process, so the claim pools processes (this test re-run in fresh workers) to its budget
    claim = mmperf_report.claim("same", claimed=(1.0, 2.0), measured={"w": (work, work)},
                                processes=3)
    assert claim.processes == {"w": 3}, claim
    assert claim.decided == {"w": False} and claim.verdict == "inconclusive", claim
"""


def test_claim_pair_pools_real_worker_processes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_claim=CLAIM_TESTS)
    run = pytester.runpytest("-p", "no:cacheprovider", "--mmperf-json=r.json")
    run.assert_outcomes(passed=1)
    (claim,) = [f for f in json.loads((pytester.path / "r.json").read_text())["figures"]
                if f["kind"] == "claim"]
    low, high = claim["interval"]["w"]
    assert low < 1.0 < high and claim["processes"] == {"w": 3}


class _Reached(Exception):
    pass


class _WorkerGuard(Guard):
    """A guard in an mmperf worker whose target is guard call ``target`` (as the pytest glue's:
    placeholders before it, the measurement ends the test at it)."""

    def __init__(self, target: int, world: _World) -> None:
        super().__init__(GuardSettings(), instruments=Instruments(measure_pair=self._measure))
        self.worker = types.SimpleNamespace(index=target)
        self.world, self.measured = world, 0

    def _measure(self, *args: Any, **kwargs: Any) -> PairSamples:
        self.measured += 1
        return self.world.measure_pair(*args, **kwargs)

    def _start(self, kind: str, name: str | None, device: str, *, timing: bool,
               timing_run: Any = None) -> GuardResult | None:
        super()._start(kind, name, device, timing=timing, timing_run=timing_run)
        if self.call_index == self.worker.index:
            raise _Reached(name)
        return GuardResult(nodeid="", kind=kind, name=name, metric=kind, estimate=None,
                           threshold=None, verdict="skipped", decided_by="worker", device=device,
                           message="not measured in an mmperf worker")


def test_claim_worker_measures_no_stand_in_for_pairs_it_never_leaves() -> None:
    """A worker re-runs the test up to its target guard call. If the target is the claim's third
    pair, the first two are never read (the worker ends inside the claim): nothing is measured
    for them. If the target comes after the claim, they get the cheap stand-in, so the test
    takes the same path as in the parent."""
    pairs = {label: (_work, _work) for label in ("math", "sdpa", "local")}
    inside = _WorkerGuard(2, _World(1.3, 0.1))
    report = MmperfReport([], "t", inside, benchmark=True)
    with pytest.raises(_Reached, match="local"):
        report.claim("bf16", claimed=(1.25, 3.0), measured=pairs)
    assert inside.measured == 0
    after = _WorkerGuard(5, _World(1.3, 0.1))
    figures: list[dict[str, Any]] = []
    claim = MmperfReport(figures, "t", after, benchmark=True).claim(
        "bf16", claimed=(1.25, 3.0), measured=pairs)
    assert after.measured == 3 and set(claim.interval) == set(pairs)
    assert figures == []  # a worker's figures belong to the parent's run
