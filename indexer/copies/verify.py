"""Verification of a copy candidate: the upload brought into the stored picture's frame and
compared region by region at a finer scale than the descriptor sees.

The descriptor (fingerprint.py) holds the 16x16 lowest frequencies of a view: enough to find
a picture after resizing, recompression, a crop or a flip, but blind to a small detail. A
music staff with a treble clef and the same staff with a bass clef, or a star with 34 points
against one with 36, meet at 0.98-1.0 (docs/copy-detection.md). Verification takes the pair
of views that matched (the upload's view, such as "mirrored" or "turn 5 undone", and the
stored view, such as "crop 80%", made again from the stored thumbnail), so the two pictures
are already in one frame, and compares them on a grid of blocks:

* every block alike, and alike pixel by pixel once laid over each other (fine lines, fine
  tones, and colour over the whole picture): the same picture (exact or near copy, as the
  descriptor said);
* a few blocks unlike, where one view carries colour the other does not have there (a
  caption, a logo, a watermark laid over the upload, or over the stored copy of an uploaded
  original): ``edited``, with the region named;
* otherwise, when the two views have other shapes, when the change is drawn in colours
  each picture fills elsewhere (a second highlight), or when neither carries ink inside its
  edge (nothing to compare): ``different``, a sibling that shares a template or a layout,
  never a copy.

The comparison is done at the scale the upload holds (a 15 px thumbnail cannot show a clef,
so it is not held to), after the upload's grey levels are fitted to the stored ones (a
brightened or low-contrast copy is the same picture) and both are blurred by a pixel (so
resampling and JPEG do not count as a change). A grey view against a coloured one is compared
in grey, the coloured one made grey the way a copier's tool would (:func:`made_grey`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter
from scipy import fft, ndimage

from hibt.indexer.copies.channels import brightest, darkest
from hibt.indexer.copies.fingerprint import Fingerprints
from hibt.indexer.copies.framing import frame_box
from hibt.indexer.copies.grid import Grid
from hibt.indexer.copies.levels import INK, LUMA, border_level, ink_depth, inked
from hibt.indexer.copies.matching import CopyMatch
from hibt.indexer.copies.memo import forget_keys, kept_by_pixels
from hibt.indexer.copies.residual import (
    BOUND_LEVELS,
    MAX_OFFSET,
    Apart,
    Laid,
    affine_residual,
    dihedral,
    grid_residual,
    inside_grid,
    kept_laid,
    kept_laid_apart,
    laid_apart,
)
from hibt.indexer.copies.views import (
    BRIGHTEN_GAIN,
    INDEX_VIEWS,
    ORIENTATIONS,
    Scene,
    View,
    brightened,
    centre_crop,
    hash_base,
    position,
)
from hibt.indexer.copies.windows import window_extreme, window_span

GRID = 8  # blocks per side
SHIFT = 1  # pixels a view may be off its match and still be the same picture
SIDE = 64  # pixels per side at most for the blocks: 8x8 px each
# An upload view smaller than this holds no detail to verify: accepted, at the distance of its
# grey levels (to rank rivals), when it is the whole upload; a centre crop of it so small is
# no evidence at all (cropped_too_small). A stored view smaller than this on its longer side
# cannot verify a larger upload: never its copy.
MIN_SIDE = 24
TOO_SMALL = "too small to compare"
# A block differs when its mean absolute grey difference (0-255, after the fit) is at least
# this many levels (calibrated: docs/copy-detection.md, "Verification").
BLOCK_DIFF = 24.0
# Share of the picture's blocks that may differ in an edited copy: more is another picture.
EDIT_MAX_SHARE = 0.3
# Chroma (0-255) the upload must add over a differing block for it to count as laid over.
OVERLAY_CHROMA = 40.0
# An edit whose changed pixels keep the stored picture's hue (both coloured, turned under
# HUE_KEPT degrees), KEPT_MAX of them or more, and lie in parts of it (connected runs of one of
# its PARTS colours) that changed over PART_CHANGED of their pixels or more, KEPT_MAX of them
# too, is a part lit or dimmed, not laid over: a traffic light showing green against the one
# showing red (hue kept on 1.0; each lamp changed over 0.69-0.78 of it). A caption brings a
# colour of its own (the benchmark's overlays on 120 of its originals keep the hue on at most
# 0.52 of their changed pixels), and a translucent white one, which keeps the hue beneath,
# cuts across the parts it lies over (docs/copy-detection.md, run AJ).
HUE_KEPT = 20.0
KEPT_MAX = 0.8
PARTS = 16
PART_CHANGED = 0.5  # of a part's pixels: its rim lies within a pixel's shift of the old one
RELIT = "relit"  # the reason a part relit gives: tried in the other flips, as an edit is
COLOUR = "colour"  # the reason another colouring gives (unlike): no rival at any distance
PART = "a part"  # the reason a part apart as a whole gives (Tones.part): no rival either
# An edit is a part redrawn in the drawing's own palette (a heart given a second highlight, a
# card back another pattern), not laid over, where neither picture brings colour of its own:
# the colour each brings where they differ (colour_brought, OVERLAY_CHROMA or more, inside a
# fill) lies, on OWN_MAX of those pixels or more, within a cube of OWN_STEP levels a channel
# (or the next) of a colour the other fills outside the edit's blocks (at up to TONE_SIDE
# px). A caption brings colours of its own, to the upload or to the stored copy of a clean
# original: the benchmark's caption over 200 Openclipart pictures stays an edit in 187 of
# the 192 it was before, the five lost a translucent navy box over the picture's own navy
# or blue (docs/copy-detection.md, run AT).
OWN_STEP = 4
OWN_MAX = 0.8
OWN_CUBES = (256 // OWN_STEP,) * 3  # the cubes of a channel's levels, three channels
# A cube and the 26 about it, as offsets.
NEIGHBOURS = np.stack(np.meshgrid(*[(-1, 0, 1)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
REDRAWN = "redrawn in its own colours"  # the reason it gives: tried in the other flips too
# An edit is a part of the drawing given another colour, not a caption laid over, where the
# colour one view adds to the other (colour_added, either way round) at the same grey lies in
# parts of both (as for HUE_KEPT) that it covers over PART_CHANGED of their pixels, over
# RECOLOURED_MAX of the view or more: a device's frame drawn blue for the grey one (0.26 and
# 0.31 at the thumbnail's size, either way round). A caption, a logo, a signature or a
# translucent white box laid over 480 files stays under 0.06 (docs/copy-detection.md, run BL).
RECOLOURED_MAX = 0.12
RECOLOURED = "a part recoloured"  # the reason it gives: tried in the other flips too
# Share of the view outside the differing blocks where an edited upload may add colour (half
# OVERLAY_CHROMA) whose grey is not the stored picture's (INK levels apart): a caption's rim
# spills past its blocks (the copy benchmark's overlays: up to 0.08 of the view), while a
# blue shirt is not a black one with a logo laid over (0.48; docs/copy-detection.md, run AI).
# Colour whose grey agrees is not counted: the coloured original of a greyscale copy.
SPILL_MAX = 0.2
# Share of the view (inside the picture, outside any edit) strongly coloured (twice
# HUE_CHROMA) in one view and nearly grey (under half HUE_CHROMA) in the other, once the
# upload's saturation is fitted over the whole picture: a copier's saturation scales every
# colour alike, and a greyscale copy is held in grey, so a part that is grey in one and
# coloured in the other was coloured otherwise: a device's body drawn blue for the grey one
# (calibrated: docs/copy-detection.md, run AO).
GREYED_MAX = 0.02
# Mean opponent-colour magnitude under which a view counts as grey (colour is then not
# compared), and the opponent-colour distance (0-255 scale) at which a block is another colour.
GREY = 4.0
COLOUR_DIFF = 48.0
# Mean opponent-colour distance over the whole picture (0-255 scale) from which two views
# are other colourings of one drawing (calibrated: docs/copy-detection.md, run P).
COLOUR_MEAN_MAX = 15.0
# Mean angle (degrees) between the two views' opponent colours, where both are at least
# HUE_CHROMA from grey, from which one is the other recoloured: a copier's edit scales colour
# and never turns it (calibrated: docs/copy-detection.md, run Y).
HUE_MAX = 27.0
HUE_CHROMA = 24.0
# The same hue turn, signed and held in every part of the picture: its mean over a window a
# PATCH_FRACTION of the shorter side wide and at least PATCH_LEAST px (JPEG's colour blocks
# are 16 px), leaving out blown and pale pixels (a channel at PATCH_PALE or more: a brightening
# clips it and a contrast after it hides the clipping), from which one part of the picture was
# recoloured (calibrated: docs/copy-detection.md, run AB).
PATCH_FRACTION = 8
PATCH_LEAST = 32
PATCH_PALE = 220
PATCH_MAX = 26.0
# Channel level from which a pixel counts as blown: brightening clips a channel and so turns
# the hue (a yolk turns yellower); such pixels do not count for the hue.
BLOWN = 250
# Where one view is grey and the other coloured, the mean grey difference over ink
# (Tones.mean) from which the two are other pictures, not a greyscale copy (calibrated:
# docs/copy-detection.md, run R).
GREY_COPY_MAX = 5.0
# Fine lines: compared from FINE_SIDE px up, where both pictures have at least DETAIL_MIN
# grey levels RMS of detail; under FINE_MIN correlation the lines are other lines.
FINE_SIDE = 128  # fine lines are compared at up to this size ...
MIN_FINE = 64  # ... and from this size up
DETAIL_MIN = 2.0
FINE_MIN = 0.6
# Shape: two views whose width-to-height ratios differ by more than this (as a log ratio,
# about 10%) are not one picture, whatever their squashed 64x64 blocks say. A copier's
# resize, crop, turn, frame or screenshot keeps the shape within 0.015 (run AX).
ASPECT_MAX = 0.10
# Fine tones: both views at up to TONE_SIDE px, the upload laid over the stored view by
# phase correlation (a whole-pixel offset of at most MAX_OFFSET), grey levels fitted with a
# gain held to TONE_GAIN, each pixel at its best shift of one; the 95th percentile of the
# grey difference over the pixels that carry ink (INK levels from the picture's border
# level in either view) is under TONE_MAX for the same picture (calibrated:
# docs/copy-detection.md, "Verification").
TONE_SIDE = 256
TONE_GAIN = (0.75, 1.33)
# ... and to GREY_GAIN where one view is grey and the other coloured: a greyscale conversion
# keeps the tones it is given, and a contrast stretched after it is a second edit (a red and
# yellow pattern made grey spans 54-237 by 709 luma, its black-and-white sibling 0-255; copies
# in grey of 223 coloured files, either way round, need no more: run AX). So is a pair of
# views that frames the picture otherwise (a crop of one against the other's whole, or the
# upload trimmed): the frame is the copier's edit, and a tone edit after it a second. A plus
# on a grey box within a frame lies within TONE_GAIN of the plus on white (run BL).
GREY_GAIN = (0.9, 1.1)
FIT_GAIN = (0.5, 2.0)  # grey levels fitted anywhere else: within a factor of two
TONE_MAX = 32.0
# A part of the drawing apart as a whole: a pixel of ink whose four neighbours too stay
# PART_APART levels or more from the stored picture, laid and fitted as for the fine tones.
# A resample, a JPEG or a turn undone leaves a line at most a pixel wide that far apart; a
# finger raised where its sibling's points aside leaves a blot three pixels wide. At 48
# levels a copy turned 5 degrees or a speckled fill resampled does too (run BE). Read off
# the pixel grid only.
PART_APART = 64.0
# The one place two views lie furthest apart (Tones.local): the mean difference over a
# window LOCAL_FRACTION of the view wide, over the picture (an edit left out).
LOCAL_FRACTION = 8
# Where the stored view is one flat fill (its grey levels within FLAT_RANGE over every
# FLAT_WINDOW x FLAT_WINDOW window, a smooth shading included; 9 px keeps the ringing a JPEG
# leaves beside an edge out), a copier's edit maps it to a fill as flat or as smoothly
# shaded. Cell means (the smaller side in FLAT_CELLS, at least 4 px each) of the aligned
# upload, less their best line against the stored view's, over the cells wholly inside one
# fill (at least FLAT_LEAST of them), span under FLAT_MAX levels: a cream gradient is not a
# white ground, nor a clock's numbers on its face (calibrated: docs/copy-detection.md, run AA).
FLAT_RANGE = 2.0
FLAT_WINDOW = 9
FLAT_CELLS = 32
FLAT_LEAST = 4
FLAT_MAX = 12.0
FLAT_EDGE = 3  # pixels along the edge that a resampled border smears
# Two fills of one colour in the stored picture (within SPLIT_SAME levels a channel, each flat
# over SPLIT_WINDOW px in it and within SPLIT_FLAT levels in the upload, at least SPLIT_LEAST
# of the view and SPLIT_PIXELS px) that the upload gives grey levels SPLIT_MAX or more apart:
# a copier's colour edit gives each colour one colour, while a sibling draws one part in
# another shade (a dot of grey 76 for one of 51, the shade of the bar below it). Not for
# black or white (within BOUND_LEVELS), which clipping makes of several levels, nor for a
# grey view against a coloured one, nor beside an edit. Calibrated on the calibration halves:
# true passes reach 4.1, a sibling 20.2 (docs/copy-detection.md, run AQ).
SPLIT_WINDOW = 5
SPLIT_FLAT = 12.0
SPLIT_SAME = 3.0
SPLIT_LEAST = 0.002
SPLIT_PIXELS = 12
SPLIT_MAX = 12.0
# On one pixel grid (residual.py), the largest 3x3 mean of the grey residual a copier's colour
# edit leaves is under GRID_MAX levels (calibrated: docs/copy-detection.md, runs W and X), and
# under GRID_SHARE of the upload's ink depth (levels.ink_depth), which holds a faint drawing
# (hairline stars, lowered in contrast by a colour jitter) where GRID_MAX cannot (run BD).
GRID_MAX = 24.0
GRID_SHARE = 1 / 3
# A copy on its original's grid, its levels not edited, stays under LOCAL_MAX averaged over
# residual.LOCAL_WINDOW px, in its own colours (run BJ). Made grey, edited or not, it stays
# under BROAD_MAX over residual.BROAD_WINDOW px from a common grey conversion of it
# (GREY_WAYS) under the copier's bounded edit, with room for a JPEG at 30 saved again as PNG
# (runs BI, BK).
LOCAL_MAX = 14.0
BROAD_MAX = 12.0
# LOCAL_MAX only where the levels were not edited: a gain within UNEDITED_GAIN of 1 and an
# offset within UNEDITED_OFFSET levels (residual.copier_edit).
UNEDITED_GAIN = 0.05
UNEDITED_OFFSET = 5.0
# Pictures' fills kept (own_colours) and views at a size or made grey (kept_by_pixels): the
# last candidate's, with room to spare.
FILLS_KEPT = 8
VIEWS_KEPT = 16
# A crop of the upload that met a wider stored crop is verified whole, against the stored
# crop within WIDEN_REACH (in WIDEN_STEP steps) of their ratio that lies closest at
# WIDEN_SIDE px (widened).
WIDEN_REACH = 0.1
WIDEN_STEP = 0.02
WIDEN_SIDE = 48
SMALL = (WIDEN_SIDE, WIDEN_SIDE)  # the size at which a crop or a grey conversion is chosen
# An upload met on the stored brightened view is held to it when it is brighter than the
# stored picture by this share of what the view adds, over the pixels where the view adds
# BRIGHTER_SEEN grey levels or more (brighter; calibrated: docs/copy-detection.md, runs BB
# and BI: JPEG noise lifts an unbrightened copy by up to 0.17, jittered copies rise 1.25 or more).
BRIGHTER_MIN = 0.5
BRIGHTER_SEEN = 4.0
BRIGHTER_LEAST = 0.02  # of the view (at 48 px): fewer such pixels tell nothing
# Share of its ink a view must have coloured for the way it is made grey to be chosen.
MOSTLY_COLOURED = 0.5
LUMA_709 = np.array([0.2126, 0.7152, 0.0722], np.float32)
# The ways a copier's tool makes a picture grey, from (h, w, 3) levels: ITU-R 601 luma (PIL,
# OpenCV), 709 luma (scikit-image), the channels' mean and HSL lightness (GIMP's "average"
# and "lightness").
GreyWay = Callable[[np.ndarray], np.ndarray]
GREY_WAYS: tuple[GreyWay, ...] = (
    lambda rgb: rgb @ LUMA,
    lambda rgb: rgb @ LUMA_709,
    lambda rgb: rgb.mean(axis=-1),
    lambda rgb: (brightest(rgb) + darkest(rgb)) / 2,
)
WHOLE = position(INDEX_VIEWS, "whole")
REGIONS = (("top", "middle", "bottom"), ("left", "centre", "right"))


@dataclass(frozen=True)
class Verdict:
    kind: str  # "same", "edited" or "different"
    region: str | None = None  # where an edited or different picture differs
    differing: float = 0.0  # share of blocks that differ
    # How far the two stay apart where they carry ink (Tones.mean), outside any edit;
    # infinite when they differ in blocks. Rival candidates are told apart by it (rivals.py).
    distance: float = math.inf
    held: bool = False  # held to the pixel on the upload's grid (off_grid): the pixels decided
    grey: bool = False  # a grey upload against a coloured picture made grey: colour told nothing
    # A coloured upload (coloured over most of its ink) made grey to meet a grey picture: the
    # grey picture may be a greyscale copy of it, or of any sibling in another colour (rivals.py).
    upload_greyed: bool = False
    # Of the same picture: the mean difference in the one place the two lie furthest apart
    # (Tones.local; rivals.COPY_LOCAL_MAX). Not of an edit, whose rim is left outside it.
    local: float = 0.0


RANK = {"same": 0, "edited": 1, "different": 2}


def edit_order(verdict: Verdict) -> tuple[int, float]:
    """Verdicts in order: the same picture, then an edit, then another picture; the closest
    first within each."""
    return RANK[verdict.kind], verdict.distance


def verify_match(
    query: Fingerprints,
    match: CopyMatch,
    stored: Image.Image,
    on_grid: bool = False,
    inside: bool = False,
) -> Verdict:
    """Verify ``match`` of the upload ``query`` (its fingerprints, with their scene) against
    the stored picture ``stored`` (its thumbnail will do: the comparison is at 64 px).
    ``on_grid``: ``stored`` is a lossless thumbnail on the upload's grid (``query.grid``,
    grid.Grid.meets): the upload's views are then cut from it as the build would (the
    thumbnail's own resampling, not the fingerprints'), and whole pictures are also compared
    to the pixel. ``inside``: ``stored`` is a lossless thumbnail of the stored file's own
    pixels, and the upload's own pixels fit inside it (grid.Grid.inside): a crop of the
    file, held to the pixel where it lies (:func:`laid_inside`)."""
    if match.query_view < 0 or query.scene is None:
        return Verdict("same", distance=0.0)  # same bytes: nothing to verify
    grid, inside = (flag and query.grid is not None for flag in (on_grid, inside))
    thumbnail, stored = stored, hash_base(stored)
    match, verdict = least_edited(query, match, stored, grid)
    view = query.views[match.query_view]
    if verdict.held or verdict.kind != "same" or not view.lossless:
        return verdict
    laid, apart = None, None
    if grid:
        # The upload's own pixels met the stored file's in a pair of views that was not held
        # to the pixel (a trim of one against a crop of the other): a copy is then also the
        # whole file on its grid. A mirrored icon shaded from the top left is not
        # (docs/copy-detection.md, run Z).
        whole, source = pixel_test(query, query.grid.image, stored)
        laid, apart = (None, None) if whole is None else laid_apart(query.grid.image, whole, source)
    held = apart is not None
    if laid is None and inside:
        # Held there only to be refused: a hairline star's centre lies within its sibling's
        # as closely as its own, so passing there decides nothing among rivals (rivals.py).
        laid, apart = laid_inside(query.grid, view, INDEX_VIEWS[match.stored_view], thumbnail)
    if off_its_grid(laid, apart):
        return Verdict("different", "detail", verdict.differing, verdict.distance, True)
    return dataclasses.replace(verdict, held=held)


def laid_inside(
    upload: Grid, view: View, stored_view: View, thumbnail: Image.Image
) -> tuple[Laid | None, Apart | None]:
    """A crop of the stored file's own pixels (``thumbnail``) laid on them: the ``upload``, as
    it is, mirrored, or turned as its ``view`` that matched, whichever lies closest, where it
    lies in the file (residual.inside_grid), and how far apart the two stay there
    (residual.grid_residual),
    to be held as a whole file is (:func:`off_its_grid`). A sibling's other detail inside the
    crop (the rim of a window's title bar, a frame dashed for one drawn whole) shows there,
    while every other comparison resamples it away. Only for an upload the size of the
    stored crop it met (``stored_view``), within the tenth that parts two stored crops: a
    file halved fits inside it too, on no grid of its."""
    if not stored_view.crop:
        return None, None
    turn = next((op for name, op, _ in ORIENTATIONS if view.name.endswith(name)), None)
    # A symmetric picture meets its crop under more than one flip; the copier's is the one
    # that lies closest: a crop as it is or mirrored (views.ORIENTATIONS), or as it met.
    turned = {t: upload.under(t) for t in (None, Image.Transpose.FLIP_LEFT_RIGHT, turn)}
    if not at_own_scale(turned[turn].size, thumbnail.size, stored_view.kept):
        return None, None
    laid = inside_grid(list(turned.values()), thumbnail)
    return laid, None if laid is None else grid_residual(*laid)


def at_own_scale(upload: tuple[int, int], stored: tuple[int, int], kept: float | None) -> bool:
    """Whether an upload of size ``upload`` is a centre crop keeping ``kept`` of each side of a
    picture of size ``stored`` at that picture's own scale, within :data:`WIDEN_REACH`."""
    return kept is not None and all(
        abs(u / (kept * s) - 1) <= WIDEN_REACH for u, s in zip(upload, stored, strict=True)
    )


def least_edited(
    query: Fingerprints, match: CopyMatch, stored: Image.Image, grid: bool
) -> tuple[CopyMatch, Verdict]:
    """The verdict on the pair of views that matched (:func:`matched_views`) or, when it
    finds an edit, a part relit or one redrawn in its own colours, on a pair that undoes
    what a copier did to the whole picture otherwise (:func:`undoing`), whichever is the
    least edited."""
    verdict = matched_views(query, match, stored, grid)
    if verdict.kind != "edited" and verdict.region not in (RELIT, REDRAWN, RECOLOURED):
        return match, verdict
    found = [(m, matched_views(query, m, stored, grid)) for m in undoing(query, match)]
    return min([(match, verdict), *found], key=lambda f: edit_order(f[1]))


def undoing(query: Fingerprints, match: CopyMatch) -> list[CopyMatch]:
    """Pairs of views other than ``match`` that undo a flip, turn or crop: the upload's other
    flips and turns of the view that matched, trimmed or not, since the descriptor does not
    tell the flips of a symmetric shape apart while their shading does (for a centre crop of
    the upload, verified as the upload as it is: the upload mirrored, against the whole
    stored picture; a turned crop is not looked for); and the upload as it is against the
    stored crops, since a crop of a picture on a flat ground, trimmed, nearly fills the frame
    of the whole picture trimmed."""
    view = query.views[match.query_view]
    if not view.lossless:
        if view.kept is None:
            return []
        mirrored = position(query.views, "mirrored")
        return [dataclasses.replace(match, query_view=mirrored, stored_view=WHOLE)]
    trimmed = view.name.startswith("trimmed ")
    pairs = [
        dataclasses.replace(match, query_view=i)
        for i, v in enumerate(query.views)
        if v.lossless and v.name.startswith("trimmed ") == trimmed and v.name != view.name
    ]
    if not INDEX_VIEWS[match.stored_view].crop:
        as_is = position(query.views, "as is")
        crops = (j for j, v in enumerate(INDEX_VIEWS) if v.crop)
        pairs += [dataclasses.replace(match, query_view=as_is, stored_view=j) for j in crops]
    return pairs


def matched_views(
    query: Fingerprints, match: CopyMatch, stored: Image.Image, grid: bool
) -> Verdict:
    """The verdict on the pair of views that matched (``stored``: the stored picture at
    the hashing size; ``grid``: as for :func:`verify_match`).

    The stored view is made again from the thumbnail. Its whole picture, crops and
    brightened view are exact; its trimmed view is not always (JPEG noise can hide a flat
    frame from the trim), so a trimmed pair is first tried as the whole pictures it came
    from, and only when they differ as the thumbnail trimmed of its flat borders (framing it
    as the build did, chrome and all, costs tens of ms: too slow for every sibling flag)."""
    base = Scene(stored, stored, None)
    scene = query.grid.scene if grid else query.scene
    query_view, stored_view, kept = widened(query, match, scene, base.uncut)
    if kept is not None:
        return compare(query, scene, query_view, centre_crop(base.uncut, kept), reframed=True)
    framed = framing(query, match, scene, base.uncut)
    if framed is not None:
        return cropped_too_small(framed) or verify(framed, base.uncut, reframed=True)
    if INDEX_VIEWS[stored_view].brightened and (
        one_grey(scene.picture, base.uncut)
        or not brighter(query.views[query_view].make(scene), base.uncut)
    ):
        # A grey copy is held to the picture as it is (one edit, not two), and so is an
        # upload no brighter than it: the white card of a deck, whose king is the cream
        # card's to the level, met the cream card brightened until its ground turned white.
        stored_view = WHOLE
    if INDEX_VIEWS[stored_view].name != "trimmed":
        fine = query.views[query_view].name == "as is" and stored_view == WHOLE
        view = INDEX_VIEWS[stored_view].make(base)
        # The whole picture, or brightened (its clipped whites are a brightened copy's too).
        held = view if grid and not INDEX_VIEWS[stored_view].crop else None
        other = frames_otherwise(query.views[query_view], INDEX_VIEWS[stored_view])
        return compare(query, scene, query_view, view, fine, held, reframed=other)
    untrimmed = query.views[query_view].name.removeprefix("trimmed ")
    uncut = base.uncut if grid else None
    views = [(i, v) for i, v in enumerate(query.views) if v.name == untrimmed]
    found = [compare(query, scene, i, base.uncut, v.name == "as is", uncut) for i, v in views]
    if scene.was_cut:  # cut out of chrome, or so it looked: the upload uncut, so flipped
        found += [uncut_view(query, scene, v, base.uncut, uncut) for _, v in views]
    # A frame added or cut: trimmed on both sides; not when the whole pictures lay on one
    # pixel grid and differed there (no frame was added or cut, and the trims of two
    # siblings can differ by more than the grid test's few pixels).
    if all(v.kind != "same" and v.region != "detail" for v in found):
        trimmed = trimmed_quickly(base.uncut)
        held = trimmed if grid else None
        found.append(compare(query, scene, query_view, trimmed, grid=held))
    return min(found, key=edit_order)


def frames_otherwise(upload: View, stored: View) -> bool:
    """Whether a pair of views frames the picture otherwise, each against the other's whole
    (a crop, or the upload trimmed of its border): its copy is then held to its tones
    (:data:`GREY_GAIN`)."""
    return stored.crop or cropped(upload) or upload.name.startswith("trimmed ")


def uncut_view(
    query: Fingerprints,
    scene: Scene,
    view: View,
    stored: Image.Image,
    grid: Image.Image | None,
) -> Verdict:
    """The upload uncut (``scene.uncut``) under ``view``'s flip or turn against the whole
    ``stored`` picture (``grid``: as for :func:`verify`): framing that took a margin for a
    mount cuts a picture and not its mirror image (a sign whose text mirrors), and the cut
    picture then meets its stored picture only by its trim, a pixel or two off."""
    upload = view.make(Scene(scene.uncut, scene.uncut, None))
    return verify(upload, stored, view.name == "as is", *pixel_test(query, upload, grid))


def trimmed_quickly(image: Image.Image) -> Image.Image:
    """``image`` trimmed of its flat borders, the box found on a copy of at most
    :data:`SIDE` px (framing costs by the pixel; the comparison is at that size anyway)."""
    small = image.copy()
    small.thumbnail((SIDE, SIDE), Image.Resampling.BOX)
    box = frame_box(np.asarray(small))
    if box is None:
        return image
    sy, sx = image.height / small.height, image.width / small.width
    top, left, bottom, right = box
    return image.crop((round(left * sx), round(top * sy), round(right * sx), round(bottom * sy)))


def compare(
    query: Fingerprints,
    scene: Scene,
    view: int,
    stored_view: Image.Image,
    fine: bool = False,
    grid: Image.Image | None = None,
    *,
    reframed: bool = False,
) -> Verdict:
    """The upload's ``view`` cut from ``scene`` against ``stored_view``. ``grid`` and
    ``reframed``: as for :func:`verify`; held only for a view that a flip or turn alone made
    (View.lossless)."""
    upload = query.views[view].make(scene)
    if cropped(query.views[view]) and (small := cropped_too_small(upload)):
        return small
    return verify(
        upload,
        stored_view,
        fine,
        *pixel_test(query, upload, grid if query.views[view].lossless else None),
        reframed=reframed,
    )


def cropped(view: View) -> bool:
    """Whether an upload's ``view`` is a centre crop that leaves part of its picture out (a
    function here, not a property of View: views.py's code is in the index's build key)."""
    return view.kept is not None and view.kept < 1.0


def cropped_too_small(crop: Image.Image) -> Verdict | None:
    """A "different" verdict for a centre crop of the upload under :data:`MIN_SIDE` px, else
    None. A crop that small shows a shape's middle alone, and the middle of one shape is the
    whole of many: the centre of a 30 px rounded plus is a thick first-aid cross to its
    edges. The whole upload is there to meet its copy."""
    return Verdict("different", TOO_SMALL, 1.0) if max(crop.size) < MIN_SIDE else None


def pixel_test(
    query: Fingerprints, upload: Image.Image, grid: Image.Image | None
) -> tuple[Image.Image | None, Grid | None]:
    """What verify() holds ``upload`` to the pixel against (``grid``, the stored picture),
    and, for an upload reduced with a remainder (Grid.decode_turned), its grid when
    ``upload`` is its picture, flipped or turned or not: off_grid then lays the file's own
    flips on the stored picture (Grid.under). A view cut from such a picture is not held:
    its flips lie half a pixel off. Any other upload's flips are its file's already."""
    source = query.grid
    if grid is None or source is None or source.decode_turned is None:
        return grid, None
    pixels = np.asarray(upload.convert("RGB"))
    if any(np.array_equal(turn, pixels) for turn in dihedral(np.asarray(source.image))):
        return grid, source
    return None, None


def widened(
    query: Fingerprints, match: CopyMatch, scene: Scene, stored: Image.Image
) -> tuple[int, int, float | None]:
    """The widest pair of views in the same frame as the pair that matched, and the share of
    each side of ``stored`` (the stored picture) that its view keeps where no indexed view
    does. A centre crop of the upload that met the stored crop of the same share stands for
    the whole upload against the whole stored picture: a logo in a corner is what a centre
    crop leaves out, so the crops find the copy and the whole pictures show the edit. One
    that met a wider stored crop stands for the whole upload against the stored crop that
    holds as much of the picture: the blank centre of a star of thin spokes meets any blank
    centre, and the spokes are what tell two stars apart."""
    crops = crops_met(query, match)
    if crops is None or crops.stored > crops.upload:
        return match.query_view, match.stored_view, None
    as_is = position(query.views, "as is")
    if crops.stored == crops.upload:
        return as_is, WHOLE, None
    upload = query.views[as_is].make(scene)
    return as_is, match.stored_view, closest_crop(upload, stored, crops.stored / crops.upload)


def framing(
    query: Fingerprints, match: CopyMatch, scene: Scene, stored: Image.Image
) -> Image.Image | None:
    """For a centre crop of the upload that met a stored crop keeping a larger share of its
    picture, the centre of the whole upload that stands for the whole stored picture
    (:func:`closest_crop`, the other way round), else None. Such a pair says the upload
    holds more than the stored picture (a frame added, a turn's corners), so the two crops
    leave out the stored picture's edge: a bar 8 px thick cut at 60% is a bar 11 px thick
    cut at 80% until the bars' ends are seen."""
    crops = crops_met(query, match)
    if crops is None or crops.stored <= crops.upload:
        return None
    upload = query.views[position(query.views, "as is")].make(scene)
    return centre_crop(upload, closest_crop(stored, upload, crops.upload / crops.stored))


class Crops(NamedTuple):
    upload: float  # the share of each side the upload's centre crop keeps
    stored: float  # the share the stored crop keeps


def crops_met(query: Fingerprints, match: CopyMatch) -> Crops | None:
    """The shares kept where a centre crop of the upload met a stored crop (:func:`widened`
    and :func:`framing` take the two ways their shares can compare), else None."""
    view, held = query.views[match.query_view], INDEX_VIEWS[match.stored_view]
    if not cropped(view) or held.kept is None:
        return None
    return Crops(view.kept, held.kept)


def closest_crop(upload: Image.Image, stored: Image.Image, share: float) -> float:
    """The share of each side of ``stored`` whose centre crop lies closest to ``upload`` in
    grey levels, within :data:`WIDEN_REACH` of ``share`` and at most the whole: the stored
    crops are a tenth apart, so two crops that met can be 8% apart in scale."""
    up = small_grey(upload)
    steps = np.arange(-WIDEN_REACH, WIDEN_REACH + 1e-9, WIDEN_STEP)
    shares = (float(share * (1 + k)) for k in steps if share * (1 + k) <= 1)
    return min(shares, key=lambda kept: fitted_apart(up, small_grey(centre_crop(stored, kept))))


def brighter(upload: Image.Image, stored: Image.Image) -> bool:
    """Whether ``upload`` is brightened from ``stored`` (one frame) at least
    :data:`BRIGHTER_MIN` as much as the stored brightened view is (views.brightened): what
    that view stands for. Where little tells (levels black, white or full colours, which
    brightening leaves as they are), it may be."""
    return brightening(upload, stored) >= BRIGHTER_MIN


def brightening(upload: Image.Image, stored: Image.Image) -> float:
    """How much ``upload`` is brighter than ``stored``, as a share of what the brightened
    view adds, in grey levels over the pixels where it adds :data:`BRIGHTER_SEEN` or more
    and clips nothing about them (inf where they are under :data:`BRIGHTER_LEAST` of the
    view: the edges of a card's pips alone say nothing once resampled)."""
    st_rgb = stored.convert("RGB").resize(SMALL, Image.Resampling.BOX)
    st, up = np.asarray(st_rgb.convert("L"), np.float32), small_grey(upload)
    adds = np.asarray(brightened(st_rgb).convert("L"), np.float32) - st
    # Not beside a level it clips: resampling blends an edge with the ground beyond it.
    seen = (adds >= BRIGHTER_SEEN) & (window_extreme(st, 3, np.maximum) < 255 / BRIGHTEN_GAIN)
    if seen.mean() < BRIGHTER_LEAST:
        return math.inf
    return float((up - st)[seen].mean() / adds[seen].mean())


def small_grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize(SMALL, Image.Resampling.BOX), np.float32)


