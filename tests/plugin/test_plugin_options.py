"""Options, ini keys and env vars: --help, the precedence matrix, usage errors, report header."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mmperf.glue.options import SETTINGS, get_settings

# The ini spelling and the matching env var of every setting that has them.
INI_SETTINGS = [s for s in SETTINGS if s.ini]


def test_help_lists_every_option_and_ini_key(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    assert result.ret == 0
    out = result.stdout.str()
    expected = [s.option for s in SETTINGS] + [s.ini_key for s in INI_SETTINGS]
    expected += [s.env_var for s in SETTINGS if s.env]
    missing = [name for name in expected if name not in out]
    assert not missing, missing
    assert "--benchmark " in out and "--mmperf-device=DEVICES" in out


def test_help_works_with_a_bad_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_MMPERF_SEED", "abc")
    assert pytester.runpytest("--help").ret == 0


# --------------------------------------------------------------------------- precedence
# One distinct value per level for each setting, so a level that is ignored shows up as the
# value of the level below it. Levels, highest first: CLI > env > ini > hook > default.
LEVELS = {
    "device": {"cli": "cuda:3", "env": "cuda:2", "ini": "cuda:1", "hook": "xpu:0",
               "expect": {"cli": ("cuda:3",), "env": ("cuda:2",), "ini": ("cuda:1",),
                          "hook": ("xpu:0",), "default": ("auto",)}},
    "seed": {"cli": "11", "env": "22", "ini": "33",
             "expect": {"cli": 11, "env": 22, "ini": 33, "default": 0}},
    "scale": {"cli": "full", "env": "smoke", "ini": "full",
              "expect": {"cli": "full", "env": "smoke", "ini": "full", "default": "default"}},
}
ORDER = ("cli", "env", "ini", "hook", "default")


def _cases() -> list[tuple[str, str]]:
    return [(name, top) for name, spec in LEVELS.items() for top in ORDER if top in spec["expect"]]


@pytest.mark.parametrize(("name", "top"), _cases())
def test_precedence_matrix(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str, top: str
) -> None:
    """Set every level from `top` downwards; the value of `top` must win."""
    spec = LEVELS[name]
    active = ORDER[ORDER.index(top):]
    args = [f"--mmperf-{name}={spec['cli']}"] if "cli" in active else []
    if "env" in active:
        monkeypatch.setenv(f"PYTEST_MMPERF_{name.upper()}", spec["env"])
    if "ini" in active:
        pytester.makeini(f"[pytest]\nmmperf_{name} = {spec['ini']}\n")
    if "hook" in active and "hook" in spec:
        pytester.makeconftest(
            f"def pytest_mmperf_default_device(config):\n    return {spec['hook']!r}\n")
    config = pytester.parseconfigure(*args)
    settings = get_settings(config)
    assert getattr(settings, name) == spec["expect"][top]
    source = settings.source(name)
    expected_source = {"cli": f"--mmperf-{name}", "env": f"PYTEST_MMPERF_{name.upper()}",
                       "ini": f"mmperf_{name}", "hook": "pytest_mmperf_default_device",
                       "default": "default"}[top]
    assert expected_source in source


def test_explicit_auto_still_asks_the_hook_but_cli_device_does_not(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest("def pytest_mmperf_default_device(config):\n    return ['cpu']\n")
    assert get_settings(pytester.parseconfigure("--mmperf-device=auto")).device == ("cpu",)
    assert get_settings(pytester.parseconfigure("--mmperf-device=auto,xpu")).device == (
        "cpu", "xpu:0")
    assert get_settings(pytester.parseconfigure("--mmperf-device=mps")).device == ("mps",)


def test_override_ini_is_named_as_the_source(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmmperf_scale = full\n")
    settings = get_settings(pytester.parseconfigure("-o", "mmperf_scale=smoke"))
    assert settings.scale == "smoke"
    assert settings.source("scale") == "-o/--override-ini mmperf_scale"


def test_guard_settings_and_benchmark_defaults(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = get_settings(pytester.parseconfigure())
    assert (plain.budget, plain.processes, plain.confidence, plain.inconclusive) == (
        2.0, 3, 0.95, "estimate")
    assert plain.json is None and plain.html is None and not plain.update_snapshots
    assert plain.snapshots == pytester.path / "mmperf-snapshots.json"
    bench = get_settings(pytester.parseconfigure("--benchmark"))
    assert (bench.benchmark, bench.budget, bench.processes) == (True, 8.0, 5)
    # An explicit value wins over the --benchmark default, from any source.
    monkeypatch.setenv("PYTEST_MMPERF_PROCESSES", "2")
    explicit = get_settings(pytester.parseconfigure("--benchmark", "--mmperf-budget=0.5"))
    assert (explicit.budget, explicit.processes) == (0.5, 2)
    assert plain.threads == "auto"
    assert get_settings(pytester.parseconfigure("--mmperf-threads=1")).threads == 1


def test_paths_resolve_against_their_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = pytester.mkdir("sub")
    pytester.makeini("[pytest]\nmmperf_snapshots = snaps/s.json\nmmperf_html = r.html\n")
    monkeypatch.chdir(sub)
    settings = get_settings(pytester.parseconfigure(
        f"--rootdir={pytester.path}", "-c", str(pytester.path / "tox.ini"),
        "--mmperf-json=out.json", "--mmperf-update-snapshots"))
    assert settings.json == Path(sub) / "out.json"  # CLI: relative to the invocation dir
    assert settings.snapshots == pytester.path / "snaps" / "s.json"  # ini: to the ini file
    assert settings.html == pytester.path / "r.html"
    assert settings.update_snapshots is True


# --------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize(
    ("how", "value", "source", "accepted"),
    [
        ("cli", "--mmperf-device=banana", "from --mmperf-device", "cuda:N"),
        ("cli", "--mmperf-device=cuda:-1", "from --mmperf-device", "cuda:N"),
        ("cli", "--mmperf-device=cpu,,cuda", "from --mmperf-device", "comma-separated"),
        ("cli", "--mmperf-scale=huge", "from --mmperf-scale", "smoke, default, full"),
        ("cli", "--mmperf-budget=0", "from --mmperf-budget", "seconds > 0"),
        ("cli", "--mmperf-confidence=1.0", "from --mmperf-confidence", "between 0.5 and 1"),
        ("cli", "--mmperf-processes=0", "from --mmperf-processes", "integer >= 1"),
        ("cli", "--mmperf-threads=0", "from --mmperf-threads", "auto or an integer >= 1"),
        ("env", "PYTEST_MMPERF_THREADS=many", "environment variable PYTEST_MMPERF_THREADS",
         "auto or an integer >= 1"),
        ("cli", "--mmperf-inconclusive=maybe", "from --mmperf-inconclusive", "estimate, fail"),
        ("ini", "mmperf_seed = abc", "ini file", "an integer >= 0"),
        ("env", "PYTEST_MMPERF_REQUIRE_DEVICE=perhaps", "environment variable "
         "PYTEST_MMPERF_REQUIRE_DEVICE", "1/true/yes/on"),
        ("env", "PYTEST_MMPERF_DEVICE=gpu", "environment variable PYTEST_MMPERF_DEVICE", "xpu:N"),
    ],
)
def test_bad_values_are_usage_errors(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
    how: str, value: str, source: str, accepted: str,
) -> None:
    args = []
    if how == "cli":
        args.append(value)
        shown = value.split("=", 1)[1]
    elif how == "ini":
        pytester.makeini(f"[pytest]\n{value}\n")
        shown = value.split("=", 1)[1].strip()
    else:
        name, shown = value.split("=", 1)
        monkeypatch.setenv(name, shown)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert f"{shown!r}" in err and source in err and "Accepted: " in err and accepted in err
    if how == "ini":
        assert str(pytester.path / "tox.ini") in err and "mmperf_seed" in err


def test_bad_hook_answer_is_a_usage_error_naming_the_hook(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("def pytest_mmperf_default_device(config):\n    return 'gpu0'\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'gpu0'*hook pytest_mmperf_default_device*Accepted: auto*"])


def test_empty_env_and_ini_values_count_as_unset(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_MMPERF_SEED", "")
    pytester.makeini("[pytest]\nmmperf_scale =\nmmperf_seed = 5\n")
    settings = get_settings(pytester.parseconfigure())
    assert (settings.seed, settings.scale) == (5, "default")


# --------------------------------------------------------------------------- header
def test_header_shows_settings_sources_and_replay_without_torch_details(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_MMPERF_SCALE", "smoke")
    pytester.makepyfile("def test_x(mmperf_seed):\n    pass\n")  # torch-free fixture
    result = pytester.runpytest("--mmperf-seed=7", "--mmperf-device=cpu")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "mmperf: device=cpu (--mmperf-device), seed=7 (--mmperf-seed), "
        "scale=smoke (environment variable PYTEST_MMPERF_SCALE)",
        "mmperf: replay with: pytest --mmperf-seed=7 --mmperf-scale=smoke --mmperf-device=cpu",
    ])
    # No test uses a fixture that loads torch: no torch-dependent lines.
    assert "mmperf devices:" not in result.stdout.str()
    # pytest's rules for its header: none with -q or --no-header
    for quiet in ("-q", "--no-header"):
        assert "mmperf:" not in pytester.runpytest(quiet).stdout.str()


def test_plugin_is_invisible_to_runs_that_do_not_use_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--mmperf-seed=7")
    assert result.ret == 0
    # pytest's own "plugins: ..., mmperf-<version>" line is the only mention
    mentions = [line for line in result.outlines + result.errlines if "mmperf" in line]
    assert len(mentions) == 1 and mentions[0].startswith("plugins:"), mentions


def test_collection_report_describes_devices_and_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(mmperf_device):\n    pass\n")
    result = pytester.runpytest("--mmperf-device=cpu")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "mmperf devices: cpu (*, * threads)",
        "mmperf: torch 2.*, torchvision 0.*, * threads, CPU *, native bf16: *",
    ])
