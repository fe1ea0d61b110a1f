"""Extremes of colour channels, taken a channel at a time.

NumPy reduces a short last axis (the three channels of an (h, w, 3) array) element by
element, many times slower than three whole planes; in verification that was a tenth of an
upload's time (docs/copy-detection.md, run AK)."""

from __future__ import annotations

import numpy as np


def brightest(rgb: np.ndarray) -> np.ndarray:
    """Per pixel, the largest of the last axis's channels."""
    out = rgb[..., 0].copy()
    for channel in range(1, rgb.shape[-1]):
        np.maximum(out, rgb[..., channel], out=out)
    return out


def darkest(rgb: np.ndarray) -> np.ndarray:
    """Per pixel, the smallest of the last axis's channels."""
    out = rgb[..., 0].copy()
    for channel in range(1, rgb.shape[-1]):
        np.minimum(out, rgb[..., channel], out=out)
    return out


def channel_last(values: np.ndarray, axis: int) -> np.ndarray:
    """``values`` (..., channels) with ``axis`` moved after the channels, contiguous: then
    reducing over it runs along memory."""
    return np.ascontiguousarray(np.moveaxis(values, axis, -1))


def channel_rows(rgb: np.ndarray) -> np.ndarray:
    """(h, w, channels) as (channels, h * w) float64, a channel per row: masks, means and
    least squares over the pixels then run along memory."""
    return np.ascontiguousarray(rgb.reshape(-1, rgb.shape[-1]).T, dtype=np.float64)
