"""Two views held to the pixel on their common pixel grid: what a copier's colour edit
leaves of one on the other.

An upload of a lossless file's own pixels and a stored picture kept losslessly at its own
size lie on one pixel grid, a flip or turn apart (grid.Grid). A copy then differs from the
stored picture only by a copier's colour edit (brightness, contrast, saturation, greyscale)
and its rounding, clipping, or the ringing of a JPEG it once was; every other comparison in
verify.py allows for resampling and recompression, which hide a caption's other words or a
line drawn shorter.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import fft, ndimage

from hibt.indexer.copies.channels import channel_rows
from hibt.indexer.copies.grid import Grid
from hibt.indexer.copies.levels import LUMA, LUMA64, inked
from hibt.indexer.copies.memo import Keyed
from hibt.indexer.copies.windows import window_extreme, window_span

# The residual is read (off_grid; verify.GRID_MAX is the most a copy leaves) only where at
# least CLEAN_SHARE of the ink is within CLEAN_LEVEL of any affine colour map
# (affine_residual), or MAPPED_SHARE of the ink whose stored colour other pixels
# share is within CLEAN_LEVEL of the median level the upload gives that colour
# (mapped_residual): a residual all over means the two were not on one grid after all (a
# turned star met as itself).
CLEAN_LEVEL = 3.0
CLEAN_SHARE = 0.25
MAPPED_SHARE = 0.5
# Each colour map is fitted FIT_ROUNDS times, each time on the pixels the last fit left least
# of; the copier's map only on pixels its clipping cannot have touched. Its floor and
# ceiling are the upload's levels where the stored picture is black or white (within
# BOUND_LEVELS of 0 or 255, on at least BOUND_PIXELS pixels).
FIT_ROUNDS = 2
BOUND_LEVELS = 5.0
BOUND_PIXELS = 16
CLIP_REACH = 1
# A bounded fit (copier_edit) starts on the pixels whose stored luma spans at most FILL_SPAN
# levels over 3x3 (inside fills and gradients, away from edges a shrink blended), where
# their levels lie FILL_RANGE apart or more.
FILL_SPAN = 4.0
FILL_RANGE = 32.0
# Two views are laid on one grid when their sizes differ by at most MAX_OFFSET pixels (two
# trims of one picture); the fine tones' phase correlation moves a view as far (verify.py).
MAX_OFFSET = 4
# What two views leave apart is also read over LOCAL_WINDOW and BROAD_WINDOW pixels square
# (Apart.local, Apart.broad).
LOCAL_WINDOW = 5
BROAD_WINDOW = 11
# Pairs of views laid on one grid kept (laid_apart): the last candidate's, with room to spare.
LAID_KEPT = 8
# The flips and turns of dihedral(), in its order, as Pillow's transposes (np.rot90 turns
# counter-clockwise, as ROTATE_90 does; [::-1] flips top to bottom).
T = Image.Transpose
DIHEDRAL = (None, T.ROTATE_90, T.ROTATE_180, T.ROTATE_270)
DIHEDRAL += (T.FLIP_TOP_BOTTOM, T.TRANSVERSE, T.FLIP_LEFT_RIGHT, T.TRANSPOSE)


# Two views laid on their common pixel grid (on_one_grid): (h, w, 3) float arrays.
Laid = tuple[np.ndarray, np.ndarray]


def off_grid(upload: Image.Image, stored: Image.Image, source: Grid | None = None) -> float | None:
    """How far ``upload`` stays from ``stored`` in one place once on their common pixel grid:
    the largest 3x3 mean of :func:`copier_edit`'s residual, in grey levels (Apart.fine).
    Every other comparison allows for resampling and recompression, which hide a caption's
    other words or a line drawn shorter (Xn - Nocif against Xi - Irritant); two files' own
    pixels have none to allow for. A mean over 3x3 pixels of the signed residual keeps a
    missing stroke and averages the ringing of a JPEG saved again as PNG away. None when
    there is no grid in common, no ink, or the two are not :func:`laid_alike` (noise all
    over: the other tests allow for it). ``source``: as for :func:`on_one_grid`."""
    apart = laid_apart(upload, stored, source)[1]
    return None if apart is None else apart.fine


def laid_apart(
    upload: Image.Image, stored: Image.Image, source: Grid | None = None, bounded: bool = False
) -> tuple[Laid | None, Apart | None]:
    """The two views on their common grid (:func:`on_one_grid`, read-only) and how far
    apart they stay there (:func:`grid_residual`; ``bounded`` as for :func:`copier_edit`),
    kept for the last :data:`LAID_KEPT` pairs: a candidate's comparison and its whole-file
    check (verify.verify_match) lay the same pair, and a family of siblings pays for it twice
    over. The laying is kept on its own too: the grey rule reads a pair's bounded fit where
    the other tests read its free one."""
    return kept_laid_apart(Keyed(upload), Keyed(stored), Keyed(source), bounded)


@functools.lru_cache(maxsize=LAID_KEPT)
def kept_laid_apart(
    upload: Keyed, stored: Keyed, source: Keyed, bounded: bool
) -> tuple[Laid | None, Apart | None]:
    """:func:`laid_apart` for its keys, kept."""
    laid = kept_laid(upload, stored, source)
    return (None, None) if laid is None else (laid, grid_residual(*laid, bounded))


@functools.lru_cache(maxsize=LAID_KEPT)
def kept_laid(upload: Keyed, stored: Keyed, source: Keyed) -> Laid | None:
    """:func:`on_one_grid` for its keys, read-only, kept."""
    laid = on_one_grid(upload.value, stored.value, source.value)
    if laid is not None:
        for values in laid:
            values.flags.writeable = False
    return laid


class Apart(NamedTuple):
    """How far two views laid on one grid stay apart (:func:`grid_residual`), in grey levels:
    the largest mean of the copier's residual (:func:`copier_edit`) over 3x3 pixels
    (``fine``), over :data:`LOCAL_WINDOW` pixels (``local``) and over :data:`BROAD_WINDOW`
    pixels (``broad``), and the luma gain and offset of the edit fitted. A missing stroke
    shows in the first; a sibling's other shading or dashes, a few pixels wide, in the
    second, where a JPEG's ringing averages away; a sibling's other ground, which lies apart
    all over it, in the third."""

    fine: float
    local: float
    broad: float
    gain: float
    offset: float


def grid_residual(up: np.ndarray, st: np.ndarray, bounded: bool = False) -> Apart | None:
    """:func:`off_grid` for two views already laid on their common grid (:func:`on_one_grid`),
    with the rest of :class:`Apart` (``bounded``: as for :func:`copier_edit`)."""
    grey = up @ LUMA
    ink = inked(grey, st @ LUMA)
    if not ink.any() or not laid_alike(up, st, ink, grey):
        return None
    edit = copier_edit(st, up, bounded)
    fine, local, broad = (
        float(np.abs(ndimage.uniform_filter(edit.left, size, mode="nearest")).max())
        for size in (3, LOCAL_WINDOW, BROAD_WINDOW)
    )
    return Apart(fine, local, broad, edit.gain, edit.offset)


def laid_alike(up: np.ndarray, st: np.ndarray, ink: np.ndarray, grey: np.ndarray) -> bool:
    """Whether two views laid on one grid (:func:`on_one_grid`) agree at enough of their
    ``ink`` for their residual to be read (``grey``: the upload's luma): within
    :data:`CLEAN_LEVEL` of an affine colour map (:data:`CLEAN_SHARE` of it), or of the
    upload's own level for each stored colour (:data:`MAPPED_SHARE` of the ink whose colour
    other pixels share). A brightening that
    clips before a contrast is no affine map, and a sibling's other parts pull the least
    squares off a picture mostly pale (a dashed frame with another edge drawn thick); a
    copier's edit is a function of the colour, however it clips."""
    if float((np.abs(affine_residual(st, up)[ink]) <= CLEAN_LEVEL).mean()) >= CLEAN_SHARE:
        return True
    left, shared = mapped_residual(st, grey)
    held = ink & shared
    if held.sum() < BOUND_PIXELS:
        return False
    return float((np.abs(left[held]) <= CLEAN_LEVEL).mean()) >= MAPPED_SHARE


