"""Perceptual fingerprints for copy detection, computed the same way at build and query time.

Each indexed image gets several 256-bit DCT hashes (imagehash's pHash with hash_size=16;
64-bit hashes are too crowded on white-background clip art, see the benchmark) so that a
crop of the original still meets a stored hash of the same region (:data:`CROPS`, plus the
image with a uniform frame trimmed), and a 4x4 colour signature that tells a recoloured or
grey copy from the original and keeps differently coloured gradients apart. A query is
hashed in every flip/rotation, with its frame trimmed, turned by a few degrees, and centre-
cropped (so a logo in a corner does not hide it) (:func:`query_hashes`). Matching is Hamming
distance in a FAISS binary index (server/copies.py).

pHash says little about near-blank images (a hash with one bit set): such hashes are flagged
by :func:`informative` and never used to claim a copy.
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

HASH_SIZE = 16
HASH_BITS = HASH_SIZE * HASH_SIZE
HASH_BYTES = HASH_BITS // 8
HASH_BASE = 256  # hashes are taken from a copy this size: fast, and pHash needs only 64x64
CROPS = (1.0, 0.8, 0.6)  # centre crops kept per indexed image, as fractions of each side
INDEX_VARIANTS = len(CROPS) + 1  # the crops, plus the image with its frame trimmed
COLOUR_GRID = 4
COLOUR_BYTES = COLOUR_GRID * COLOUR_GRID * 3
SMALL_ROTATIONS = (-5, 5)
MIN_BITS, MAX_BITS = HASH_BITS // 16, HASH_BITS - HASH_BITS // 16
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


def hash_base(image: Image.Image) -> Image.Image:
    base = image.convert("RGB")
    if max(base.size) > HASH_BASE:
        base = base.copy()
        base.thumbnail((HASH_BASE, HASH_BASE), Image.Resampling.BILINEAR)
    return base


def phash(image: Image.Image) -> np.ndarray:
    """HASH_BYTES bytes: the packed bits of imagehash's pHash."""
    return np.packbits(imagehash.phash(image, hash_size=HASH_SIZE).hash.flatten())


def informative(hashes: np.ndarray) -> np.ndarray:
    """False where a hash has too few or too many bits set to identify an image."""
    bits = np.unpackbits(np.asarray(hashes, dtype=np.uint8), axis=-1).sum(axis=-1)
    return (bits >= MIN_BITS) & (bits <= MAX_BITS)


def colour_signature(image: Image.Image) -> np.ndarray:
    """48 bytes: the mean colour of each cell of a 4x4 grid."""
    small = image.convert("RGB").resize((COLOUR_GRID, COLOUR_GRID), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8).reshape(COLOUR_BYTES)


def colour_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference of colour signatures, 0-255 (broadcasts over rows)."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=-1)


def centre_crop(image: Image.Image, fraction: float) -> Image.Image:
    if fraction >= 1.0:
        return image
    w, h = image.size
    cw, ch = max(1, round(w * fraction)), max(1, round(h * fraction))
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def uniform_lines(values: np.ndarray, tolerance: int) -> np.ndarray:
    """True for each row of ``values`` (rows, width, 3) that is one flat colour."""
    spread = values.max(axis=1).astype(np.int16) - values.min(axis=1).astype(np.int16)
    return spread.max(axis=1) <= tolerance


def trim_borders(image: Image.Image, tolerance: int = 24) -> Image.Image:
    """Strip flat-coloured rows and columns from every edge: padding, letterboxing, a
    screenshot's title bar and margins, and the blank margin of the picture itself. Rows
    and columns are tested in turn until nothing changes, so a title bar does not stop
    the side margins below it from being seen as flat."""
    pixels = np.asarray(image.convert("RGB"))
    top, left, bottom, right = 0, 0, pixels.shape[0], pixels.shape[1]
    for _ in range(4):
        box = pixels[top:bottom, left:right]
        rows = ~uniform_lines(box, tolerance)
        cols = ~uniform_lines(box.transpose(1, 0, 2), tolerance)
        if rows.sum() < 2 or cols.sum() < 2:
            return image  # blank: nothing to keep
        new = (
            top + int(np.argmax(rows)),
            left + int(np.argmax(cols)),
            top + len(rows) - int(np.argmax(rows[::-1])),
            left + len(cols) - int(np.argmax(cols[::-1])),
        )
        if new == (top, left, bottom, right):
            break
        top, left, bottom, right = new
    if (bottom - top) * (right - left) < 0.01 * pixels.shape[0] * pixels.shape[1]:
        return image  # a speck: trimming would keep noise only
    return image.crop((left, top, right, bottom))


def index_hashes(image: Image.Image) -> np.ndarray:
    """(INDEX_VARIANTS, HASH_BYTES) uint8 hashes stored for one indexed image."""
    base = hash_base(image)
    variants = [centre_crop(base, f) for f in CROPS] + [trim_borders(base)]
    return np.stack([phash(v) for v in variants])


def query_hashes(image: Image.Image) -> np.ndarray:
    """(22, HASH_BYTES): each dihedral transform of the query as is and trimmed, the query
    turned by a few degrees either way, and its centre crops."""
    base = hash_base(image)
    trimmed = trim_borders(base)
    out = [phash(b if op is None else b.transpose(op)) for b in (base, trimmed) for op in DIHEDRAL]
    out += [phash(centre_crop(base, f)) for f in CROPS[1:]]
    for b in (base, trimmed):
        corner = b.getpixel((0, 0))
        for angle in SMALL_ROTATIONS:
            turned = b.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=corner)
            out.append(phash(trim_borders(turned)))
    return np.stack(out)
