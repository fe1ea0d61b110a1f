"""An upload as a build keeps a stored file, so that verify.py can hold the two to the pixel.

Not part of the stored views (views.py): what changes here changes no index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from PIL import Image

from hibt.indexer.copies.views import Scene


@dataclass
class Grid:
    """An upload as a build keeps a stored file: a lossless file's pixels, decoded as the build
    decodes and shrunk as its thumbnail is (images.thumbnail_pixels). A stored file of its
    size, kept losslessly, lies on that pixel grid, and so does any that was not shrunk
    either when this was not: verify.py holds the two to the pixel."""

    image: Image.Image  # the upload so shrunk
    size: tuple[int, int]  # the upload file's, in pixels
    # The upload decoded and shrunk as the file flipped or turned would be, where a flip of
    # ``image`` is not that (a reduction that left a remainder: images.LoadedImage.turns_kept);
    # None when it is.
    decode_turned: Callable[[Image.Transpose], Image.Image] | None = None
    turns: dict[Image.Transpose, Image.Image] = field(default_factory=dict, repr=False)

    def under(self, transpose: Image.Transpose | None) -> Image.Image:
        """The upload as a stored file that is it flipped or turned so would be kept."""
        if transpose is None:
            return self.image
        if self.decode_turned is None:
            return self.image.transpose(transpose)
        if transpose not in self.turns:
            self.turns[transpose] = self.decode_turned(transpose)
        return self.turns[transpose]

    @cached_property
    def scene(self) -> Scene:
        """Cut only when a candidate lies on the grid: framing costs milliseconds."""
        return Scene.of(self.image)

    def own_pixels(self, thumbnail: tuple[int, int], stored: tuple[int, int]) -> bool:
        """Whether this upload and a stored file of size ``stored`` kept at ``thumbnail`` are
        both their files' own pixels: neither shrunk."""
        return self.image.size == self.size and thumbnail == stored

    def meets(self, thumbnail: tuple[int, int], stored: tuple[int, int]) -> bool:
        """Whether a stored file of size ``stored``, with a lossless thumbnail of size
        ``thumbnail``, lies on this grid."""
        shrunk = self.image.size
        if self.own_pixels(thumbnail, stored):
            return True  # two trims of one picture meet as well
        return stored in (self.size, self.size[::-1]) and thumbnail in (shrunk, shrunk[::-1])

    def inside(self, thumbnail: tuple[int, int], stored: tuple[int, int]) -> bool:
        """Whether this upload, its file's own pixels, fits inside a stored file of size
        ``stored`` kept losslessly at that size (``thumbnail``), flipped or turned or not, and
        is smaller: a crop of that file would lie on its pixel grid."""
        if not self.own_pixels(thumbnail, stored):
            return False
        w, h = self.size
        fits = [(w <= sw and h <= sh) for sw, sh in (stored, stored[::-1])]
        return any(fits) and stored not in (self.size, self.size[::-1])
