"""Near-duplicate groups inside a dataset (LAION is full of them; so is Openclipart).

Near-identical images (the same bytes, or descriptors and colours all but equal) always share
a group. Beyond that, two images are linked when the cosine of their whole-image descriptors
is at least ``min_similarity``, both are informative, and their colour signatures agree;
those looser links form groups by leader clustering in index order (an image joins the
earliest leader it is linked to), not by connected components: chains of look-alikes (stars
with 34, 36, 38... points) must not merge into one giant group. The range search is
search.py's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hibt.indexer.copies.fingerprint import COLOUR_BYTES, colour_distance, informative
from hibt.indexer.copies.search import (
    CANDIDATE_MIN_ITEMS,
    CandidateIndex,
    at_least,
    descriptor_index,
)
from hibt.indexer.copies.views import INDEX_VIEWS, position

STRONG_SIMILARITY = 0.995  # the same picture, re-encoded or re-rendered
STRONG_COLOUR = 4.0
WHOLE_VIEW = position(INDEX_VIEWS, "whole")  # the stored view groups are made of
BLOCK_PAIRS = 1 << 20  # pairs (or images) whose colours are compared at a time


def linked_pairs(
    vectors: np.ndarray,
    min_similarity: float,
    block: int = 16384,
    candidates: CandidateIndex | None = None,
):
    """CSR adjacency (lims, similarities, ids) of every vector to those at least
    ``min_similarity`` away in cosine (vectors are unit length or zero), ids in order.

    Through ``candidates`` when given (the index's candidate index, whose
    :data:`WHOLE_VIEW` views are ``vectors``): only vectors that share one of its lists
    are compared, which is linear in the number of vectors (CandidateIndex.view_pairs);
    else exhaustively (quadratic: small datasets)."""
    if candidates is not None:
        rows, ids, sims = candidates.view_pairs(WHOLE_VIEW, min_similarity)
        order = np.lexsort((ids, rows))
        lims = np.zeros(len(vectors) + 1, np.int64)
        np.cumsum(np.bincount(rows, minlength=len(vectors)), out=lims[1:])
        return lims, sims[order], ids[order]
    index = descriptor_index(vectors)
    all_lims, all_sims, all_ids, offset = [np.zeros(1, np.int64)], [], [], 0
    for start in range(0, len(vectors), block):
        queries = np.asarray(vectors[start : start + block], dtype=np.float32)
        lims, sims, ids = at_least(index, queries, min_similarity)
        all_lims.append(lims[1:].astype(np.int64) + offset)
        all_sims.append(sims)
        all_ids.append(ids.astype(np.int64))
        offset += len(ids)
    return np.concatenate(all_lims), np.concatenate(all_sims), np.concatenate(all_ids)


def blank_pairs(colours: np.ndarray, blank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of near-blank images (zero descriptors) whose colour layouts all but agree: the
    only evidence that two plain images are the same. Enough pairs for the same connected
    components as all of them, found without comparing every two: images of one colour
    layout are linked to the first of them, and a layout is compared only with those whose
    sum of colour values is within reach (the sum moves no more than the distance)."""
    blank = np.asarray(blank, np.int64)
    if not len(blank):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    signatures = np.asarray(colours[blank]).astype(np.int16)
    layouts, first, which = np.unique(signatures, axis=0, return_index=True, return_inverse=True)
    rows, cols = [blank], [blank[first[which.reshape(-1)]]]
    sums = layouts.sum(axis=1, dtype=np.int64)
    order = np.argsort(sums, kind="stable")
    reach = int(STRONG_COLOUR * COLOUR_BYTES)
    low = np.searchsorted(sums[order], sums[order] - reach, "left")
    high = np.searchsorted(sums[order], sums[order] + reach, "right")
    for k, i in enumerate(order):
        window = order[low[k] : high[k]]
        close = window[colour_distance(layouts[window], layouts[i]) <= STRONG_COLOUR]
        rows.append(np.full(len(close), blank[first[i]], np.int64))
        cols.append(blank[first[close]])
    return np.concatenate(rows), np.concatenate(cols)


def strong_roots(
    colours: np.ndarray,
    digests: list[str],
    lims: np.ndarray,
    sims: np.ndarray,
    ids: np.ndarray,
    usable: np.ndarray,
) -> np.ndarray:
    """Smallest row of each set of near-identical images (same bytes, or descriptors and
    colours all but equal, blank images included). Such sets always stay together: chaining
    at this similarity is harmless."""
    n = len(usable)
    rows = np.repeat(np.arange(n), np.diff(lims))
    strong = np.flatnonzero(sims >= STRONG_SIMILARITY)
    for start in range(0, len(strong), BLOCK_PAIRS):  # memory stays flat
        part = strong[start : start + BLOCK_PAIRS]
        far = colour_distance(colours[rows[part]], colours[ids[part]]) > STRONG_COLOUR
        strong[start : start + BLOCK_PAIRS][far] = -1
    strong = strong[strong >= 0]
    blank_r, blank_c = blank_pairs(colours, np.flatnonzero(~usable))
    first_with: dict[str, int] = {}
    same = [(i, first_with.setdefault(d, i)) for i, d in enumerate(digests)]
    pairs_r = np.concatenate(
        [rows[strong], blank_r, np.array([a for a, b in same if a != b], np.int64)]
    )
    pairs_c = np.concatenate(
        [ids[strong], blank_c, np.array([b for a, b in same if a != b], np.int64)]
    )
    graph = coo_matrix((np.ones(len(pairs_r), np.int8), (pairs_r, pairs_c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    root = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(root, labels, np.arange(n))
    return root[labels]


def duplicate_groups(
    descriptors: np.ndarray,
    colours: np.ndarray,
    digests: list[str],
    min_similarity: float,
    max_colour: float,
    candidates: CandidateIndex | None = None,
) -> np.ndarray:
    """Group label per row: the row index of the group's leader (its first member).

    ``descriptors``: the whole-image descriptors (items, dim), best memory-mapped.
    ``candidates``: the index's candidate index (search.write_copy_index), which finds each
    image's links without comparing it with every other. Without one, images are compared
    exhaustively below search.CANDIDATE_MIN_ITEMS, and through a candidate index built for
    the purpose (in a temporary folder) from there up."""
    n = len(descriptors)
    if candidates is None and n >= CANDIDATE_MIN_ITEMS:
        with tempfile.TemporaryDirectory(prefix="hibt-groups-") as work:
            whole = CandidateIndex.build(Path(work), descriptors[:, None, :])
            return duplicate_groups(
                descriptors, colours, digests, min_similarity, max_colour, whole
            )
    colours = np.asarray(colours)
    usable = np.concatenate(
        [informative(descriptors[i : i + BLOCK_PAIRS]) for i in range(0, max(n, 1), BLOCK_PAIRS)]
    )
    threshold = min(min_similarity, STRONG_SIMILARITY)
    lims, sims, ids = linked_pairs(descriptors, threshold, candidates=candidates)
    roots = strong_roots(colours, digests, lims, sims, ids, usable)
    leader = np.arange(n)
    for i in range(n):
        if roots[i] != i:  # a near-identical copy of an earlier image: same group
            leader[i] = leader[roots[i]]
            continue
        if not usable[i]:
            continue
        span = slice(lims[i], lims[i + 1])
        near = ids[span][(sims[span] >= min_similarity) & (ids[span] < i)]
        near = near[leader[near] == near]  # only leaders recruit
        if len(near):
            near = near[colour_distance(colours[near], colours[i]) <= max_colour]
            if len(near):
                leader[i] = near.min()
    return leader
