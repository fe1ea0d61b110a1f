"""Perceptual fingerprints for copy detection, computed the same way at build and query time.

Every view of an image (:func:`index_views` at build time, :func:`query_views` for an
upload) is shrunk to 64x64 grey and transformed by a 2-D DCT, exactly as pHash does; the
16x16 lowest frequencies then give two things:

* a **descriptor**: the 255 AC coefficients, L2-normalised. Copies are matched by the cosine
  of descriptors. Unlike pHash's bits (each coefficient above or below the median), a
  coefficient near the median weighs little instead of flipping a bit at random, which is
  what made thin-line and radially symmetric drawings (Openclipart's ~570 "stars") lose
  their copies after a JPEG pass or a colour change. See scripts/bench_copy_detection.py.
* the **256-bit pHash** itself (bit-identical to imagehash's ``phash(hash_size=16)``), kept
  as a compact, widely understood hash for the opt-out export and as the Hamming distance
  shown beside a match.

Indexed views: the whole image, centre crops (:data:`CROPS`), its :func:`picture` with a
flat frame trimmed, so a crop or a padded copy still meets a stored view of the same region,
and the whole image :func:`brightened`, so a copy whose pale lines a brighter exposure blew out
still meets a view that lost them too.
Query views: each flip/rotation, as is and trimmed; turned back by a few degrees (the original
rectangle cut out exactly, :func:`unrotate`, and the trimmed view turned); and centre-cropped
(so a logo in a corner does not hide it). A 4x4 colour signature tells a recoloured or grey copy
from the original. Near-blank views (almost no low-frequency contrast) get an all-zero
descriptor: they never claim a copy. An upload whose framed picture is near-blank is
compared by colour layout instead, and shown as similar at most: a blank page identifies
nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.fft import dct

HASH_SIZE = 16
HASH_BITS = HASH_SIZE * HASH_SIZE
HASH_BYTES = HASH_BITS // 8
DESCRIPTOR_DIM = HASH_BITS - 1  # the low-frequency block without its DC term
DCT_SIZE = HASH_SIZE * 4  # pHash's 64x64 grey image
HASH_BASE = 256  # views are cut from a copy this size: fast, and the DCT needs only 64x64
# Centre crops kept per indexed image, as fractions of each side: steps of 0.1, because a
# crop 0.1 away from every stored one fell below the near-copy similarity (70% vs 80%/60%).
CROPS = (1.0, 0.9, 0.8, 0.7, 0.6)
QUERY_CROPS = (0.8, 0.6)  # centre crops of an upload: a logo in a corner does not hide it
INDEX_TRIMMED_VIEW = len(CROPS)  # after the crops: the image with its frame trimmed ...
INDEX_BRIGHTENED_VIEW = INDEX_TRIMMED_VIEW + 1  # ... and the whole image brightened
INDEX_VARIANTS = INDEX_BRIGHTENED_VIEW + 1
# Views of the whole picture, as is and trimmed (the rest are crops, flips and turns): only a
# match between two of these can be an exact copy.
INDEX_WHOLE_VIEWS = (0, INDEX_TRIMMED_VIEW)
INDEX_CROP_VIEWS = tuple(range(1, len(CROPS)))  # centre crops of the whole image
# Gain of the brightened view: every level from 255 / 1.12 (228) up turns white. A brighter
# copy (raised brightness or exposure, from about 1.1 to 1.2) loses the same pale lines, and
# meets this view at 0.97-1.0 where it met the image as stored at 0.82-0.96 (thin-line stars).
BRIGHTEN_GAIN = 1.12
COLOUR_GRID = 4
COLOUR_BYTES = COLOUR_GRID * COLOUR_GRID * 3
SMALL_ROTATIONS = (-5, 5)
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
# query view is compared on the rows and columns it has (its band), so a 15 px thumbnail
# still finds its original (the benchmark's 60 px icons at 25%: 11 of 200 copies missed on
# the full block, 1 in band). A narrower band is held to a stricter threshold
# (indexer/descriptor_index.py), as fewer coefficients tell look-alikes apart less.
BAND_PER_PIXEL = 0.8
MIN_BAND = 6  # narrower still identifies nothing: a 5 px view is compared as if 8 px
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
QUERY_TRIMMED_VIEW = len(DIHEDRAL)  # the upload with its flat frame trimmed; see query_views()
QUERY_WHOLE_VIEWS = (0, QUERY_TRIMMED_VIEW)  # the upload as is, and trimmed
QUERY_VIEWS = 22  # then, when the picture was cut out of a frame, the upload uncut
# The views of an upload that are turned or flipped top to bottom (mirrored left to right is
# not among them: a mirrored crop is a common repost): each dihedral turn, as is and trimmed,
# and the small turns after the two centre crops (see query_views()).
_SMALL_TURNS = 2 * len(DIHEDRAL) + len(QUERY_CROPS)
QUERY_TURNED_VIEWS = (
    *range(2, len(DIHEDRAL)),
    *range(QUERY_TRIMMED_VIEW + 2, 2 * len(DIHEDRAL)),
    *range(_SMALL_TURNS, QUERY_VIEWS),
)


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

    def __post_init__(self) -> None:
        if self.bands is None:
            self.bands = np.full((len(self.descriptors), 2), HASH_SIZE)

    @property
    def strict(self) -> np.ndarray:
        """Which views may claim an item only as the same picture: those after the
        :data:`QUERY_VIEWS` of an upload (its uncut view, see query_views())."""
        return np.arange(len(self.descriptors)) >= QUERY_VIEWS


def hash_base(image: Image.Image) -> Image.Image:
    base = image.convert("RGB")
    if max(base.size) > HASH_BASE:
        base = base.copy()
        base.thumbnail((HASH_BASE, HASH_BASE), Image.Resampling.BILINEAR)
    return base


def low_frequencies(view: Image.Image) -> np.ndarray:
    """(16, 16) unnormalised DCT-II coefficients, computed as imagehash's pHash does."""
    grey = view.convert("L").resize((DCT_SIZE, DCT_SIZE), Image.Resampling.LANCZOS)
    coefficients = dct(dct(np.asarray(grey, dtype=np.float64), axis=0), axis=1)
    return coefficients[:HASH_SIZE, :HASH_SIZE]


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


