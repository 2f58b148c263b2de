"""pytest-mmperf's pytest glue: options, markers, device parametrisation, fixtures, header.

Loaded through the ``pytest11`` entry point ``mmperf`` (``-p no:mmperf`` disables it) in every
pytest session of every repository where the package is installed, so importing this module must
stay cheap: torch, torchvision and PIL are imported inside fixtures and hooks, and only when a
collected test uses a fixture that needs them. The logic lives in :mod:`pytest_mmperf.config`
(settings, markers), :mod:`pytest_mmperf.devices` and :mod:`pytest_mmperf.synthetic`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mmperf import config as cfg

if TYPE_CHECKING:
    import torch

    from pytest_mmperf import synthetic as syn
    from pytest_mmperf.guard_fixture import PytestGuard

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
# Fixtures whose use means torch is loaded anyway (so the collection report may describe it).
TORCH_FIXTURES = frozenset({
    "mmperf_device", "mmperf_batch", "mmperf_batch_spec", "mmperf_batch_factory",
    "mmperf_features", "mmperf_feature_spec", "mmperf_jpeg_dataset", "mmperf_guard",
    "mmperf_report"})
_DEVICES_KEY = pytest.StashKey[tuple[str, ...]]()
_JPEG_KEY = pytest.StashKey[dict[str, Any]]()
_BATCH_KEY = pytest.StashKey[dict[str, Any]]()
# Batches kept for reuse by later tests with the same spec and seed (the most recently used).
BATCH_CACHE_SIZE = 4


# --------------------------------------------------------------------------- set-up hooks
def pytest_addoption(parser: pytest.Parser) -> None:
    cfg.add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_mmperf import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's (trylast) configure reads its options
def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    if config.getoption("help", False):
        return  # `pytest --help` must work even when a setting is invalid
    settings = config.stash[cfg.SETTINGS_KEY] = cfg.resolve_settings(config)
    from pytest_mmperf import session  # report, JSON/HTML and snapshot hooks

    config.pluginmanager.register(session, "mmperf-session")
    if settings.benchmark:
        # The performance run wins over `--benchmark-disable` / `--benchmark-skip` in addopts.
        config.option.benchmark_disable = False
        config.option.benchmark_skip = False


def requested_devices(config: pytest.Config) -> tuple[str, ...]:
    """The run's devices with ``auto`` resolved (imports torch; cached for the session)."""
    devices = config.stash.get(_DEVICES_KEY, None)
    if devices is None:
        resolved: list[str] = []
        for device in cfg.get_settings(config).device:
            if device == "auto":
                from pytest_mmperf.devices import resolve_auto

                device = resolve_auto()
            if device not in resolved:
                resolved.append(device)
        devices = config.stash[_DEVICES_KEY] = tuple(resolved)
    return devices


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


def _item_functions(item: pytest.Item) -> list[Callable[..., Any]]:
    """The test function and the functions of the fixtures it uses."""
    function = getattr(item, "function", None)
    functions = [function] if callable(function) else []
    info = getattr(item, "_fixtureinfo", None)  # pytest's FuncFixtureInfo (stable since 3.x)
    for defs in getattr(info, "name2fixturedefs", {}).values():
        functions += [d.func for d in defs if callable(getattr(d, "func", None))]
    return functions


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """After a pytest-benchmark test that uses our fixtures: device, spec and throughput go into
    its ``extra_info`` (and so into pytest-benchmark's JSON and compare output)."""
    result = yield
    funcargs = getattr(item, "funcargs", None)
    if funcargs and "benchmark" in funcargs and any(name.startswith("mmperf_")
                                                    for name in funcargs):
        from pytest_mmperf.benchinfo import annotate

        annotate(funcargs)
    return result


@pytest.hookimpl(tryfirst=True)  # markers must exist before `-m` deselects in pytest's own hook
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from pytest_mmperf.timing_tests import TimingDetector

    detector = TimingDetector(config.rootpath)
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if (("mmperf_guard" in fixtures or "mmperf_report" in fixtures)
                and item.get_closest_marker("mmperf_timing") is None
                and detector.any_calls_timing(_item_functions(item))):
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
def pytest_report_header(config: pytest.Config) -> list[str]:
    """Torch-free: what was requested and how to replay it."""
    s = cfg.get_settings(config)

    def where(name: str) -> str:
        return "" if s.source(name) == "default" else f" ({s.source(name)})"

    run = ", performance run (--benchmark)" if s.benchmark else ""
    return [f"mmperf: device={','.join(s.device)}{where('device')}, seed={s.seed}{where('seed')}, "
            f"scale={s.scale}{where('scale')}{run}",
            "mmperf: replay with: pytest " + " ".join(s.replay_args())]


