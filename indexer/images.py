"""Opening untrusted image files safely, the same way at build time and at query time.

Both sides go through :func:`load_image`, so an uploaded copy of an indexed file is decoded,
composited and shrunk exactly as the indexed file was, and gets the same embedding.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, UnidentifiedImageError

from hibt.errors import BadImage

# Pillow's own bomb check is replaced by an explicit pixel limit checked before decoding.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass
class LoadedImage:
    image: Image.Image  # RGB, at most ``working_size`` on its longest side
    width: int  # of the original file
    height: int
    format: str


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
    return image.convert("RGB")


def decode(data: bytes, max_pixels: int, working_size: int) -> LoadedImage:
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
            image.draft("RGB", (working_size, working_size))  # JPEG: decode at reduced size
            image.load()
            image = flatten(image)
    except BadImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise BadImage("not_image", "not a recognised image file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImage("corrupt", f"corrupt or truncated image ({exc})") from None
    if max(image.size) > working_size:
        image.thumbnail((working_size, working_size), Image.Resampling.BICUBIC)
    return LoadedImage(image=image, width=width, height=height, format=fmt)


def load_image(
    ref: Path | bytes, max_pixels: int, max_bytes: int, working_size: int
) -> LoadedImage:
    """Decode a path or bytes, or raise :class:`BadImage` with the reason."""
    return decode(read_bytes(ref, max_bytes), max_pixels, working_size)


def thumbnail_jpeg(image: Image.Image, size: int, quality: int = 80) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()