def fingerprints(views: list[Image.Image], banded: bool = False) -> Fingerprints:
    """Hashes and descriptors of ``views``; ``banded``: each descriptor limited to its view's
    band (queries only: a stored view keeps every frequency, to be compared in any band)."""
    blocks = [low_frequencies(v) for v in views]
    bands = [band(v) if banded else (HASH_SIZE, HASH_SIZE) for v in views]
    return Fingerprints(
        hashes=np.stack([phash_bits(b) for b in blocks]),
        descriptors=np.stack([descriptor(b, *k) for b, k in zip(blocks, bands, strict=True)]),
        bands=np.array(bands).reshape(len(views), 2),
    )


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


def centre_crop(image: Image.Image, fraction: float) -> Image.Image:
    if fraction >= 1.0:
        return image
    w, h = image.size
    cw, ch = max(1, round(w * fraction)), max(1, round(h * fraction))
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def uniform_lines(
    values: np.ndarray, tolerance: int, colours: np.ndarray | None = None
) -> np.ndarray:
    """True for each row of ``values`` (rows, width, 3) that is one flat colour (and close to
    one of ``colours``, when given). A row's end pixels are left out: shrinking blends them
    with the frame cut away before, and that alone kept a screenshot's flat margins (of 120
    shots of generated pictures, 89% met the near-copy similarity with them kept, all
    without)."""
    values = values[:, 1:-1] if values.shape[1] > 4 else values
    spread = values.max(axis=1).astype(np.int16) - values.min(axis=1).astype(np.int16)
    flat = spread.max(axis=1) <= tolerance
    if colours is None:
        return flat
    mean = values.mean(axis=1)  # (lines, 3) against (colours, 3): within tolerance of one
    near = np.abs(mean[:, None, :] - colours[None, :, :]).max(axis=2).min(axis=1) <= tolerance
    return flat & near


# A line whose colours spread this far (0-255) is flat, in a picture that spans black to
# white; less in one of lower contrast (frame_tolerance()).
FRAME_TOLERANCE = 24
FAINT_TOLERANCE = 6  # for pictures drawn in lines too pale to stand out at the default
MIN_TRIMMED_SIDE = 8  # pixels: a smaller box is a speck, too small to identify
CHROME_SPREAD = 64  # frame colours this far apart (0-255) are window chrome or a mount
# Chrome is cut away at this tolerance, not the default: a picture's white edge on a light
# grey window (255 vs 236) would go with it (a screenshot of Malta's flag lost its white
# half and was taken for 16 red flags).
CHROME_TOLERANCE = 12
EDGE = 1  # pixels around a picture's box that resampling blends with what surrounds it


def trim_borders(image: Image.Image) -> Image.Image:
    """Strip flat-coloured rows and columns from every edge: padding, letterboxing, a
    screenshot's title bar and margins, and the blank margin of the picture itself."""
    return cut(image, frame_box(np.asarray(image.convert("RGB"))))


def cut(image: Image.Image, box: tuple[int, int, int, int] | None) -> Image.Image:
    """``image`` inside ``box`` (top, left, bottom, right), or all of it for None."""
    return image if box is None else image.crop((box[1], box[0], box[3], box[2]))


