"""The former home of the case registry, now split by job; this module only re-exports.

Import from :mod:`benchmarks.cases`, :mod:`benchmarks.training_cases`, :mod:`benchmarks.inputs`,
:mod:`benchmarks.ratios` or :mod:`benchmarks.asv_base` instead. Kept while
``tests/perf/test_report_figures.py`` (changed in parallel by the report work) still imports
from here; delete it once that import moves.
"""

from __future__ import annotations

from .cases import (
    ATTENTION_CASES,
    LOADER_CASES,
    LONG_CASES,
    PREPROCESS_CASES,
    AttentionCase,
    LoaderCase,
    LongSequenceCase,
    PreprocessCase,
)
from .inputs import Workload
from .training_cases import (
    LOADER_TRAINING_CASES,
    TRAINING_CASES,
    LoaderTrainingCase,
    TrainingCase,
    bf16_condition,
)

__all__ = ["ATTENTION_CASES", "LOADER_CASES", "LOADER_TRAINING_CASES", "LONG_CASES",
           "PREPROCESS_CASES", "TRAINING_CASES", "AttentionCase", "LoaderCase",
           "LoaderTrainingCase", "LongSequenceCase", "PreprocessCase", "TrainingCase",
           "Workload", "bf16_condition"]