def verify(
    upload_view: Image.Image,
    stored_view: Image.Image,
    fine: bool = False,
    grid: Image.Image | None = None,
    source: Grid | None = None,
    coloured: Image.Image | None = None,
    *,
    within: float | None = None,
    reframed: bool = False,
) -> Verdict:
    """Compare two views already in one frame (the pair that matched). ``fine``: also hold
    them to their fine lines, for the one pair whose frames agree to the pixel: the upload
    as it is against the whole stored picture. A crop, a flip chosen among symmetric ones
    or a turn undone lands a pixel or more off, which fine lines do not survive. ``grid``:
    the whole stored picture, when it and the upload view lie on one pixel grid (grid.Grid):
    a copy then lies on it under one of the flips and turns, and differs from it by a
    copier's colour edit alone (off_grid). ``source``: the upload's grid, where off_grid
    needs it (:func:`pixel_test`). ``coloured``: where :func:`made_grey` made the views grey,
    the upload view as it was: a caption laid over it keeps its colour. ``within``: only the
    same picture closer than this would serve (rivals.same_picture): past it, "different"
    at once, since the tests after the tones cost as much again. ``reframed``: the views
    frame the picture otherwise (:func:`frames_otherwise`), and the upload's tones are held
    to the stored picture's (:data:`GREY_GAIN`)."""
    if aspect_differs(upload_view.size, stored_view.size):
        return Verdict("different", "shape", 1.0)
    if max(stored_view.size) < MIN_SIDE <= max(upload_view.size):
        # A picture a few pixels wide (a 6x3 flag) holds nothing to tell a larger upload by.
        return Verdict("different", TOO_SMALL, 1.0)
    largest = min(FINE_SIDE, *upload_view.size)
    if largest < MIN_SIDE:
        # Too few pixels for blocks or fine lines, but enough to say which stored picture
        # the upload lies closest to, so that rival candidates are told apart (rivals.py).
        return Verdict("same", distance=tone_difference(upload_view, stored_view).mean)
    side = min(SIDE, largest) // GRID * GRID
    (up, _, up_colours), (st, _, st_colours) = (
        sized(v, (side, side)) for v in (upload_view, stored_view)
    )
    colours = up_colours, st_colours
    grey_up, grey_stored = (greyish(c) for c in colours)
    if grey_up != grey_stored and uncoloured(colours[0] if grey_up else colours[1]):
        # A greyscale copy, or another picture that colour alone would tell: held in grey.
        made = made_grey(upload_view, stored_view, grey_up)
        # What a grey upload is held to the pixel against is made grey the same way.
        held = greyed(grid, made.way) if grid is not None and grey_up else grid
        verdict = verify(
            made.upload,
            made.stored,
            fine,
            held,
            source,
            upload_view,
            within=within,
            reframed=reframed,
        )
        if grey_up and verdict.kind == "same" and verdict.held:
            verdict = grey_on_grid(verdict, upload_view, grid, source)
        lost = not grey_up and made.coloured
        return dataclasses.replace(verdict, grey=grey_up, upload_greyed=lost)
    grey_against_colour = coloured is not None or grey_up != grey_stored
    limits = tone_gain(grey_against_colour or reframed)
    up_grey, st_grey = grey(up), grey(st)
    over = up if coloured is None else sized(coloured, up.size)[0]
    diff = shifted_difference(fit(up_grey, st_grey, where=picture_of(over, st)), st_grey)
    blocks = block_means(diff, side)
    differs = (blocks >= BLOCK_DIFF) | recoloured(*colours, side)
    share = float(differs.mean())
    if not differs.any():
        # Alike block by block: the fine lines decide (a laid-over edit shows in blocks).
        pair = overlay(upload_view, stored_view)
        tones = tone_difference(upload_view, stored_view, pair=pair, gain=limits)
        if within is not None and tones.mean >= within:
            return Verdict("different", "farther", share, tones.mean)
        if (
            fine
            and largest >= MIN_FINE
            and fine_agreement(upload_view, stored_view, largest) < FINE_MIN
        ):
            return Verdict("different", "fine lines", share, tones.mean)
        if tones.high >= TONE_MAX:
            return Verdict("different", "fine tones", share, tones.mean)
        # Laid on the grid only now: of a family of siblings, most fail on their tones.
        laid, apart = (None, None) if grid is None else laid_apart(upload_view, grid, source)
        if off_its_grid(laid, apart, not grey_against_colour):
            edit = grid_edit(upload_view, stored_view, laid, grey_against_colour)
            return edit or Verdict("different", "detail", share, tones.mean, held=True)
        if apart is None and tones.part:
            # Off the grid only: on it the flip the pixels chose decides, and a nearly
            # symmetric sign's caption, mirrored in the view that matched, is no part.
            return Verdict("different", PART, share, tones.mean)
        # On the grid, the flip or turn the pixels chose: a small detail of a nearly
        # symmetric picture mirrors with it.
        fill = (
            flat_fill(pair.up, pair.st) if apart is None else flat_fill(*(v @ LUMA for v in laid))
        )
        if fill >= FLAT_MAX:
            return Verdict("different", "flat fill", share, tones.mean, held=apart is not None)
        same = Verdict("same", distance=tones.mean, held=apart is not None, local=tones.local)
        verdict = unlike(tones, share, grey_against_colour)
        if verdict is None and not grey_against_colour:
            verdict = two_shades(pair, share, tones.mean)
        return verdict or same
    where = region(differs)
    if share <= EDIT_MAX_SHARE and laid_over(over, st, diff, differs, side):
        if relit(over, st, diff, differs, side):
            return Verdict("different", RELIT, share)
        if own_colours(over, st, diff, differs, side, (coloured or upload_view, stored_view)):
            return Verdict("different", REDRAWN, share)
        tones = tone_difference(upload_view, stored_view, differs, coloured, gain=limits)
        verdict = edit_verdict(tones, where, share, grey_against_colour)
        in_colour = verdict.kind == "edited" and not grey_against_colour
        if in_colour and part_recoloured(over, st, differs) >= RECOLOURED_MAX:
            return Verdict("different", RECOLOURED, share)
        return verdict
    return Verdict("different", where, share)


