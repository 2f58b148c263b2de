"""Device discovery, resolution, synchronisation and description.

Devices are named by strings in torch's syntax (``"cpu"``, ``"cuda:0"``, ``"mps"``, ``"xpu:0"``).
torch is imported inside the functions, never at module level, so that the pytest plugin can
import this module cheaply; nothing here caches availability (tests patch the probes, and a
session's answer is cached by the plugin instead). No pytest import: asv benchmarks use it too.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# CPU flags (Linux /proc/cpuinfo) that mean bf16 arithmetic runs natively, not emulated in fp32:
# x86 AVX512-BF16 / AMX-BF16, and the Arm v8.6 BF16 extension ("bf16" in the Features line).
_X86_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_ARM_BF16_FLAGS = frozenset({"bf16"})
_CPUINFO = "/proc/cpuinfo"


def _torch() -> Any:
    import torch

    return torch


def _split(device: str | torch.device) -> tuple[str, int | None]:
    """``"cuda:1"`` -> ("cuda", 1); ``torch.device("cpu")`` -> ("cpu", None)."""
    text = str(device)
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps", "xpu") or (index and not index.isdigit()):
        raise ValueError(f"unknown device {text!r}; accepted: cpu, cuda[:N], mps, xpu[:N]")
    return kind, int(index) if index else None


def _mps_available(torch: Any) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _xpu(torch: Any) -> Any:
    """torch.xpu when this torch has it and it reports a device, else None."""
    xpu = getattr(torch, "xpu", None)
    return xpu if xpu is not None and xpu.is_available() else None


def available_devices() -> list[str]:
    """Every usable device, cpu first: e.g. ``["cpu"]`` or ``["cpu", "cuda:0", "cuda:1"]``."""
    torch = _torch()
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available(torch):
        found.append("mps")
    xpu = _xpu(torch)
    if xpu is not None:
        found += [f"xpu:{i}" for i in range(xpu.device_count())]
    return found


def resolve_auto() -> str:
    """The best available accelerator: ``cuda:0`` > ``mps`` > ``xpu:0``, else ``"cpu"``."""
    torch = _torch()
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return "cuda:0"
    if _mps_available(torch):
        return "mps"
    xpu = _xpu(torch)
    if xpu is not None and xpu.device_count() > 0:
        return "xpu:0"
    return "cpu"


def check_available(device: str | torch.device) -> str | None:
    """None if `device` is usable here, else a reason that says why not (for skip messages)."""
    kind, index = _split(device)
    if kind == "cpu":
        return None
    torch = _torch()
    if kind == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None:
                return (f"torch.cuda.is_available() is False: this torch {torch.__version__} "
                        "was built without CUDA")
            return (f"torch.cuda.is_available() is False: no usable CUDA device or driver "
                    f"(torch {torch.__version__} built for CUDA {torch.version.cuda})")
        count = torch.cuda.device_count()
        if (index or 0) >= count:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            note = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
            return f"{device} requested but torch sees {count} CUDA device(s){note}"
        return None
    if kind == "mps":
        if _mps_available(torch):
            return None
        mps = getattr(torch.backends, "mps", None)
        built = mps is not None and mps.is_built()
        return ("torch.backends.mps.is_available() is False: "
                + ("no MPS device (needs Apple silicon and macOS 12.3+)" if built
                   else "this torch was built without MPS"))
    xpu = _xpu(torch)
    if xpu is None:
        return "torch.xpu.is_available() is False: no Intel GPU (XPU) usable by this torch"
    count = xpu.device_count()
    if (index or 0) >= count:
        return f"{device} requested but torch sees {count} XPU device(s)"
    return None


def synchronize(device: str | torch.device) -> None:
    """Wait for queued work on `device` (CUDA, MPS, XPU); a no-op on cpu (no torch import)."""
    kind, _ = _split(device)
    if kind == "cpu":
        return
    torch = _torch()
    if kind == "cuda":
        torch.cuda.synchronize(torch.device(str(device)))
    elif kind == "mps":
        torch.mps.synchronize()
    else:
        torch.xpu.synchronize(torch.device(str(device)))


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """CPU feature flags from /proc/cpuinfo text (x86 ``flags``, Arm ``Features``); empty if
    unreadable (not Linux)."""
    if cpuinfo is None:
        try:
            with open(_CPUINFO, encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name (``model name`` in /proc/cpuinfo, else the platform's answer)."""
    if cpuinfo is None:
        try:
            with open(_CPUINFO, encoding="utf-8", errors="replace") as handle:
                cpuinfo = handle.read()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("model name", "hardware", "cpu model"):
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def has_native_bf16(device: str | torch.device = "cpu", cpuinfo: str | None = None) -> bool:
    """Whether bfloat16 maths runs natively on `device` (so bf16 autocast can pay off).

    CPU: the AVX512-BF16 or AMX-BF16 flag (x86) or BF16 (Arm) in /proc/cpuinfo (`cpuinfo` text
    may be passed for testing); without /proc/cpuinfo, torch's own CPU probes where present.
    CUDA: ``torch.cuda.is_bf16_supported(including_emulation=False)``. MPS/XPU: False (unknown).
    """
    kind, index = _split(device)
    if kind == "cpu":
        flags = cpu_flags(cpuinfo)
        if flags:
            return bool(flags & (_X86_BF16_FLAGS | _ARM_BF16_FLAGS))
        cpu = getattr(_torch()._C, "_cpu", None)  # private probes; absent in some versions
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in probes)
    if kind == "cuda":
        torch = _torch()
        if check_available(device) is not None:
            return False
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch < 2.4 has no including_emulation
            return bool(torch.cuda.is_bf16_supported())
        except RuntimeError:  # the device vanished or the driver failed: not usable natively
            return False
    return False


def describe_device(device: str | torch.device) -> str:
    """One line: ``"cpu (<CPU model name>, AVX512, 2 threads)"`` or ``"cuda:0 (<GPU name>, 80 GiB,
    sm_90)"``; never raises (a device that cannot be queried says why)."""
    text = str(device)
    try:
        kind, index = _split(device)
        torch = _torch()
        if kind == "cpu":
            capability = torch.backends.cpu.get_cpu_capability()
            return f"cpu ({cpu_model()}, {capability}, {torch.get_num_threads()} threads)"
        reason = check_available(device)
        if reason is not None:
            return f"{text} (unavailable: {reason})"
        if kind == "cuda":
            props = torch.cuda.get_device_properties(index or 0)
            return (f"{text} ({props.name}, {props.total_memory / 2**30:.0f} GiB, "
                    f"sm_{props.major}{props.minor})")
        if kind == "xpu":
            return f"{text} ({torch.xpu.get_device_name(index or 0)})"
        return f"{text} (Apple GPU, {platform.machine()})"
    except Exception as exc:  # description only: report, never fail a run over it
        return f"{text} (no description: {type(exc).__name__}: {exc})"


def _version(dist: str) -> str | None:
    module = sys.modules.get(dist)  # an imported module knows its local build tag (+cu130)
    if module is not None and hasattr(module, "__version__"):
        return str(module.__version__)
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """The machine as reports record it: CPU model, flags that matter, capability, threads,
    GPUs, and the Python/torch/torchvision versions."""
    torch = _torch()
    gpus = []
    for device in available_devices():
        if device != "cpu":
            gpus.append({"device": device, "description": describe_device(device),
                         "native_bf16": has_native_bf16(device)})
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_native_bf16": has_native_bf16("cpu"),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "gpus": gpus,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torchvision": _version("torchvision"),
    }
