"""Copy detection at query time: Hamming search of a query's hashes in a FAISS binary index,
checked against colour signatures and exact file bytes."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from indexer.fingerprint import colour_distance, informative

# Bits of Hamming distance one unit of colour difference (0-255 scale) costs when ranking.
COLOUR_WEIGHT = 1 / 8


@dataclass(frozen=True)
class CopyThresholds:
    exact: int  # at most this many differing bits and ...
    exact_colour: float  # ... colours this close: the same picture
    near: int  # at most this many differing bits: a transformed copy


@dataclass
class CopyMatch:
    idx: int
    distance: int
    colour: float
    same_bytes: bool = False
    blank: bool = False  # matched by colour layout: the image is too plain for its hash

    def label(self, t: CopyThresholds) -> str | None:
        if self.same_bytes or (self.distance <= t.exact and self.colour <= t.exact_colour):
            return "exact_copy"
        return "near_copy" if self.distance <= t.near else None

    def rank_key(self) -> float:
        return 0.0 if self.same_bytes else self.distance + COLOUR_WEIGHT * self.colour


class CopyMatcher:
    def __init__(self, fingerprints: np.ndarray, colours: np.ndarray) -> None:
        """``fingerprints``: (N, variants, bytes); ``colours``: (N, COLOUR_BYTES)."""
        n, self.variants, nbytes = fingerprints.shape
        flat = np.ascontiguousarray(fingerprints.reshape(n * self.variants, nbytes))
        self.usable = informative(flat)
        self.colours = np.asarray(colours)
        self.blank = np.flatnonzero(~self.usable[:: self.variants])
        self.index = faiss.IndexBinaryFlat(nbytes * 8)
        self.index.add(flat)

    def match(
        self, hashes: np.ndarray, colour: np.ndarray, max_distance: int, max_colour: float
    ) -> dict[int, CopyMatch]:
        """Item row -> its best match with any informative query hash. A near-blank query
        (no informative hash) is matched by colour layout among near-blank items."""
        usable = informative(hashes)
        if not usable[0]:
            return self.match_blank(colour, max_colour)
        hashes = np.ascontiguousarray(hashes[usable], dtype=np.uint8)
        if not len(hashes):
            return {}
        _, distances, ids = self.index.range_search(hashes, max_distance + 1)
        keep = self.usable[ids]
        best: dict[int, int] = {}
        for vid, dist in zip(ids[keep] // self.variants, distances[keep], strict=True):
            item, d = int(vid), int(dist)
            if d < best.get(item, max_distance + 1):
                best[item] = d
        if not best:
            return {}
        rows = np.fromiter(best, dtype=np.int64)
        colour_d = colour_distance(self.colours[rows], colour)
        return {
            int(i): CopyMatch(int(i), best[int(i)], float(c))
            for i, c in zip(rows, colour_d, strict=True)
        }

    def match_blank(self, colour: np.ndarray, max_colour: float) -> dict[int, CopyMatch]:
        distances = colour_distance(self.colours[self.blank], colour)
        close = distances <= max_colour
        return {
            int(i): CopyMatch(int(i), 0, float(d), blank=True)
            for i, d in zip(self.blank[close], distances[close], strict=True)
        }
