"""``extra_info`` for pytest-benchmark benchmarks that use the mmperf fixtures.

After a test that uses pytest-benchmark's ``benchmark`` fixture has run, the plugin calls
:func:`annotate` with the test's fixture values. It adds what a reader of pytest-benchmark's JSON
or ``--benchmark-compare`` output needs to interpret the times: the device, the synthetic batch
or feature spec, and throughput at the median (images/s, tokens/s, GFLOP/s) with its units.

Keys a test already set win (``setdefault``): a test that times 32 images of a factory batch sets
``benchmark.extra_info["images"] = 32`` and gets ``images_per_s`` for that count; a test that
knows its FLOPs sets ``extra_info["flops"]`` and gets ``gflops_per_s``.

This module imports neither torch nor pytest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# Fixtures built from the test's spec as it is (a factory's batches override it: not recorded).
BATCH_FIXTURES = ("mmperf_batch", "mmperf_jpeg_dataset")
UNITS = {"images_per_s": "images/s", "tokens_per_s": "tokens/s", "gflops_per_s": "GFLOP/s"}


def _json_value(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def spec_dict(spec: Any) -> dict[str, Any]:
    """A frozen spec dataclass as a JSON-safe dict (tuples become lists, dtypes their names)."""
    return {f.name: _json_value(getattr(spec, f.name)) for f in dataclasses.fields(spec)}


def median_seconds(benchmark: Any) -> float | None:
    """Median seconds per call, or None when timing was off (``--benchmark-disable``)."""
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    median = getattr(stats, "median", None)
    return float(median) if median else None


def annotate(funcargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """Add device, spec and throughput to ``funcargs["benchmark"].extra_info``; returns it."""
    info = getattr(funcargs.get("benchmark"), "extra_info", None)
    if not isinstance(info, dict):
        return None
    if "mmperf_device" in funcargs:
        info.setdefault("device", str(funcargs["mmperf_device"]))
    batch_spec = funcargs.get("mmperf_batch_spec")
    if batch_spec is not None and any(name in funcargs for name in BATCH_FIXTURES):
        info.setdefault("batch_spec", spec_dict(batch_spec))
        if "mmperf_batch" in funcargs:  # the test timed that batch, unless it says otherwise
            info.setdefault("images", batch_spec.batch_size)
    feature_spec = funcargs.get("mmperf_feature_spec")
    if feature_spec is not None and "mmperf_features" in funcargs:
        info.setdefault("feature_spec", spec_dict(feature_spec))
        info.setdefault("tokens", feature_spec.batch_size
                        * (feature_spec.image_tokens + feature_spec.text_tokens))
    median = median_seconds(funcargs["benchmark"])
    if median is not None:
        for count, rate, scale in (("images", "images_per_s", 1.0),
                                   ("tokens", "tokens_per_s", 1.0),
                                   ("flops", "gflops_per_s", 1e-9)):
            if isinstance(info.get(count), (int, float)) and not isinstance(info[count], bool):
                info.setdefault(rate, info[count] * scale / median)
                info.setdefault("units", {}).setdefault(rate, UNITS[rate])
    return info
