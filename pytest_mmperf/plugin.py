"""pytest-mmperf's pytest glue: options, markers, device parametrisation, fixtures, header.

Loaded through the ``pytest11`` entry point ``mmperf`` (``-p no:mmperf`` disables it) in every
pytest session of every repository where the package is installed, so importing this module must
stay cheap: torch, torchvision and PIL are imported inside fixtures and hooks, and only when a
collected test uses a fixture that needs them. The logic lives in :mod:`pytest_mmperf.glue.options`
(settings, markers), :mod:`pytest_mmperf.devices` and :mod:`pytest_mmperf.data.synthetic`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from pytest_mmperf.constants import SIDE_ENV
from pytest_mmperf.glue import options as cfg
from pytest_mmperf.glue.fixtures import (  # noqa: F401 - module attributes register the fixtures
    batch_spec,
    feature_spec,
    mmperf_batch,
    mmperf_batch_factory,
    mmperf_batch_spec,
    mmperf_device,
    mmperf_feature_spec,
    mmperf_features,
    mmperf_guard,
    mmperf_jpeg_dataset,
    mmperf_seed,
    requested_devices,
)
from pytest_mmperf.glue.report_fixture import mmperf_report  # noqa: F401

MARKERS = (
    "mmperf_batch(**spec): BatchSpec fields for mmperf_batch, mmperf_batch_factory and "
    "mmperf_jpeg_dataset, e.g. mmperf_batch(batch_size=2, image_format='uint8')",
    "mmperf_features(**spec): FeatureSpec fields for mmperf_features, e.g. dtype='bfloat16'",
    "mmperf_devices(*kinds): run only on these device kinds (cpu, cuda, mps, xpu) or devices "
    "(cuda:1); other requested devices are skipped",
    "mmperf_seed(n): pin this test's mmperf_seed to n",
    "mmperf_scale(scale): smoke | default | full for this test's default specs",
    "mmperf_timing: a timing test (added automatically to tests that call timing guards, "
    "directly or through helpers); deselect with -m 'not mmperf_timing'",
)


# --------------------------------------------------------------------------- set-up hooks
def pytest_addoption(parser: pytest.Parser) -> None:
    cfg.add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_mmperf.glue import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(tryfirst=True)  # before any conftest is imported
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """A side process of a comparison across commits connects to its parent and, on REV's side,
    redirects the repository's imports before the first conftest is imported."""
    if os.environ.get(SIDE_ENV):
        from pytest_mmperf.glue import baseline

        baseline.start_side(early_config)


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's (trylast) configure reads its options
def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    if config.getoption("help", False):
        return  # `pytest --help` must work even when a setting is invalid
    settings = config.stash[cfg.SETTINGS_KEY] = cfg.resolve_settings(config)
    from pytest_mmperf.glue import preflight, session  # report, JSON/HTML and snapshot hooks

    preflight.check(config, settings)  # unwritable outputs, a malformed snapshot file: exit 4
    config.pluginmanager.register(session, "mmperf-session")
    if settings.baseline:
        from pytest_mmperf.glue import baseline

        baseline.configure(config)
    if config.pluginmanager.hasplugin("xdist"):  # workers hand their records to the controller
        from pytest_mmperf.glue import xdist

        xdist.register(config)
    if settings.benchmark:
        # The performance run wins over `--benchmark-disable` / `--benchmark-skip` in addopts.
        config.option.benchmark_disable = False
        config.option.benchmark_skip = False


# --------------------------------------------------------------------------- collection
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    node, config = metafunc.definition, metafunc.config
    try:  # marker mistakes fail at collection, naming the test, the key and the value
        cfg.marker_setting(node, "seed")
        cfg.marker_setting(node, "scale")
        kinds = cfg.marker_device_kinds(node)
        if node.get_closest_marker("mmperf_batch") is not None:
            batch_spec(node, config)
        if node.get_closest_marker("mmperf_features") is not None:
            feature_spec(node, config)
    except (TypeError, ValueError) as exc:
        raise pytest.Collector.CollectError(f"{node.nodeid}: {exc}") from None
    if "mmperf_device" not in metafunc.fixturenames or cfg.parametrizes(node, "mmperf_device"):
        return
    params = []
    for device in requested_devices(config):
        marks: Sequence[pytest.MarkDecorator] = ()
        if kinds is not None and not cfg.device_allowed(device, kinds):
            allowed = ", ".join(map(repr, kinds))
            marks = (pytest.mark.skip(reason=f"mmperf: @pytest.mark.mmperf_devices({allowed}) "
                                             f"excludes {device}"),)
        params.append(pytest.param(device, id=device, marks=marks))
    metafunc.parametrize("mmperf_device", params, indirect=True)


def item_functions(item: pytest.Item) -> list[Callable[..., Any]]:
    """The test function and the functions of the fixtures it uses.

    pytest names an item's fixtures publicly (``item.fixturenames``) but offers no public way to
    reach their definitions at collection time, so this function alone reads the private
    ``item._fixtureinfo.name2fixturedefs`` (pytest's ``FuncFixtureInfo``; each entry a public
    ``pytest.FixtureDef`` with its ``func``). Should a pytest release drop it, the timing marker
    sees the test and its helpers only (a guard reached through a fixture then fails its test
    naming the marker to add) and ``tests/plugin/test_plugin_selection.py`` fails.
    """
    function = getattr(item, "function", None)
    functions = [function] if callable(function) else []
    info = getattr(item, "_fixtureinfo", None)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        functions += [d.func for d in defs if callable(getattr(d, "func", None))]
    return functions


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """Around a pytest-benchmark test: under ``--mmperf-baseline`` its benchmark is compared with
    REV's (or served, in a side process); afterwards, when it uses our fixtures, device, spec and
    throughput go into its ``extra_info`` (and so into pytest-benchmark's JSON)."""
    funcargs = getattr(item, "funcargs", None)
    original = None
    if funcargs and "benchmark" in funcargs and (
            cfg.get_settings(item.config).baseline or os.environ.get(SIDE_ENV)):
        from pytest_mmperf.glue import baseline

        original = baseline.wrap_benchmark(item)
    try:
        result = yield
    finally:
        if original is not None and funcargs is not None:  # pytest-benchmark checks its type
            funcargs["benchmark"] = original
    if funcargs and "benchmark" in funcargs and any(name.startswith("mmperf_")
                                                    for name in funcargs):
        from pytest_mmperf.glue.benchinfo import annotate

        annotate(funcargs)
    return result


@pytest.hookimpl(tryfirst=True)  # markers must exist before `-m` deselects in pytest's own hook
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from pytest_mmperf.glue.timing_marker import TimingDetector

    detector = TimingDetector(config.rootpath)
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if (("mmperf_guard" in fixtures or "mmperf_report" in fixtures)
                and item.get_closest_marker("mmperf_timing") is None
                and detector.any_calls_timing(item_functions(item))):
            item.add_marker("mmperf_timing")
    if not cfg.get_settings(config).benchmark:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        timing = ("benchmark" in getattr(item, "fixturenames", ())
                  or item.get_closest_marker("mmperf_timing") is not None)
        (keep if timing else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# --------------------------------------------------------------------------- report header
def pytest_report_collectionfinish(config: pytest.Config, items: Sequence[pytest.Item]
                                   ) -> list[str]:
    """Settings, replay command, devices: only when a collected test uses an mmperf fixture
    (:mod:`pytest_mmperf.glue.header`)."""
    from pytest_mmperf.glue.header import header_lines

    return header_lines(config, items)
