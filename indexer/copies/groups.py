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

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from hibt.indexer.copies.fingerprint import colour_distance, informative
from hibt.indexer.copies.search import at_least, descriptor_index

STRONG_SIMILARITY = 0.995  # the same picture, re-encoded or re-rendered
STRONG_COLOUR = 4.0


def linked_pairs(vectors: np.ndarray, min_similarity: float, block: int = 16384):
    """CSR adjacency (lims, similarities, ids) of every vector to those at least
    ``min_similarity`` away in cosine (vectors are unit length or zero)."""
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    index = descriptor_index(data)
    all_lims, all_sims, all_ids, offset = [np.zeros(1, np.int64)], [], [], 0
    for start in range(0, len(data), block):
        lims, sims, ids = at_least(index, data[start : start + block], min_similarity)
        all_lims.append(lims[1:].astype(np.int64) + offset)
        all_sims.append(sims)
        all_ids.append(ids.astype(np.int64))
        offset += len(ids)
    return np.concatenate(all_lims), np.concatenate(all_sims), np.concatenate(all_ids)


def blank_pairs(colours: np.ndarray, blank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of near-blank images (zero descriptors) whose colour layouts all but agree: the
    only evidence that two plain images are the same. One row at a time: memory stays flat."""
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for i in blank:
        close = blank[colour_distance(colours[blank], colours[i]) <= STRONG_COLOUR]
        rows.append(np.full(len(close), i, np.int64))
        cols.append(close.astype(np.int64))
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
    strong = sims >= STRONG_SIMILARITY
    strong &= colour_distance(colours[rows], colours[ids]) <= STRONG_COLOUR
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
) -> np.ndarray:
    """Group label per row: the row index of the group's leader (its first member)."""
    n = len(descriptors)
    usable = informative(descriptors)
    lims, sims, ids = linked_pairs(descriptors, min(min_similarity, STRONG_SIMILARITY))
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
