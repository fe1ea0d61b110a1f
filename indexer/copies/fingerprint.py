"""Perceptual fingerprints for copy detection, computed the same way at build and query time.

Every view of an image (views.py: :data:`INDEX_VIEWS` at build time, :data:`QUERY_VIEWS` for
an upload) is shrunk to 64x64 grey and transformed by a 2-D DCT, exactly as pHash does; the
16x16 lowest frequencies then give two things:

* a **descriptor**: the 255 AC coefficients, L2-normalised. Copies are matched by the cosine
  of descriptors: unlike pHash's bits (each coefficient above or below the median), a
  coefficient near the median weighs little instead of flipping a bit at random, which is
  what made thin-line and radially symmetric drawings lose their copies after a JPEG pass
  or a colour change (docs/copy-detection.md).
* the **256-bit pHash** itself (bit-identical to imagehash's ``phash(hash_size=16)``), kept
  as a compact, widely understood hash for the opt-out export and as the Hamming distance
  shown beside a match.

A 4x4 colour signature tells a recoloured or grey copy from the original. Near-blank views
(almost no low-frequency contrast) get an all-zero descriptor: they never claim a copy. An
upload whose framed picture is near-blank is compared by colour layout instead, and shown
as similar at most: a blank page identifies nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.fft import dct

from hibt.indexer.copies.grid import Grid
from hibt.indexer.copies.views import (
    INDEX_VIEWS,
    QUERY_TRIMMED_VIEW,
    QUERY_VIEWS,
    Scene,
    View,
    views_of,
)

HASH_SIZE = 16
HASH_BITS = HASH_SIZE * HASH_SIZE
HASH_BYTES = HASH_BITS // 8
DESCRIPTOR_DIM = HASH_BITS - 1  # the low-frequency block without its DC term
DCT_SIZE = HASH_SIZE * 4  # pHash's 64x64 grey image
COLOUR_GRID = 4
COLOUR_BYTES = COLOUR_GRID * COLOUR_GRID * 3
# Low-frequency contrast (RMS grey levels) below which a view is too plain to identify.
MIN_CONTRAST = 1.0
# Unnormalised DCT-II -> orthonormal scale (first row and column are sqrt(2) too large),
# so every frequency counts alike in the descriptor.
_ORTHO = np.ones((HASH_SIZE, HASH_SIZE))
_ORTHO[0, :] /= np.sqrt(2)
_ORTHO[:, 0] /= np.sqrt(2)
_ORTHO /= 2 * DCT_SIZE
# A view n pixels high holds DCT rows up to about 0.8 n (row k is k/2 cycles per image;
# resampling softens the top of what n pixels can hold), and columns likewise. A smaller
# query view is compared on the rows and columns it has (its band), so a thumbnail of 15 px
# still finds its original. A narrower band is held to a stricter threshold (search.py), as
# fewer coefficients tell look-alikes apart less.
BAND_PER_PIXEL = 0.8
MIN_BAND = 6  # narrower still identifies nothing: a 5 px view is compared as if 8 px


@dataclass
class Fingerprints:
    hashes: np.ndarray  # uint8 (views, HASH_BYTES): packed pHash bits
    descriptors: np.ndarray  # float32 (views, DESCRIPTOR_DIM): unit length, or all zero
    # int (views, 2): the DCT rows and columns each view holds (band()); all of them unless
    # given, as for stored views. A descriptor is zero outside its band (band_mask()).
    bands: np.ndarray | None = None
    # The colour layout of the image (of the picture inside, when it looks framed in window
    # chrome: the chrome's colours are not the picture's), which ranks copies and tells an
    # exact copy from a recoloured one ...
    colour: np.ndarray | None = None
    # ... and, for queries, that of the picture inside any flat frame, which is what a
    # near-blank upload is compared by (see plain()).
    content_colour: np.ndarray | None = None
    views: list[View] = field(default_factory=list)  # what each row is (views.py)
    scene: Scene | None = None  # what the views were cut from (uploads: for verify.py)
    grid: Grid | None = None  # the upload as a build keeps a stored file (uploads: verify.py)

    def __post_init__(self) -> None:
        if self.bands is None:
            self.bands = np.full((len(self.descriptors), 2), HASH_SIZE)

    def flags(self, flag: str) -> np.ndarray:
        """Per view, whether its catalogue entry has ``flag`` (strict, turned, whole...)."""
        return np.array([getattr(v, flag) for v in self.views], dtype=bool)

    @property
    def strict(self) -> np.ndarray:
        return self.flags("strict")


def low_frequencies(views: list[Image.Image]) -> np.ndarray:
    """(views, 16, 16) unnormalised DCT-II coefficients, each computed as imagehash's pHash
    does; the DCTs of all views in one call (the same coefficients, bit for bit)."""
    grey = np.stack(
        [
            np.asarray(v.convert("L").resize((DCT_SIZE, DCT_SIZE), Image.Resampling.LANCZOS))
            for v in views
        ]
    ).astype(np.float64)
    return dct(dct(grey, axis=1), axis=2)[:, :HASH_SIZE, :HASH_SIZE]


def phash_bits(block: np.ndarray) -> np.ndarray:
    """HASH_BYTES bytes: each coefficient above the block's median, packed."""
    return np.packbits((block > np.median(block)).flatten())


