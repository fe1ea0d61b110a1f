"""Untrusted files: every bad input is refused with a reason, never a crash."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hibt.errors import BadImage
from hibt.indexer.images import decode, least_side, load_image
from tests.datagen import BROKEN, drawing

LIMITS = {"max_pixels": 50_000_000, "working_size": 1024}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("broken/empty.png", "empty"),
        ("broken/not-an-image.jpg", "not a recognised image"),
        ("broken/bomb.png", "over the limit"),
    ],
)
def test_bad_files_have_reasons(name: str, reason: str) -> None:
    with pytest.raises(BadImage, match=reason):
        load_image(BROKEN[name], max_bytes=10_000_000, **LIMITS)


def test_truncated_image() -> None:
    buf = io.BytesIO()
    drawing(3, (400, 300)).save(buf, format="PNG")
    with pytest.raises(BadImage, match="corrupt or truncated"):
        decode(buf.getvalue()[: len(buf.getvalue()) // 2], **LIMITS)


def test_file_over_byte_limit(tmp_path) -> None:
    path = tmp_path / "big.png"
    drawing(4).save(path)
    with pytest.raises(BadImage, match="bytes, over the limit"):
        load_image(path, max_bytes=100, **LIMITS)


def test_alpha_is_composited_on_white() -> None:
    image = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    loaded = decode(buf.getvalue(), **LIMITS)
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((5, 5)) == (255, 255, 255)


def test_large_images_are_shrunk_for_work_but_keep_their_size() -> None:
    buf = io.BytesIO()
    drawing(5, (3000, 1000)).save(buf, format="PNG")
    loaded = decode(buf.getvalue(), **LIMITS)
    assert (loaded.width, loaded.height) == (3000, 1000)
    assert max(loaded.image.size) == 1024


@pytest.mark.parametrize(("fmt", "size"), [("JPEG", (400, 300)), ("PNG", (400, 300))])
def test_decoded_at_what_the_work_needs(fmt: str, size: tuple[int, int]) -> None:
    """A 1600x1200 file is decoded at a quarter (JPEG: in the decoder; PNG: Image.reduce),
    its shortest side still at least least_side; a small file is left as it is."""
    least = least_side(224, 256)
    big, small = io.BytesIO(), io.BytesIO()
    drawing(6, (1600, 1200)).save(big, format=fmt)
    drawing(6, (300, 200)).save(small, format=fmt)
    loaded = decode(big.getvalue(), **LIMITS, least=least)
    assert loaded.image.size == size and (loaded.width, loaded.height) == (1600, 1200)
    assert decode(small.getvalue(), **LIMITS, least=least).image.size == (300, 200)


def test_a_lossless_file_keeps_its_grid_and_flips_keep_it_when_its_reduction_tiles_it() -> None:
    """Copy verification holds a lossless upload to the pixel (residual.off_grid), on the grid
    the build's decode and thumbnail give it: a PNG, not a JPEG. Its flips and turns lie on
    that grid too unless a reduction left a remainder (533 px halved: a column of one)."""
    found = {}
    for fmt, size in (
        ("PNG", (200, 150)),
        ("JPEG", (200, 150)),
        ("PNG", (532, 600)),
        ("PNG", (533, 600)),
    ):
        buf = io.BytesIO()
        drawing(7, size).save(buf, format=fmt)
        loaded = decode(buf.getvalue(), **LIMITS, least=256)
        found[fmt, size] = (loaded.lossless, loaded.reduction, loaded.turns_kept)
    assert found == {
        ("PNG", (200, 150)): (True, 1, True),
        ("JPEG", (200, 150)): (False, 1, True),
        ("PNG", (532, 600)): (True, 2, True),
        ("PNG", (533, 600)): (True, 2, False),
    }


def test_a_file_decoded_as_if_flipped_is_the_flipped_file_decoded() -> None:
    """Copy verification decodes a lossless upload again under the flip a candidate needs
    (grid.Grid.under): where the reduction leaves a remainder, that is the flipped file's
    decode, and flipping the decoded picture is not."""
    flip = Image.Transpose.FLIP_LEFT_RIGHT
    files = {}
    for name, image in (("file", drawing(7, (533, 600))), ("flipped", None)):
        image = image if image is not None else drawing(7, (533, 600)).transpose(flip)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        files[name] = buf.getvalue()
    decoded = decode(files["file"], **LIMITS, least=256, transpose=flip).image
    flipped = decode(files["flipped"], **LIMITS, least=256).image
    assert np.array_equal(np.asarray(decoded), np.asarray(flipped))
    turned_after = decode(files["file"], **LIMITS, least=256).image.transpose(flip)
    assert not np.array_equal(np.asarray(turned_after), np.asarray(flipped))


def test_reduced_decode_keeps_fingerprints_and_embedding() -> None:
    """What the build stores from a file decoded at least_side is what it stored from the
    file decoded at working_size: the same descriptors (cosine) and the same pHash bits
    but a few, the same CLIP input."""
    from hibt.indexer.copies.fingerprint import index_fingerprints
    from hibt.indexer.model_input import resize_center_crop

    buf = io.BytesIO()
    drawing(8, (1600, 1200)).save(buf, format="JPEG", quality=90)
    full = decode(buf.getvalue(), **LIMITS).image
    small = decode(buf.getvalue(), **LIMITS, least=least_side(224, 256)).image
    a, b = index_fingerprints(full), index_fingerprints(small)
    assert np.min(np.sum(a.descriptors * b.descriptors, axis=1)) > 0.995
    bits = np.unpackbits(a.hashes ^ b.hashes, axis=1).sum(axis=1)
    assert bits.max() <= 16  # of 256
    pixels = [resize_center_crop(im, 224).astype(np.int16) for im in (full, small)]
    assert np.abs(pixels[0] - pixels[1]).mean() < 0.5


@pytest.mark.parametrize("size", [(728, 469), (300, 900), (160, 120), (224, 224)])
def test_model_input_is_resize_then_centre_crop(size: tuple[int, int]) -> None:
    """Resampling only the centre square gives open_clip's resize-then-crop, give or take
    one level on a few pixels (portrait, landscape, smaller than the input, square)."""
    from hibt.indexer.model_input import resize_center_crop

    image = drawing(9, size).convert("RGB")
    w, h = size
    scale = 224 / min(w, h)
    new = (max(224, round(w * scale)), max(224, round(h * scale)))
    left, top = (new[0] - 224) // 2, (new[1] - 224) // 2
    full = image.resize(new, Image.Resampling.BICUBIC).crop((left, top, left + 224, top + 224))
    diff = np.abs(resize_center_crop(image, 224).astype(np.int16) - np.asarray(full))
    assert diff.max() <= 1 and diff.mean() < 0.01
