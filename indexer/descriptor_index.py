"""FAISS search of fingerprint descriptors by cosine, shared by duplicate grouping (build
time), copy matching (query time) and the copy benchmark's split, so all three compare
alike. The search is exhaustive (inner product over unit vectors, BLAS); beyond a few
million images use an IVF index.
"""

from __future__ import annotations

import faiss
import numpy as np


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
