"""Source text of a user's test module that the plugin's black-box tests write into pytester
repositories: ``work(n)`` returns a callable doing n units of single-threaded torch work."""

# Small element-wise ops (below torch's parallel grain size) run on one thread: multi-threaded
# kernels on a busy machine with few cores wait for descheduled OpenMP threads a scheduler tick at a
# time, which would turn a 4x work ratio into almost any ratio
# (docs/measurements.md#between-process-noise).
WORK = """
import pytest
import torch

X = torch.randn(512)

def work(n):
    def fn():
        for _ in range(25 * n):
            torch.add(X, 1.0)
    return fn
"""
