"""Near-duplicate groups inside a dataset, from perceptual hashes (LAION is full of them).

Every image is linked to those within a small Hamming distance and groups are the connected
components, found by scipy. The range search is exhaustive but runs in FAISS's SIMD
popcount code; for hundreds of millions of images swap in faiss.IndexBinaryMultiHash.
"""

from __future__ import annotations

import faiss
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def duplicate_groups(hashes: np.ndarray, max_distance: int, block: int = 16384) -> np.ndarray:
    """Group label per row: the smallest row index in the row's group."""
    n = len(hashes)
    codes = np.ascontiguousarray(hashes, dtype=np.uint8)
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    rows, cols = [], []
    for start in range(0, n, block):
        lims, _, ids = index.range_search(codes[start : start + block], max_distance + 1)
        counts = np.diff(lims).astype(np.int64)
        rows.append(np.repeat(np.arange(start, start + len(counts)), counts))
        cols.append(ids)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    return first[labels]
