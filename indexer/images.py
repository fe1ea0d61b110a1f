"""Opening untrusted image files safely, the same way at build time and at query time.

Both sides go through :func:`load_image`, so an uploaded copy of an indexed file is decoded,
composited and shrunk exactly as the indexed file was, and gets the same embedding.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from hibt.errors import BadImage

# What decode() makes of a file: 2 reduces to least_side (1 kept up to working_size); 3 keeps
# a drawing's thumbnail lossless (thumbnail_bytes). A build key holds it, so an index is never
# resumed or reused across a change of pixels.
DECODE_VERSION = 3
# A thumbnail is kept lossless (WebP) when that costs at most this many times its JPEG: true of
# 96% of Openclipart's drawings (median 0.8x), never of a photo (about 7x).
LOSSLESS_MAX_RATIO = 3.0

# Formats whose decoded pixels are the picture's own (copy verification holds such an upload
# to the pixel: residual.off_grid). GIF is left out: a palette often dithers a drawing.
LOSSLESS_FORMATS = frozenset({"PNG", "BMP", "TIFF"})
# Pillow's own bomb check is replaced by an explicit pixel limit checked before decoding.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class LoadedImage:
    # RGB, at most ``working_size`` on its longest side, and reduced by a whole factor while
    # its shortest side stays at least ``least`` (see least_side)
    image: Image.Image
    width: int  # of the original file
    height: int
    format: str
    reduction: int = 1  # the whole factor it was reduced by (reduced)

    @property
    def lossless(self) -> bool:
        """Whether ``image`` holds the file's own pixels, reduced or shrunk alone."""
        return self.format in LOSSLESS_FORMATS

    @property
    def turns_kept(self) -> bool:
        """Whether a flip or turn of the file decodes to that flip or turn of ``image``: the
        reduction's boxes tile the file exactly (533 px halved leaves a column of one)."""
        return self.width % self.reduction == 0 and self.height % self.reduction == 0


