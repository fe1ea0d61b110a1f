"""Copy matching at query time: cosine search of an upload's view descriptors against every
stored view (search.py), read through the view catalogue (views.py), checked against colour
signatures; the labels are thresholds on the best pair."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hibt.config import Settings
from hibt.indexer import index_format as fmt
from hibt.indexer.copies.fingerprint import (
    HASH_SIZE,
    Fingerprints,
    colour_distance,
    informative,
    plain,
)
from hibt.indexer.copies.search import (
    CandidateIndex,
    Exhaustive,
    banded_matches,
    open_search,
)
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
    # The pair that matched, for verification (verify.py): positions in the upload's views
    # and in INDEX_VIEWS; -1 when no view pair matched (same bytes, blank).
    query_view: int = -1
    stored_view: int = -1

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
    def __init__(
        self,
        descriptors: np.ndarray,
        hashes: np.ndarray,
        colours: np.ndarray,
        search: Exhaustive | CandidateIndex | None = None,
        blank: np.ndarray | None = None,
    ) -> None:
        """``descriptors``: (N, views, dim); ``hashes``: (N, views, bytes); ``colours``:
        (N, COLOUR_BYTES). Only the descriptors are searched, by ``search`` (exhaustive
        unless given: search.py); hashes give the distance shown beside a match. ``blank``:
        the rows of near-blank items, when known (else read from the descriptors)."""
        self.views = descriptors.shape[1]
        self.hashes = hashes
        self.colours = colours
        if blank is None:
            blank = np.flatnonzero(~informative(descriptors[:, 0]))
        self.blank = blank
        self.search = search if search is not None else Exhaustive(descriptors)

    @classmethod
    def open(cls, directory: Path) -> CopyMatcher:
        """The matcher of an index directory: its descriptors, fingerprints and colours
        memory-mapped, searched through its candidate index when it has one (an index of
        many items, search.write_copy_index), else exhaustively."""
        directory = Path(directory)
        descriptors = np.load(directory / fmt.DESCRIPTORS, mmap_mode="r")
        search = open_search(directory, descriptors)
        return cls(
            descriptors,
            np.load(directory / fmt.FINGERPRINTS, mmap_mode="r"),
            np.load(directory / fmt.COLOURS, mmap_mode="r"),
            search=search,
            blank=getattr(search, "blank", None),
        )

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
        return self.match_many([query], min_similarity, max_colour, strict_similarity)[0]

    def match_many(
        self,
        queries: list[Fingerprints],
        min_similarity: float,
        max_colour: float,
        strict_similarity: float = 1.0,
    ) -> list[dict[int, CopyMatch]]:
        """:meth:`match` for each of ``queries``, searched together: one pass over the
        stored views when search is exhaustive (benchmarks, the benchmark's split)."""
        found: list[dict[int, CopyMatch]] = [{} for _ in queries]
        descriptors, bands, owners, views = [], [], [], []
        for number, query in enumerate(queries):
            if plain(query):
                found[number] = self.match_blank(query.content_colour, max_colour)
                continue
            usable = np.flatnonzero(informative(query.descriptors))
            descriptors.append(query.descriptors[usable])
            bands.append(query.bands[usable])
            owners.append(np.full(len(usable), number))
            views.append(usable)
        if not views:
            return found
        hit, sims, ids = banded_matches(
            self.search, np.concatenate(descriptors), np.concatenate(bands), min_similarity
        )
        owner, view = np.concatenate(owners)[hit], np.concatenate(views)[hit]
        # Each query's pairs in the order it would have had searched alone.
        order = np.argsort(owner, kind="stable")
        starts = np.searchsorted(owner[order], np.arange(len(queries) + 1))
        for number in np.unique(owner):
            mine = order[starts[number] : starts[number + 1]]
            found[number] = self.best(
                queries[number], view[mine], sims[mine], ids[mine], strict_similarity
            )
        return found

    def best(
        self,
        query: Fingerprints,
        query_view: np.ndarray,
        sims: np.ndarray,
        ids: np.ndarray,
        strict_similarity: float,
    ) -> dict[int, CopyMatch]:
        """Each item's best allowed pair among (query view, similarity, stored id)."""
        bands = query.bands
        stored_view = ids % self.views
        crop = np.isin(stored_view, STORED_CROP)
        keep = ~query.strict[query_view] | (crop & (sims >= strict_similarity))
        keep &= single_edit(query, query_view, stored_view)
        query_view, sims, ids = query_view[keep], sims[keep], ids[keep]
        if not len(ids):
            return {}
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
        colour_d = colour_distance(np.asarray(self.colours[rows]), query.colour)
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
                query_view=int(query_view[k]),
                stored_view=int(ids[k] % self.views),
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
