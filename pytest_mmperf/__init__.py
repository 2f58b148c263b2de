"""pytest-mmperf: a pytest plugin that keeps multimodal (image + text) PyTorch code fast.

The public names load lazily (PEP 562 ``__getattr__``), because pytest imports this package in
every session of every repository where it is installed: ``import pytest_mmperf`` must not import
torch, torchvision or PIL. ``pytest_mmperf.make_batch`` imports them on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"  # keep equal to pyproject.toml's version (a test checks it)

# public name -> submodule that defines it
_LAZY = {
    **dict.fromkeys(
        ("BatchSpec", "ImageTextBatch", "FeatureSpec", "FeatureBatch", "make_batch",
         "make_features", "write_jpeg_dataset", "JpegDataset", "SimpleTokenizer",
         "default_batch_spec", "default_feature_spec"),
        "data.synthetic",
    ),
    "SCALES": "constants",
    **dict.fromkeys(("Guard", "GuardFailure", "GuardResult", "GuardSettings", "GuardSkipped",
                     "Instruments", "MmperfInconclusiveWarning"), "guards"),
}
__all__ = [  # written out (not built from _LAZY) so that linters and IDEs can read it
    "SCALES", "BatchSpec", "FeatureBatch", "FeatureSpec", "Guard", "GuardFailure", "GuardResult",
    "GuardSettings", "GuardSkipped", "Instruments", "MmperfInconclusiveWarning",
    "ImageTextBatch", "JpegDataset", "SimpleTokenizer", "__version__", "default_batch_spec",
    "default_feature_spec", "make_batch", "make_features", "write_jpeg_dataset",
]

if TYPE_CHECKING:
    from pytest_mmperf.constants import SCALES
    from pytest_mmperf.data.synthetic import (
        BatchSpec,
        FeatureBatch,
        FeatureSpec,
        ImageTextBatch,
        JpegDataset,
        SimpleTokenizer,
        default_batch_spec,
        default_feature_spec,
        make_batch,
        make_features,
        write_jpeg_dataset,
    )
    from pytest_mmperf.guards import (
        Guard,
        GuardFailure,
        GuardResult,
        GuardSettings,
        GuardSkipped,
        Instruments,
        MmperfInconclusiveWarning,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_mmperf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pytest_mmperf.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