def grey_on_grid(
    verdict: Verdict, upload: Image.Image, grid: Image.Image, source: Grid | None
) -> Verdict:
    """The ``verdict`` on a grey ``upload`` held to the pixel against a coloured picture
    (``grid``; ``source`` as for :func:`verify`), or "different" where no common grey
    conversion of that picture (:data:`GREY_WAYS`), under the copier's edit fitted with its
    black and white bounded (residual.copier_edit), lies within :data:`BROAD_MAX` of it over
    11x11 px (residual.Apart): a grey sibling's other ground (a white card against a cream
    one) or another shading (a black LED against a blue one, 1.18 times its contrast) lies
    apart all over it, under the 3x3 :data:`GRID_MAX` that noise and an edit's clipping
    need. Bounded, a copy brightened or contrasted is fitted to the level however it was
    clipped and shrunk, and one recompressed is not tilted into an offset its black denies."""
    found = (laid_apart(upload, greyed(grid, way), source, bounded=True)[1] for way in GREY_WAYS)
    closest = min((a for a in found if a is not None), key=lambda a: a.broad, default=None)
    if closest is None or closest.broad < BROAD_MAX:
        return verdict
    return Verdict("different", "grey tones", verdict.differing, verdict.distance, True)


def unedited(apart: Apart) -> bool:
    """Whether a copier's edit fitted on the grid (residual.Apart) left the levels as they
    were, within :data:`UNEDITED_GAIN` and :data:`UNEDITED_OFFSET`: a grey conversion or a
    change of saturation alone, which its copies reproduce to the level. A brightened or
    contrasted one, clipped and then shrunk, is fitted less closely (docs/copy-detection.md,
    run BI)."""
    return abs(apart.gain - 1) <= UNEDITED_GAIN and abs(apart.offset) <= UNEDITED_OFFSET


