"""The catalogue of views: every picture a stored image or an upload is fingerprinted as.

A stored image keeps a few views (:data:`INDEX_VIEWS`: centre crops, the picture trimmed of
its frame, the whole image brightened); an upload is tried in many more
(:data:`QUERY_VIEWS`: mirrored and turned a quarter, as is and trimmed, centre crops, small
turns undone, and the upload uncut when its picture was cut out of a frame). Matching
(matching.py) reads what a view is only through the flags here, never through its
position, so a view added to a catalogue changes no other module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from hibt.indexer.copies.framing import Box, cut, picture, trim_borders, trimmed_at_size

HASH_BASE = 256  # views are cut from a copy this size: fast, and the DCT needs only 64x64
# Centre crops kept per stored image, as fractions of each side: steps of 0.1, so a crop of
# any size is within 0.05 of one of them.
CROPS = (1.0, 0.9, 0.8, 0.7, 0.6)
QUERY_CROPS = (0.8, 0.6)  # centre crops of an upload: a logo in a corner does not hide it
SMALL_ROTATIONS = (-5, 5)
# Gain of the brightened view: every level from 255 / 1.12 (228) up turns white, as in a
# copy whose brightness or exposure was raised by about 1.1 to 1.2.
BRIGHTEN_GAIN = 1.12
_BRIGHTEN_TABLE = [min(255, round(v * BRIGHTEN_GAIN)) for v in range(256)]

T = Image.Transpose
# The ways an upload is laid on the stored pictures, and whether each turns the picture (a
# left-right mirror does not: a mirrored crop is a common repost, a turned crop is not looked
# for). Reposts are mirrored, or turned a quarter either way (a photo whose orientation tag
# was lost); upside down, flipped top to bottom or mirrored and turned, a picture is far more
# often a sibling drawn so (an arrow down for one up, Poland for Indonesia): not looked for.
ORIENTATIONS: tuple[tuple[str, T | None, bool], ...] = (
    ("as is", None, False),
    ("mirrored", T.FLIP_LEFT_RIGHT, False),
    ("turned 90", T.ROTATE_90, True),
    ("turned 270", T.ROTATE_270, True),
)


@dataclass
class Scene:
    """What every view of one image is cut from."""

    uncut: Image.Image  # the image shrunk to HASH_BASE
    picture: Image.Image  # the picture in it (window chrome cut away)
    box: Box | None  # the box inside the picture's own flat frame
    # The picture inside that frame cut from the image at its own size (framing.
    # trimmed_at_size), where the image is larger and no chrome was cut away.
    fine: Image.Image | None = None

    @classmethod
    def of(cls, image: Image.Image) -> Scene:
        uncut = hash_base(image)
        inner, box = picture(uncut)
        framed = box is not None and box != (0, 0, uncut.height, uncut.width)
        larger = image.size != uncut.size and inner is uncut and framed
        return cls(uncut, inner, box, trimmed_at_size(image, uncut, box) if larger else None)

    @cached_property
    def trimmed(self) -> Image.Image:
        return self.fine if self.fine is not None else cut(self.picture, self.box)

    @property
    def was_cut(self) -> bool:
        """The picture was cut out of what looked like window chrome or a mount."""
        return self.picture.size != self.uncut.size


@dataclass(frozen=True)
class View:
    name: str
    make: Callable[[Scene], Image.Image]
    whole: bool = False  # the whole picture, as is or trimmed: only these pairs can be exact
    crop: bool = False  # a centre crop of a stored image
    turned: bool = False  # turned a quarter, or by a few degrees
    brightened: bool = False
    # The upload uncut, present only when its picture was cut out of a frame: it may claim
    # an item only as a stored crop, and only from the uncut similarity up.
    strict: bool = False
    banded: bool = True  # compared in the DCT band its size holds (uploads only)
    # Made of the picture's pixels by a flip or turn alone, with no resampling and no cut at
    # a fixed place: such a view of a copy lies on the stored picture's own pixel grid.
    lossless: bool = False
    # The share of each side of its picture that a centre crop keeps (1.0: the whole picture
    # as it is); None for any other view. Verification widens a pair of crops by it.
    kept: float | None = None


def hash_base(image: Image.Image) -> Image.Image:
    base = image.convert("RGB")
    if max(base.size) > HASH_BASE:
        base = base.copy()
        base.thumbnail((HASH_BASE, HASH_BASE), Image.Resampling.BILINEAR)
    return base


def centre_crop(image: Image.Image, fraction: float) -> Image.Image:
    if fraction >= 1.0:
        return image
    w, h = image.size
    cw, ch = max(1, round(w * fraction)), max(1, round(h * fraction))
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def brightened(image: Image.Image) -> Image.Image:
    """``image`` with every level scaled by :data:`BRIGHTEN_GAIN`, the top ones clipped to
    white. Scaling alone leaves the descriptor as it was (it is contrast-free); the clipping
    is what a brightened copy shares with this view and not with the original: its palest
    lines are gone, and what is left weighs more."""
    return image.point(_BRIGHTEN_TABLE * len(image.getbands()))


def transposed(image: Image.Image, op: T | None) -> Image.Image:
    return image if op is None else image.transpose(op)


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


def turned_trimmed(trimmed: Image.Image, angle: float) -> Image.Image:
    """The trimmed picture turned, its new corners filled with its own corner colour and
    trimmed again: a turned copy of a picture on a flat ground."""
    corner = trimmed.getpixel((0, 0))
    turned = trimmed.rotate(angle, Image.Resampling.BILINEAR, expand=True, fillcolor=corner)
    return trim_borders(turned)


INDEX_VIEWS: tuple[View, ...] = (
    *(
        View(
            "whole" if f == 1.0 else f"crop {f:.0%}",
            lambda s, f=f: centre_crop(s.uncut, f),
            whole=f == 1.0,
            crop=f < 1.0,
            banded=False,
            kept=f,
        )
        for f in CROPS
    ),
    View("trimmed", lambda s: s.trimmed, whole=True, banded=False),
    View("brightened", lambda s: brightened(s.uncut), brightened=True, banded=False),
)

QUERY_VIEWS: tuple[View, ...] = (
    *(
        View(
            name,
            lambda s, op=op: transposed(s.picture, op),
            whole=op is None,
            turned=turn,
            lossless=True,
            kept=1.0 if op is None else None,
        )
        for name, op, turn in ORIENTATIONS
    ),
    *(
        View(
            f"trimmed {name}",
            lambda s, op=op: transposed(s.trimmed, op),
            whole=op is None,
            turned=turn,
            lossless=True,
        )
        for name, op, turn in ORIENTATIONS
    ),
    *(View(f"crop {f:.0%}", lambda s, f=f: centre_crop(s.picture, f), kept=f) for f in QUERY_CROPS),
    *(
        View(f"turn {a} undone", lambda s, a=a: unrotate(s.picture, a), turned=True)
        for a in SMALL_ROTATIONS
    ),
    *(
        View(f"trimmed turn {a}", lambda s, a=a: turned_trimmed(s.trimmed, a), turned=True)
        for a in SMALL_ROTATIONS
    ),
    View("uncut", lambda s: s.uncut, strict=True),
)


def views_of(scene: Scene, catalogue: tuple[View, ...]) -> list[View]:
    """The catalogue's views that this image has: the uncut view only when it differs."""
    return [v for v in catalogue if not v.strict or scene.was_cut]


def query_views(image: Image.Image) -> list[Image.Image]:
    """The pictures an upload is tried as, in :data:`QUERY_VIEWS` order."""
    scene = Scene.of(image)
    return [v.make(scene) for v in views_of(scene, QUERY_VIEWS)]


def flagged(catalogue: tuple[View, ...], flag: str) -> np.ndarray:
    """Positions of the views with ``flag`` set, to test stored or query view numbers."""
    return np.array([i for i, v in enumerate(catalogue) if getattr(v, flag)], dtype=np.int64)


def position(catalogue: Sequence[View], name: str) -> int:
    return next(i for i, v in enumerate(catalogue) if v.name == name)


INDEX_VARIANTS = len(INDEX_VIEWS)
QUERY_TRIMMED_VIEW = position(QUERY_VIEWS, "trimmed as is")
