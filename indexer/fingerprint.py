"""Perceptual fingerprints for copy detection: 64-bit DCT hashes (imagehash's pHash).

The index stores several hashes per image (:data:`INDEX_VARIANTS`) so that a crop of the
original can still meet a stored hash of the same region; a query is hashed in every
flip/rotation and with uniform borders trimmed (:func:`query_hashes`), so flipped, rotated
and padded copies meet the original's hash too. Matching is Hamming distance in a FAISS
binary index (server/copies.py).
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image, ImageChops

HASH_BITS = 64
HASH_BYTES = HASH_BITS // 8
# Centre crops kept per indexed image, as fractions of each side. 1.0 is the whole image.
CROPS = (1.0, 0.8, 0.6)
INDEX_VARIANTS = len(CROPS) + 1  # the crops, plus the image with its borders trimmed
DIHEDRAL = (
    None,
    Image.Transpose.FLIP_LEFT_RIGHT,
    Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_180,
    Image.Transpose.ROTATE_270,
    Image.Transpose.FLIP_TOP_BOTTOM,
    Image.Transpose.TRANSPOSE,
    Image.Transpose.TRANSVERSE,
)


def phash(image: Image.Image) -> np.ndarray:
    """8 bytes: the packed bits of imagehash's 64-bit pHash."""
    bits = imagehash.phash(image, hash_size=8).hash.flatten()
    return np.packbits(bits)


def centre_crop(image: Image.Image, fraction: float) -> Image.Image:
    if fraction >= 1.0:
        return image
    w, h = image.size
    cw, ch = max(1, round(w * fraction)), max(1, round(h * fraction))
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def trim_borders(image: Image.Image, tolerance: int = 24) -> Image.Image:
    """Remove a uniform frame (padding, letterboxing, a screenshot's margin)."""
    corner = image.getpixel((0, 0))
    background = Image.new(image.mode, image.size, corner)
    diff = ImageChops.difference(image, background).convert("L")
    box = diff.point(lambda v: 255 if v > tolerance else 0).getbbox()
    if not box:
        return image
    w, h = image.size
    if (box[2] - box[0]) * (box[3] - box[1]) < 0.02 * w * h:
        return image  # almost all background: trimming would keep noise only
    return image.crop(box)


def index_hashes(image: Image.Image) -> np.ndarray:
    """(INDEX_VARIANTS, HASH_BYTES) uint8 hashes stored for one indexed image."""
    variants = [centre_crop(image, f) for f in CROPS] + [trim_borders(image)]
    return np.stack([phash(v) for v in variants])


def query_hashes(image: Image.Image) -> np.ndarray:
    """(16, HASH_BYTES) hashes of a query: each dihedral transform, as is and trimmed."""
    bases = [image, trim_borders(image)]
    out = []
    for base in bases:
        for op in DIHEDRAL:
            out.append(phash(base if op is None else base.transpose(op)))
    return np.stack(out)


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.unpackbits(np.bitwise_xor(a, b)).sum())
