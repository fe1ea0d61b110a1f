"""Choosing the encoder's number format from what the CPU can do natively."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16() -> bool:
    """bf16 only pays where the CPU has bf16 matrix units; elsewhere it is emulated and slow."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def resolve_precision(requested: str) -> str:
    if requested == "auto":
        return "bf16" if native_bf16() else "fp32"
    if requested not in ("bf16", "fp32", "int8"):
        raise ValueError(f"precision must be auto, bf16, int8 or fp32, not {requested!r}")
    return requested
