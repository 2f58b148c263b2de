"""Under pytest-xdist nothing is lost: the workers hand their guard results, figures and snapshot
updates to the controller, which prints one table and writes one JSON and one snapshot file,
merged in collection order (the order of a run without xdist).

xdist needs real processes, so its runs are subprocesses (each starts two workers that import
torch: a few seconds); the run without xdist that the files are compared with is in-process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]
pytest.importorskip("xdist")

# Three files of counter guards and snapshot cases (two per file), so that two workers share
# them; a claim figure; and a file of timing work that xdist must skip with the reason.
COUNTED = """
import torch

X = torch.randn(64)

def test_first(mmperf_guard):
    mmperf_guard.snapshot("{n}-add", lambda: torch.add(X, {n}), metrics=("ops",))
    mmperf_guard.max_ops(lambda: torch.add(X, 1), {{"add": 1}})

def test_second(mmperf_guard):
    mmperf_guard.snapshot("{n}-mul", lambda: [torch.mul(X, 2) for _ in range({n})],
                          metrics=("ops",))
"""
CLAIM = """
def test_claim(mmperf_report):
    mmperf_report.claim("article: 30-50 % faster", claimed=(1.3, 1.5), measured={"ours": 1.1})
"""
TIMED = """
import torch

X = torch.randn(64)

def test_timed(mmperf_guard):
    mmperf_guard.faster(lambda: torch.add(X, 1), lambda: torch.add(X, 1), at_least=1.0)

def test_family(mmperf_report):
    mmperf_report.family("adds", {"a": lambda: torch.add(X, 1), "b": lambda: torch.add(X, 2)},
                         baseline="a")
"""
ARGS = ("-p", "no:randomly", "-p", "no:cacheprovider")
SNAPSHOTS = "mmperf-snapshots.json"


def _repo(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**{f"test_count{n}": COUNTED.format(n=n) for n in (1, 2, 3)})
    pytester.makepyfile(test_claim=CLAIM, test_timed=TIMED)


def _guards(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["guards"])


def test_xdist_run_updates_every_snapshot_and_reports_every_guard(
    pytester: pytest.Pytester,
) -> None:
    _repo(pytester)
    update = pytester.runpytest_subprocess("-n", "2", "--mmperf-update-snapshots", "-rs", *ARGS)
    update.assert_outcomes(passed=7, skipped=2)
    update.stdout.fnmatch_lines_random([
        "*faster(): timing guards and report families are skipped under pytest-xdist: "
        "parallel workers distort timing (run them with -n 0)*",
        "*family(adds: b vs a): timing guards and report families are skipped under "
        "pytest-xdist*",
    ])
    written = pytester.path / SNAPSHOTS
    cases = json.loads(written.read_text())["cases"]
    assert sorted(cases) == [f"{n}-{op}" for n in (1, 2, 3) for op in ("add", "mul")]
    assert [cases[f"{n}-mul"]["total_ops"] for n in (1, 2, 3)] == [1, 2, 3]

    # The next run with xdist checks them all and reports every guard of every worker.
    check = pytester.runpytest_subprocess("-n", "2", "--mmperf-json=out.json", *ARGS)
    check.assert_outcomes(passed=7, skipped=2)
    guards = _guards(pytester.path / "out.json")
    assert len(guards) == 6 + 3 + 2  # snapshots, max_ops, the skipped timing guard and family
    assert all(g["verdict"] == ("skipped" if "timed" in g["nodeid"] else "pass")
               for g in guards)
    assert [f["kind"] for f in json.loads((pytester.path / "out.json").read_text())["figures"]
            ] == ["claim"]
    table = check.stdout.str().split("mmperf guards", 1)[1]
    for nodeid in {g["nodeid"] for g in guards}:
        assert nodeid.split("::")[1] in table
    check.stdout.fnmatch_lines(["*mmperf report*", "*article: 30-50 % faster*"])
    check.stdout.fnmatch_lines(["mmperf: device=auto, seed=0, scale=default",
                                "mmperf: replay with: pytest *"])

    # A run without xdist writes the same bytes and reports the guards in the same order.
    xdist_bytes = written.read_bytes()
    written.unlink()
    plain = pytester.runpytest("--mmperf-update-snapshots", "--mmperf-json=plain.json",
                               "-m", "not mmperf_timing", *ARGS)
    plain.assert_outcomes(passed=7, deselected=2)
    assert written.read_bytes() == xdist_bytes

    def order(rows: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
        return [(g["nodeid"], g["kind"], g["name"]) for g in rows if "timed" not in g["nodeid"]]

    assert order(_guards(pytester.path / "plain.json")) == order(guards)


def _worker(name: str, payload: dict[str, Any] | None) -> Any:
    """A stand-in for xdist's WorkerController: its gateway id and what the worker sent."""
    from types import SimpleNamespace

    output = {} if payload is None else {"mmperf": json.dumps({"version": 1, **payload})}
    return SimpleNamespace(gateway=SimpleNamespace(id=name), workeroutput=output)


def _result(nodeid: str, name: str) -> dict[str, Any]:
    from pytest_mmperf.guards import GuardResult

    return GuardResult(nodeid=nodeid, kind="max_ops", name=name, metric="ops", estimate=1,
                       threshold=1, verdict="pass", decided_by="count", device="cpu",
                       message="").to_dict()


def test_controller_merges_in_collection_order_whatever_order_workers_end(
    pytester: pytest.Pytester,
) -> None:
    """The merge itself, without starting workers: results by the test's collection position
    then call order; a case two tests recorded keeps the later test's values; a worker that
    went down without handing over is named."""
    from pytest_mmperf.glue.guard_fixture import RESULTS_KEY, SNAPSHOT_STORE_KEY
    from pytest_mmperf.glue.report_fixture import FIGURES_KEY
    from pytest_mmperf.glue.xdist import LOST_KEY

    config = pytester.parseconfigure("-p", "xdist")
    controller = config.pluginmanager.get_plugin("mmperf-xdist-controller")
    late = {"guards": [[5, "t.py::e", _result("t.py::e", "e1")],
                       [5, "t.py::e", _result("t.py::e", "e2")]],
            "figures": [[5, "t.py::e", {"kind": "claim", "nodeid": "t.py::e"}]],
            "snapshots": [[5, "t.py::e", "shared", {"total_ops": 5}]]}
    early = {"guards": [[1, "t.py::b", _result("t.py::b", "b1")]],
             "figures": [[1, "t.py::b", {"kind": "note", "nodeid": "t.py::b"}]],
             "snapshots": [[1, "t.py::b", "shared", {"total_ops": 1}],
                           [1, "t.py::b", "only-b", {"total_ops": 2}]]}
    controller.pytest_testnodedown(_worker("gw1", late), None)
    controller.pytest_testnodedown(_worker("gw0", early), None)
    controller.pytest_testnodedown(_worker("gw2", None), "[Errno 32] crashed")
    assert [r.name for r in config.stash[RESULTS_KEY]] == ["b1", "e1", "e2"]
    assert [f["kind"] for f in config.stash[FIGURES_KEY]] == ["note", "claim"]
    assert config.stash[LOST_KEY] == [
        "mmperf: xdist worker gw2 went down ([Errno 32] crashed) before handing over its guard "
        "results, figures and snapshot updates: they are missing"]
    controller.pytest_sessionfinish(session=None)
    store = config.stash[SNAPSHOT_STORE_KEY]
    assert store.cases == {"only-b": {"total_ops": 2}, "shared": {"total_ops": 5}}
    assert not (pytester.path / SNAPSHOTS).exists()  # the session plugin saves, once