def band(view: Image.Image) -> tuple[int, int]:
    """The lowest DCT rows and columns a view this small still holds; all from 20 px up."""
    width, height = view.size
    return tuple(
        int(np.clip(np.floor(BAND_PER_PIXEL * n), MIN_BAND, HASH_SIZE)) for n in (height, width)
    )


def band_mask(rows: int = HASH_SIZE, cols: int = HASH_SIZE) -> np.ndarray:
    """Which descriptor entries lie in the lowest ``rows`` DCT rows and ``cols`` columns."""
    square = np.zeros((HASH_SIZE, HASH_SIZE), bool)
    square[:rows, :cols] = True
    return square.flatten()[1:]


def descriptor(block: np.ndarray, rows: int = HASH_SIZE, cols: int = HASH_SIZE) -> np.ndarray:
    """The AC coefficients of the lowest ``rows`` x ``cols`` frequencies at orthonormal
    scale, unit length; zeros for a near-blank view."""
    ac = (block * _ORTHO).flatten()[1:] * band_mask(rows, cols)
    norm = float(np.linalg.norm(ac))
    if norm < MIN_CONTRAST * DCT_SIZE:  # orthonormal DCT keeps energy: norm = 64 x RMS
        return np.zeros(DESCRIPTOR_DIM, np.float32)
    return (ac / norm).astype(np.float32)


def informative(descriptors: np.ndarray) -> np.ndarray:
    """False for the views too plain to identify an image (stored as zero descriptors)."""
    return np.any(np.asarray(descriptors) != 0, axis=-1)


def plain(query: Fingerprints) -> bool:
    """True when the picture inside the upload's flat frame is too plain to identify: a
    blank page, or a screenshot of one (whose window chrome alone would otherwise match
    window-like icons). Such an upload is compared by colour layout, never claimed a copy."""
    return not informative(query.descriptors[QUERY_TRIMMED_VIEW])


def colour_signature(image: Image.Image) -> np.ndarray:
    """48 bytes: the mean colour of each cell of a 4x4 grid."""
    small = image.convert("RGB").resize((COLOUR_GRID, COLOUR_GRID), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8).reshape(COLOUR_BYTES)


def colour_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean absolute difference of colour signatures, 0-255 (broadcasts over rows)."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=-1)


def fingerprints(images: list[Image.Image], banded: bool = False) -> Fingerprints:
    """Hashes and descriptors of ``images``; ``banded``: each descriptor limited to its
    image's band (uploads only: a stored view keeps every frequency, to be compared in any
    band)."""
    blocks = list(low_frequencies(images))
    bands = [band(i) if banded else (HASH_SIZE, HASH_SIZE) for i in images]
    return Fingerprints(
        hashes=np.stack([phash_bits(b) for b in blocks]),
        descriptors=np.stack([descriptor(b, *k) for b, k in zip(blocks, bands, strict=True)]),
        bands=np.array(bands).reshape(len(images), 2),
    )


def fingerprints_of(scene: Scene, catalogue: tuple[View, ...]) -> Fingerprints:
    views = views_of(scene, catalogue)
    found = fingerprints([v.make(scene) for v in views], banded=views[0].banded)
    found.views = views
    return found


def index_fingerprints(image: Image.Image) -> Fingerprints:
    """The stored views' fingerprints, and the colour layout of the picture (as an upload's
    is: see :func:`query_fingerprints`)."""
    scene = Scene.of(image)
    found = fingerprints_of(scene, INDEX_VIEWS)
    found.colour = colour_signature(scene.picture)
    return found


def query_fingerprints(image: Image.Image, grid: Grid | None = None) -> Fingerprints:
    """``grid``: the upload as a build would keep it, when a lossless file (grid.Grid)."""
    scene = Scene.of(image)
    found = fingerprints_of(scene, QUERY_VIEWS)
    found.scene, found.grid = scene, grid
    if grid is not None and grid.image.size == image.size:
        grid.scene = scene  # not shrunk: the same pixels, framed once
    found.colour = colour_signature(scene.picture)
    found.content_colour = colour_signature(scene.trimmed)
    return found


def code_digest() -> str:
    """A digest of the copy-detection code that makes stored views. Stored views made by other
    code than the upload's would meet it less well, so an index built by it is not reused
    (the build key)."""
    folder = Path(__file__).parent
    digest = hashlib.sha256()
    for name in ("channels.py", "fingerprint.py", "framing.py", "views.py"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:16]
