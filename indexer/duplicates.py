"""Near-duplicate groups inside a dataset (LAION is full of them; so is Openclipart).

Two images are linked when their files have the same bytes, or when their whole-image
pHashes differ in at most ``max_distance`` bits, both hashes are informative, and their
colour signatures agree. Groups are formed by
leader clustering in index order (an image joins the earliest leader it is linked to), not
by connected components: chains of look-alikes (stars with 34, 36, 38... points) must not
merge into one giant group. The range search is exhaustive but runs in FAISS's SIMD popcount
code; beyond a few million images swap in faiss.IndexBinaryMultiHash.
"""

from __future__ import annotations

import faiss
import numpy as np

from indexer.fingerprint import colour_distance, informative


def linked_pairs(hashes: np.ndarray, max_distance: int, block: int = 16384):
    """CSR adjacency (lims, ids) of every hash to those within ``max_distance`` bits."""
    codes = np.ascontiguousarray(hashes, dtype=np.uint8)
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    all_lims, all_ids, offset = [np.zeros(1, np.int64)], [], 0
    for start in range(0, len(codes), block):
        lims, _, ids = index.range_search(codes[start : start + block], max_distance + 1)
        all_lims.append(lims[1:].astype(np.int64) + offset)
        all_ids.append(ids.astype(np.int64))
        offset += len(ids)
    return np.concatenate(all_lims), np.concatenate(all_ids) if all_ids else np.zeros(0, np.int64)


def duplicate_groups(
    hashes: np.ndarray,
    colours: np.ndarray,
    digests: list[str],
    max_distance: int,
    max_colour: float,
) -> np.ndarray:
    """Group label per row: the row index of the group's leader (its first member)."""
    n = len(hashes)
    lims, ids = linked_pairs(hashes, max_distance)
    usable = informative(hashes)
    leader = np.arange(n)
    first_with: dict[str, int] = {}
    for i in range(n):
        same = first_with.setdefault(digests[i], i)
        if same != i:
            leader[i] = leader[same]
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
