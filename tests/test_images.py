"""Untrusted files: every bad input is refused with a reason, never a crash."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from hibt.errors import BadImage
from hibt.indexer.images import decode, load_image
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
