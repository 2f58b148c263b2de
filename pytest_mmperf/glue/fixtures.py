"""The plugin's fixtures: devices, seeds, synthetic batches and features, JPEG datasets, guards.

Registered through :mod:`pytest_mmperf.plugin` (which imports them). torch, torchvision and PIL
are imported inside the fixtures, never at import time. Specs resolve in a fixed order: the
scale's default, then ``pytest_mmperf_modify_batch_spec`` hooks, then the test's marker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mmperf.glue import options as cfg

if TYPE_CHECKING:
    import torch

    from pytest_mmperf.data import synthetic as syn
    from pytest_mmperf.glue.guard_fixture import PytestGuard

_DEVICES_KEY = pytest.StashKey[tuple[str, ...]]()
_JPEG_KEY = pytest.StashKey[dict[str, Any]]()
_BATCH_KEY = pytest.StashKey[dict[str, Any]]()
# Batches kept for reuse by later tests with the same spec and seed (the most recently used).
BATCH_CACHE_SIZE = 4


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


MODIFY_BATCH_SPEC = "pytest_mmperf_modify_batch_spec"


def chained_hook_calls(node: Any, config: pytest.Config, name: str
                       ) -> list[tuple[str, Callable[..., list[Any]]]]:
    """One caller per implementation of hook ``name`` that applies to ``node``, in chain order:
    plugins and outer conftests first, the conftest nearest the node last.

    Only documented pluggy and pytest API: ``node.ihook`` (the hooks of the conftests on the
    node's path), ``HookCaller.get_hookimpls()`` and ``pluggy.HookImpl`` (exported and documented
    since pluggy 1.3) to list the implementations, and ``PluginManager.subset_hook_caller`` to
    call each one alone through pluggy. ``get_hookimpls()`` lists implementations in the reverse
    of pluggy's call order (LIFO: the nearest conftest is called first), which is the chain's
    order; ``tests/plugin/test_plugin_fixtures.py`` fails if that changes. Hook wrappers take no
    part in a chain.
    """
    manager = config.pluginmanager
    everyone = [impl.plugin for impl in getattr(config.hook, name).get_hookimpls()]
    calls: list[tuple[str, Callable[..., list[Any]]]] = []
    for impl in getattr(node.ihook, name).get_hookimpls():
        if impl.wrapper or impl.hookwrapper:
            continue
        others = [plugin for plugin in everyone if plugin is not impl.plugin]
        calls.append((impl.plugin_name, manager.subset_hook_caller(name, remove_plugins=others)))
    return calls


def batch_spec(node: Any, config: pytest.Config) -> syn.BatchSpec:
    """Scale default -> ``pytest_mmperf_modify_batch_spec`` hooks (chained) -> marker."""
    from pytest_mmperf.data.synthetic import BatchSpec, default_batch_spec

    spec = default_batch_spec(_scale(node, config))
    for where, call in chained_hook_calls(node, config, MODIFY_BATCH_SPEC):
        answers = call(config=config, spec=spec)  # [] when the implementation returned None
        new = answers[0] if answers else None
        if new is not None and not isinstance(new, BatchSpec):
            raise TypeError(f"{MODIFY_BATCH_SPEC} in {where} returned {new!r}; expected a "
                            "BatchSpec (e.g. spec.replace(...)) or None")
        spec = spec if new is None else new
    result: syn.BatchSpec = _apply_marker(spec, node, "mmperf_batch")
    return result


def feature_spec(node: Any, config: pytest.Config) -> syn.FeatureSpec:
    """Scale default -> marker ``mmperf_features(**spec)``."""
    from pytest_mmperf.data.synthetic import default_feature_spec

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
    from pytest_mmperf.data.synthetic import copy_batch, make_batch

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
    from pytest_mmperf.data.synthetic import make_batch

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
    from pytest_mmperf.data.synthetic import make_features

    return make_features(mmperf_feature_spec, seed=mmperf_seed, device=mmperf_device)


@pytest.fixture
def mmperf_jpeg_dataset(request: pytest.FixtureRequest, mmperf_batch_spec: syn.BatchSpec,
                        tmp_path_factory: pytest.TempPathFactory) -> syn.JpegDataset:
    """``batch_size`` JPEG files + captions.tsv for the test's spec and the base seed, written
    once per session under the session's temporary directory and shared by tests."""
    from pytest_mmperf.data.synthetic import write_jpeg_dataset

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
    from pytest_mmperf.glue.guard_fixture import guard_for_request

    return guard_for_request(request)
