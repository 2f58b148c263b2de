"""Fast checks of tools/regression_proof.py (no pytest runs of the suite).

The anchors must exist in today's reference/ (a refactor that breaks one fails here, not
silently in the proof), applying a regression changes the copy only, and the JUnit parser reads
failures, errors and skips.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def proof() -> ModuleType:
    spec = importlib.util.spec_from_file_location("regression_proof",
                                                  ROOT / "tools" / "regression_proof.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["regression_proof"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_every_regression_has_a_unique_anchor(proof: ModuleType) -> None:
    assert len(proof.REGRESSIONS) >= 4
    for reg in proof.REGRESSIONS:
        for sub in reg.substitutions:
            text = (ROOT / "reference" / sub.file).read_text(encoding="utf-8")
            assert text.count(sub.old) == 1, f"{reg.name}: anchor not unique in {sub.file}"
            assert sub.new != sub.old


@pytest.mark.parametrize("index", range(4))
def test_apply_changes_the_copy_not_the_original(proof: ModuleType, tmp_path: Path,
                                                 index: int) -> None:
    reg = proof.REGRESSIONS[index]
    originals = {p.name: p.read_text(encoding="utf-8")
                 for p in (ROOT / "reference").glob("*.py")}
    package = proof.copy_reference(tmp_path)
    proof.apply_regression(reg, package)
    for sub in reg.substitutions:
        changed = (package / sub.file).read_text(encoding="utf-8")
        assert sub.new in changed and sub.old not in changed
        assert changed != originals[sub.file]
        compile(changed, str(package / sub.file), "exec")  # still valid Python
    assert {p.name: p.read_text(encoding="utf-8")
            for p in (ROOT / "reference").glob("*.py")} == originals


def test_missing_anchor_fails_loudly(proof: ModuleType, tmp_path: Path) -> None:
    package = proof.copy_reference(tmp_path)
    bogus = proof.Regression("bogus", "nothing", (proof.Substitution(
        "preprocess.py", "this text is not in the file\n", "x\n"),))
    with pytest.raises(proof.AnchorError, match="bogus.*found 0 times"):
        proof.apply_regression(bogus, package)


def test_unknown_regression_name(proof: ModuleType) -> None:
    with pytest.raises(ValueError, match="unknown regression 'nope'.*per-image-loop"):
        proof.regression_by_name("nope")


def test_selection_excludes_only_the_other_area(proof: ModuleType, tmp_path: Path) -> None:
    for name in ("test_timing.py", "test_counters_attention.py", "test_counters_preprocess.py"):
        (tmp_path / name).write_text("", encoding="utf-8")
    pre = [Path(f).name for f in proof.select_files(proof.regression_by_name("per-image-loop"),
                                                     tmp_path)]
    att = [Path(f).name for f in proof.select_files(proof.regression_by_name("sdpa-to-math"),
                                                     tmp_path)]
    assert pre == ["test_counters_preprocess.py", "test_timing.py"]
    assert att == ["test_counters_attention.py", "test_timing.py"]
    assert len(proof.select_files(None, tmp_path)) == 3


def test_cheap_counter_files_run_before_timing_files(proof: ModuleType, tmp_path: Path) -> None:
    names = ["test_timing.py", "test_training.py", "test_cases.py", "test_zzz.py",
             "test_counters_preprocess.py"]
    for name in names:
        (tmp_path / name).write_text("", encoding="utf-8")
    assert [Path(f).name for f in proof.select_files(None, tmp_path)] == [
        "test_counters_preprocess.py", "test_training.py", "test_cases.py", "test_timing.py",
        "test_zzz.py"]


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4">
<testcase classname="tests.perf.test_timing" name="test_ok" time="1.0"/>
<testcase classname="tests.perf.test_timing" name="test_sdpa_faster[cpu]" time="2.0">
  <failure message="Failed: ratio 0.98 below 1.20&#10;more">trace</failure></testcase>
<testcase classname="tests.perf.test_counters_attention" name="test_mem" time="0.1">
  <error message="fixture error">trace</error></testcase>
<testcase classname="tests.perf.test_timing" name="test_bf16" time="0.0">
  <skipped type="pytest.skip" message="no native bf16">skip</skipped></testcase>
</testsuite></testsuites>
"""


def test_parse_junit(proof: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT, encoding="utf-8")
    result = proof.parse_junit(path)
    assert result.tests == 4
    assert result.failed == ["tests.perf.test_timing::test_sdpa_faster[cpu]"]
    assert result.errors == ["tests.perf.test_counters_attention::test_mem"]
    assert result.skipped == ["tests.perf.test_timing::test_bf16"]
    assert result.messages["tests.perf.test_timing::test_sdpa_faster[cpu]"] == \
        "Failed: ratio 0.98 below 1.20"


def _run(proof: ModuleType, name: str, failed: list[str], code: int,
         origins: list[str] | None = None, problem: str = "") -> object:
    junit = proof.JunitResult(tests=3, failed=failed)
    return proof.RunResult(name, code, junit, 1.0, origins or ["1\t/x"], [], "", problem)


def test_verdicts_and_table(proof: ModuleType) -> None:
    base_ok = _run(proof, proof.BASELINE, [], 0)
    caught = _run(proof, "sdpa-to-math", ["tests.perf.test_timing::test_sdpa"], 1)
    missed = _run(proof, "slowdown-30", [], 0)
    broken = _run(proof, "per-image-loop", ["x::y"], 1, problem="no tests ran")
    assert base_ok.passed and caught.caught and not missed.caught and not broken.caught
    assert not _run(proof, proof.BASELINE, ["a::b"], 1).passed
    table = proof.format_table([base_ok, caught, missed, broken])
    assert "PASS" in table and "test_timing::test_sdpa" in table
    assert "NOT CAUGHT" in table and "ERROR" in table and "no tests ran" in table


def test_cli_list_and_bad_only(proof: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert proof.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(r.name in out for r in proof.REGRESSIONS) and proof.BASELINE in out
    assert proof.main(["--only", "nope"]) == 2
    assert "unknown regression" in capsys.readouterr().err