def pytest_report_collectionfinish(config: pytest.Config, items: Sequence[pytest.Item]
                                   ) -> list[str]:
    """Devices and torch details, only when a collected test loads torch through a fixture."""
    if not any(TORCH_FIXTURES.intersection(getattr(i, "fixturenames", ())) for i in items):
        return []
    from pytest_mmperf import devices

    info = devices.machine_info()
    described = "; ".join(devices.describe_device(d) for d in requested_devices(config))
    return [f"mmperf devices: {described}",
            f"mmperf: torch {info['torch']}, torchvision {info['torchvision']}, "
            f"{info['torch_threads']} threads, CPU {info['cpu_capability']}, "
            f"native bf16: {'yes' if info['cpu_native_bf16'] else 'no'}"]


# --------------------------------------------------------------------------- specs
def _scale(node: Any, config: pytest.Config) -> str:
    scale = cfg.marker_setting(node, "scale")
    return scale if scale is not None else cfg.get_settings(config).scale


def _apply_marker(spec: Any, node: Any, name: str) -> Any:
    overrides = cfg.marker_kwargs(node, name)
    shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    try:
        return spec.replace(**overrides) if overrides else spec
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"@pytest.mark.{name}({shown}): {exc}") from None


def batch_spec(node: Any, config: pytest.Config) -> syn.BatchSpec:
    """Scale default -> ``pytest_mmperf_modify_batch_spec`` hooks (chained) -> marker."""
    from pytest_mmperf.synthetic import BatchSpec, default_batch_spec

    spec = default_batch_spec(_scale(node, config))
    # pluggy lists implementations in reverse call order: plugins and outer conftests first,
    # the nearest conftest last. Chaining (each sees the previous result) needs direct calls.
    for impl in node.ihook.pytest_mmperf_modify_batch_spec.get_hookimpls():
        if impl.hookwrapper or getattr(impl, "wrapper", False):
            continue
        kwargs = {"config": config, "spec": spec}
        new = impl.function(*[kwargs[name] for name in impl.argnames])
        if new is not None and not isinstance(new, BatchSpec):
            raise TypeError(f"pytest_mmperf_modify_batch_spec in {impl.plugin_name} returned "
                            f"{new!r}; expected a BatchSpec (e.g. spec.replace(...)) or None")
        spec = spec if new is None else new
    result: syn.BatchSpec = _apply_marker(spec, node, "mmperf_batch")
    return result


def feature_spec(node: Any, config: pytest.Config) -> syn.FeatureSpec:
    """Scale default -> marker ``mmperf_features(**spec)``."""
    from pytest_mmperf.synthetic import default_feature_spec

    result: syn.FeatureSpec = _apply_marker(default_feature_spec(_scale(node, config)), node,
                                            "mmperf_features")
    return result


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def mmperf_device(request: pytest.FixtureRequest) -> torch.device:
    """The ``torch.device`` of this parametrisation (ids ``cpu``, ``cuda:0``, ...); skips (or
    fails under ``--mmperf-require-device``) when the requested device is not available."""
    import torch

    from pytest_mmperf.devices import check_available

    device = getattr(request, "param", None) or requested_devices(request.config)[0]
    reason = check_available(device)
    if reason is not None:
        s = cfg.get_settings(request.config)
        what = f"mmperf: device {device} (requested by {s.source('device')}) is not available"
        if s.require_device:
            pytest.fail(f"{what} and --mmperf-require-device is set "
                        f"({s.source('require_device')}): {reason}", pytrace=False)
        pytest.skip(f"{what}: {reason}")
    return torch.device(device)


@pytest.fixture
def mmperf_seed(request: pytest.FixtureRequest) -> int:
    """This test's seed: ``mmperf_seed(n)`` marker, else derived from ``--mmperf-seed`` and the
    test id without its parameters (so every device sees the same data); stable across runs."""
    pinned = cfg.marker_setting(request.node, "seed")
    if pinned is not None:
        return int(pinned)
    node = request.node
    key = f"{node.parent.nodeid}::{getattr(node, 'originalname', node.name)}" \
        if node.parent is not None else node.nodeid
    return cfg.derive_seed(cfg.get_settings(request.config).seed, key)