def off_its_grid(laid: Laid | None, apart: Apart | None, as_they_are: bool = True) -> bool:
    """Whether two views ``laid`` on one pixel grid (residual.laid_apart) stay further
    ``apart`` than a copier's colour edit leaves: :data:`GRID_MAX` levels, or more than
    :data:`GRID_SHARE` of the upload's ink depth where that is less. Jittered, a star of
    hairlines whose 3x3 depth is 9 levels leaves 11 where its sibling's spokes lie; its own
    copy leaves under 1, and a JPEG of it saved again as PNG a fifth of its depth. Views
    ``as_they_are``, both grey or both coloured, whose levels the edit fitted left as
    they were (:func:`unedited`), so that nothing clipped, also stay under
    :data:`LOCAL_MAX` over 5x5 pixels: a JPEG's ringing averages away there, a sibling's
    other shading or dashes do not. Not a grey view against a coloured one
    (:func:`grey_on_grid`, :func:`colour_lost`), whose grey conversion may not be the luma
    the edit fits (``as_they_are`` false: one was made grey here, by a way chosen at a small
    size)."""
    if laid is None or apart is None:
        return False
    return (
        apart.fine >= GRID_MAX
        or apart.fine > GRID_SHARE * ink_depth(laid[0] @ LUMA)
        or (as_they_are and apart.local >= LOCAL_MAX and unedited(apart) and not colour_lost(laid))
    )