def read_bytes(ref: Path | bytes, max_bytes: int) -> bytes:
    if isinstance(ref, bytes):
        data = ref
    else:
        try:
            size = ref.stat().st_size
            if size > max_bytes:
                raise BadImage("too_large", f"file is {size} bytes, over the limit of {max_bytes}")
            data = ref.read_bytes()
        except OSError as exc:
            raise BadImage("corrupt", f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise BadImage("corrupt", "empty file")
    if len(data) > max_bytes:
        raise BadImage("too_large", f"file is {len(data)} bytes, over the limit of {max_bytes}")
    return data


def flatten(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited on white (clip art is drawn on white)."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    return image if image.mode == "RGB" else image.convert("RGB")


def upright(image: Image.Image) -> Image.Image:
    """The picture as viewers show it: turned by its EXIF orientation (a phone photo is
    stored on its side), so it matches the same picture saved upright."""
    try:
        turned = image.getexif().get(ExifTags.Base.Orientation, 1) in (2, 3, 4, 5, 6, 7, 8)
    except Exception:  # a damaged EXIF block (struct.error and the like) is no picture's fault
        return image
    return ImageOps.exif_transpose(image) if turned else image


class MemoryBudget:
    """Bytes of full-size pixels that decodes may hold at once. A small file can decode to a
    large image (a 143 KB PNG of 7000x7000 pixels holds 196 MB of them): each decode waits
    until its estimate fits, so a burst of such uploads takes the budget, not memory times
    the number of requests. One image over the whole budget still runs, alone."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.held = max_bytes, 0
        self.cond = threading.Condition()

    def __reduce__(self) -> tuple:
        """Another process (server/verifiers.py) gets a budget of its own, of the same size:
        what one process holds is not another's to wait on."""
        return MemoryBudget, (self.max_bytes,)

    @contextmanager
    def hold(self, cost: int) -> Iterator[None]:
        cost = min(cost, self.max_bytes)
        with self.cond:
            self.cond.wait_for(lambda: self.held + cost <= self.max_bytes)
            self.held += cost
        try:
            yield
        finally:
            with self.cond:
                self.held -= cost
                self.cond.notify_all()
            if cost >= BIG_DECODE:
                release_memory()


BIG_DECODE = 32 << 20


def decode_cost(image: Image.Image) -> int:
    """Bytes a decode holds at its peak: Pillow keeps 4 bytes a pixel for RGB, and any
    other mode is converted (and alpha composited) through two more full-size copies."""
    width, height = image.size
    return width * height * 4 * (1 if image.mode == "RGB" else 3)


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_memory() -> None:
    """Give freed heap back to the system. glibc keeps the freed blocks of a large decode
    in its per-thread arenas (they are below its raised mmap threshold), so after a burst
    of big uploads the process would stay gigabytes larger; malloc_trim returns them.
    Elsewhere (musl, macOS) there is nothing to do."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def least_side(model_image_size: int, thumbnail_size: int) -> int:
    """The shortest side an image is decoded down to: what the model's input (its shortest
    side), the fingerprints' base (copies.views.HASH_BASE) and the thumbnail need, no more.
    A 1600 px JPEG decoded at a quarter of its size in the DCT (draft) costs a tenth of a
    full decode, and every later resize starts from 400 px instead of 1024."""
    from hibt.indexer.copies.views import HASH_BASE

    return max(model_image_size, HASH_BASE, thumbnail_size)


def reduction(size: tuple[int, int], least: int) -> int:
    """The largest whole factor that keeps the shortest side at least ``least``; 1 for none."""
    return max(1, min(size) // least) if least else 1


def reduced(image: Image.Image, factor: int) -> Image.Image:
    """``image`` shrunk by ``factor`` (Image.reduce: a box average, cheap and exact in its
    weights)."""
    return image.reduce(factor) if factor >= 2 else image


def decode(
    data: bytes,
    max_pixels: int,
    working_size: int,
    budget: MemoryBudget | None = None,
    least: int = 0,
    transpose: Image.Transpose | None = None,
) -> LoadedImage:
    """``least``: reduce the image while its shortest side stays at least this (JPEG: in
    the decoder, at 1/2, 1/4 or 1/8; other formats after decoding); 0 keeps it up to
    ``working_size``. Build and query pass the same value (least_side), so an upload is
    decoded as its indexed original was. ``transpose``: decoded as the file flipped or
    turned so would be (a reduction that leaves a remainder does not commute with it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(
                    "too_large",
                    f"image is {width}x{height} pixels, over the limit of {max_pixels} pixels",
                )
            if width < 1 or height < 1:
                raise BadImage("corrupt", "image has no pixels")
            fmt = image.format or "unknown"
            target = least or working_size
            image.draft("RGB", (target, target))  # JPEG: decode at reduced size
            cost = decode_cost(image)
            with budget.hold(cost) if budget else nullcontext():
                image.load()
                image = flatten(upright(image))
                if transpose is not None:
                    image = image.transpose(transpose)
                factor = reduction(image.size, least)
                image = reduced(image, factor)
                if max(image.size) > working_size:
                    image.thumbnail((working_size, working_size), Image.Resampling.BICUBIC)
            if budget is None and cost >= BIG_DECODE:
                release_memory()  # a decoder process keeps no 40 MP image's heap (as hold())
    except BadImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise BadImage("not_image", "not a recognised image file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImage("corrupt", f"corrupt or truncated image ({exc})") from None
    return LoadedImage(image=image, width=width, height=height, format=fmt, reduction=factor)


def load_image(
    ref: Path | bytes, max_pixels: int, max_bytes: int, working_size: int, least: int = 0
) -> LoadedImage:
    """Decode a path or bytes, or raise :class:`BadImage` with the reason."""
    return decode(read_bytes(ref, max_bytes), max_pixels, working_size, least=least)


def thumbnail_bytes(image: Image.Image, size: int, quality: int = 80) -> bytes:
    """The stored thumbnail: lossless WebP for a drawing, JPEG for a photo. Copy verification
    compares an upload with it pixel by pixel, and JPEG's ringing around thin lines is as
    large as the difference between two generated stars (docs/copy-detection.md)."""
    thumb = thumbnail_pixels(image, size)
    jpeg, lossless = io.BytesIO(), io.BytesIO()
    thumb.save(jpeg, format="JPEG", quality=quality, optimize=True)
    thumb.save(lossless, format="WEBP", lossless=True, method=1, quality=0)
    if lossless.tell() <= LOSSLESS_MAX_RATIO * jpeg.tell():
        return lossless.getvalue()
    return jpeg.getvalue()


def thumbnail_pixels(image: Image.Image, size: int) -> Image.Image:
    """``image`` shrunk to fit ``size`` as a stored thumbnail is: an upload shrunk so from a
    file of the stored file's size lies on its thumbnail's pixel grid (copies.grid.Grid)."""
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
    return thumb


@dataclass(frozen=True)
class Redecode:
    """An upload's file and how it is decoded: as the build decodes a stored file
    (:meth:`decoded`), and, called, again as the stored file flipped or turned so would be,
    shrunk as its thumbnail (grid.Grid.decode_turned). A verifier process can be sent it
    (server/verifiers.py), as a closure over the engine could not; kept here, not in the
    engine, so that a verifier that unpickles it imports no torch."""

    data: bytes
    max_pixels: int
    working_size: int
    least: int
    thumbnail_size: int

    def __call__(self, budget: MemoryBudget, transpose: Image.Transpose) -> Image.Image:
        return thumbnail_pixels(self.decoded(budget, transpose).image, self.thumbnail_size)

    def decoded(
        self, budget: MemoryBudget, transpose: Image.Transpose | None = None
    ) -> LoadedImage:
        return decode(self.data, self.max_pixels, self.working_size, budget, self.least, transpose)