def frame_box(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of what a flat frame holds, or None when there is nothing
    to keep (blank, or a speck). A picture that looks blank at :func:`frame_tolerance`
    (hair-thin pale lines) is tried again at :data:`FAINT_TOLERANCE`, so its frame still
    goes."""
    return unspecked(framed(pixels))


def unspecked(box: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
    """``box``, or None when it is a speck (under :data:`MIN_TRIMMED_SIDE`)."""
    if box is None or min(box[2] - box[0], box[3] - box[1]) < MIN_TRIMMED_SIDE:
        return None
    return box


def framed(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """What :func:`frame_box` finds, specks included."""
    tolerance = frame_tolerance(pixels)
    box = content_box(pixels, tolerance)
    if box is None and tolerance > FAINT_TOLERANCE:
        box = content_box(pixels, FAINT_TOLERANCE)
    return box


def frame_tolerance(pixels: np.ndarray) -> int:
    """:data:`FRAME_TOLERANCE` scaled by the picture's own contrast, so a washed-out copy is
    trimmed to the same box as its original, as the descriptor is blind to such a change.
    At a fixed tolerance, brightening and flattening the colours (the benchmark's colour
    jitter) made the pale outer lines of Openclipart's thin-line stars flat: the upload
    was trimmed to the star's inner ring, and a sibling star's ring won."""
    spread = int((pixels.max(axis=(0, 1)).astype(np.int16) - pixels.min(axis=(0, 1))).max())
    return max(FAINT_TOLERANCE, round(FRAME_TOLERANCE * spread / 255))


def in_chrome(pixels: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """True when the frame around ``box`` closes on all four sides and has two or more
    colours: a title bar over margins, padding around a picture's own margin. No stored
    picture includes such chrome, but with it a screenshot looks like a window icon. The
    line next to the box is left out: it is the picture's own anti-aliased edge, blended
    with the frame, and alone it made a thick line on white (a pen-width icon, a stroke's
    grey rim) look like a picture in chrome (38 of 8,121 Openclipart images)."""
    top, left, bottom, right = box
    height, width = pixels.shape[:2]
    if top == 0 or left == 0 or bottom == height or right == width:
        return False
    outside = np.ones((height, width), bool)
    outside[max(0, top - EDGE) : bottom + EDGE, max(0, left - EDGE) : right + EDGE] = False
    if outside.sum() == 0:
        return False
    frame = pixels[outside].astype(np.int16)
    return int((frame.max(axis=0) - frame.min(axis=0)).max()) > CHROME_SPREAD


def chrome_box(pixels: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of what window chrome holds: only lines of the colours
    on the upload's outer edge (title bar, margins) are cut, at a tolerance tight enough to
    keep a picture's own white or flat edge on a light grey window (trimming that would
    take a picture's flat blue field or white half with the chrome)."""
    edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    colours = np.unique(edge, axis=0).astype(np.float64)
    return content_box(pixels, CHROME_TOLERANCE, colours)


def content_box(
    pixels: np.ndarray, tolerance: int, frame_colours: np.ndarray | None = None
) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) inside the flat frame, or None when all of it is flat.
    Rows and columns are tested in turn until nothing changes, so a title bar does not stop
    the side margins below it from being seen as flat. A frame around a flat page (a
    screenshot of a blank canvas) gives the page. With ``frame_colours``, only lines of one
    of those colours are frame (see :func:`chrome_box`)."""
    top, left, bottom, right = 0, 0, pixels.shape[0], pixels.shape[1]
    for step in range(4):
        box = pixels[top:bottom, left:right]
        rows = ~uniform_lines(box, tolerance, frame_colours)
        cols = ~uniform_lines(box.transpose(1, 0, 2), tolerance, frame_colours)
        if rows.sum() < 2 or cols.sum() < 2:
            if step == 0:
                return None
            return flat_page(box, (top, left, bottom, right), tolerance)
        new = (
            top + int(np.argmax(rows)),
            left + int(np.argmax(cols)),
            top + len(rows) - int(np.argmax(rows[::-1])),
            left + len(cols) - int(np.argmax(cols[::-1])),
        )
        if new == (top, left, bottom, right):
            break
        top, left, bottom, right = new
    return top, left, bottom, right


def flat_page(box: np.ndarray, at: tuple[int, int, int, int], tolerance: int):
    """The box ``at`` (pixels ``box``) without its outer runs of flat colour: what a frame
    holds when the content inside is flat (stripes of margin | page | margin)."""
    top, left, _, _ = at
    r0, r1 = inner_run(box.mean(axis=1), tolerance)
    c0, c1 = inner_run(box.mean(axis=0), tolerance)
    return top + r0, left + c0, top + r1, left + c1


def inner_run(colours: np.ndarray, tolerance: int) -> tuple[int, int]:
    """(start, stop) of the lines between the run of the first line's colour and the run
    of the last one's; all of them where that leaves nothing."""
    off_first = np.abs(colours - colours[0]).max(axis=1) > tolerance
    off_last = np.abs(colours - colours[-1]).max(axis=1) > tolerance
    start, stop = int(np.argmax(off_first)), len(colours) - int(np.argmax(off_last[::-1]))
    if not off_first.any() or not off_last.any() or stop <= start:
        return 0, len(colours)
    return start, stop


