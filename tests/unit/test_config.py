"""pytest_mmperf.glue.options without a pytest run: parsers, the settings table, seeds, markers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pytest_mmperf.glue import options as cfg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("auto", ("auto",)),
        ("cpu", ("cpu",)),
        ("CPU", ("cpu",)),
        ("cuda", ("cuda:0",)),
        ("cuda:3", ("cuda:3",)),
        ("cuda:03", ("cuda:3",)),
        ("mps", ("mps",)),
        ("mps:0", ("mps",)),
        ("xpu", ("xpu:0",)),
        ("xpu:1", ("xpu:1",)),
        (" cpu , cuda:0 ", ("cpu", "cuda:0")),
        ("cuda,cuda:0,cpu", ("cuda:0", "cpu")),  # duplicates removed, order kept
        ("auto,cpu", ("auto", "cpu")),
    ],
)
def test_parse_device_list_accepts(text: str, expected: tuple[str, ...]) -> None:
    assert cfg.parse_device_list(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("banana", "'banana' is not a device"),
        ("cuda:-1", "negative device index"),
        ("cuda:x", "not a device"),
        ("cpu:1", "cpu has no index 1"),
        ("mps:2", "mps has no index 2"),
        ("gpu", "not a device"),
        ("", "empty entry"),
        ("cpu,", "empty entry"),
        ("cpu,,cuda", "empty entry"),
    ],
)
def test_parse_device_list_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        cfg.parse_device_list(text)


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "yes", "on", " On "])
def test_parse_bool_true(text: str) -> None:
    assert cfg.parse_bool(text) is True


@pytest.mark.parametrize("text", ["0", "false", "no", "off", "OFF"])
def test_parse_bool_false(text: str) -> None:
    assert cfg.parse_bool(text) is False


def test_parse_bool_rejects_other_words() -> None:
    with pytest.raises(ValueError, match="'perhaps' is not a boolean"):
        cfg.parse_bool("perhaps")


def test_numbers() -> None:
    assert cfg.parse_seed(" 42 ") == 42 and cfg.parse_seed("0") == 0
    for bad, reason in [("-1", "below the minimum 0"), ("abc", "not an integer"),
                        ("1.5", "not an integer")]:
        with pytest.raises(ValueError, match=reason):
            cfg.parse_seed(bad)
    assert cfg.parse_processes("1") == 1
    with pytest.raises(ValueError, match="below the minimum 1"):
        cfg.parse_processes("0")
    assert cfg.parse_budget("0.25") == 0.25
    for bad in ["0", "-1", "nan", "inf", "fast"]:
        with pytest.raises(ValueError):
            cfg.parse_budget(bad)
    assert cfg.parse_confidence("0.99") == 0.99
    for bad in ["0.5", "1", "1.0", "0.2", "x"]:
        with pytest.raises(ValueError):
            cfg.parse_confidence(bad)


def test_choices_and_paths(tmp_path: Path) -> None:
    assert cfg.parse_scale("Smoke") == "smoke"
    with pytest.raises(ValueError, match="'huge' is not one of smoke, default, full"):
        cfg.parse_scale("huge")
    assert cfg.parse_inconclusive("fail") == "fail"
    with pytest.raises(ValueError):
        cfg.parse_inconclusive("ignore")
    assert cfg.parse_path("a/b.json") == Path("a/b.json")
    assert cfg.parse_path("~/x.json") == Path.home() / "x.json"
    with pytest.raises(ValueError, match="empty"):
        cfg.parse_path("  ")


def test_settings_table_naming() -> None:
    names = [s.name for s in cfg.SETTINGS]
    assert len(names) == len(set(names))
    for s in cfg.SETTINGS:
        noun = s.name
        if s.cli is None:
            assert s.option == "--mmperf-" + noun.replace("_", "-")
        assert s.ini_key == "mmperf_" + noun and s.env_var == "PYTEST_MMPERF_" + noun.upper()
        assert s.accepted and s.help
        if not s.flag and s.default is not None:  # defaults pass their own validator
            text = ",".join(s.default) if isinstance(s.default, tuple) else str(s.default)
            assert s.parse(text) == s.default
    bench = cfg.SETTINGS_BY_NAME["benchmark"]
    assert bench.option == "--benchmark" and bench.dest == "benchmark"
    assert not bench.ini and not bench.env
    assert {s.name for s in cfg.SETTINGS} >= {
        "device", "require_device", "seed", "scale", "budget", "processes", "confidence",
        "inconclusive", "json", "html", "update_snapshots", "snapshots", "benchmark"}
    # Every setting is a field of MmperfSettings with the table's default.
    defaults = {f.name: f.default for f in dataclasses.fields(cfg.MmperfSettings)}
    for s in cfg.SETTINGS:
        assert defaults[s.name] == s.default, s.name


def test_invalid_message_names_value_source_and_accepted() -> None:
    err = cfg.invalid(cfg.SETTINGS_BY_NAME["seed"], "abc", "environment variable X", "why")
    assert isinstance(err, pytest.UsageError)
    assert str(err) == ("pytest-mmperf: invalid seed 'abc' from environment variable X: why. "
                        "Accepted: an integer >= 0.")


def test_derive_seed_is_stable_and_spread() -> None:
    # Pinned values: a change (or a switch to the per-process salted hash()) breaks replays.
    assert cfg.derive_seed(0, "tests/test_x.py::test_y") == 2080065793
    assert cfg.derive_seed(1, "tests/test_x.py::test_y") == 3565344395
    seeds = {cfg.derive_seed(0, f"t.py::test_{i}") for i in range(200)}
    assert len(seeds) == 200 and all(0 <= s < 2**32 for s in seeds)


def test_settings_object() -> None:
    s = cfg.MmperfSettings(device=("cpu", "cuda:0"), seed=5, scale="smoke",
                           json=Path("/tmp/r.json"), sources=(("seed", "--mmperf-seed"),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 1  # type: ignore[misc]
    assert s.source("seed") == "--mmperf-seed" and s.source("scale") == "default"
    assert s.replay_args() == ["--mmperf-seed=5", "--mmperf-scale=smoke",
                               "--mmperf-device=cpu,cuda:0"]
    as_dict = cfg.settings_as_dict(s)
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["json"] == "/tmp/r.json" and as_dict["device"] == ["cpu", "cuda:0"]
    assert as_dict["sources"] == {"seed": "--mmperf-seed"}


class _Mark:
    def __init__(self, name: str, *args: object, **kwargs: object) -> None:
        self.name, self.args, self.kwargs = name, args, kwargs


class _Node:
    """The two Node methods the marker helpers use; marks listed closest first."""

    def __init__(self, *marks: _Mark) -> None:
        self.marks = marks

    def iter_markers(self, name: str):
        return (m for m in self.marks if m.name == name)

    def get_closest_marker(self, name: str):
        return next(self.iter_markers(name), None)


def test_marker_helpers() -> None:
    node = _Node(_Mark("mmperf_batch", batch_size=1), _Mark("mmperf_batch", batch_size=4, a=2))
    assert cfg.marker_kwargs(node, "mmperf_batch") == {"batch_size": 1, "a": 2}
    with pytest.raises(ValueError, match="keyword arguments only"):
        cfg.marker_kwargs(_Node(_Mark("mmperf_batch", 3)), "mmperf_batch")
    assert cfg.marker_setting(_Node(_Mark("mmperf_seed", 9)), "seed") == 9
    assert cfg.marker_setting(_Node(), "seed") is None
    assert cfg.marker_setting(_Node(_Mark("mmperf_scale", "full")), "scale") == "full"
    for bad in [_Mark("mmperf_seed", True), _Mark("mmperf_seed", 1.5), _Mark("mmperf_seed", -1),
                _Mark("mmperf_seed"), _Mark("mmperf_seed", 1, 2)]:
        with pytest.raises(ValueError, match="accepted: an integer >= 0"):
            cfg.marker_setting(_Node(bad), "seed")
    assert cfg.marker_device_kinds(_Node()) is None
    assert cfg.marker_device_kinds(_Node(_Mark("mmperf_devices", "CUDA", "cpu"))) == (
        "cuda", "cpu")
    for bad in [_Mark("mmperf_devices"), _Mark("mmperf_devices", "tpu"),
                _Mark("mmperf_devices", 0), _Mark("mmperf_devices", kind="cpu")]:
        with pytest.raises(ValueError, match="accepted: device kinds cpu, cuda, mps, xpu"):
            cfg.marker_device_kinds(_Node(bad))


def test_device_allowed() -> None:
    assert cfg.device_allowed("cuda:1", ["cuda"])
    assert cfg.device_allowed("cuda:1", ["cuda:1"])
    assert not cfg.device_allowed("cuda:0", ["cuda:1", "cpu"])
    assert not cfg.device_allowed("cpu", ["cuda"])
    assert cfg.device_allowed("mps", ["mps"])
