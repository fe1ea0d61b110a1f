"""Rival candidates: an upload copies one picture, not several that differ from each other.

Verification (verify.py) holds each candidate to the upload alone, and passes anything within
the noise of a resized, recompressed or cropped copy. Openclipart's generated stars (a ring of
59 thin spokes, of 64, of 71...) differ from each other by less than that noise, so an upload
of one passed as a copy of dozens. Here the candidates are weighed against each other, as a
ratio test weighs a feature's best match against its second (Lowe, SIFT):

* the closest candidate that passed (by ``Verdict.distance``; one verified the same picture
  before one verified edited, unless the edit left the two one picture everywhere else:
  :func:`standing`) is the best;
* any candidate of another picture within ``RIVAL_RATIO`` times its distance (a passed one or
  one verification turned down) is a rival: the upload is as close to two pictures that are
  not one, and nothing tells which, if either, it copies. No copy is claimed; the candidates
  are shown as look-alikes, and the verdict says the upload cannot be told apart. Not one
  turned down for its colour: the distance is of grey levels, and the colour told them
  apart (a white card and a cream one lie close in grey); nor one turned down for a part
  apart as a whole, which a mean over the ink hardly weighs (a stick man's finger raised
  where his sibling's points aside);
* where the best is a coloured picture that a grey upload passed (``Verdict.grey``), any other
  such picture that passed is a rival however far: each was made grey the way that fits it
  best, so their distances say nothing of colour, and a grey arrow is as much a copy of the
  red arrow as of the blue one. A coloured upload against grey pictures is not held so: they
  differ from each other in grey, where it can be seen;
* where the best is a grey picture that a coloured upload passed once made grey
  (``Verdict.upload_greyed``), a candidate in another colour that the grey picture itself
  passes as a greyscale copy of is a rival: the grey picture may be a greyscale copy of the
  upload, or of that candidate, and only the colour it lost would tell (a blue LED against
  the grey one of a set of LEDs that differ in colour alone);
* in a dense family, where ``DENSE_FAMILY`` other pictures or more passed as the same
  picture, a candidate of another picture within ``DENSE_RATIO`` times the best's distance
  is a rival: the more pictures pass, the likelier one of them lies near the upload by
  chance (a centre crop of a thin-spoked star is nearer a sibling star at 0.9 levels than
  a dozen others at 3.6 and more, and is none of them). Not where the best passed on the
  upload's pixel grid: the pixels decided;
* otherwise the best is the copy, with the candidates that are the same picture as it (the
  same file, or stored thumbnails that verify as the same picture within ``SAME_PICTURE``,
  as they are or one flipped or turned: a drawing kept mirrored in another file is a copy of
  it, and no rival).
* but where the best lies further from the upload than a copy does (``COPY_MEAN_MAX``, of
  ``Verdict.distance``), nothing is a copy: a sibling can pass every local test, each part
  within a resized or recompressed copy's noise, and lie apart in all of them at once (the
  moon at another phase, a pen line of another width), and so where it lies further apart
  in one place than a copy's noise reaches (``COPY_LOCAL_MAX``, of ``Verdict.local``).
  Files of the best's picture are claimed with it however far: they are what it is.

A lossless upload of a star meets its own thumbnail (lossless: images.thumbnail_bytes) at a
distance near 0 and keeps its copy; the same star halved or at JPEG 30 meets a dozen siblings
as closely as itself and is answered as undecided. Calibration: docs/copy-detection.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from hibt.indexer.copies.residual import DIHEDRAL, dihedral
from hibt.indexer.copies.verify import (
    COLOUR,
    PART,
    RANK,
    Verdict,
    aspect_differs,
    edit_order,
    small_grey,
    verify,
)

# A candidate of another picture within this many times the best's distance is a rival.
RIVAL_RATIO = 2.0
# Where this many other pictures passed as the same picture, the family is dense, and a
# candidate of another picture within DENSE_RATIO times the best's distance is a rival
# (calibrated: docs/copy-detection.md, run BG).
DENSE_FAMILY = 4
DENSE_RATIO = 10.0
# Two stored thumbnails whose verified distance is under this are one picture (0-255 levels).
SAME_PICTURE = 0.5
# Where the best candidate lies past this distance (Verdict.distance, grey levels over the
# ink), nothing is a copy: 99.4% of the copies of 300 originals under the benchmark's 15
# transformations lie within it (scripts/calibrate_copy_distance.py; docs/copy-detection.md,
# run BO).
COPY_MEAN_MAX = 8.0
# Where the best passed as the same picture but lies further than this in its one place
# furthest apart (Verdict.local: the mean over a window an eighth of the view wide), nothing
# is a copy: 99.4% of the same copies lie within it (docs/copy-detection.md, run BP).
COPY_LOCAL_MAX = 17.0
# At most this many passed candidates beyond the rivals' reach are checked for being the best's
# picture (each check compares two thumbnails); the rest stay look-alikes.
SAME_CHECKS = 8
PASSED = ("same", "edited")
# A flip or turn of one stored thumbnail is verified against another only where it lies
# under this share of the way the thumbnail as it is lies (rivals.closest_turn).
TURN_NEARER = 0.5


@dataclass(frozen=True)
class Checked:
    """A candidate after verification."""

    idx: int
    sha256: str
    verdict: Verdict


@dataclass(frozen=True)
class Settled:
    copies: set[int]  # the candidates whose copy claim stands
    rivals: int = 0  # when none stands for rivals: the files within reach, the best's included


def settle(
    checked: list[Checked],
    same_picture: Callable[[int, int], bool],
    grey_copy: Callable[[int, int], bool] = lambda grey, coloured: False,
) -> Settled:
    """Which of the ``checked`` candidates are copies; ``same_picture(a, b)`` tells whether
    two stored items show one picture, ``grey_copy(a, b)`` whether the grey item ``a``
    passes as a greyscale copy of ``b`` (each called only for the few that need it)."""
    passed = sorted(
        (c for c in checked if c.verdict.kind in PASSED),
        key=lambda c: (*standing(c.verdict), c.idx),
    )
    if not passed:
        return Settled(set())
    best = passed[0]
    if best.verdict.distance > COPY_MEAN_MAX or best.verdict.local > COPY_LOCAL_MAX:
        return Settled(set())
    reach = RIVAL_RATIO * best.verdict.distance
    # An edited candidate's distance leaves out the region where it differs from the upload;
    # against a best that differs nowhere it is no rival (a smiley re-encoded met its sibling
    # with another mouth as "edited", closer outside the mouth than itself).
    weaker = {"edited"} if best.verdict.kind == "same" else set()
    # Where the best passed on the upload's pixel grid, a candidate that failed there is told
    # apart by the pixels themselves, however close its other figures (a turned arrow held
    # against the arrow it is and the one it is turned to).
    pixels = best.verdict.held and best.verdict.kind == "same"

    def rival(c: Checked) -> bool:
        told = c.verdict.kind == "different" and (
            (pixels and c.verdict.held) or c.verdict.region in (COLOUR, PART)
        )
        grey = best.verdict.grey and c.verdict.grey and c.verdict.kind in PASSED
        near = c.verdict.distance <= reach or grey
        return near and c.verdict.kind not in weaker and not told

    @functools.cache
    def same(c: Checked) -> bool:
        return c.idx == best.idx or c.sha256 == best.sha256 or same_picture(best.idx, c.idx)

    near = sorted(
        (c for c in checked if c is not best and rival(c)), key=lambda c: c.verdict.distance
    )
    if any(not same(c) for c in near):  # stops at the first rival
        return Settled(set(), rivals=len({best.sha256} | {c.sha256 for c in near}))
    family = [c for c in checked if c.verdict.kind == "same" and c.sha256 != best.sha256]
    if not pixels and crowded(family, best.verdict.distance, same):
        return Settled(set(), rivals=len({best.sha256} | {c.sha256 for c in family}))
    if best.verdict.upload_greyed:
        down = [c for c in checked if c.verdict.kind == "different" and c.sha256 != best.sha256]
        coloured = {c.sha256 for c in down[:SAME_CHECKS] if grey_copy(best.idx, c.idx)}
        if coloured:
            return Settled(set(), rivals=len({best.sha256} | coloured))
    beyond = [c for c in passed[1:] if c.verdict.distance > reach][:SAME_CHECKS]
    return Settled(
        {best.idx} | {c.idx for c in near + beyond if c.verdict.kind in PASSED and same(c)}
    )


def crowded(family: list[Checked], distance: float, same: Callable[[Checked], bool]) -> bool:
    """Whether the best, at ``distance``, stands in a dense ``family`` (the candidates of
    other files that passed as the same picture): :data:`DENSE_FAMILY` pictures or more, and
    one not the best's picture within :data:`DENSE_RATIO` times its distance."""
    if len({c.sha256 for c in family}) < DENSE_FAMILY:
        return False
    near = sorted(
        (c for c in family if c.verdict.distance < DENSE_RATIO * distance),
        key=lambda c: c.verdict.distance,
    )
    return any(not same(c) for c in near)  # stops at the first other picture


