"""Calibrate a rule of the pixel-grid test, or of an edit, on copies, never on the benchmark's
rows.

Draws files of a dataset at random, keeps those whose stored thumbnail is lossless (the ones
an upload of the file's own pixels, shrunk as thumbnails are, is held to the pixel against),
makes copies of each the common ways (JPEG or WebP kept as PNG, more or less saturation,
fewer colours, a brightening or a contrast, grey by each of verify.GREY_WAYS, a caption, a
logo, a translucent white box or a signature laid over) and verifies each against the
stored thumbnail as the grid test does, once with a constant of verify.py at its value and
once at ``--off``: the copies the rule loses (called a copy, or an edited one, without it
and another picture with it), by kind. With ``--pairs``, the pairs labelled sibling there
(docs/copy-pairs.tsv) that the rule takes, each way round.
Calibrate on one seed and check on another (docs/copy-detection.md, runs BI, BJ, BK and BL).

    python scripts/calibrate_grid_copies.py DATASET --seed 13 --constant LOCAL_MAX --off inf
    python scripts/calibrate_grid_copies.py DATASET --constant LOCAL_MAX --off inf \\
        --pairs docs/copy-pairs.tsv
"""

from __future__ import annotations

import argparse
import io
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageEnhance

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hibt.config import Settings  # noqa: E402
from hibt.indexer.copies import verify  # noqa: E402
from hibt.indexer.images import thumbnail_bytes, thumbnail_pixels  # noqa: E402

THUMBNAIL = Settings().thumbnail_size  # as the index keeps its thumbnails


