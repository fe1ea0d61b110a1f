"""Near-duplicate groups inside a dataset (LAION is full of them; so is Openclipart).

Near-identical images (the same bytes, or hashes and colours all but equal) always share a
group. Beyond that, two images are linked when their whole-image pHashes differ in at most
``max_distance`` bits, both hashes are informative, and their colour signatures agree; those
looser links form groups by leader clustering in index order (an image joins the earliest
leader it is linked to), not by connected components: chains of look-alikes (stars with 34,
36, 38... points) must not merge into one giant group. The range search is exhaustive but
runs in FAISS's SIMD popcount code; beyond a few million images swap in
faiss.IndexBinaryMultiHash.
"""

from __future__ import annotations

import faiss
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from indexer.fingerprint import colour_distance, informative


def linked_pairs(hashes: np.ndarray, max_distance: int, block: int = 16384):
    """CSR adjacency (lims, distances, ids) of every hash to those within ``max_distance``."""
    codes = np.ascontiguousarray(hashes, dtype=np.uint8)
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    all_lims, all_distances, all_ids, offset = [np.zeros(1, np.int64)], [], [], 0
    for start in range(0, len(codes), block):
        lims, distances, ids = index.range_search(codes[start : start + block], max_distance + 1)
        all_lims.append(lims[1:].astype(np.int64) + offset)
        all_distances.append(distances)
        all_ids.append(ids.astype(np.int64))
        offset += len(ids)
    return np.concatenate(all_lims), np.concatenate(all_distances), np.concatenate(all_ids)


STRONG_DISTANCE = 4  # bits: the same picture, re-encoded or re-rendered
STRONG_COLOUR = 4.0


def strong_roots(
    colours: np.ndarray,
    digests: list[str],
    lims: np.ndarray,
    distances: np.ndarray,
    ids: np.ndarray,
    usable: np.ndarray,
) -> np.ndarray:
    """Smallest row of each set of near-identical images (same bytes, or hashes and colours
    all but equal, blank images included). Such sets always stay together: chaining at this
    distance is harmless."""
    n = len(usable)
    counts = np.diff(lims)
    rows = np.repeat(np.arange(n), counts)
    # Near-blank images (uninformative hashes) are near-identical when their colours agree.
    strong = (distances <= STRONG_DISTANCE) & (usable[rows] == usable[ids])
    strong &= colour_distance(colours[rows], colours[ids]) <= STRONG_COLOUR
    first_with: dict[str, int] = {}
    same = [(i, first_with.setdefault(d, i)) for i, d in enumerate(digests)]
    pairs_r = np.concatenate([rows[strong], np.array([a for a, b in same if a != b], np.int64)])
    pairs_c = np.concatenate([ids[strong], np.array([b for a, b in same if a != b], np.int64)])
    graph = coo_matrix((np.ones(len(pairs_r), np.int8), (pairs_r, pairs_c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    root = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(root, labels, np.arange(n))
    return root[labels]


def duplicate_groups(
    hashes: np.ndarray,
    colours: np.ndarray,
    digests: list[str],
    max_distance: int,
    max_colour: float,
) -> np.ndarray:
    """Group label per row: the row index of the group's leader (its first member)."""
    n = len(hashes)
    lims, distances, ids = linked_pairs(hashes, max_distance)
    usable = informative(hashes)
    roots = strong_roots(colours, digests, lims, distances, ids, usable)
    leader = np.arange(n)
    for i in range(n):
        if roots[i] != i:  # a near-identical copy of an earlier image: same group
            leader[i] = leader[roots[i]]
            continue
        if not usable[i]:
            continue
        near = ids[lims[i] : lims[i + 1]]
        near = near[(near < i) & usable[near]]
        near = near[leader[near] == near]  # only leaders recruit
        if len(near):
            near = near[colour_distance(colours[near], colours[i]) <= max_colour]
            if len(near):
                leader[i] = near.min()
    return leader
