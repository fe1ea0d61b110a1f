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


def int8_engine() -> bool:
    """Dynamic int8 needs one of torch's quantised CPU kernels (fbgemm/x86: AVX2 and up)."""
    import torch

    engines = torch.backends.quantized.supported_engines
    has_api = hasattr(getattr(torch, "ao", None), "quantization")
    return has_api and any(e in ("x86", "fbgemm") for e in engines)


def resolve_precision(requested: str, device: str = "cpu") -> str:
    """auto: bf16 on native bf16 units; else int8 dynamic quantisation of the linear layers
    (1.3x on AVX2, cosine >= 0.999 with fp32 in scripts/bench_indexing.py); else fp32. On a
    GPU (``device`` "cuda"): bf16 where it has bf16 units, else fp32; int8 is CPU-only."""
    if device != "cpu":
        import torch

        if requested == "int8":
            raise ValueError("int8 precision runs on CPUs only; use bf16 or fp32 on a GPU")
        if requested == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if requested == "auto":
        if native_bf16():
            return "bf16"
        return "int8" if int8_engine() else "fp32"
    if requested not in ("bf16", "fp32", "int8"):
        raise ValueError(f"precision must be auto, bf16, int8 or fp32, not {requested!r}")
    return requested
