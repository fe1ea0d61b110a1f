"""FAISS search of fingerprint descriptors by cosine, shared by duplicate grouping (build
time), copy matching (query time) and the copy benchmark's split, so all three compare
alike. The search is exhaustive (inner product over unit vectors, BLAS); beyond a few
million images use an IVF index.
"""

from __future__ import annotations

import faiss
import numpy as np

from hibt.indexer.copies.fingerprint import HASH_SIZE, band_mask


def descriptor_index(vectors: np.ndarray) -> faiss.IndexFlatIP:
    """An inner-product index over unit-length (or all-zero) descriptors, one per row."""
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(data.shape[1])
    index.add(data)
    return index


def at_least(index: faiss.Index, queries: np.ndarray, min_similarity: float):
    """(lims, similarities, ids) of every stored row whose cosine with a query is at least
    ``min_similarity``: FAISS's range search keeps only those strictly above its radius."""
    radius = float(np.nextafter(np.float32(min_similarity), np.float32(-1)))
    return index.range_search(np.ascontiguousarray(queries, dtype=np.float32), radius)


# A query view with a narrow band is searched down to this fraction of its threshold: its
# cosine with a stored view is then rescaled by that view's energy inside the band, so a
# stored view with under a quarter of its energy there (a busy picture, which a thumbnail
# this small cannot identify anyway) is not reached.
NARROW_FLOOR = 0.5


def banded_matches(
    index: faiss.IndexFlat, queries: np.ndarray, bands: np.ndarray, min_similarity: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query row, similarity, stored id) of every pair at least ``min_similarity`` alike.

    A query with a band narrower than the full block (``bands``: its DCT rows and columns,
    zero outside them, see fingerprint.py) is compared with the stored view's part
    inside the same band, and held to a stricter standard: its 1 - cosine counts in
    proportion to the coefficients it lacks, so a 12x12 band must reach 0.983 to count as
    0.97. The similarity returned is on that common scale."""
    found = []
    for rows, cols in np.unique(bands, axis=0):
        picked = np.flatnonzero((bands[:, 0] == rows) & (bands[:, 1] == cols))
        strictness = HASH_SIZE * HASH_SIZE / (rows * cols)
        need = 1 - (1 - min_similarity) / strictness
        narrow = strictness > 1
        lims, sims, ids = at_least(index, queries[picked], need * NARROW_FLOOR if narrow else need)
        hit = picked[np.repeat(np.arange(len(picked)), np.diff(lims).astype(np.int64))]
        if narrow and len(ids):
            stored = index.reconstruct_batch(ids)[:, band_mask(int(rows), int(cols))]
            sims = sims / np.maximum(np.linalg.norm(stored, axis=1), 1e-6)
            keep = sims >= need
            hit, sims, ids = hit[keep], 1 - (1 - sims[keep]) * strictness, ids[keep]
        found.append((hit, sims.astype(np.float32), ids))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
    hit, sims, ids = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return hit, sims, ids