def standing(verdict: Verdict) -> tuple[int, float]:
    """The order passed candidates are weighed in for the best: the same picture before an
    edit (verify.edit_order), but an edit that leaves the upload one picture with the
    candidate everywhere else (under ``SAME_PICTURE``, as two files of one drawing) stands
    with the same pictures, by its distance: a captioned star is its own thumbnail, edited,
    before a sibling star that passed as the same picture on the upload's centre crop alone,
    where no caption lies (docs/copy-detection.md, run AM)."""
    if verdict.kind == "edited" and verdict.distance < SAME_PICTURE:
        return RANK["same"], verdict.distance
    return edit_order(verdict)


def grey_copy(grey: Image.Image, coloured: Image.Image) -> bool:
    """Whether a stored grey thumbnail passes as a greyscale copy of a coloured one."""
    verdict = verify(grey, coloured, fine=True)
    return verdict.kind == "same" and verdict.grey


def same_picture(first: Image.Image, second: Image.Image) -> bool:
    """Whether two stored thumbnails show one picture: verified as the same, and as close as
    two files of one drawing (another size, another encoding) come, as they are or with the
    first under a flip or turn that brings it nearer the second (:func:`closest_turn`). A
    drawing kept mirrored or turned in another file is a copy of it by a copier's flip, and
    an upload of either is a copy of both, not undecided."""
    if one_picture(first, second):
        return True
    turn = closest_turn(first, second)
    return turn is not None and one_picture(first.transpose(turn), second)


def one_picture(first: Image.Image, second: Image.Image) -> bool:
    verdict = verify(first, second, fine=True, within=SAME_PICTURE)
    return verdict.kind == "same" and verdict.distance < SAME_PICTURE


def closest_turn(first: Image.Image, second: Image.Image) -> Image.Transpose | None:
    """The flip or turn (residual.DIHEDRAL) of ``first`` whose grey at 48 px lies nearest
    ``second``'s, of those that keep its shape, where it lies under :data:`TURN_NEARER` of
    the way ``first`` as it is lies: a picture no flip brings nearer (a symmetric star, a
    sibling) costs no second verification, and a family of rivals makes many checks."""
    target, small = small_grey(second), small_grey(first)
    (w, h), size = first.size, second.size
    shapes = (aspect_differs((w, h), size), aspect_differs((h, w), size))  # as it is, turned
    apart = {
        k: float(np.abs(turned - target).mean())
        for k, turned in enumerate(dihedral(small))
        if not shapes[k % 2]
    }
    k = min(apart, key=apart.get, default=0)
    return DIHEDRAL[k] if k and apart[k] < TURN_NEARER * apart.get(0, np.inf) else None
