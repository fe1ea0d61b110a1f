"""The pixel side of CLIP preprocessing, shared by decoder workers and the query path."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """open_clip's default eval transform (shortest side to ``size``, centre crop), as uint8
    HWC so worker processes can hand it over cheaply; normalisation happens in the model."""
    w, h = image.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    resized = image.resize(new, Image.Resampling.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)
