"""The ``mmperf:`` lines under pytest's "collected N items": settings, replay command, devices.

Installing the plugin must stay invisible to other test runs, so the lines appear only when a
collected test uses an ``mmperf_*`` fixture (the guards and the report come through fixtures
too). They are printed after collection (``pytest_report_collectionfinish``), the first moment
the plugin knows what was collected, and follow pytest's rules for its own header: not with
``-q`` or ``--no-header``. Under pytest-xdist the controller collects nothing: each
worker computes the lines and the controller prints them once in its terminal summary
(:mod:`pytest_mmperf.glue.xdist`). torch is described only when a collected test loads it
through a fixture anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pytest_mmperf.glue import options as cfg

# Fixtures whose use means torch is loaded anyway (so the collection report may describe it).
TORCH_FIXTURES = frozenset({
    "mmperf_device", "mmperf_batch", "mmperf_batch_spec", "mmperf_batch_factory",
    "mmperf_features", "mmperf_feature_spec", "mmperf_jpeg_dataset", "mmperf_guard",
    "mmperf_report"})


def uses_mmperf(items: Sequence[pytest.Item]) -> bool:
    """Whether a collected test uses an ``mmperf_*`` fixture."""
    return any(name.startswith("mmperf_")
               for item in items for name in getattr(item, "fixturenames", ()))


def header_lines(config: pytest.Config, items: Sequence[pytest.Item]) -> list[str]:
    """The lines, or none when the header is off or no collected test uses the plugin (or,
    under ``--mmperf-baseline``, pytest-benchmark's fixture)."""
    # config.get_verbosity() is pytest >= 8; the option is what it reads
    if int(config.getoption("verbose", 0) or 0) < 0 or config.getoption("no_header", False):
        return []
    s = cfg.get_settings(config)
    compared = []
    if s.baseline and any("benchmark" in getattr(i, "fixturenames", ()) for i in items):
        from pytest_mmperf.glue import baseline

        line = baseline.header_line(config)
        compared = [line] if line else []
    if not uses_mmperf(items):
        return compared

    def where(name: str) -> str:
        return "" if s.source(name) == "default" else f" ({s.source(name)})"

    run = ", performance run (--benchmark)" if s.benchmark else ""
    lines = [*compared,
             f"mmperf: device={','.join(s.device)}{where('device')}, seed={s.seed}"
             f"{where('seed')}, scale={s.scale}{where('scale')}{run}",
             "mmperf: replay with: pytest " + " ".join(s.replay_args())]
    if not any(TORCH_FIXTURES.intersection(getattr(i, "fixturenames", ())) for i in items):
        return lines
    from pytest_mmperf import devices
    from pytest_mmperf.glue.fixtures import requested_devices

    info = devices.machine_info()
    described = "; ".join(devices.describe_device(d) for d in requested_devices(config))
    vision = f"torchvision {info['torchvision']}, " if info["torchvision"] else ""  # optional
    return [*lines, f"mmperf devices: {described}",
            f"mmperf: torch {info['torch']}, {vision}"
            f"{info['torch_threads']} threads, CPU {info['cpu_capability']}, "
            f"native bf16: {'yes' if info['cpu_native_bf16'] else 'no'}"]
