"""Grey levels as verification reads them: luma, a picture's ground and its ink."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601, as PIL's "L"
LUMA64 = LUMA.astype(np.float64)  # the same, for the float64 least squares
INK = 24.0  # levels from the picture's ground (border_level) that a pixel carries ink at


def border_level(image: np.ndarray) -> float | np.ndarray:
    """The picture's ground: the median of its outermost rows and columns (a grey level, or
    each channel's)."""
    edge = (image[0], image[-1], image[:, 0], image[:, -1])
    return np.median(np.concatenate(edge), axis=0)


def inked(*greys: np.ndarray) -> np.ndarray:
    """The pixels that carry ink (INK levels from its border's level) in any of the views."""
    return np.logical_or.reduce([np.abs(g - border_level(g)) > INK for g in greys])


def ink_depth(grey: np.ndarray) -> float:
    """How far the picture's ink lies from its ground at most, over 3x3 means, as
    residual.off_grid reads what two views leave apart: a hairline drawing's depth is a
    third of its lines' level, as is what a missing hairline leaves."""
    apart = ndimage.uniform_filter(grey - border_level(grey), 3, mode="nearest")
    return float(np.abs(apart).max())
