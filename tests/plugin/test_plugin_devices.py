"""The mmperf_device fixture: parametrisation, skipping, --mmperf-require-device, `auto`, the
default-device hook and the mmperf_devices marker. The CUDA probe is patched (no GPU here)."""

from __future__ import annotations

import re

import pytest

DEVICE_TEST = """
def test_dev(mmperf_device):
    print("DEVICE", mmperf_device.type, mmperf_device.index)
"""


def _ran(result: pytest.RunResult) -> list[str]:
    """``"<test id> -> <device printed by the test>"`` for every test that ran (needs -v -s)."""
    found = (re.search(r"::(\w+\[.*?\]) DEVICE (.*)$", line) for line in result.outlines)
    return sorted(f"{m[1]} -> {m[2]}" for m in found if m)


def test_parametrised_over_requested_devices_with_ids(
    pytester: pytest.Pytester, fake_cuda
) -> None:
    fake_cuda(2)
    pytester.makepyfile(DEVICE_TEST)
    result = pytester.runpytest("--mmperf-device=cpu,cuda,cuda:1", "-v", "-s")
    result.assert_outcomes(passed=3)
    assert _ran(result) == ["test_dev[cpu] -> cpu None", "test_dev[cuda:0] -> cuda 0",
                            "test_dev[cuda:1] -> cuda 1"]


def test_unavailable_device_is_skipped_with_the_reason(
    pytester: pytest.Pytester, fake_cuda
) -> None:
    fake_cuda(1)
    pytester.makepyfile(DEVICE_TEST)
    result = pytester.runpytest("--mmperf-device=cpu,cuda:3", "-rs", "-s", "-v")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*device cuda:3 (requested by --mmperf-device) is not "
                                 "available: cuda:3 requested but torch sees 1 CUDA device*"])
    assert _ran(result) == ["test_dev[cpu] -> cpu None"]


def test_no_cuda_reason_names_the_probe(pytester: pytest.Pytester, fake_cuda) -> None:
    fake_cuda(0)
    pytester.makepyfile(DEVICE_TEST)
    result = pytester.runpytest("--mmperf-device=cuda", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*cuda:0*not available: torch.cuda.is_available() is False*"])


@pytest.mark.parametrize("how", ["cli", "env"])
def test_require_device_fails_instead_of_skipping(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, fake_cuda, how: str
) -> None:
    fake_cuda(0)
    pytester.makepyfile(DEVICE_TEST)
    args = ["--mmperf-device=cpu,cuda:0"]
    if how == "cli":
        args.append("--mmperf-require-device")
    else:
        monkeypatch.setenv("PYTEST_MMPERF_REQUIRE_DEVICE", "yes")
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1, errors=1)  # a fixture failure is a setup error
    result.stdout.fnmatch_lines(["*device cuda:0*not available and --mmperf-require-device "
                                 "is set*torch.cuda.is_available() is False*"])


def test_auto_picks_the_accelerator_when_there_is_one(
    pytester: pytest.Pytester, fake_cuda
) -> None:
    fake_cuda(1)
    pytester.makepyfile(DEVICE_TEST)
    result = pytester.runpytest("-v", "-s")
    result.assert_outcomes(passed=1)
    assert _ran(result) == ["test_dev[cuda:0] -> cuda 0"]


def test_auto_falls_back_to_cpu(pytester: pytest.Pytester, fake_cuda) -> None:
    fake_cuda(0)
    pytester.makepyfile(DEVICE_TEST)
    result = pytester.runpytest("-s", "-v")
    result.assert_outcomes(passed=1)
    assert _ran(result) == ["test_dev[cpu] -> cpu None"]


def test_default_device_hook_beats_auto_but_not_ini(pytester: pytest.Pytester, fake_cuda) -> None:
    fake_cuda(1)  # auto alone would choose cuda:0
    pytester.makeconftest("def pytest_mmperf_default_device(config):\n    return 'cpu'\n")
    pytester.makepyfile(DEVICE_TEST)
    result = pytester.runpytest("-s", "-v")
    result.assert_outcomes(passed=1)
    assert _ran(result) == ["test_dev[cpu] -> cpu None"]
    pytester.makeini("[pytest]\nmmperf_device = cuda:0\n")
    result = pytester.runpytest("-s", "-v")
    result.assert_outcomes(passed=1)
    assert _ran(result) == ["test_dev[cuda:0] -> cuda 0"]


def test_hook_returning_none_leaves_auto(pytester: pytest.Pytester, fake_cuda) -> None:
    fake_cuda(1)
    pytester.makeconftest("def pytest_mmperf_default_device(config):\n    return None\n")
    pytester.makepyfile(DEVICE_TEST)
    result = pytester.runpytest("-s", "-v")
    assert _ran(result) == ["test_dev[cuda:0] -> cuda 0"]


def test_devices_marker_restricts_kinds_over_the_command_line(
    pytester: pytest.Pytester, fake_cuda
) -> None:
    fake_cuda(2)
    pytester.makepyfile("""
        import pytest

        @pytest.mark.mmperf_devices("cuda")
        def test_gpu_only(mmperf_device):
            print("DEVICE", mmperf_device)

        @pytest.mark.mmperf_devices("cpu", "cuda:1")
        def test_some(mmperf_device):
            print("DEVICE", mmperf_device)
    """)
    result = pytester.runpytest("--mmperf-device=cpu,cuda:0,cuda:1", "-s", "-v", "-rs")
    result.assert_outcomes(passed=4, skipped=2)
    result.stdout.fnmatch_lines([
        "*@pytest.mark.mmperf_devices('cuda') excludes cpu*",
        "*@pytest.mark.mmperf_devices('cpu', 'cuda:1') excludes cuda:0*",
    ])
    assert _ran(result) == ["test_gpu_only[cuda:0] -> cuda:0", "test_gpu_only[cuda:1] -> cuda:1",
                            "test_some[cpu] -> cpu", "test_some[cuda:1] -> cuda:1"]


def test_devices_marker_with_a_bad_kind_fails_collection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.mmperf_devices("gpu")
        def test_x(mmperf_device):
            pass
    """)
    result = pytester.runpytest("--mmperf-device=cpu")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*ERROR collecting*", "*mmperf_devices: 'gpu' is not a device "
                                 "kind; accepted: device kinds cpu, cuda, mps, xpu*"])


def test_user_parametrisation_of_mmperf_device_is_left_alone(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.parametrize("mmperf_device", ["meta"])
        def test_x(mmperf_device):
            assert mmperf_device == "meta"
    """)
    pytester.runpytest("--mmperf-device=cpu").assert_outcomes(passed=1)
