"""Safe mode: items that may be explicit stay in answers, counted and labelled, but no
client is sent their pictures unblurred unless it asks with ``safe=false``.

An item is flagged when its safety score (indexer/nsfw.py, stored per item) reaches
``Settings.unsafe_threshold``. In safe mode (the default) a flagged item's thumbnail is
blurred here, on the server, whoever asks for it, its original is refused, and an item
known only by URL is answered without a picture URL to load. ``Settings.hide_unsafe``
drops flagged items from every answer instead. docs/safety.md says what the scores are.
"""

from __future__ import annotations

import io
import sqlite3
from typing import Annotated

from fastapi import Query
from PIL import Image, ImageFilter

from hibt.config import Settings
from hibt.indexer.index_format import Safety as SafetyInfo
from hibt.indexer.store import Store

# The API's safe-mode parameter: on unless a client turns it off.
Safe = Annotated[
    bool,
    Query(
        description="Safe mode: items flagged as possibly explicit keep their place and "
        "label, but their thumbnails are blurred and their images withheld; false shows them"
    ),
]

# The blur's radius as a fraction of the thumbnail's longest side: at 256 px a radius of
# 21 px leaves colours and layout, nothing recognisable.
BLUR_FRACTION = 1 / 12


class Safety:
    """The server's safety policy over one index."""

    def __init__(self, info: SafetyInfo | None, settings: Settings) -> None:
        self.info = info
        self.threshold = settings.unsafe_threshold
        self.hide = settings.hide_unsafe

    def flagged(self, row: sqlite3.Row) -> bool:
        return row["nsfw"] is not None and row["nsfw"] >= self.threshold

    def hidden_among(self, store: Store, idxs: list[int]) -> set[int]:
        """The flagged rows among these, when the operator hides them; else none."""
        return store.flagged_among(idxs, self.threshold) if self.hide else set()

    def describe(self, store: Store) -> str:
        """One line for people: what was scored, and what happens to flagged items."""
        if self.info is None:
            return (
                "no safety scores: this index was built without them, so nothing is blurred "
                "or hidden (rebuild it to score its images)"
            )
        by = ", ".join(f"{source} {n}" for source, n in sorted(self.info.sources.items()))
        flagged = store.count_flagged(self.threshold)
        action = "hidden" if self.hide else "blurred in safe mode"
        return (
            f"{self.info.scored} items scored for explicit content ({by}); {flagged} at or "
            f"above {self.threshold} are {action}"
        )


def blurred(thumbnail: bytes) -> bytes:
    """The thumbnail blurred past recognition, as a JPEG."""
    with Image.open(io.BytesIO(thumbnail)) as image:
        image = image.convert("RGB")
        radius = max(image.size) * BLUR_FRACTION
        out = io.BytesIO()
        image.filter(ImageFilter.GaussianBlur(radius)).save(out, format="JPEG", quality=70)
    return out.getvalue()
