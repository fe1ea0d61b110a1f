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
from hibt.indexer.copies.windows import window_extreme

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
    upload: Image.Image, stored: Image.Image, source: Grid | None = None
) -> tuple[Laid | None, Apart | None]:
    """The two views on their common grid (:func:`on_one_grid`, read-only) and how far
    apart they stay there (:func:`grid_residual`), kept for the last :data:`LAID_KEPT`
    pairs: a candidate's comparison and its whole-file check (verify.verify_match) lay the same
    pair, and a family of siblings pays for it twice over."""
    return kept_laid_apart(Keyed(upload), Keyed(stored), Keyed(source))


@functools.lru_cache(maxsize=LAID_KEPT)
def kept_laid_apart(
    upload: Keyed, stored: Keyed, source: Keyed
) -> tuple[Laid | None, Apart | None]:
    """:func:`laid_apart` for its keys, kept."""
    laid = on_one_grid(upload.value, stored.value, source.value)
    if laid is None:
        return None, None
    for values in laid:
        values.flags.writeable = False
    return laid, grid_residual(*laid)


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


def grid_residual(up: np.ndarray, st: np.ndarray) -> Apart | None:
    """:func:`off_grid` for two views already laid on their common grid (:func:`on_one_grid`),
    with the rest of :class:`Apart`."""
    grey = up @ LUMA
    ink = inked(grey, st @ LUMA)
    if not ink.any() or not laid_alike(up, st, ink, grey):
        return None
    edit = copier_edit(st, up)
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


def copier_edit(stored: np.ndarray, upload: np.ndarray) -> Edit:
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
    ornament on a cream ground is not the white a brightening clips that ground to."""
    h, w = stored.shape[:2]
    x, y = channel_rows(stored), channel_rows(upload)
    floor, ceiling = level_of(x, y, black=True), level_of(x, y, black=False)
    grey = LUMA64 @ x
    tint = x - grey
    # Each channel of each pixel is one equation; those at the floor or ceiling may be clipped.
    free = (y > floor + 0.5) & (y < ceiling - 0.5)
    unclipped = free if free.sum() >= BOUND_PIXELS else np.ones(y.shape, bool)
    fitted = unclipped
    for _ in range(FIT_ROUNDS):
        at = np.broadcast_to(grey, y.shape)[fitted]
        terms = np.stack([at, np.ones_like(at), tint[fitted]], axis=1)
        # Fitted as a change from no edit (a = s = 1, b = 0): where the levels do not settle
        # it (two colours, each at 0 or 255 in two channels), the least change explains them.
        a, b, s = np.linalg.lstsq(terms, (y - x)[fitted], rcond=None)[0] + (1.0, 0.0, 1.0)
        raw = a * grey + b + max(s, 0.0) * tint
        left = LUMA64 @ (np.clip(raw, floor, ceiling) - y)
        near = np.abs(left) <= max(CLEAN_LEVEL, float(np.abs(left).mean()))
        span = clip_span(raw.reshape(3, h, w), floor[..., None], ceiling[..., None])
        touched, low, high = (v.reshape(3, -1) for v in span)
        fitted = unclipped & near & ~touched
        if fitted.sum() < BOUND_PIXELS:
            fitted = unclipped & near
    outside = LUMA64 @ (np.clip(y, low, high) - y)
    return Edit(np.where(touched.any(axis=0), outside, left).reshape(h, w), a, b)


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


def level_of(stored: np.ndarray, upload: np.ndarray, black: bool) -> np.ndarray:
    """The upload's (3, 1) level where the stored picture (both (3, n), channel_rows) is
    black, or white: the median over those pixels; 0 or 255 when there are too few of them."""
    bound = 0.0 if black else 255.0
    at = (np.abs(stored - bound) <= BOUND_LEVELS).all(axis=0)
    if at.sum() < BOUND_PIXELS:
        return np.full((3, 1), bound)
    return np.median(np.compress(at, upload, axis=1), axis=1, keepdims=True)
