"""Edited copies both ways round: a caption laid over the upload, and over the stored copy.

The copy benchmark (bench_copy_detection.py) uploads its overlay transformation against the
clean indexed picture. An artist more often has it the other way: the clean drawing is theirs,
and the training set holds it with a caption or a watermark. This verifies both (the engine's
verify.verify on the pair of whole views, as a copy candidate is verified) for a random
sample of a dataset's pictures, the caption being the copy benchmark's overlay, and prints
how often each is answered the same picture, edited or different, and why it was different.
Method and figures: docs/copy-detection.md, run AT.

    python scripts/bench_caption_direction.py data/openclipart/usr/share/openclipart --samples 200
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections import Counter
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_copy_detection import overlay, query_image
from machine import cpu_model

from hibt.config import TINY_MODEL, Settings
from hibt.indexer.copies.verify import Verdict, verify
from hibt.indexer.copies.views import hash_base
from hibt.indexer.datasets import open_dataset
from hibt.indexer.images import thumbnail_bytes

WAYS = ("captioned upload, clean stored", "clean upload, captioned stored")


def stored(image: Image.Image, settings: Settings) -> Image.Image:
    """``image`` as the build keeps it: its thumbnail, decoded."""
    data = thumbnail_bytes(image, settings.thumbnail_size)
    return Image.open(io.BytesIO(data)).convert("RGB")


def both_ways(image: Image.Image, settings: Settings) -> tuple[Verdict, Verdict]:
    """The verdicts on the captioned upload against the clean picture, and the other way."""
    captioned = overlay(image)
    return (
        verify(hash_base(captioned), stored(image, settings)),
        verify(hash_base(image), stored(captioned, settings)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="a dataset (a folder of images, ...)")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    settings = Settings(model=TINY_MODEL, pretrained=None)
    records = list(open_dataset(args.source))
    picked = random.Random(args.seed).sample(records, min(args.samples, len(records)))
    kinds, reasons, started, n = [Counter(), Counter()], [Counter(), Counter()], time.time(), 0
    for record in picked:
        image = query_image(record, settings)
        if image is None:
            continue
        n += 1
        for i, verdict in enumerate(both_ways(image, settings)):
            kinds[i][verdict.kind] += 1
            if verdict.kind == "different":
                reasons[i][verdict.region] += 1
    print(f"{n} pictures of {args.source}, seed {args.seed}; CPU: {cpu_model()}")
    for way, kind, reason in zip(WAYS, kinds, reasons, strict=True):
        counts = ", ".join(f"{k} {kind[k]}" for k in ("edited", "same", "different"))
        print(f"  {way}: {counts} (edited {kind['edited'] / max(n, 1):.3f})")
        print(f"    different because: {dict(reason.most_common())}")
    print(f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
