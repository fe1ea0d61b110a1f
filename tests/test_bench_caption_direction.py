"""The caption-direction benchmark at a small size: it runs on a folder of drawings, counts
every picture once each way round, and finds the caption either way (run AT)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent


def test_it_verifies_each_picture_captioned_both_ways_round(tmp_path: Path) -> None:
    for i in range(3):
        image = Image.new("RGB", (240, 240), "white")
        draw = ImageDraw.Draw(image)
        draw.polygon([(30, 200), (120, 20 + 20 * i), (170, 160)], fill="black")
        draw.ellipse((20, 20, 70, 70), fill=(40 * i, 120, 200))
        image.save(tmp_path / f"drawing{i}.png")
    script = ROOT / "scripts" / "bench_caption_direction.py"
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--samples", "3"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith(f"3 pictures of {tmp_path}")
    counts = re.findall(
        r"(captioned upload|clean upload).*: edited (\d+), same (\d+), different (\d+)", out
    )
    assert [way for way, *_ in counts] == ["captioned upload", "clean upload"]
    assert all(sum(map(int, n)) == 3 for _, *n in counts)
    # The caption on a white part of a drawing is an edit, on the upload or on the stored copy.
    assert int(counts[0][1]) == int(counts[1][1]) == 3
