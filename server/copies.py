"""Copy detection at query time: Hamming search of a query's hashes in a FAISS binary index."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from indexer.fingerprint import HASH_BITS


@dataclass(frozen=True)
class CopyThresholds:
    exact: int  # at most this many differing bits: the same picture
    near: int  # at most this many: a transformed copy


class CopyMatcher:
    def __init__(self, fingerprints: np.ndarray) -> None:
        """``fingerprints``: (N, variants, bytes) as stored in the index."""
        n, self.variants, nbytes = fingerprints.shape
        self.index = faiss.IndexBinaryFlat(nbytes * 8)
        self.index.add(np.ascontiguousarray(fingerprints.reshape(n * self.variants, nbytes)))

    def match(self, query_hashes: np.ndarray, max_distance: int) -> dict[int, int]:
        """Item row -> smallest distance between any query hash and any stored hash."""
        _lims, distances, ids = self.index.range_search(
            np.ascontiguousarray(query_hashes, dtype=np.uint8), max_distance + 1
        )
        best: dict[int, int] = {}
        for vid, dist in zip(ids // self.variants, distances, strict=True):
            item, d = int(vid), int(dist)
            if d < best.get(item, HASH_BITS + 1):
                best[item] = d
        return best


def label(distance: int | None, thresholds: CopyThresholds) -> str | None:
    if distance is None:
        return None
    if distance <= thresholds.exact:
        return "exact_copy"
    if distance <= thresholds.near:
        return "near_copy"
    return None