def encoded(image: Image.Image, fmt: str, quality: int) -> Image.Image:
    """``image`` saved as ``fmt`` at ``quality`` and decoded: what is then kept as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def laid_over(draw: Callable[[ImageDraw.ImageDraw, int, int], None]) -> Callable:
    """A copy with something drawn over it by ``draw(canvas, width, height)``."""

    def copy(image: Image.Image) -> Image.Image:
        out = image.copy()
        draw(ImageDraw.Draw(out, "RGBA"), *out.size)
        return out

    return copy


def caption(canvas: ImageDraw.ImageDraw, w: int, h: int) -> None:
    canvas.rectangle((w * 0.6, h * 0.82, w * 0.97, h * 0.97), fill=(20, 20, 160, 170))
    canvas.text((w * 0.05, h * 0.05), "(c) reposted", fill=(200, 0, 0, 255))


def logo(canvas: ImageDraw.ImageDraw, w: int, h: int) -> None:
    canvas.ellipse((w * 0.7, h * 0.05, w * 0.95, h * 0.3), fill=(255, 140, 0, 255))


def white_box(canvas: ImageDraw.ImageDraw, w: int, h: int) -> None:
    canvas.rectangle((w * 0.05, h * 0.7, w * 0.6, h * 0.9), fill=(255, 255, 255, 160))
    canvas.text((w * 0.08, h * 0.75), "stock", fill=(0, 0, 0, 255))


def signature(canvas: ImageDraw.ImageDraw, w: int, h: int) -> None:
    line = [(w * 0.55, h * 0.9), (w * 0.7, h * 0.85), (w * 0.8, h * 0.93), (w * 0.95, h * 0.86)]
    canvas.line(line, fill=(0, 120, 255, 255), width=max(2, w // 60))


def made_grey(way: verify.GreyWay) -> Callable[[Image.Image], Image.Image]:
    return lambda image: verify.greyed(image, way)


COPIES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "as it is": lambda im: im,
    "JPEG 95": lambda im: encoded(im, "JPEG", 95),
    "JPEG 75": lambda im: encoded(im, "JPEG", 75),
    "JPEG 50": lambda im: encoded(im, "JPEG", 50),
    "JPEG 30": lambda im: encoded(im, "JPEG", 30),
    "WebP 75": lambda im: encoded(im, "WEBP", 75),
    "saturation 1.4": lambda im: ImageEnhance.Color(im).enhance(1.4),
    "saturation 0.6": lambda im: ImageEnhance.Color(im).enhance(0.6),
    "256 colours": lambda im: im.quantize(256).convert("RGB"),
    "64 colours": lambda im: im.quantize(64).convert("RGB"),
    "brightness 1.15": lambda im: ImageEnhance.Brightness(im).enhance(1.15),
    "contrast 1.2": lambda im: ImageEnhance.Contrast(im).enhance(1.2),
    **{
        f"grey, {name}": made_grey(way)
        for name, way in zip(("601", "709", "mean", "lightness"), verify.GREY_WAYS, strict=True)
    },
    "grey, 601, JPEG 30": lambda im: encoded(verify.greyed(im, verify.GREY_WAYS[0]), "JPEG", 30),
    **{
        f"grey, 601, {name}": lambda im, edit=edit: edit(verify.greyed(im, verify.GREY_WAYS[0]))
        for name, edit in (
            ("brightness 1.15", lambda im: ImageEnhance.Brightness(im).enhance(1.15)),
            ("contrast 1.2", lambda im: ImageEnhance.Contrast(im).enhance(1.2)),
            ("contrast 0.8", lambda im: ImageEnhance.Contrast(im).enhance(0.8)),
        )
    },
    "grey, 709, brightness 1.15": lambda im: ImageEnhance.Brightness(
        verify.greyed(im, verify.GREY_WAYS[1])
    ).enhance(1.15),
    **{
        name: laid_over(draw)
        for name, draw in (
            ("caption", caption),
            ("logo", logo),
            ("white box", white_box),
            ("signature", signature),
        )
    },
}


def load(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def on_its_grid(image: Image.Image) -> Image.Image | None:
    """The stored thumbnail of ``image`` where it is lossless, and so an upload of the file's
    pixels, shrunk as thumbnails are (``as_uploaded``), lies on it; else None."""
    shrunk = thumbnail_pixels(image, THUMBNAIL)
    stored = Image.open(io.BytesIO(thumbnail_bytes(image, THUMBNAIL))).convert("RGB")
    return stored if stored.tobytes() == shrunk.tobytes() else None


def as_uploaded(copy: Image.Image) -> Image.Image:
    """A lossless upload on the stored file's grid: shrunk as thumbnails are, as the engine
    shrinks it (grid.Grid); a copy edited before it was shrunk clipped what the thumbnail
    averaged."""
    return thumbnail_pixels(copy, THUMBNAIL)


def kinds(
    upload: Image.Image, stored: Image.Image, constant: str, off: float, at: float | None = None
) -> tuple[str, str]:
    """The verdict's kind on the grid with ``constant`` at ``off``, and at ``at`` (by default
    its value)."""
    value = getattr(verify, constant)
    found = []
    try:
        for setting in (off, value if at is None else at):
            setattr(verify, constant, setting)
            found.append(verify.verify(as_uploaded(upload), stored, True, stored).kind)
    finally:
        setattr(verify, constant, value)
    return found[0], found[1]


def copies_lost(
    files: list[Path], constant: str, off: float, at: float | None = None
) -> Iterator[tuple[str, Path | None, bool]]:
    """(kind of copy, the file, whether the rule lost a copy that passed without it: one
    called the same picture or an edit of it); a file whose copy did not pass without the
    rule comes with None."""
    for path in files:
        image = load(path)
        stored = on_its_grid(image)
        if stored is None:
            continue
        for name, copy in COPIES.items():
            without, with_rule = kinds(copy(image), stored, constant, off, at)
            passed = without != "different"
            yield name, path if passed else None, with_rule == "different"


def siblings_taken(
    dataset: Path, pairs: Path, constant: str, off: float, at: float | None = None
) -> Iterator[tuple[str, str, bool]]:
    """Each pair labelled sibling, both ways round, where the stored one lies on its grid
    and the other is its size: (upload, stored, whether the rule took it) where it passed
    without the rule."""
    for line in pairs.read_text().splitlines():
        fields = line.split("\t")
        if line.startswith("#") or len(fields) < 5 or fields[2] != "sibling":
            continue
        for first, second in ((fields[3], fields[4]), (fields[4], fields[3])):
            upload, original = load(dataset / first), load(dataset / second)
            stored = on_its_grid(original)
            if stored is None or upload.size != original.size:
                continue
            without, with_rule = kinds(upload, stored, constant, off, at)
            if without != "different":
                yield first, second, with_rule == "different"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="a folder of PNG files (searched deeply)")
    parser.add_argument("--seed", type=int, default=13, help="which files are drawn")
    parser.add_argument("--files", type=int, default=500, help="files drawn")
    parser.add_argument("--constant", default="LOCAL_MAX", help="a threshold of verify.py")
    parser.add_argument("--off", type=float, default=float("inf"), help="its value 'without'")
    parser.add_argument("--at", type=float, help="its value 'with' (by default as in verify.py)")
    parser.add_argument("--pairs", type=Path, help="labelled pairs, paths under DATASET")
    args = parser.parse_args()
    if not hasattr(verify, args.constant):
        parser.error(f"verify.py has no {args.constant}")
    files = sorted(args.dataset.rglob("*.png"))
    drawn = random.Random(args.seed).sample(files, min(args.files, len(files)))
    passed, lost = Counter(), Counter()
    for name, path, refused in copies_lost(drawn, args.constant, args.off, args.at):
        if path is not None:
            passed[name] += 1
            lost[name] += refused
            if refused:
                print(f"lost: {name}: {path.relative_to(args.dataset)}")
    at = getattr(verify, args.constant) if args.at is None else args.at
    print(f"copies of {len(drawn)} files drawn (seed {args.seed}), {args.constant} at {at}:")
    for name in COPIES:
        print(f"  {name:20s} {lost[name]:3d} lost of {passed[name]:3d} that passed without it")
    if args.pairs:
        found = list(siblings_taken(args.dataset, args.pairs, args.constant, args.off, args.at))
        for first, second, taken in found:
            if taken:
                print(f"taken: {first} as {second}")
        print(f"siblings: {sum(t for *_, t in found)} taken of {len(found)} that passed")


if __name__ == "__main__":
    main()