def index_views(
    base: Image.Image, inner: Image.Image, box: tuple[int, int, int, int] | None
) -> list[Image.Image]:
    """The INDEX_VARIANTS views stored for one image (``base``, its :func:`picture` and the
    box inside that): the centre crops, the picture trimmed as an upload of it is, and the
    whole image brightened."""
    return [centre_crop(base, f) for f in CROPS] + [cut(inner, box), brightened(base)]


def brightened(image: Image.Image) -> Image.Image:
    """``image`` with every level scaled by :data:`BRIGHTEN_GAIN`, the top ones clipped to
    white. Scaling alone leaves the descriptor as it was (it is contrast-free); the clipping
    is what a brightened copy shares with this view and not with the original: its palest
    lines are gone, and what is left weighs more. Without it, a brightened thin-line star
    met sibling stars (0.95-0.98) before its own picture (0.93-0.96)."""
    table = [min(255, round(v * BRIGHTEN_GAIN)) for v in range(256)]
    return image.point(table * len(image.getbands()))


def picture(base: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int] | None]:
    """The picture in ``base``, and the box inside its own flat frame. An image framed in
    window chrome or a mount (:func:`in_chrome`) is taken to be the picture inside. Many
    pictures look framed too (a road sign's flat base line, a flag's stripes around its
    emblem: 4% of Openclipart), so stored images are trimmed the same way: a re-saved road
    sign met its stored views at 0.92 otherwise, and was not found."""
    pixels = np.asarray(base)
    box = framed(pixels)  # a speck in chrome too: the chrome alone looks like a two-band flag
    if box is not None and in_chrome(pixels, box):
        base = cut(base, chrome_box(pixels) or box)
        return base, frame_box(np.asarray(base))
    return base, unspecked(box)


def query_views(image: Image.Image) -> list[Image.Image]:
    """:data:`QUERY_VIEWS` views of an upload's :func:`picture`: each dihedral transform as
    is and trimmed, its centre crops, and the picture turned by a few degrees either way, as
    is and trimmed. When the picture was cut out of what looked like a frame, the upload
    uncut comes last: a crop of a striped flag looks framed too, and only the uncut crop
    meets the stored crop (see CopyMatcher.match for how far it may claim)."""
    uncut = hash_base(image)
    base, box = picture(uncut)
    trimmed = cut(base, box)
    out = [b if op is None else b.transpose(op) for b in (base, trimmed) for op in DIHEDRAL]
    out += [centre_crop(base, f) for f in QUERY_CROPS]
    out += [unrotate(base, angle) for angle in SMALL_ROTATIONS]
    corner = trimmed.getpixel((0, 0))
    for angle in SMALL_ROTATIONS:
        turned = trimmed.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=corner)
        out.append(trim_borders(turned))
    return out if base.size == uncut.size else [*out, uncut]


def unrotate(image: Image.Image, angle: float) -> Image.Image:
    """Undo a turn by -``angle`` degrees that enlarged the canvas to fit (what image editors
    do): turn back and cut out the original rectangle, whose size follows from the canvas.
    Works for pictures that fill their frame, where trimming the fill cannot."""
    c, s = abs(np.cos(np.radians(angle))), abs(np.sin(np.radians(angle)))
    w, h = image.size
    width, height = (c * w - s * h) / (c * c - s * s), (c * h - s * w) / (c * c - s * s)
    if width < 8 or height < 8:
        return image  # too thin to have been turned this way
    turned = image.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    left, top = (turned.width - width) / 2, (turned.height - height) / 2
    return turned.crop((round(left), round(top), round(left + width), round(top + height)))


def index_fingerprints(image: Image.Image) -> Fingerprints:
    """The stored views' fingerprints, and the colour layout of the picture (as an upload's
    is: see :func:`query_fingerprints`)."""
    base = hash_base(image)
    inner, box = picture(base)
    found = fingerprints(index_views(base, inner, box))
    found.colour = colour_signature(inner)
    return found


def query_fingerprints(image: Image.Image) -> Fingerprints:
    views = query_views(image)
    found = fingerprints(views, banded=True)
    found.colour = colour_signature(views[0])
    found.content_colour = colour_signature(views[QUERY_TRIMMED_VIEW])
    return found


def code_digest() -> str:
    """A digest of this module's source. Stored views trimmed by other code than the
    upload's would meet it less well, so an index built by it is not reused (build key)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