def grid_edit(
    upload_view: Image.Image,
    stored_view: Image.Image,
    laid: Laid,
    grey_against_colour: bool,
) -> Verdict | None:
    """The edit on the pixel grid (the two views ``laid`` there, residual.on_one_grid): the
    pixels left apart (:data:`GRID_MAX` over 3x3) were given colour that the stored picture
    lacks there, a caption or a translucent box laid over a drawing in black and white, too
    thin or too pale for any block once grey levels are fitted. None when that is not so (a
    stroke redrawn in the drawing's own ink is a sibling), or when it spreads over more than
    :data:`EDIT_MAX_SHARE` of the blocks. Outside the edit's blocks the two must be one
    picture, as for an edit found in blocks."""
    # Located by the best affine colour map over every pixel: a copier's edit is fitted on
    # the levels clipping cannot have touched, which in black and white are the overlay's.
    up, st = laid
    changing = np.abs(ndimage.uniform_filter(affine_residual(st, up), 3, mode="nearest"))
    changing = changing >= GRID_MAX
    differs = blocks_of(changing)
    share = float(differs.mean())
    if not changing.any() or share > EDIT_MAX_SHARE:
        return None
    if (chroma(up) - chroma(st))[changing].mean() < OVERLAY_CHROMA:
        return None
    tones = tone_difference(upload_view, stored_view, differs, gain=tone_gain(grey_against_colour))
    return edit_verdict(tones, region(differs), share, grey_against_colour, held=True)


def edit_verdict(
    tones: Tones, where: str, share: float, grey_against_colour: bool, held: bool = False
) -> Verdict:
    """The verdict on an edit at ``where`` whose ``tones`` are measured outside it: an
    edited copy only where the two are one picture there. Held on the mean, not on the 95th
    percentile the same picture is held to (:data:`TONE_MAX`): an edit's thin strokes cross
    blocks that do not differ as a whole (a translucent white "OX" over a red disc) and
    leave a high tail, while a sibling differs all over what the edit leaves (a black
    silhouette of a map with a caption laid over, against the map shaded tan)."""
    unlike_it = unlike(tones, share, grey_against_colour)
    if unlike_it is None and tones.mean >= TONE_MAX:
        return Verdict("different", "fine tones", share, tones.mean, held)
    return unlike_it or Verdict("edited", where, share, tones.mean, held)


def tone_gain(grey_against_colour: bool) -> tuple[float, float]:
    """The limits of the fine tones' fit (:data:`TONE_GAIN`, :data:`GREY_GAIN`)."""
    return GREY_GAIN if grey_against_colour else TONE_GAIN


def unlike(tones: Tones, share: float, grey_against_colour: bool) -> Verdict | None:
    """The verdict when the two views, alike in blocks, are not one picture by their pixels:
    nothing inked to compare (the empty centre of an icon whose bar lies along its edge met
    the empty inside of any box), another colouring of the drawing, or, where one view is
    grey and colour cannot be compared, grey levels further apart than a greyscale copy's
    (a black-and-white ice cream cone against the vanilla one). An edited upload coloured
    well past its edit (``Tones.spill``) is another colouring too, not a caption laid over."""
    if not tones.inked:
        return Verdict("different", "blank", share)
    limits = (
        (tones.colour, COLOUR_MEAN_MAX),
        (tones.hue, HUE_MAX),
        (tones.patch, PATCH_MAX),
        (tones.spill, SPILL_MAX),
        (tones.greyed, GREYED_MAX),
    )
    if any(value >= limit for value, limit in limits):
        return Verdict("different", COLOUR, share, tones.mean)
    if grey_against_colour and tones.mean >= GREY_COPY_MAX:
        return Verdict("different", "grey tones", share, tones.mean)
    return None


def two_shades(pair: Overlay, share: float, distance: float) -> Verdict | None:
    """The verdict when the upload gives one colour of the stored view two shades
    (:func:`colour_split`): a sibling drawn with one part in another shade. Asked only where
    neither view is grey against the other coloured: greyscale makes one grey of two colours."""
    if colour_split(pair) >= SPLIT_MAX:
        return Verdict("different", "one colour split", share, distance)
    return None


