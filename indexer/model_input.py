"""The pixel side of CLIP preprocessing, shared by decoder workers and the query path."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """open_clip's default eval transform (shortest side to ``size``, centre crop), as uint8
    HWC so worker processes can hand it over cheaply; normalisation happens in the model.

    Only the centre square is resampled (Pillow's resize ``box``: the same bicubic filter
    over the same source pixels, at most one level off resizing all and cropping after),
    which costs a third less on a landscape photo."""
    w, h = image.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    sx, sy = w / new[0], h / new[1]  # source pixels per resized pixel
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    resized = image.resize((size, size), Image.Resampling.BICUBIC, box=box)
    return np.asarray(resized, dtype=np.uint8)