@pytest.fixture
def mmperf_batch_spec(request: pytest.FixtureRequest) -> syn.BatchSpec:
    """The BatchSpec behind ``mmperf_batch``: scale default, hooks, then ``mmperf_batch``."""
    return batch_spec(request.node, request.config)


@pytest.fixture
def mmperf_batch(request: pytest.FixtureRequest, mmperf_batch_spec: syn.BatchSpec,
                 mmperf_seed: int) -> syn.ImageTextBatch:
    """An ``ImageTextBatch``: images, captions, input_ids (B, L), attention_mask (B, L).

    Generated once per session for each (spec, seed) and handed to every test as its own copy:
    parametrized tests over one batch (a benchmark per implementation) pay the generation once.
    """
    from pytest_mmperf.synthetic import copy_batch, make_batch

    key = json.dumps([dataclasses.asdict(mmperf_batch_spec), mmperf_seed], sort_keys=True)
    cache = request.config.stash.setdefault(_BATCH_KEY, {})
    batch = cache.pop(key, None)
    if batch is None:
        batch = make_batch(mmperf_batch_spec, seed=mmperf_seed)
    cache[key] = batch  # most recently used last
    while len(cache) > BATCH_CACHE_SIZE:
        del cache[next(iter(cache))]
    return copy_batch(batch)


@pytest.fixture
def mmperf_batch_factory(mmperf_batch_spec: syn.BatchSpec, mmperf_seed: int
                         ) -> Callable[..., syn.ImageTextBatch]:
    """``factory(seed=None, tokenizer=None, **spec_overrides) -> ImageTextBatch`` on top of the
    test's spec; the default seed is the test's ``mmperf_seed``."""
    from pytest_mmperf.synthetic import make_batch

    def factory(*, seed: int | None = None, tokenizer: Callable[..., Any] | None = None,
                **overrides: Any) -> syn.ImageTextBatch:
        spec = mmperf_batch_spec.replace(**overrides) if overrides else mmperf_batch_spec
        return make_batch(spec, seed=mmperf_seed if seed is None else seed, tokenizer=tokenizer)

    return factory


@pytest.fixture
def mmperf_feature_spec(request: pytest.FixtureRequest) -> syn.FeatureSpec:
    """The FeatureSpec behind ``mmperf_features``: scale default, then ``mmperf_features``."""
    return feature_spec(request.node, request.config)


@pytest.fixture
def mmperf_features(mmperf_feature_spec: syn.FeatureSpec, mmperf_seed: int,
                    mmperf_device: torch.device) -> syn.FeatureBatch:
    """Image tokens (B, N_img, D), text tokens (B, N_txt, D) and a text padding mask (B, N_txt)
    on ``mmperf_device`` in the spec's dtype."""
    from pytest_mmperf.synthetic import make_features

    return make_features(mmperf_feature_spec, seed=mmperf_seed, device=mmperf_device)


@pytest.fixture
def mmperf_jpeg_dataset(request: pytest.FixtureRequest, mmperf_batch_spec: syn.BatchSpec,
                        tmp_path_factory: pytest.TempPathFactory) -> syn.JpegDataset:
    """``batch_size`` JPEG files + captions.tsv for the test's spec and the base seed, written
    once per session under the session's temporary directory and shared by tests."""
    from pytest_mmperf.synthetic import write_jpeg_dataset

    seed = cfg.get_settings(request.config).seed
    fields = json.dumps([dataclasses.asdict(mmperf_batch_spec), seed], sort_keys=True)
    key = hashlib.sha256(fields.encode()).hexdigest()[:16]
    cache = request.config.stash.setdefault(_JPEG_KEY, {})
    if key not in cache:
        root = tmp_path_factory.getbasetemp() / "mmperf-jpeg" / key
        cache[key] = write_jpeg_dataset(root, mmperf_batch_spec, seed=seed)
    dataset: syn.JpegDataset = cache[key]
    return dataset


@pytest.fixture
def mmperf_guard(request: pytest.FixtureRequest) -> PytestGuard:
    """The performance guards (``faster``, ``not_slower``, ``max_ops``, ...) of this test."""
    from pytest_mmperf.guard_fixture import guard_for_request

    return guard_for_request(request)
