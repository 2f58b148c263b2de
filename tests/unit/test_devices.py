"""pytest_mmperf.devices with the probes patched (this machine has no GPU)."""

from __future__ import annotations

import json

import pytest
import torch

from pytest_mmperf import devices

X86_AMX = "processor\t: 0\nmodel name\t: Test CPU A\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n"
X86_AVX512_BF16 = "flags\t: fpu avx512f avx512_bf16\n"
X86_PLAIN = "model name\t: Test CPU B\nflags\t: fpu sse avx2 avx512f avx512bw\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
ARM_PLAIN = "processor\t: 0\nFeatures\t: fp asimd\n"


@pytest.fixture
def cuda(monkeypatch: pytest.MonkeyPatch):
    """``cuda(n)``: torch reports n CUDA devices (0 = none); MPS/XPU report none."""

    def install(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
        if hasattr(torch, "xpu"):
            monkeypatch.setattr(torch.xpu, "is_available", lambda: False)

    return install


def test_cpu_flags_and_model() -> None:
    assert {"amx_bf16", "avx512f"} <= devices.cpu_flags(X86_AMX)
    assert "bf16" in devices.cpu_flags(ARM_BF16)
    assert devices.cpu_flags("nothing here") == frozenset()
    assert devices.cpu_model(X86_AMX) == "Test CPU A"
    assert devices.cpu_model("")  # falls back to the platform's answer, never empty


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(X86_AMX, True), (X86_AVX512_BF16, True), (X86_PLAIN, False), (ARM_BF16, True),
     (ARM_PLAIN, False)],
)
def test_has_native_bf16_from_cpu_flags(cpuinfo: str, native: bool) -> None:
    assert devices.has_native_bf16("cpu", cpuinfo=cpuinfo) is native


def test_has_native_bf16_on_this_machine_follows_proc_cpuinfo() -> None:
    flags = devices.cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this machine")
    expected = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    assert devices.has_native_bf16() is expected


def test_without_accelerators(cuda) -> None:
    cuda(0)
    assert devices.available_devices() == ["cpu"]
    assert devices.resolve_auto() == "cpu"
    assert devices.check_available("cpu") is None
    reason = devices.check_available("cuda:0")
    assert reason is not None and "torch.cuda.is_available() is False" in reason
    assert "MPS" in (devices.check_available("mps") or "")
    assert "xpu" in (devices.check_available("xpu:0") or "").lower()
    assert devices.has_native_bf16("cuda:0") is False
    assert devices.describe_device("cuda:0").startswith("cuda:0 (unavailable: torch.cuda")


def test_cuda_build_without_cuda_says_so(cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda(0)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "built without CUDA" in (devices.check_available("cuda") or "")


def test_with_two_cuda_devices(cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda(2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert devices.available_devices() == ["cpu", "cuda:0", "cuda:1"]
    assert devices.resolve_auto() == "cuda:0"
    assert devices.check_available("cuda:1") is None
    assert devices.check_available(torch.device("cuda", 0)) is None
    reason = devices.check_available("cuda:2")
    assert reason == "cuda:2 requested but torch sees 2 CUDA device(s); CUDA_VISIBLE_DEVICES='0,1'"


def test_mps_beats_xpu_and_loses_to_cuda(cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda(0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.resolve_auto() == "mps"
    assert devices.available_devices() == ["cpu", "mps"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.resolve_auto() == "cuda:0"


def test_synchronize(cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda(1)
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    devices.synchronize("cpu")
    devices.synchronize(torch.device("cpu"))
    assert calls == []
    devices.synchronize("cuda:0")
    assert calls == [torch.device("cuda:0")]
    with pytest.raises(ValueError, match="unknown device 'tpu'.*accepted: cpu, cuda"):
        devices.synchronize("tpu")


def test_describe_device_never_raises(cuda, monkeypatch: pytest.MonkeyPatch) -> None:
    text = devices.describe_device("cpu")
    assert text.startswith("cpu (") and f"{torch.get_num_threads()} threads" in text
    assert torch.backends.cpu.get_cpu_capability() in text
    cuda(1)

    def broken(index: int) -> None:
        raise RuntimeError("driver gone")

    monkeypatch.setattr(torch.cuda, "get_device_properties", broken)
    assert devices.describe_device("cuda:0") == (
        "cuda:0 (no description: RuntimeError: driver gone)")
    assert devices.describe_device("tpu:0").startswith("tpu:0 (no description: ValueError")


def test_machine_info_is_json_ready(cuda) -> None:
    cuda(0)
    info = devices.machine_info()
    assert json.loads(json.dumps(info)) == info
    assert info["torch"] == torch.__version__ and info["gpus"] == []
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torchvision"] and info["python"] and info["cpu_model"]
    assert isinstance(info["cpu_native_bf16"], bool)