def mapped_residual(stored: np.ndarray, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel (``stored`` (h, w, 3) and the upload's luma ``grey`` (h, w) on one grid), the
    upload's grey level less its median over the pixels of the same stored colour, and
    whether another pixel has that colour (a colour of one pixel, an antialiased rim, maps to
    whatever the upload has there)."""
    colours = np.rint(stored).astype(np.int64) @ np.array([1 << 16, 1 << 8, 1])
    levels = grey.ravel()
    # One sort of one key, the colour and then the level to a sixteenth (under 1 << 12),
    # in place of lexsort's two.
    order = np.argsort(colours.ravel() << 12 | np.rint(levels * 15.99).astype(np.int64))
    keys, ordered = colours.ravel()[order], levels[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, keys.size])
    medians = ordered[starts + (counts - 1) // 2]
    left, shared = np.empty_like(levels), np.empty(levels.shape, bool)
    left[order] = ordered - np.repeat(medians, counts)
    shared[order] = np.repeat(counts, counts) > 1
    return left.reshape(colours.shape), shared.reshape(colours.shape)


Window = tuple[slice, slice]


def on_one_grid(
    upload: Image.Image, stored: Image.Image, source: Grid | None = None
) -> Laid | None:
    """The two views as (h, w, 3) float arrays, the upload under the flip or turn whose grey
    levels lie closest. Views whose sizes differ by a few pixels (two trims of one picture)
    are cut to where they overlap best. None when no flip or turn comes within
    :data:`MAX_OFFSET` pixels of the stored view's size. ``source``: the upload's grid when
    ``upload`` is its picture, flipped or turned or not (:func:`pixel_test`): the two
    closest flips or turns of that picture are then the file's, decoded again (Grid.under),
    since a flip of a picture reduced with a remainder lies half a pixel off the flipped
    file's, and a nearly symmetric picture would lie closer unflipped."""
    st = np.asarray(stored.convert("RGB"), np.float32)
    grey = st @ LUMA
    upload = upload if source is None else source.image  # any flip of it: all are tried
    pixels = np.asarray(upload.convert("RGB"), np.float32)
    turns = dict(enumerate(dihedral(pixels)))
    laid = closest(dict(enumerate(dihedral(pixels @ LUMA))), grey)
    if source is not None:
        turns = {
            k: np.asarray(source.under(DIHEDRAL[k]).convert("RGB"), np.float32)
            for *_, k in laid[:2]
        }
        laid = closest({k: turn @ LUMA for k, turn in turns.items()}, grey)
    if not laid:
        return None
    _, (a, b), k = laid[0]
    return turns[k][a], st[b]


def inside_grid(uploads: list[Image.Image], stored: Image.Image) -> Laid | None:
    """Of ``uploads`` (one upload flipped or turned ways it may have been), the one that lies
    closest inside the stored picture, and the window of it where it lies, as (h, w, 3) float
    arrays: a crop of a file's own pixels keeps them, at a whole-pixel offset anywhere in the
    file (:func:`lying`). None when none fits inside."""
    st = np.asarray(stored.convert("RGB"), np.float32)
    grey = st @ LUMA
    pixels = [np.asarray(u.convert("RGB"), np.float32) for u in uploads]
    fits = [p for p in pixels if p.shape[0] <= grey.shape[0] and p.shape[1] <= grey.shape[1]]
    if not fits:
        return None
    found = lying([p @ LUMA for p in fits], grey)
    _, (y, x), k = min((*f, k) for k, f in enumerate(found))
    h, w = fits[k].shape[:2]
    return fits[k], st[y : y + h, x : x + w]


def lying(parts: list[np.ndarray], whole: np.ndarray) -> list[tuple[float, tuple[int, int]]]:
    """Where each grey part lies in the grey ``whole``: the least mean squared difference over
    every whole-pixel offset, and that offset. The squared differences are the window sums of
    the whole's squares, less twice its correlation with the part, plus the part's squares;
    the correlations are products of transforms (float32: a tenth of a level is plenty to
    find a crop's own place), the whole's transformed once."""
    (hh, ww), sizes = whole.shape, [p.shape for p in parts]
    shape = [
        fft.next_fast_len(hh + max(s[0] for s in sizes) - 1, real=True),
        fft.next_fast_len(ww + max(s[1] for s in sizes) - 1, real=True),
    ]
    transformed = fft.rfft2(whole.astype(np.float32), shape)
    sums = np.pad(np.square(whole.astype(np.float64)), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    found = []
    for part in parts:
        h, w = part.shape
        flipped = part[::-1, ::-1].astype(np.float32)
        cross = fft.irfft2(transformed * fft.rfft2(flipped, shape), shape)[h - 1 : hh, w - 1 : ww]
        squares = sums[h:, w:] - sums[:-h, w:] - sums[h:, :-w] + sums[:-h, :-w]
        apart = squares - 2 * cross + float(np.square(part.astype(np.float64)).sum())
        y, x = np.unravel_index(int(np.argmin(apart)), apart.shape)
        found.append((float(apart[y, x]) / part.size, (int(y), int(x))))
    return found


def closest(
    turns: dict[int, np.ndarray], grey: np.ndarray
) -> list[tuple[float, tuple[Window, Window], int]]:
    """The flips or turns (by their index in dihedral(), in luma: a greyscale copy's own
    levels) within :data:`MAX_OFFSET` pixels of the stored view's size, closest first to
    its luma ``grey``: how far apart, where they overlap best, which."""
    laid = [
        (*overlapping(turn, grey), k)
        for k, turn in turns.items()
        if max(abs(a - b) for a, b in zip(turn.shape, grey.shape, strict=True)) <= MAX_OFFSET
    ]
    return sorted(laid, key=lambda found: found[0])


def dihedral(image: np.ndarray) -> list[np.ndarray]:
    """The 8 flips and turns of an image, as numpy views, in a fixed order."""
    return [np.rot90(v, k) for v in (image, image[::-1]) for k in range(4)]


def overlapping(first: np.ndarray, second: np.ndarray) -> tuple[float, tuple[Window, Window]]:
    """Where two grey images, cut to their common size, differ least: the mean absolute
    difference there and the two windows."""
    h, w = min(first.shape[0], second.shape[0]), min(first.shape[1], second.shape[1])

    def windows(image: np.ndarray) -> list[Window]:
        return [
            (slice(y, y + h), slice(x, x + w))
            for y in range(image.shape[0] - h + 1)
            for x in range(image.shape[1] - w + 1)
        ]

    return min(
        (float(np.abs(first[a] - second[b]).mean()), (a, b))
        for a in windows(first)
        for b in windows(second)
    )


def affine_residual(stored: np.ndarray, upload: np.ndarray) -> np.ndarray:
    """Per pixel, the grey level (luma) of what the best affine map of ``stored``'s colours
    leaves of ``upload`` (both (h, w, 3)), signed: whether the two lie on one grid at all,
    whatever their colours. Fitted by least squares in float64 about the means (a drawing's
    channels move together, and float32 normal equations lose the fit), again on the pixels
    it fit within the mean."""
    x, y = channel_rows(stored), channel_rows(upload)
    fitted = None
    for _ in range(FIT_ROUNDS):
        # np.compress keeps rows along memory, where x[:, fitted] lays them across it.
        every = fitted is None or fitted.all()
        xf, yf = (x, y) if every else (np.compress(fitted, v, axis=1) for v in (x, y))
        mx, my = xf.mean(axis=1, keepdims=True), yf.mean(axis=1, keepdims=True)
        xs = xf - mx
        gain = np.linalg.lstsq(xs @ xs.T, xs @ (yf - my).T, rcond=None)[0]
        left = LUMA64 @ (np.clip(gain.T @ (xs if every else x - mx) + my, 0, 255) - y)
        size = np.abs(left)
        fitted = size <= max(CLEAN_LEVEL, float(size.mean()))
    return left.reshape(stored.shape[:2])


class Edit(NamedTuple):
    """A copier's colour edit fitted (:func:`copier_edit`): what it leaves, per pixel, and
    its luma gain and offset (``a``, ``b``)."""

    left: np.ndarray
    gain: float
    offset: float


def copier_edit(stored: np.ndarray, upload: np.ndarray, bounded: bool = False) -> Edit:
    """The copier's colour edit of ``stored`` that best explains ``upload`` (both (h, w, 3)),
    and per pixel the grey level (luma) of what it leaves of the upload, signed. A copier's
    edit is ``a * Y + b + s * (RGB - Y)`` (Y: luma; brightness and contrast are a and b, saturation
    and greyscale s >= 0), clipped to the levels the upload gives the stored picture's black
    and white: brightening clips white, and a contrast after it makes that clipped white
    grey. Any affine map would also turn hue, and so pass a green pin for a red one, or one
    face's skin recoloured in a picture of two. Luma, because JPEG keeps it at every pixel
    while it halves colour's resolution. Fitted on the levels clipping cannot have touched,
    again on those of the pixels it fit within the mean. Where the edit clipped, or may have,
    the upload may lie anywhere in :func:`clip_span` (a copy brightened before it was shrunk
    averages clipped and unclipped levels), and only how far it lies outside is left: a red
    ornament on a cream ground is not the white a brightening clips that ground to.
    ``bounded``: the edit takes the stored black and white no further in than the upload's
    levels there (:func:`bounded_fit`), and where it clipped, the upload may also lie on the
    chord of the clipped edit (:func:`blended_span`). Used for a grey upload against the
    grey conversions of a coloured picture (verify.grey_on_grid); the thresholds of the
    other tests were calibrated on the fit unbounded, whose tilt a JPEG's ringing, clipped
    at black, leans on (docs/copy-detection.md, run BK)."""
    h, w = stored.shape[:2]
    x, y = channel_rows(stored), channel_rows(upload)
    (floor, black), (ceiling, white) = level_of(x, y, black=True), level_of(x, y, black=False)
    bounds = Bounds(
        float(LUMA64 @ floor[:, 0]) if bounded and black else None,
        float(LUMA64 @ ceiling[:, 0]) if bounded and white else None,
    )
    grey = LUMA64 @ x
    tint = x - grey
    # Each channel of each pixel is one equation; those at the floor or ceiling may be clipped.
    free = (y > floor + 0.5) & (y < ceiling - 0.5)
    unclipped = free if free.sum() >= BOUND_PIXELS else np.ones(y.shape, bool)
    fitted = unclipped
    if bounded:
        fitted = inside_fills(unclipped, stored @ LUMA)
    for _ in range(FIT_ROUNDS):
        at = np.broadcast_to(grey, y.shape)[fitted]
        a, b, s = bounded_fit(at, tint[fitted], (y - x)[fitted], bounds)
        raw = a * grey + b + max(s, 0.0) * tint
        left = LUMA64 @ (np.clip(raw, floor, ceiling) - y)
        near = np.abs(left) <= max(CLEAN_LEVEL, float(np.abs(left).mean()))
        span = clip_span(raw.reshape(3, h, w), floor[..., None], ceiling[..., None])
        touched, low, high = (v.reshape(3, -1) for v in span)
        fitted = unclipped & near & ~touched
        if fitted.sum() < BOUND_PIXELS:
            fitted = unclipped & near
    if bounded:
        low, high = blended_span(x, low, high, np.clip((b, 255.0 * a + b), floor, ceiling))
    outside = LUMA64 @ (np.clip(y, low, high) - y)
    return Edit(np.where(touched.any(axis=0), outside, left).reshape(h, w), a, b)


def inside_fills(unclipped: np.ndarray, luma: np.ndarray) -> np.ndarray:
    """Of the ``unclipped`` equations (3, n), those inside fills and gradients, whose stored
    ``luma`` (h, w) spans at most :data:`FILL_SPAN` over 3x3, where their levels lie at
    least :data:`FILL_RANGE` apart (5th to 95th percentile), else all: an edge's blend of two
    levels, clipped before the shrink, is no level the edit made (:func:`blended_span`), and
    enough of them tilt a flag's fit; fills of one level alone settle no gain."""
    inner = unclipped & (window_span(luma, 3) <= FILL_SPAN).reshape(1, -1)
    if inner.sum() < BOUND_PIXELS:
        return unclipped
    levels = np.broadcast_to(luma.reshape(1, -1), inner.shape)[inner]
    low, high = np.percentile(levels, (5, 95))
    return inner if high - low >= FILL_RANGE else unclipped


def blended_span(
    stored: np.ndarray, low: np.ndarray, high: np.ndarray, ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`clip_span`'s range (``low``, ``high``, (3, n)) widened to the chord of the
    clipped edit between black and white (``ends``, (3, 2): what the edit makes of each) at
    the ``stored`` levels: a thumbnail's pixel is a blend of the file's, each edited and
    clipped before the shrink, and a blend of a black line and a white ground brightened is
    the line and the clipped white, not the blend brightened."""
    chord = ends[:, :1] + stored / 255.0 * (ends[:, 1:] - ends[:, :1])
    return np.minimum(low, chord), np.maximum(high, chord)


def clip_span(
    raw: np.ndarray, floor: np.ndarray, ceiling: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(3, h, w) each, for an edit's unclipped levels ``raw`` (3, h, w): which levels it
    clipped, or may have where it was made before the picture was shrunk (within CLIP_REACH
    pixels of one beyond bounds), and the range a copy's level may take there: from the least
    edited level about it, or from 0 where the edit went under the floor about it, to the
    greatest, or to 255 where it went over the ceiling (an edit of several steps, each
    clipped, can overshoot where one fitted edit clips). Clipping keeps order, so the edited
    levels' extremes about a pixel are the raw extremes clipped."""
    size = (1, 2 * CLIP_REACH + 1, 2 * CLIP_REACH + 1)
    most, least = window_extreme(raw, size, np.maximum), window_extreme(raw, size, np.minimum)
    over, under = most > ceiling + 0.5, least < floor - 0.5
    low = np.where(under, 0.0, np.clip(least, floor, ceiling))
    high = np.where(over, 255.0, np.clip(most, floor, ceiling))
    return over | under, low, high


def level_of(stored: np.ndarray, upload: np.ndarray, black: bool) -> tuple[np.ndarray, bool]:
    """The upload's (3, 1) level where the stored picture (both (3, n), channel_rows) is
    black, or white: the median over those pixels, and True; 0 or 255 and False when there
    are too few of them."""
    bound = 0.0 if black else 255.0
    at = (np.abs(stored - bound) <= BOUND_LEVELS).all(axis=0)
    if at.sum() < BOUND_PIXELS:
        return np.full((3, 1), bound), False
    return np.median(np.compress(at, upload, axis=1), axis=1, keepdims=True), True


class Bounds(NamedTuple):
    """The upload's grey levels where the stored picture is black and white (level_of), or
    None where it has too little of either to tell."""

    black: float | None
    white: float | None


def bounded_fit(
    grey: np.ndarray, tint: np.ndarray, change: np.ndarray, bounds: Bounds
) -> tuple[float, float, float]:
    """The edit's gain, offset and saturation (copier_edit) that best explain ``change`` (the
    upload's levels less the stored ones, at stored ``grey`` and ``tint``), taking the stored
    picture's black to the upload's black level or under it, and its white to the upload's
    white or over it (``bounds``): fitted on the levels between alone, a picture of light
    greys recompressed tilts the fit, and the black ground a copy kept black would be left
    apart by the tilt's offset. The least squares under those bounds, where they bind."""
    black = white = False
    while True:
        a, b, s = pinned_fit(grey, tint, change, bounds, black, white)
        over = bounds.black is not None and b > bounds.black + 0.5
        under = bounds.white is not None and a * 255.0 + b < bounds.white - 0.5
        if not (over or under):
            return a, b, s
        black, white = black or over, white or under


def pinned_fit(
    grey: np.ndarray, tint: np.ndarray, change: np.ndarray, bounds: Bounds, black: bool, white: bool
) -> tuple[float, float, float]:
    """:func:`bounded_fit`'s least squares with black, white or both pinned to their bounds.
    Fitted as a change from no edit (a = s = 1, b = 0): where the levels do not settle it (two
    colours, each at 0 or 255 in two channels), the least change explains them."""
    if black and white:
        a = (bounds.white - bounds.black) / 255.0
        rest = change - (a - 1.0) * grey - bounds.black
        s = np.linalg.lstsq(tint[:, None], rest, rcond=None)[0][0] + 1.0
        return a, bounds.black, s
    if black:
        terms = np.stack([grey, tint], axis=1)
        da, ds = np.linalg.lstsq(terms, change - bounds.black, rcond=None)[0]
        return da + 1.0, bounds.black, ds + 1.0
    if white:
        terms = np.stack([grey - 255.0, tint], axis=1)
        da, ds = np.linalg.lstsq(terms, change - (bounds.white - 255.0), rcond=None)[0]
        return da + 1.0, bounds.white - 255.0 * (da + 1.0), ds + 1.0
    terms = np.stack([grey, np.ones_like(grey), tint], axis=1)
    a, b, s = np.linalg.lstsq(terms, change, rcond=None)[0] + (1.0, 0.0, 1.0)
    return a, b, s