@kept_by_pixels(VIEWS_KEPT)
def sized(image: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """``image`` in RGB at ``size`` (box-filtered), with its grey levels and opponent colours."""
    rgb = image.convert("RGB").resize(size, Image.Resampling.BOX)
    levels, colours = np.asarray(rgb.convert("L"), np.float32), opponent(rgb)
    for values in (levels, colours):
        values.flags.writeable = False
    return rgb, levels, colours


def forget() -> None:
    """Clears what verification keeps (laid pairs, residual.py; fills; views): an answer kept
    under other constants would otherwise be read again (tests that change them)."""
    for memo in (kept_laid, kept_laid_apart, fills, sized, grey, colour_share, greyed):
        memo.cache_clear()
    forget_keys()


def fine_agreement(up: Image.Image, stored: Image.Image, side: int) -> float:
    """Correlation of the two pictures' fine detail (each grey image less its blur), best
    over shifts of a pixel: near 1 for the same drawing, near 0 where fine lines differ
    (a star of 59 thin spokes against one of 64 is the same grey disc at 64 px)."""
    a, b = (detail(v.convert("L").resize((side, side), Image.Resampling.BOX)) for v in (up, stored))
    h, w = b.shape
    if min(a.std(), b.std()) < DETAIL_MIN:
        return 1.0  # no fine lines to tell apart: the coarse comparison decides
    pad = np.pad(a, SHIFT, mode="edge")
    best = 0.0
    nb = float(np.sqrt((b * b).sum()))
    for dy in range(-SHIFT, SHIFT + 1):
        for dx in range(-SHIFT, SHIFT + 1):
            moved = pad[SHIFT + dy : SHIFT + dy + h, SHIFT + dx : SHIFT + dx + w]
            na = float(np.sqrt((moved * moved).sum()))
            if na * nb > 0:
                best = max(best, float((moved * b).sum()) / (na * nb))
    return best


def aspect_differs(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two views of these sizes have other shapes: blocks and descriptors are taken
    on squashed squares, where a square LED meets a wide one, a 60% crop of either looking
    alike. Held even for views too small to verify (a 14x31 crop of a small symbol is not a
    wide flag), with a pixel of rounding on the short side allowed."""
    (aw, ah), (bw, bh) = a, b
    rounding = 1 / min(aw, ah, bw, bh)
    return abs(math.log((aw / ah) / (bw / bh))) > ASPECT_MAX + rounding


class Tones(NamedTuple):
    high: float  # the 95th percentile of the difference over ink: the same picture under TONE_MAX
    mean: float  # its mean: how close, to rank rival candidates (rivals.py)
    colour: float = 0.0  # mean colour difference over the picture: under COLOUR_MEAN_MAX
    hue: float = 0.0  # mean hue angle between them where both are coloured: under HUE_MAX
    inked: bool = True  # whether either view carries ink inside its edge: else nothing to compare
    part: bool = False  # whether a part of the ink stays apart as a whole (PART_APART)
    patch: float = 0.0  # the hue turned in the one place it turns most: under PATCH_MAX
    spill: float = 0.0  # share of the view given colour and grey outside the edit: SPILL_MAX
    greyed: float = 0.0  # share of the view grey in one view, coloured in the other: GREYED_MAX
    local: float = 0.0  # the mean in the one place furthest apart (one_place); 0 around an edit


def tone_difference(
    upload: Image.Image,
    stored: Image.Image,
    edited: np.ndarray | None = None,
    coloured: Image.Image | None = None,
    pair: Overlay | None = None,
    gain: tuple[float, float] = TONE_GAIN,
) -> Tones:
    """How far the two views' grey levels stay apart where they carry ink, once laid over
    each other to the pixel (0-255), outside the ``edited`` (GRID, GRID) blocks. The blocks
    average a thin shape away (a cream card against a white one, a moon shaded otherwise,
    a bar outlined against one filled); here each pixel counts. What is left for copies
    is resampling and JPEG noise, which the blur and the shift of a pixel absorb.
    ``coloured``: the upload before it was made grey, whose colour shows what was laid over.
    ``pair``: the two laid over each other already (:func:`overlay`). ``gain``: the limits
    of the grey levels' fit (:data:`GREY_GAIN` for a grey view against a coloured one)."""
    up_rgb, st_rgb, up, st, offset, raw = pair or overlay(upload, stored)
    picture, spilled = np.ones(st.shape, bool), np.zeros(st.shape, bool)
    if edited is not None:  # what was laid over (its blocks, and colour added) is not the picture
        over = upload if coloured is None else coloured  # its colour, before made grey
        over_rgb = sized(over, st_rgb.size)[0]
        added = colour_added(over_rgb, st_rgb)
        spilled = added & ~block_mask(edited, st.shape)
        picture = ~block_mask(edited, st.shape) & ~ndimage.binary_dilation(added, iterations=3)
    # Fitted once aligned (misaligned lines would pull the gain down), on the picture alone.
    up = fit(up, st, gain, picture)
    up, st = (ndimage.gaussian_filter(v, 0.8) for v in (up, st))
    diff = shifted_difference(up, st)
    spill = float((spilled & (diff >= INK)).mean())
    picture[:2], picture[-2:], picture[:, :2], picture[:, -2:] = False, False, False, False
    ink = inked(up, st) & picture
    colours = None if any(map(grey_all_over, raw)) else laid_colours(*raw, offset)
    colour, hue, patch, greyed = (
        (0.0, 0.0, 0.0, 0.0)
        if colours is None
        else colours_apart(up_rgb, st_rgb, colours, offset, picture, edited is None)
    )
    if not ink.any():
        ink = colour_ink(*(colours or laid_colours(*raw, offset))) & picture
    if not ink.any():
        return Tones(0.0, 0.0, colour, hue, inked=False)
    high, mean = float(np.percentile(diff[ink], 95)), float(diff[ink].mean())
    part = bool(ndimage.binary_erosion((diff >= PART_APART) & ink).any())
    local = one_place(diff, picture) if edited is None else 0.0  # read of the same picture
    return Tones(
        high, mean, colour, hue, part=part, patch=patch, spill=spill, greyed=greyed, local=local
    )


def one_place(diff: np.ndarray, picture: np.ndarray) -> float:
    """The largest mean of ``diff`` over a window :data:`LOCAL_FRACTION` of the view wide,
    over the ``picture`` (the windows at least half over it): a sibling's other part (an
    emblem, a pair of eyes) can lie in one place within the mean a copy's noise leaves over
    the whole, but further apart there than that noise reaches anywhere."""
    side = max(3, diff.shape[0] // LOCAL_FRACTION)
    shown, over = np.where(picture, diff, 0).astype(np.float32), picture.astype(np.float32)
    summed, over = (ndimage.uniform_filter(v, side, mode="constant") for v in (shown, over))
    counted = over > 0.5
    return float((summed[counted] / over[counted]).max()) if counted.any() else 0.0


class Overlay(NamedTuple):
    """Two views at their :func:`common_size`, the upload's grey moved onto the stored
    view's by the whole-pixel offset that lays it there (:func:`phase_offset`): one pair is
    measured by its tones, its flat fills and its split colours alike."""

    up_rgb: Image.Image
    st_rgb: Image.Image
    up: np.ndarray  # grey, moved by offset
    st: np.ndarray  # grey
    offset: tuple[int, int]
    colours: tuple[np.ndarray, np.ndarray]  # each one's opponent colours (not moved)


def overlay(upload: Image.Image, stored: Image.Image) -> Overlay:
    size = common_size(upload, stored)
    (up_rgb, up, up_colours), (st_rgb, st, st_colours) = (sized(v, size) for v in (upload, stored))
    offset = phase_offset(up, st)
    up = moved(up, *offset)
    up.flags.writeable = False  # shared by the tests of one pair, as sized's arrays are
    return Overlay(up_rgb, st_rgb, up, st, offset, (up_colours, st_colours))


def flat_fill(up: np.ndarray, stored: np.ndarray) -> float:
    """How far the grey ``up``, laid over ``stored``, strays inside the stored view's flat
    fills (:data:`FLAT_MAX`): the largest span of its cell means about their best line against
    the stored cells', over any one fill. Cells, because JPEG's ringing and dithering average
    out in them and a gradient or a line does not; whole cells in one fill, because a cell
    astride an edge sees the edge. Only the upload's ink in a stored fill counts: where the
    stored view shades and the upload is flat, a brightening clipped it (the other way)."""
    span = window_span(stored, FLAT_WINDOW)
    flat = np.zeros(stored.shape, bool)
    inside = (slice(FLAT_EDGE, -FLAT_EDGE),) * 2
    flat[inside] = span[inside] <= FLAT_RANGE
    cell = max(4, min(stored.shape) // FLAT_CELLS)
    h, w = (n // cell * cell for n in stored.shape)
    fills, _ = ndimage.label(flat[:h, :w])

    def cells(values: np.ndarray) -> np.ndarray:
        return values[:h, :w].reshape(h // cell, cell, w // cell, cell)

    labels = cells(fills)
    first = labels[:, 0, :, 0]
    whole = (labels == first[:, None, :, None]).all(axis=(1, 3)) & (first > 0)
    fill_of = first[whole]
    up_cells, stored_cells = (cells(v).mean(axis=(1, 3))[whole] for v in (up, stored))
    widest = 0.0
    for fill in np.unique(fill_of):
        at = fill_of == fill
        if at.sum() >= FLAT_LEAST:
            widest = max(widest, off_line(stored_cells[at], up_cells[at]))
    return widest


def colour_split(pair: Overlay) -> float:
    """How far apart the upload's grey levels lie over two fills of one colour of the stored
    view (:data:`SPLIT_MAX`), in the ``pair`` laid over each other (:func:`overlay`), fitted
    as :func:`tone_difference` fits them.
    Apart from it, and only for a pair every other test passed: its filters cost as much as
    the rest of the comparison, and most candidates of a family of stars fail before."""
    up = fit(pair.up, pair.st, TONE_GAIN)
    return one_colour_split(up, np.asarray(pair.st_rgb, np.float32))


def one_colour_split(up: np.ndarray, stored: np.ndarray) -> float:
    """:func:`colour_split` for the upload's grey ``up``, laid over the stored view and
    fitted, and the stored view's colours ``stored`` (h, w, 3): the most the upload's median
    grey differs between two fills of one colour."""
    size = (SPLIT_WINDOW, SPLIT_WINDOW)
    span, up_span = window_span(stored, (*size, 1)), window_span(up, size)
    flat = (brightest(span) <= FLAT_RANGE) & (up_span <= SPLIT_FLAT)
    labels = ndimage.label(flat)[0]
    # ndimage's sums and means by label are bincounts: one for the sizes, one a channel.
    sizes = np.bincount(labels.ravel())
    fills = np.flatnonzero(sizes[1:] >= max(SPLIT_PIXELS, SPLIT_LEAST * flat.size)) + 1
    sums = [np.bincount(labels.ravel(), stored[..., c].ravel())[fills] for c in range(3)]
    colours = np.stack(sums, axis=-1) / sizes[fills, None]
    unclipped = (colours.min(axis=-1) < 255 - BOUND_LEVELS) & (colours.max(axis=-1) > BOUND_LEVELS)
    fills, colours = fills[unclipped], colours[unclipped]
    if len(fills) < 2:
        return 0.0
    levels = np.asarray(ndimage.median(up, labels, fills))
    alike = np.abs(colours[:, None] - colours[None]).max(axis=-1) <= SPLIT_SAME
    return float(np.where(alike, np.abs(levels[:, None] - levels[None]), 0.0).max())


def off_line(x: np.ndarray, y: np.ndarray) -> float:
    """The span of ``y`` about its least-squares line against ``x`` (about its mean where ``x``
    is flat)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    if np.ptp(x) < 1.0:
        left = y - y.mean()
    else:
        slope, intercept = np.polyfit(x, y, 1)
        left = y - (slope * x + intercept)
    return float(np.ptp(left))


def colours_apart(
    upload: Image.Image,
    stored: Image.Image,
    colours: tuple[np.ndarray, np.ndarray],
    offset: tuple[int, int],
    picture: np.ndarray,
    patches: bool,
) -> tuple[float, float, float, float]:
    """The colour figures of :class:`Tones` (colour, hue, patch, greyed) for the two views
    and their ``colours`` (:func:`laid_colours`) over ``picture``; the patch only where
    ``patches`` (an edit turns the hue of what it covers)."""
    up, stored_colours = colours
    fitted = fitted_colours(up, stored_colours)
    colour = colour_difference(fitted, stored_colours, picture)
    stored_top = brightest(np.asarray(stored))
    blown = (stored_top >= BLOWN) | moved(brightest(np.asarray(upload)) >= BLOWN, *offset)
    turns = hue_turns(*colours)
    hue = hue_turn(*turns, picture & ~blown)
    pale = stored_top >= PATCH_PALE
    patch = colour_patch(*turns, picture & ~blown & ~pale) if patches else 0.0
    return colour, hue, patch, greyed_share(fitted, stored_colours, picture)


def greyed_share(fitted: np.ndarray | None, stored: np.ndarray, where: np.ndarray) -> float:
    """:attr:`Tones.greyed` for the upload's laid colours, ``fitted`` (:func:`fitted_colours`),
    and the stored view's, over ``where``; 0 when colour is not compared (a greyscale copy is
    held in grey)."""
    if fitted is None:
        return 0.0
    a, b = distance(fitted), distance(stored)
    one_grey = ((a >= 2 * HUE_CHROMA) & (b < HUE_CHROMA / 2)) | (
        (b >= 2 * HUE_CHROMA) & (a < HUE_CHROMA / 2)
    )
    return float((one_grey & where).mean())


def grey_all_over(colours: np.ndarray) -> bool:
    """Whether a view's opponent colours (:func:`opponent`) are grey on the whole and
    nowhere coloured: against it every colour figure of :class:`Tones` is 0 (a blurred
    pixel's colour is an average of its neighbours'), so the blurs they need are spared."""
    return greyish(colours) and uncoloured(colours)


def laid_colours(
    a: np.ndarray, b: np.ndarray, offset: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The two views' opponent colours ``a`` and ``b`` (:func:`opponent`), the upload's
    moved by ``offset`` onto the stored view's, both blurred by a pixel as the grey levels
    are."""
    a = np.stack([moved(a[..., i], *offset) for i in range(2)], axis=-1)
    # A plane at a time: the same blur, twice as fast as across interleaved channels.
    return tuple(
        np.stack([ndimage.gaussian_filter(v[..., i], 0.8) for i in range(2)], axis=-1)
        for v in (a, b)
    )


def colour_difference(fitted: np.ndarray | None, stored: np.ndarray, where: np.ndarray) -> float:
    """The mean opponent-colour distance between the upload's laid colours, ``fitted``
    (:func:`fitted_colours`), and the stored view's (:func:`laid_colours`), over ``where``;
    0 when colour is not compared (a greyscale copy is a copy). The blocks' colour test
    (:func:`recoloured`) waits for a whole block of another hue; a card on a cream ground
    against one on white, or a balloon in another shade, differs by less per block but over
    the whole picture."""
    if fitted is None or not where.any():
        return 0.0
    return float(shifted_difference(fitted, stored)[where].mean())


def hue_turns(up: np.ndarray, stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the signed angle in degrees from the stored view's laid colour to the
    upload's (:func:`laid_colours`), and where both are coloured (:data:`HUE_CHROMA`): what
    :func:`hue_turn` and :func:`colour_patch` hold, over the picture and part by part."""
    cosine = up[..., 0] * stored[..., 0] + up[..., 1] * stored[..., 1]
    sine = stored[..., 0] * up[..., 1] - stored[..., 1] * up[..., 0]
    return np.degrees(np.arctan2(sine, cosine)), coloured_at(up) & coloured_at(stored)


def hue_turn(turns: np.ndarray, coloured: np.ndarray, where: np.ndarray) -> float:
    """The mean angle between two views' laid colours (:func:`hue_turns`) over ``where`` they
    are both coloured (0 where they never are). A copier's brightness, contrast or saturation
    scales the opponent colours and keeps their direction; red leaves against brown ones
    differ by less than the colour mean sees over a white page."""
    both = where & coloured
    return float(np.abs(turns[both]).mean()) if both.any() else 0.0


def colour_patch(turns: np.ndarray, coloured: np.ndarray, where: np.ndarray) -> float:
    """The largest mean signed hue turn (:func:`hue_turns`) over ``where`` in a window a
    :data:`PATCH_FRACTION` of the picture's shorter side wide, where both views are coloured
    over at least half of it. A copier's edit turns no hue anywhere; the coffee of one cup
    turned from brown to red is diluted in the mean over the picture (:func:`hue_turn`).
    Signed, because a recoloured part turns every pixel of it one way, while JPEG's coarse
    colour scatters."""
    both = where & coloured
    window = max(PATCH_LEAST, min(where.shape) // PATCH_FRACTION)
    share = ndimage.uniform_filter(both.astype(np.float32), window, mode="constant")
    turn = ndimage.uniform_filter(np.where(both, turns, 0.0), window, mode="constant")
    return float(np.abs(turn / np.maximum(share, 1e-6))[share >= 0.5].max(initial=0.0))


def common_size(upload: Image.Image, stored: Image.Image) -> tuple[int, int]:
    """The stored view's shape at the finer of the two views' scales that both hold, at most
    :data:`TONE_SIDE` px: an upload smaller than the stored view is compared at its size."""
    scale = min(
        TONE_SIDE / max(stored.size), upload.width / stored.width, upload.height / stored.height, 1
    )
    return max(8, round(stored.width * scale)), max(8, round(stored.height * scale))


def phase_offset(up: np.ndarray, stored: np.ndarray) -> tuple[int, int]:
    """The whole-pixel offset that lays ``up`` over ``stored`` (phase correlation, a Hann
    window against the edges); none when it is more than :data:`MAX_OFFSET` pixels: a view
    pair that matched is off by a pixel or two, a larger jump is a match of patterns."""
    h, w = stored.shape
    window = hann(h, w)
    fa, fb = (fft.rfft2((v - v.mean()) * window) for v in (up, stored))
    cross = fb * np.conj(fa)
    peak = fft.irfft2(cross / (np.abs(cross) + 1e-9), s=(h, w))
    dy, dx = np.unravel_index(int(np.argmax(peak)), peak.shape)
    dy, dx = (d - n if d > n // 2 else d for d, n in ((dy, h), (dx, w)))
    return (int(dy), int(dx)) if max(abs(dy), abs(dx)) <= MAX_OFFSET else (0, 0)


@functools.lru_cache(maxsize=64)
def hann(h: int, w: int) -> np.ndarray:
    return np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)


def colour_ink(*colours: np.ndarray) -> np.ndarray:
    """The pixels INK or more from the ground in opponent colour (:func:`opponent`) in any of
    the views: the ink where parts of one grey are told by colour alone (Bangladesh's red disc
    is 18 grey levels from its green field)."""
    return inked(*(distance(c - border_level(c)) for c in colours))


def detail(image: Image.Image) -> np.ndarray:
    grey_image = image.convert("L")
    sharp = np.asarray(grey_image, dtype=np.float32)
    return sharp - np.asarray(grey_image.filter(ImageFilter.GaussianBlur(2)), dtype=np.float32)


@kept_by_pixels(VIEWS_KEPT)
def grey(image: Image.Image) -> np.ndarray:
    blurred = np.asarray(image.convert("L").filter(ImageFilter.GaussianBlur(1)), np.float32)
    blurred.flags.writeable = False
    return blurred


def fit(
    up: np.ndarray,
    stored: np.ndarray,
    gains: tuple[float, float] = FIT_GAIN,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """``up`` with its grey levels scaled (by a gain within ``gains``) and shifted to best
    match ``stored``'s (least squares, over the pixels ``where`` is true, by default all):
    brightness and contrast are not an edit. A flat upload is left as it is."""
    a, b = (up.ravel(), stored.ravel()) if where is None else (up[where], stored[where])
    if a.size < 2:
        return up
    spread = float(a.std())
    if spread < 1e-3:
        return up
    covariance = float(np.dot(a - a.mean(), b - b.mean())) / max(1, a.size - 1)
    gain = float(np.clip(covariance / spread**2, *gains))
    return (up - a.mean()) * gain + b.mean()


def shifted_difference(up: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """Per pixel, the least absolute difference (for (h, w, channels) arrays, the least
    distance) between ``stored`` and ``up`` moved by up to :data:`SHIFT` pixels either way:
    a crop or a turn undone lands a pixel or two off, which on a thin line is a
    full-contrast difference, while a changed part differs anywhere."""
    h, w = stored.shape[:2]
    pad = np.pad(up, ((SHIFT, SHIFT), (SHIFT, SHIFT)) + ((0, 0),) * (up.ndim - 2), mode="edge")
    least = np.full((h, w), np.inf, np.float32)
    for dy in range(-SHIFT, SHIFT + 1):
        for dx in range(-SHIFT, SHIFT + 1):
            moved_up = pad[SHIFT + dy : SHIFT + dy + h, SHIFT + dx : SHIFT + dx + w]
            np.minimum(least, distance(moved_up - stored), out=least)
    return least


def distance(apart: np.ndarray) -> np.ndarray:
    """Per pixel, the size of a difference: its absolute value, or for (h, w, channels) its
    Euclidean length (summed channel by channel: np.linalg.norm over a last axis of two took
    most of a 256 px colour comparison's time)."""
    if apart.ndim == 2:
        return np.abs(apart)
    squares = apart[..., 0] * apart[..., 0]
    for channel in range(1, apart.shape[-1]):
        squares += apart[..., channel] * apart[..., channel]
    return np.sqrt(squares)


def moved(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``image`` moved by whole pixels, its edge rows and columns repeated into the gap."""
    h, w = image.shape
    pad = np.pad(image, ((abs(dy),) * 2, (abs(dx),) * 2), mode="edge")
    return pad[abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]


def block_mask(blocks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The pixels of an image of ``shape`` that lie in the chosen (GRID, GRID) blocks."""
    h, w = shape
    return blocks[np.ix_(np.arange(h) * GRID // h, np.arange(w) * GRID // w)]


def blocks_of(pixels: np.ndarray) -> np.ndarray:
    """The (GRID, GRID) blocks that hold any of the chosen ``pixels``: block_mask's inverse."""
    h, w = pixels.shape
    blocks = np.zeros((GRID, GRID), bool)
    ys, xs = np.nonzero(pixels)
    blocks[ys * GRID // h, xs * GRID // w] = True
    return blocks


def block_means(values: np.ndarray, side: int) -> np.ndarray:
    """(GRID, GRID) means of ``values`` (``side`` is a multiple of GRID)."""
    step = side // GRID
    return values.reshape(GRID, step, GRID, step).mean(axis=(1, 3))


def opponent(image: Image.Image) -> np.ndarray:
    """(h, w, 2) opponent colour channels (red-green, yellow-blue): zero on grey."""
    rgb = np.asarray(image, dtype=np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.stack([r - g, (r + g) / 2 - b], axis=-1)


def recoloured(a: np.ndarray, b: np.ndarray, side: int) -> np.ndarray:
    """(GRID, GRID) blocks where the upload's opponent colours ``a`` (:func:`opponent`) are
    another hue than the stored picture's ``b``. Colour is not compared when either view is
    grey (a greyscale copy is a copy, uploaded or stored), and the upload's saturation is
    fitted to the stored one first (a more saturated copy is a copy); a flag with other
    colours in the same stripes (Romania and Gabon) is not. Along the stored view's colour
    edges each pixel is taken at its best shift of one, as the grey levels are: a yellow
    crescent on blue a fraction of a pixel off (a screenshot cut a pixel wide) differs by half
    the scale along its edge. Not elsewhere: colour keys of another layout would meet."""
    fitted = fitted_colours(a, b)
    if fitted is None:
        return np.zeros((GRID, GRID), bool)
    reach = (2 * SHIFT + 1, 2 * SHIFT + 1, 1)  # the pixels a shift can bring a pixel from
    spread = window_span(b, reach)
    apart = np.where(
        distance(spread) >= COLOUR_DIFF,
        shifted_difference(fitted, b),
        distance(fitted - b),
    )
    return block_means(apart, side) >= COLOUR_DIFF


def one_grey(first: Image.Image, second: Image.Image) -> bool:
    """Whether one of two pictures is grey and the other coloured: a greyscale copy, or
    another picture that only its colours would tell apart."""
    return greyish(opponent(first.convert("RGB"))) != greyish(opponent(second.convert("RGB")))


def colour_lost(laid: Laid) -> bool:
    """Whether one of two views laid on one grid has no colour at all (:func:`uncoloured`) and
    the other some: a grey copy of a mostly grey picture, made grey some way other than the
    luma the copier's edit fits."""
    up, st = (uncoloured(opponent(v)) for v in laid)
    return up != st


def coloured_at(colours: np.ndarray) -> np.ndarray:
    """Where opponent colours (:func:`opponent`) lie :data:`HUE_CHROMA` or more from grey."""
    return distance(colours) >= HUE_CHROMA


def uncoloured(colours: np.ndarray) -> bool:
    """Whether no pixel of a view's opponent colours is coloured (:func:`coloured_at`): a
    picture made grey. A drawing of thin brown lines is greyish (:func:`greyish`) on the
    whole, and its hue still tells it from one of red lines."""
    return not coloured_at(colours).any()


class Greyed(NamedTuple):
    upload: Image.Image
    stored: Image.Image
    way: GreyWay  # how the coloured one was made grey
    coloured: bool  # whether it was coloured over MOSTLY_COLOURED of its ink or more


def made_grey(upload: Image.Image, stored: Image.Image, upload_is_grey: bool) -> Greyed:
    """The two views, of which one is grey, with the coloured one made grey the way
    (:data:`GREY_WAYS`) that brings it closest to the grey one. A grey copy's
    levels are one of these conversions of the original's, and another conversion's differ
    from them by up to 30 levels in a saturated part: held to 601 luma alone, a third to two
    thirds of the copies that other tools made grey were refused (docs/copy-detection.md,
    run AC). A view coloured over less than :data:`MOSTLY_COLOURED` of its ink is made grey
    by 601 luma: it is a grey drawing with a caption laid over it as often as a coloured
    original, and the way that greys the caption most like the drawing under it would hide
    it."""
    grey_view, coloured = (upload, stored) if upload_is_grey else (stored, upload)
    target = small_grey(grey_view)
    small, share = colour_share(coloured)

    def left(way: GreyWay) -> float:
        # The upload fitted to the stored view within the limits the tones then hold a grey
        # view against a coloured one to: within TONE_GAIN, 601 and 709 luma of red on
        # yellow both fit a 601 copy, and which came first was rounding's choice.
        made = way(small)
        return fitted_apart(*((target, made) if upload_is_grey else (made, target)), GREY_GAIN)

    mostly = share >= MOSTLY_COLOURED
    way = min(GREY_WAYS, key=left) if mostly else GREY_WAYS[0]
    made = greyed(coloured, way)
    return Greyed(*((upload, made) if upload_is_grey else (made, stored)), way, mostly)


@kept_by_pixels(VIEWS_KEPT)
def colour_share(image: Image.Image) -> tuple[np.ndarray, float]:
    """``image`` in RGB at :data:`SMALL` size, and the share of its ink that is coloured."""
    small = np.asarray(image.convert("RGB").resize(SMALL, Image.Resampling.BOX), np.float32)
    small.flags.writeable = False
    ink = inked(small @ LUMA)
    return small, float(coloured_at(opponent(small))[ink].mean()) if ink.any() else 0.0


@kept_by_pixels(VIEWS_KEPT)
def greyed(image: Image.Image, way: GreyWay) -> Image.Image:
    """``image`` made grey by ``way`` (:data:`GREY_WAYS`), as RGB."""
    made = way(np.asarray(image.convert("RGB"), np.float32))
    return Image.fromarray(np.clip(made + 0.5, 0, 255).astype(np.uint8)).convert("RGB")


def fitted_apart(
    up: np.ndarray, stored: np.ndarray, gains: tuple[float, float] = FIT_GAIN
) -> float:
    """The mean grey difference left once ``up``'s levels are fitted to ``stored``'s."""
    return float(np.abs(fit(up, stored, gains) - stored).mean())


def fitted_colours(up: np.ndarray, stored: np.ndarray) -> np.ndarray | None:
    """The upload's opponent colours ``up`` with their saturation fitted to the stored view's
    (:func:`saturation_gain`: a more or less saturated copy is a copy), or None when either
    view is grey: colour is then not compared."""
    return None if either_grey(up, stored) else up * saturation_gain(up, stored)


def either_grey(up: np.ndarray, stored: np.ndarray) -> bool:
    """Whether either view's opponent colours (:func:`opponent`) are a grey picture's."""
    return greyish(up) or greyish(stored)


def greyish(colours: np.ndarray) -> bool:
    """Whether opponent colours (:func:`opponent`) are a grey picture's."""
    return float(np.abs(colours).mean()) < GREY


def saturation_gain(up: np.ndarray, stored: np.ndarray) -> float:
    """The gain on the upload's opponent colours that best matches the stored ones (least
    squares, within a factor of two): a more or less saturated copy is a copy."""
    return float(np.clip((up * stored).sum() / max(1e-6, float((up * up).sum())), 0.5, 2.0))


def picture_of(over: Image.Image, stored: Image.Image) -> np.ndarray | None:
    """The pixels whose grey levels a copier's tone edit is fitted on: those where the upload
    ``over`` adds no colour (half :data:`OVERLAY_CHROMA`) to the ``stored`` view. A dark box
    laid over a white corner would pull the fit's contrast down, and every other block then
    differs a little. None (all pixels) when colour is added over more than
    :data:`EDIT_MAX_SHARE` of the view: a picture coloured otherwise, not laid over."""
    added = colour_added(over, stored)
    return None if added.mean() > EDIT_MAX_SHARE or not added.any() else ~added


def colour_added(over: Image.Image, stored: Image.Image) -> np.ndarray:
    """Where the upload ``over`` adds colour to the ``stored`` view: half
    :data:`OVERLAY_CHROMA` more chroma, which a caption's antialiased rim still reaches."""
    return chroma(over) - chroma(stored) >= OVERLAY_CHROMA / 2


def chroma(image: Image.Image | np.ndarray) -> np.ndarray:
    """Per pixel, how far from grey (max - min channel), 0-255."""
    rgb = np.asarray(image, dtype=np.float32)
    return brightest(rgb) - darkest(rgb)


def laid_over(
    up: Image.Image, stored: Image.Image, diff: np.ndarray, differs: np.ndarray, side: int
) -> bool:
    """Whether the differing blocks of either view carry colour the other lacks there: a
    caption, a logo or a mark laid over the picture, on the upload or on the stored copy of
    an uploaded original, not a redrawn part (a bass clef for a treble clef is drawn in the
    staff's own ink). A part relit, or drawn in the picture's own colours, passes here too,
    and is told from an edit after (:func:`relit`, :func:`own_colours`)."""
    changing = changed(diff, differs, side)
    if not changing.any():  # another colour, not another shape: a recoloured part
        return False
    pairs = ((up, stored), (stored, up))
    return any(colour_brought(a, b)[changing].mean() >= OVERLAY_CHROMA for a, b in pairs)


def colour_brought(up: Image.Image, stored: Image.Image) -> np.ndarray:
    """Per pixel, how much colour the upload brings that the stored view lacks there: chroma
    where there was less, or, in a coloured upload, the distance to the colour there was."""
    brought = np.clip(chroma(up) - chroma(stored), 0, None)
    colours = opponent(up)
    if not greyish(colours):
        brought = np.maximum(brought, distance(colours - opponent(stored)))
    return brought


def own_colours(
    up: Image.Image,
    stored: Image.Image,
    diff: np.ndarray,
    differs: np.ndarray,
    side: int,
    wholes: tuple[Image.Image, Image.Image],
) -> bool:
    """Whether an edit (:func:`laid_over`) brings no colour of its own either way, over all
    its blocks or over any one separate region of them (:func:`own_in`). A part redrawn in
    the drawing's own palette (a second highlight on a heart, another pattern on a card
    back, branches in the trunk's brown), not a caption or a logo, which brings colours of
    its own to the picture that carries it: the upload, or the stored copy when the upload
    is the clean original. A caption laid over one place does not hide branches redrawn in
    another: together their colours are not the drawing's, apart the branches' are."""
    ways = (
        brought_by(up, stored, wholes[1], differs),
        brought_by(stored, up, wholes[0], differs),
    )
    regions, count = ndimage.label(differs, structure=np.ones((3, 3)))
    areas = [differs] + ([regions == k for k in range(1, count + 1)] if count > 1 else [])
    return any(own_in(changed(diff, area, side), ways) for area in areas)


class Brought(NamedTuple):
    """What one view brings where it differs from the other (:func:`brought_by`)."""

    pixels: np.ndarray  # colour brought (OVERLAY_CHROMA or more) inside a fill
    own: np.ndarray  # of those, the colours the other view fills outside the edit's blocks


def brought_by(a: Image.Image, b: Image.Image, whole: Image.Image, differs: np.ndarray) -> Brought:
    """The colour view ``a`` brings against ``b`` (inside a fill), and which of it ``whole``
    (the other view at full size) fills outside the ``differs`` blocks: made once for the
    whole edit and each region of it."""
    colours = np.asarray(a)
    pixels = (colour_brought(a, b) >= OVERLAY_CHROMA) & solid(colours)
    own = np.zeros(pixels.shape, bool)
    if pixels.any():
        own[pixels] = np.isin(cube_keys(colours[pixels]), held_in(whole, differs))
    return Brought(pixels, own)


def own_in(changing: np.ndarray, ways: tuple[Brought, Brought]) -> bool:
    """Whether, at the ``changing`` pixels, the colour each view brings is, nearly all of it
    (:data:`OWN_MAX`), colour the other fills outside the edit (``ways``: each view's)."""
    brought = False
    for way in ways:
        pixels = changing & way.pixels
        if not pixels.any():
            continue
        if way.own[pixels].mean() < OWN_MAX:
            return False
        brought = True
    return brought


def held_in(whole: Image.Image, differs: np.ndarray) -> np.ndarray:
    """The colours the fills of ``whole`` (at up to :data:`TONE_SIDE` px, where a thin
    highlight is still a fill) hold outside the ``differs`` blocks, as the keys of cubes of
    :data:`OWN_STEP` levels a channel (:func:`cube_keys`): a cube held by two pixels or more,
    widened by a cube each way (a colour on a cube's edge, JPEG's and resampling's drift)."""
    larger = whole.convert("RGB")
    larger.thumbnail((TONE_SIDE, TONE_SIDE), Image.Resampling.BOX)
    cubes, which, where = fills(larger)
    outside = ~block_mask(differs, where.shape)[where]
    counts = np.bincount(which[outside], minlength=len(cubes))
    return with_neighbours(cubes[counts >= 2])


@kept_by_pixels(FILLS_KEPT)
def fills(image: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cubes the fills (:func:`solid`) of ``image`` hold, which of them each fill pixel
    lies in, and where the fill pixels are; kept for the last :data:`FILLS_KEPT` pictures,
    since the upload meets every candidate, and each candidate two of its views."""
    levels = np.asarray(image)
    where = solid(levels)
    cubes, which = np.unique(cube_keys(levels[where]), return_inverse=True)
    kept = cubes, which.ravel(), where
    for values in kept:
        values.flags.writeable = False  # shared with every comparison that reads them
    return kept


def solid(levels: np.ndarray) -> np.ndarray:
    """The pixels of (h, w, 3) ``levels`` inside a fill, each channel within two
    :data:`OWN_STEP` over their 3x3 neighbourhood: an antialiased rim blends two colours,
    the very blend a translucent mark laid over one of them makes."""
    return brightest(window_span(levels, (3, 3, 1))) <= 2 * OWN_STEP


def with_neighbours(cubes: np.ndarray) -> np.ndarray:
    """The keys of ``cubes`` (:func:`cube_keys`) and of the cubes about them. Kept as keys:
    the cubes widened on a dense grid took most of a comparison's time."""
    held = np.stack(np.unravel_index(cubes, OWN_CUBES), axis=-1)
    wide = np.clip(held[:, None, :] + NEIGHBOURS, 0, OWN_CUBES[0] - 1).reshape(-1, 3)
    return np.unique(np.ravel_multi_index(tuple(wide.T), OWN_CUBES))


def cube_keys(colours: np.ndarray) -> np.ndarray:
    """Per (n, 3) colour, the number of its cube of :data:`OWN_STEP` levels a channel."""
    cubes = (colours // OWN_STEP).astype(np.int64)
    return (cubes[:, 0] * OWN_CUBES[1] + cubes[:, 1]) * OWN_CUBES[2] + cubes[:, 2]


def relit(
    up: Image.Image, stored: Image.Image, diff: np.ndarray, differs: np.ndarray, side: int
) -> bool:
    """Whether the changed pixels of an edit (:func:`laid_over`) are parts of the stored
    picture lit or dimmed in the hue they have, each to its outline: a traffic light showing
    green is the drawing's other state, not the red one with something laid over; so is a
    glossy shape met in the other flip. A caption brings a colour of its own, and a
    translucent white or black one, which keeps the hue beneath, cuts across the parts it lies
    over (:data:`KEPT_MAX`)."""
    changing = changed(diff, differs, side)
    turns, coloured = hue_turns(opponent(up), opponent(stored))
    kept = coloured & (np.abs(turns) < HUE_KEPT)
    if kept[changing].mean() < KEPT_MAX:
        return False
    whole = wholly_changed(parts(stored), diff >= BLOCK_DIFF)
    return bool(whole[changing].mean() >= KEPT_MAX)


def part_recoloured(up: Image.Image, stored: Image.Image, differs: np.ndarray) -> float:
    """The share of the view (:data:`RECOLOURED_MAX`) given another colour at the same grey
    over parts of both views that it covers as a whole. A part recoloured keeps its outline
    and its grey in each; a caption is a part of the view that carries it alone and cuts
    across the parts of the other (the upload, or the stored copy of an uploaded original),
    and a translucent white box pales what it covers. The grey levels are fitted outside
    the edit's blocks (``differs``) and the colour changed: a gloss laid otherwise would
    tilt the fit."""
    added = colour_added(up, stored) | colour_added(stored, up)
    if not added.any():  # parts cost a quantize and a labelling each: not for nothing added
        return 0.0
    up_grey, st_grey = grey(up), grey(stored)
    outside = ~added & ~block_mask(differs, added.shape)
    apart = shifted_difference(fit(up_grey, st_grey, where=outside), st_grey)
    recoloured = added & (apart < BLOCK_DIFF)
    whole = wholly_changed(parts(up), recoloured) & wholly_changed(parts(stored), recoloured)
    return float((recoloured & whole).mean())


def wholly_changed(labels: np.ndarray, changing: np.ndarray) -> np.ndarray:
    """Per pixel, whether its part (``labels``, :func:`parts`) is ``changing`` over
    :data:`PART_CHANGED` of its pixels."""
    counts = np.maximum(np.bincount(labels.ravel()), 1)
    return (np.bincount(labels.ravel(), weights=changing.ravel()) / counts)[labels] >= PART_CHANGED


def changed(diff: np.ndarray, differs: np.ndarray, side: int) -> np.ndarray:
    """The pixels of the differing blocks that differ themselves (:data:`BLOCK_DIFF`)."""
    return block_mask(differs, (side, side)) & (diff >= BLOCK_DIFF)


def parts(image: Image.Image) -> np.ndarray:
    """Per pixel, the part of ``image`` it lies in, numbered from 1: a connected run of
    pixels of one of its :data:`PARTS` colours."""
    colours = np.asarray(image.quantize(PARTS), np.int32)
    labels = np.zeros(colours.shape, np.int32)
    for colour in np.unique(colours):
        found, _ = ndimage.label(colours == colour)
        labels[found > 0] = found[found > 0] + labels.max()
    return labels


def region(differs: np.ndarray) -> str:
    """Where the differing blocks lie, in words ("bottom right", "top", "centre"), from the
    centre of their bounding box; "several places" when they spread over most of it."""
    rows, cols = np.nonzero(differs)
    if np.ptp(rows) + 1 > GRID * 2 / 3 and np.ptp(cols) + 1 > GRID * 2 / 3:
        return "several places"
    third = GRID / 3
    vertical = REGIONS[0][min(2, int((rows.min() + rows.max() + 1) / 2 // third))]
    horizontal = REGIONS[1][min(2, int((cols.min() + cols.max() + 1) / 2 // third))]
    if (vertical, horizontal) == ("middle", "centre"):
        return "centre"
    return " ".join(w for w in (vertical, horizontal) if w not in ("middle", "centre"))
