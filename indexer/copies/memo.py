"""What a comparison keeps between candidates, keyed by an image's pixels.

Verification (verify.py) makes the upload's views anew for every candidate, with the same
pixels, and a family of siblings would pay for their sizes, colours and fills many times
over: a function of an image is kept for its last calls, by the image's mode, size and
pixels, read out once per image object.
"""

from __future__ import annotations

import functools
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from PIL import Image

KEYS_KEPT = 64  # images whose pixel keys are kept (each memo a comparison reads keys a view)
Kept = TypeVar("Kept")


def kept_by_pixels(calls: int) -> Callable[[Callable[..., Kept]], Callable[..., Kept]]:
    """A function of an image (and hashable arguments) kept for its last ``calls``, by the
    image's pixels. What it returns is shared: read-only arrays, images not to be changed
    in place."""

    def keep(function: Callable[..., Kept]) -> Callable[..., Kept]:
        @functools.lru_cache(maxsize=calls)
        def by_key(image: Keyed, *args: object) -> Kept:
            return function(image.value, *args)

        @functools.wraps(function)
        def call(image: Image.Image, *args: object) -> Kept:
            return by_key(Keyed(image), *args)

        call.cache_clear = by_key.cache_clear  # type: ignore[attr-defined]
        return call

    return keep


class Keyed:
    """A memo key: an image by its pixels, anything else (the upload's Grid) by identity,
    held while the key is."""

    def __init__(self, value: object) -> None:
        self.value = value
        self.key = pixel_key(value) if isinstance(value, Image.Image) else id(value)
        self.hash = hash(self.key)

    def __hash__(self) -> int:
        return self.hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keyed) and self.key == other.key


# The pixel keys of the last KEYS_KEPT images keyed, by identity, each dropped when its image
# is (a weak reference's callback, so that an object made later at the same address is not
# taken for it, and a dead image's pixels are not held): reading the pixels out was most of a
# key's cost.
_pixel_keys: OrderedDict[int, tuple[weakref.ref, tuple]] = OrderedDict()


def pixel_key(image: Image.Image) -> tuple:
    """``image``'s mode, size and pixels, read once per image object while it is kept."""
    known = _pixel_keys.get(id(image))
    if known is not None and known[0]() is image:
        _pixel_keys.move_to_end(id(image))
        return known[1]
    key, at = (image.mode, image.size, image.tobytes()), id(image)
    _pixel_keys[at] = (weakref.ref(image, lambda _: _pixel_keys.pop(at, None)), key)
    if len(_pixel_keys) > KEYS_KEPT:
        _pixel_keys.popitem(last=False)
    return key


def forget_keys() -> None:
    """Drops every pixel key kept."""
    _pixel_keys.clear()
