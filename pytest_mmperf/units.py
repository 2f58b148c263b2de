"""Human-readable numbers, seconds and byte counts, and the parser of byte counts.

One home for the formatting that the guard messages, the terminal summary, the HTML report and
its charts share. Torch-free and pytest-free.
"""

from __future__ import annotations

import math

__all__ = ["format_bytes", "format_number", "format_seconds", "parse_bytes"]


def format_number(value: float | int | None) -> str:
    """Format a figure compactly: ``1.23``, ``45.6``, ``1.2e+06``, ``-`` for missing values."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) and abs(value) < 100_000:
        return str(value)
    v = float(value)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.2e}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if a < 1 else f"{v:.2f}"


def format_bytes(n: float | int | None) -> str:
    """``1536`` -> ``1.5 KiB``; ``None`` -> ``-``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_seconds(t: float | None) -> str:
    """Human time: ``12.3 us``, ``4.56 ms``, ``1.23 s``."""
    if t is None:
        return "-"
    if t < 1e-3:
        return f"{t * 1e6:.1f} us"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(value: int | float | str, what: str = "limit") -> int:
    """``1048576`` / ``"1 MiB"`` / ``"64MB"`` -> bytes; anything else raises ``ValueError``."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a byte count or a string like '64 MiB', got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{what} must be a finite number of bytes >= 0, got {value!r}")
        return int(value)
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):] or "b"
    if unit not in _UNITS or not number:
        raise ValueError(f"{what} {value!r} is not a byte count; use a number or e.g. '512 KiB', "
                         f"'64 MiB', '1.5 GB' (units: {', '.join(_UNITS)})")
    return int(float(number) * _UNITS[unit])
