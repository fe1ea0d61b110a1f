"""Copy matching at query time: cosine search of an upload's view descriptors against every
stored view (search.py), read through the view catalogue (views.py), checked against colour
signatures; the labels are thresholds on the best pair."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hibt.config import Settings
from hibt.indexer.copies.fingerprint import (
    HASH_SIZE,
    Fingerprints,
    colour_distance,
    informative,
    plain,
)
from hibt.indexer.copies.search import banded_matches, descriptor_index
from hibt.indexer.copies.views import INDEX_VIEWS, flagged

STORED_CROP = flagged(INDEX_VIEWS, "crop")
STORED_WHOLE = flagged(INDEX_VIEWS, "whole")
STORED_BRIGHTENED = flagged(INDEX_VIEWS, "brightened")

# Similarity one unit of colour difference (0-255 scale) costs when ranking copies.
COLOUR_WEIGHT = 1 / 2000
WHOLE_TIE_BREAK = 1e-3


@dataclass(frozen=True)
class CopyThresholds:
    exact: float  # descriptors at least this similar and ...
    exact_colour: float  # ... colours this close: the same picture
    near: float  # at least this similar: a transformed copy
    lookalike: float = 1.0  # at least this similar: shown among similar items, as a look-alike
    uncut: float = 1.0  # at least this similar: the upload uncut may claim a stored crop

    @classmethod
    def from_settings(cls, settings: Settings) -> CopyThresholds:
        return cls(
            exact=settings.exact_copy_min_similarity,
            exact_colour=settings.exact_copy_max_colour,
            near=settings.near_copy_min_similarity,
            lookalike=min(settings.lookalike_min_similarity, settings.near_copy_min_similarity),
            uncut=settings.uncut_copy_min_similarity,
        )


@dataclass
class CopyMatch:
    idx: int
    similarity: float  # best cosine over query views x stored views; 1.0 for same bytes
    colour: float
    hash_distance: int | None = None  # pHash bits between the best-matching views
    same_bytes: bool = False
    blank: bool = False  # matched by colour layout: both too plain to identify
    whole: bool = True  # whole picture to whole picture, full band (not a crop, flip, turn)

    def label(self, t: CopyThresholds) -> str | None:
        if self.same_bytes:
            return "exact_copy"
        if self.blank:
            return "similar"  # two blank pages look alike; neither is a copy of the other
        if self.whole and self.similarity >= t.exact and self.colour <= t.exact_colour:
            return "exact_copy"
        if self.similarity >= t.near:
            return "near_copy"
        return "similar" if self.similarity >= t.lookalike else None

    def rank_key(self) -> float:
        return -2.0 if self.same_bytes else -self.similarity + COLOUR_WEIGHT * self.colour


class CopyMatcher:
    def __init__(self, descriptors: np.ndarray, hashes: np.ndarray, colours: np.ndarray) -> None:
        """``descriptors``: (N, views, dim); ``hashes``: (N, views, bytes); ``colours``:
        (N, COLOUR_BYTES). Only the descriptors are searched; hashes give the distance
        shown beside a match."""
        n, self.views, dim = descriptors.shape
        flat = descriptors.reshape(n * self.views, dim)
        self.hashes = hashes
        self.colours = np.asarray(colours)
        self.blank = np.flatnonzero(~informative(flat[:: self.views]))
        self.index = descriptor_index(flat)

    def match(
        self,
        query: Fingerprints,
        min_similarity: float,
        max_colour: float,
        strict_similarity: float = 1.0,
    ) -> dict[int, CopyMatch]:
        """Item row -> its best match with any informative query view. A query whose framed
        picture is near-blank (:func:`plain`) is matched by that picture's colour layout
        among near-blank items; a small drawing on a large empty canvas still has its
        trimmed views. The query's strict views (the upload uncut, when its picture was cut
        out of a frame) may claim only a stored crop, and only from ``strict_similarity``
        up: a screenshot as a whole looks like a window icon (0.97-0.99), and like its crops.
        """
        if plain(query):
            return self.match_blank(query.content_colour, max_colour)
        usable = np.flatnonzero(informative(query.descriptors))
        bands = query.bands
        hit, sims, ids = banded_matches(
            self.index, query.descriptors[usable], bands[usable], min_similarity
        )
        query_view, stored_view = usable[hit], ids % self.views
        crop = np.isin(stored_view, STORED_CROP)
        keep = ~query.strict[query_view] | (crop & (sims >= strict_similarity))
        keep &= single_edit(query, query_view, stored_view)
        hit, sims, ids = hit[keep], sims[keep], ids[keep]
        if not len(ids):
            return {}
        query_view = usable[hit]
        # Whole picture to whole picture, on every frequency: a thumbnail compared in its
        # band holds too little to be called the same picture, only a near copy.
        whole = (
            query.flags("whole")[query_view]
            & np.isin(ids % self.views, STORED_WHOLE)
            & (bands[query_view] == HASH_SIZE).all(axis=1)
        )
        # Best first, keeping each item's first hit; a whole-picture pair wins a near tie with
        # a crop pair, so an identical copy is not labelled by the crops that also match it.
        order = np.argsort(-(sims + WHOLE_TIE_BREAK * whole), kind="stable")
        items = ids[order] // self.views
        _, first = np.unique(items, return_index=True)
        chosen = order[first]
        rows = ids[chosen] // self.views
        colour_d = colour_distance(self.colours[rows], query.colour)
        # The upload uncut met a stored crop, whose colours are not stored (the colour
        # layout is the whole picture's): ranked by its similarity alone.
        colour_d[query.strict[query_view[chosen]]] = 0.0
        return {
            int(row): CopyMatch(
                int(row),
                min(1.0, float(sims[k])),
                float(c),
                hamming(query.hashes[query_view[k]], self.hashes[row, ids[k] % self.views]),
                whole=bool(whole[k]),
            )
            for row, k, c in zip(rows, chosen, colour_d, strict=True)
        }

    def match_blank(self, colour: np.ndarray, max_colour: float) -> dict[int, CopyMatch]:
        distances = colour_distance(self.colours[self.blank], colour)
        close = distances <= max_colour
        return {
            int(i): CopyMatch(int(i), 1.0, float(d), blank=True)
            for i, d in zip(self.blank[close], distances[close], strict=True)
        }


def single_edit(query: Fingerprints, query_view: np.ndarray, stored_view: np.ndarray) -> np.ndarray:
    """False for the pairs that would find a copy edited twice over: turned and cropped, or
    brightened and turned or cropped. Such pairs found few copies and most of the benchmark's
    false ones (docs/copy-detection.md)."""
    crop = np.isin(stored_view, STORED_CROP)
    turned_crop = crop & query.flags("turned")[query_view]
    brightened = np.isin(stored_view, STORED_BRIGHTENED) & ~query.flags("whole")[query_view]
    return ~(turned_crop | brightened)


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.unpackbits(np.bitwise_xor(a, b)).sum())
