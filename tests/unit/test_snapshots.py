"""Tests of pytest_mmperf.counting.snapshots: compare, diff, update, atomic save, malformed
files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mmperf.counting.snapshots import SnapshotStore, format_snapshot

RECORDED = {"flops": 1000, "peak_memory_bytes": 4096, "total_ops": 10}


@pytest.fixture
def snap_file(tmp_path: Path) -> Path:
    path = tmp_path / "snapshots" / "counters.json"
    path.parent.mkdir()
    path.write_text(format_snapshot({"attn": RECORDED, "other": {"flops": 5}}))
    return path


def test_file_format_sorted_indented_stable() -> None:
    text = format_snapshot({"b": {"z": 1, "a": 2.5}, "a": {"flag": True, "kind": "sdpa"}})
    assert json.loads(text) == {
        "version": 1,
        "cases": {"a": {"flag": True, "kind": "sdpa"}, "b": {"a": 2.5, "z": 1}},
    }
    assert text.index('"a": {') < text.index('"b": {') and text.index('"cases"') < text.index(
        '"version"'
    )
    assert text.endswith("}\n") and '\n  "cases": {\n    "a": {\n      "flag": true,' in text
    assert format_snapshot({"a": {"kind": "sdpa", "flag": True}, "b": {"a": 2.5, "z": 1}}) == text


def test_match_exact(snap_file: Path) -> None:
    store = SnapshotStore(snap_file)
    outcome = store.check("attn", dict(RECORDED))
    assert outcome.status == "match" and not outcome.failed and outcome.diff == ""
    assert outcome.old == RECORDED and outcome.new == RECORDED
    assert store.save() is False


@pytest.mark.parametrize("factor", [1.5, 0.5], ids=["regression", "improvement"])
def test_change_in_either_direction_fails_with_diff(snap_file: Path, factor: float) -> None:
    store = SnapshotStore(snap_file)
    new = {**RECORDED, "flops": int(1000 * factor)}
    outcome = store.check("attn", new)
    assert outcome.status == "changed" and outcome.failed
    assert "snapshot 'attn': 1 of 3 metric(s) moved beyond tolerance" in outcome.diff
    row = next(line for line in outcome.diff.splitlines() if line.strip().startswith("flops"))
    expected = ["flops", "1,000", f"{int(1000 * factor):,}", f"{factor - 1:+.1%}", "0.0%"]
    assert row.split() == expected
    assert "total_ops" not in outcome.diff  # unchanged metrics are not listed
    assert "If the change is intended, check again with GuardSettings(update_snapshots=True)" \
        in outcome.message  # pytest-free by default
    assert store.save() is False  # nothing recorded without update
    assert json.loads(snap_file.read_text())["cases"]["attn"] == RECORDED


def test_tolerance_scalar_and_per_metric(snap_file: Path) -> None:
    store = SnapshotStore(snap_file)
    drift = {"flops": 1040, "peak_memory_bytes": 4096 * 0.9, "total_ops": 10}
    assert store.check("attn", drift, tolerance=0.1).status == "match"
    assert store.check("attn", drift, tolerance=0.03).status == "changed"
    per_metric = store.check("attn", drift, tolerance={"flops": 0.05, "peak_memory_bytes": 0.05})
    assert per_metric.status == "changed"
    assert "peak_memory_bytes" in per_metric.diff and "flops" not in per_metric.diff
    loose = store.check("attn", drift, tolerance={"flops": 0.05, "peak_memory_bytes": 0.2})
    assert loose.failed is False
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['flop'\]"):
        store.check("attn", drift, tolerance={"flop": 0.1})
    with pytest.raises(ValueError, match="-0.1 is not a relative tolerance"):
        store.check("attn", drift, tolerance=-0.1)


def test_added_removed_and_non_numeric_metrics_are_changes(snap_file: Path) -> None:
    store = SnapshotStore(snap_file)
    outcome = store.check("attn", {"flops": 1000, "total_ops": 10, "syncs": 0})
    assert outcome.status == "changed"
    lines = {line.split()[0]: line.split() for line in outcome.diff.splitlines()[2:]}
    assert lines["syncs"][1:] == ["-", "0", "added"]
    assert lines["peak_memory_bytes"][1:] == ["4,096", "-", "removed"]
    store.check("other", {"flops": 5, "backend": "sdpa"}, update=True)
    assert store.check("other", {"flops": 5, "backend": "math"}, tolerance=1.0).status == "changed"
    zero = SnapshotStore(snap_file.parent / "zero.json")
    zero.check("z", {"syncs": 0}, update=True)
    assert "from 0" in zero.check("z", {"syncs": 2}, tolerance=10.0).diff


def test_new_case_reported_then_updated_and_saved(snap_file: Path) -> None:
    store = SnapshotStore(snap_file)
    outcome = store.check("brand-new", {"flops": 7})
    assert outcome.status == "new" and outcome.failed and outcome.old is None
    assert "no snapshot recorded for case 'brand-new'" in outcome.message
    assert "update_snapshots=True" in outcome.message and str(snap_file) in outcome.message
    hinted = SnapshotStore(snap_file, update_hint="run the updater").check("brand-new", {"f": 1})
    assert hinted.message.endswith("; run the updater")  # the caller's words (the pytest glue)
    assert not store.dirty
    updated = store.check("brand-new", {"flops": 7}, update=True)
    assert updated.status == "updated" and not updated.failed
    assert store.save() is True
    data = json.loads(snap_file.read_text())
    assert data["cases"]["brand-new"] == {"flops": 7} and data["cases"]["attn"] == RECORDED
    assert SnapshotStore(snap_file).check("brand-new", {"flops": 7}).status == "match"


def test_update_records_changes_but_keeps_values_within_tolerance(snap_file: Path) -> None:
    store = SnapshotStore(snap_file)
    within = store.check("attn", {**RECORDED, "flops": 1010}, tolerance=0.05, update=True)
    assert within.status == "match"
    assert store.save() is False  # no churn for drift within tolerance
    changed = store.check("attn", {**RECORDED, "flops": 500}, update=True)
    assert changed.status == "updated" and "flops" in changed.diff and "-50.0%" in changed.diff
    assert store.save() is True
    assert json.loads(snap_file.read_text())["cases"]["attn"]["flops"] == 500


def test_save_is_atomic_and_keeps_mode(snap_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    os.chmod(snap_file, 0o644)
    before = snap_file.read_text()
    store = SnapshotStore(snap_file)
    store.check("attn", {**RECORDED, "flops": 1}, update=True)

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.save()
    assert snap_file.read_text() == before  # previous file intact
    assert sorted(p.name for p in snap_file.parent.iterdir()) == ["counters.json"]  # no temp left
    monkeypatch.undo()
    assert store.save() is True
    assert json.loads(snap_file.read_text())["cases"]["attn"]["flops"] == 1
    assert stat.S_IMODE(snap_file.stat().st_mode) == 0o644


def test_save_creates_missing_file_and_merges_concurrent_updates(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "snap.json"
    first, second = SnapshotStore(path), SnapshotStore(path)
    assert first.cases == {}
    first.check("a", {"flops": 1}, update=True)
    second.check("b", {"flops": 2}, update=True)
    assert first.save() and second.save()
    assert json.loads(path.read_text())["cases"] == {"a": {"flops": 1}, "b": {"flops": 2}}


def test_stale_cases_and_remove(snap_file: Path) -> None:
    store = SnapshotStore(snap_file)
    store.check("attn", dict(RECORDED))
    assert store.stale_cases() == ["other"]
    assert store.stale_cases(["other"]) == ["attn"]
    store.remove("other")
    with pytest.raises(KeyError, match="no case 'missing'"):
        store.remove("missing")
    assert store.save() is True
    assert list(json.loads(snap_file.read_text())["cases"]) == ["attn"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "invalid JSON at line 1 column 1"),
        ('{"version": 1, "cases": {', "invalid JSON"),
        ("[]", "expected a JSON object with 'version' and 'cases', got list"),
        ('{"cases": {}}', "unsupported 'version' None"),
        ('{"version": 2, "cases": {}}', "unsupported 'version' 2"),
        ('{"version": 1, "cases": {}, "extra": 1}', r"unknown top-level key\(s\) \['extra'\]"),
        ('{"version": 1, "cases": []}', "'cases' must be an object"),
        ('{"version": 1, "cases": {"a": 3}}', "case 'a' must be an object"),
        ('{"version": 1, "cases": {"a": {"m": [1]}}}', r"case 'a' metric 'm': \[1\]"),
        ('{"version": 1, "cases": {"a": {"m": NaN}}}', "not finite"),
    ],
)
def test_malformed_file_names_path_and_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem) as info:
        SnapshotStore(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "values", "match"),
    [
        ("", {"flops": 1}, "case name must be a non-empty str"),
        ("x", {}, "values must be a non-empty mapping"),
        ("x", {"flops": float("inf")}, "metric 'flops'.*not finite"),
        ("x", {"flops": [1]}, r"metric 'flops'.*\[1\] \(list\) is not a snapshot value"),
    ],
)
def test_check_rejects_bad_input(tmp_path: Path, name: str, values: dict, match: str) -> None:
    store = SnapshotStore(tmp_path / "s.json")
    with pytest.raises((TypeError, ValueError), match=match):
        store.check(name, values)


def test_module_does_not_import_torch() -> None:
    code = "import sys, pytest_mmperf.counting.snapshots; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_record_takes_over_values_as_an_update_would(tmp_path: Path, snap_file: Path) -> None:
    """What the pytest-xdist controller does with its workers' updates: the same file as
    ``check(update=True)`` in one process, byte for byte."""
    updated = {"total_ops": 12, "flops": 900}
    checked = SnapshotStore(snap_file)
    assert checked.check("attn", updated, update=True).status == "updated"
    checked.check("new", {"b": 1.5, "a": "x"}, update=True)
    checked.save()
    expected = snap_file.read_bytes()
    snap_file.write_text(format_snapshot({"attn": RECORDED, "other": {"flops": 5}}))
    recorded = SnapshotStore(snap_file)
    recorded.record("attn", updated)
    recorded.record("new", {"a": "x", "b": 1.5})
    assert recorded.dirty and recorded.save()
    assert snap_file.read_bytes() == expected
    with pytest.raises(ValueError, match=r"record\('x'\) metric 'm': nan is not finite"):
        recorded.record("x", {"m": float("nan")})
    with pytest.raises(ValueError, match="non-empty mapping"):
        recorded.record("x", {})
