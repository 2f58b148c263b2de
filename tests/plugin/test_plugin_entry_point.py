"""The plugin reaches a repository through the pytest11 entry point alone (no conftest, no -p),
and `-p no:mmperf` turns it off. The entry-point runs use fresh interpreters (subprocesses):
only there can we see what a plain `pytest` imports."""

from __future__ import annotations

import pytest

from pytest_mmperf.glue.options import derive_seed

TORCH_FREE = """
import sys

def test_seed_only(mmperf_seed):
    heavy = sorted(m for m in ("torch", "torchvision", "PIL") if m in sys.modules)
    print("SEED", mmperf_seed, "HEAVY", heavy)
"""
WITH_TORCH = """
import pytest

@pytest.mark.mmperf_batch(batch_size=2, image_size=(16, 16), image_format="uint8")
def test_fixtures(mmperf_device, mmperf_batch):
    assert str(mmperf_device) == "cpu"
    assert tuple(mmperf_batch.images[0].shape) == (3, 16, 16)
"""


def test_fresh_directory_without_conftest_gets_fixtures_and_no_torch(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_fresh=TORCH_FREE)
    assert not (pytester.path / "conftest.py").exists()
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", "--mmperf-seed=3")
    result.assert_outcomes(passed=1)
    # the settings line comes after collection, when a collected test uses an mmperf fixture
    result.stdout.fnmatch_lines(["plugins:*mmperf-*", "mmperf: device=auto, seed=3*"])
    # The seed is the same as in this process: sha256-derived, not the per-process hash().
    seed = derive_seed(3, "test_fresh.py::test_seed_only")
    result.stdout.fnmatch_lines([f"*SEED {seed} HEAVY []*"])


def test_fresh_directory_gets_torch_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fresh=WITH_TORCH)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mmperf-device=cpu",
                                           "--strict-markers")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["mmperf devices: cpu (*"])


def test_p_no_mmperf_disables_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fresh=TORCH_FREE)
    result = pytester.runpytest("-p", "no:mmperf")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'mmperf_seed' not found*"])
    assert "mmperf: device=" not in result.stdout.str()
    assert pytester.runpytest("-p", "no:mmperf", "--mmperf-seed=1").ret == (
        pytest.ExitCode.USAGE_ERROR)
