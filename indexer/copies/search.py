"""Cosine search of fingerprint descriptors, shared by duplicate grouping (build time), copy
matching (query time) and the copy benchmark's split, so all three compare alike.

Two searches answer the same question, every stored view at least so alike to a query view,
with the same similarities:

* :class:`Exhaustive`: every stored view against every query view. Exact, linear in the
  number of items: an index under :data:`CANDIDATE_MIN_ITEMS` items, and the reference.
* :class:`CandidateIndex`: an inverted file (FAISS IVF) over every informative stored view,
  its lists holding the float16 descriptors as stored (``SQfp16``: lossless for them, so the
  similarities are the exhaustive ones), memory-mapped from the index directory. A query
  view scans only the lists whose centroids are nearest to it (:data:`NPROBE` of them,
  chosen so that it finds what exhaustive search finds down to the benchmark's calibration
  floor, scripts/bench_copy_scale.py). Written at build time by :func:`write_copy_index`.

:func:`banded_matches` compares tiny query views in their DCT band, on either search.
Descriptors are unit length, or all zero for views too plain to identify (never stored in
the candidate index: they meet nothing).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.ondisk import merge_ondisk

from hibt.indexer import index_format as fmt
from hibt.indexer.copies.fingerprint import HASH_SIZE, MIN_BAND, band_mask, informative
from hibt.indexer.space import new_memmap

FULL_BAND = (HASH_SIZE, HASH_SIZE)
# Items from which the build writes a candidate index; below, search is exhaustive.
CANDIDATE_MIN_ITEMS = 200_000
# Inverted lists scanned per query view: full band, and narrow band (a tiny thumbnail,
# searched down to half its threshold, NARROW_FLOOR, with centroids ranked in its band).
# Chosen so that the candidate index finds every item exhaustive search finds at the
# benchmark's calibration floor, 0.85, measured by scripts/bench_copy_scale.py.
NPROBE = 64
NPROBE_NARROW = 64
LIST_SIZE = 256  # stored views per inverted list, about
TRAIN_PER_LIST = 24  # k-means sample: this many stored views per inverted list
SPILL = 3  # lists a stored view may be kept in ...
SPILL_MARGIN = 0.05  # ... when their centroid is this nearly as alike as its nearest list's
SPILL_CELLS = 4  # top-level cells whose lists a view is compared with (Lists.assign)
PADDED_DIM = 256  # FAISS scans float16 codes with SIMD only when the width is a multiple of 8
GROUP_NEIGHBOURS = 4  # lists whose views duplicate grouping compares with a list's own
BLOCK_ROWS = 262_144  # stored views read, converted or added at a time
BLOCK_ENTRIES = 1 << 25  # query x stored similarities computed at a time (128 MB)
# Exhaustive search in memory first compares the lowest HEAD_SIDE x HEAD_SIDE frequencies
# (Exhaustive.reachable), then multiplies out the pairs that can still reach the threshold,
# unless they are over DENSE_SHARE of a block; BOUND_SLACK covers float32 rounding.
HEAD_SIDE = 8
HEAD = band_mask(HEAD_SIDE, HEAD_SIDE)
DENSE_SHARE = 1 / 16
BOUND_SLACK = 1e-4


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


def by_row(rows: np.ndarray, sims: np.ndarray, ids: np.ndarray, n: int):
    """(lims, similarities, ids) of (query row, similarity, stored id) triples, ordered by
    row, then id, as an exhaustive range search orders them; each pair once (a stored view
    kept in two lists is found twice)."""
    order = np.lexsort((ids, rows))
    rows, sims, ids = rows[order], sims[order], ids[order]
    once = np.ones(len(ids), bool)
    once[1:] = (rows[1:] != rows[:-1]) | (ids[1:] != ids[:-1])
    rows, sims, ids = rows[once], sims[once], ids[once]
    lims = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=lims[1:])
    return lims, sims, ids


class Exhaustive:
    """Every stored view against every query view: exact, linear in the number of items.

    ``descriptors``: (items, views, dim). Compared by BLAS a block of stored views at a time,
    all of an upload's views at once (FAISS's flat range search scans them one by one:
    docs/copy-detection.md, run AK). Held in memory as float32 unless ``in_memory`` is False
    (the default for a memory map): then they are read a block at a time, so memory stays
    flat at any size, at the cost of reading them all for every search. In memory, the
    lowest frequencies are also kept apart (a quarter more memory), and only the pairs they
    leave within reach are multiplied out whole (:meth:`reachable`, run AW)."""

    def __init__(self, descriptors: np.ndarray, in_memory: bool | None = None) -> None:
        n, self.views, dim = descriptors.shape
        self.flat = descriptors.reshape(n * self.views, dim)
        if in_memory is None:
            in_memory = not isinstance(descriptors, np.memmap)
        self.in_memory = in_memory
        if in_memory:
            self.flat = np.ascontiguousarray(self.flat, dtype=np.float32)
            self.head = np.ascontiguousarray(self.flat[:, HEAD])
            self.rest_norms = np.linalg.norm(self.flat[:, ~HEAD], axis=1)
        self.band_norms: dict[tuple[int, int], np.ndarray] = {}

    def candidates(
        self,
        queries: np.ndarray,
        min_similarity: float,
        band: tuple[int, int] = FULL_BAND,
        need: float | None = None,
    ):
        """(lims, similarities, ids): per query row, every stored view at least
        ``min_similarity`` alike. With ``need`` (a query in a narrow ``band``), only those
        whose similarity rescaled by their norm in the band can reach it (see
        banded_matches): a thumbnail is alike to most stored views at half its threshold,
        far too many to keep."""
        q = np.ascontiguousarray(queries, np.float32)
        step = max(1024, BLOCK_ENTRIES // max(1, len(q)))
        nothing = (np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64))
        found = [nothing] + [
            self.in_block(q, start, start + step, np.float32(min_similarity), band, need)
            for start in range(0, len(self.flat), step)
        ]
        rows, sims, ids = (np.concatenate(parts) for parts in zip(*found, strict=True))
        return by_row(rows, sims, ids, len(q))

    def in_block(
        self,
        q: np.ndarray,
        start: int,
        stop: int,
        threshold: np.float32,
        band: tuple[int, int],
        need: float | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`candidates` among stored views ``start:stop``: (query rows, similarities,
        stored ids). Held in memory, only the pairs :meth:`reachable` leaves are multiplied
        out, unless they are over :data:`DENSE_SHARE` of the block's (then one product is
        quicker)."""
        pairs = self.reachable(q, start, stop, threshold) if self.in_memory else None
        block = np.asarray(self.flat[start:stop], dtype=np.float32)
        if pairs is not None and len(pairs[0]) <= DENSE_SHARE * q.shape[0] * len(block):
            r, c = pairs
            alike = np.einsum("ij,ij->i", q[r], block[c])
            keep = alike >= threshold
            r, c, alike = r[keep], c[keep], alike[keep]
        else:
            product = q @ block.T
            r, c = np.nonzero(product >= threshold)
            alike = product[r, c]
        if need is not None:
            keep = alike >= np.float32(need * (1 - 1e-6)) * self.band_norm(block, start, band)[c]
            r, c, alike = r[keep], c[keep], alike[keep]
        return r.astype(np.int64), alike, c.astype(np.int64) + start

    def reachable(
        self, q: np.ndarray, start: int, stop: int, threshold: np.float32
    ) -> tuple[np.ndarray, np.ndarray]:
        """(query row, stored row in the block) of the pairs whose similarity can reach
        ``threshold``: their product over the lowest frequencies (:data:`HEAD`, most of a
        picture's energy) plus the most the rest can add, the product of the two rests'
        norms (Cauchy-Schwarz). A quarter of the descriptors is read for every stored view,
        the whole only for the few left: reading them was most of a search's time."""
        head = q[:, HEAD] @ self.head[start:stop].T
        head += np.linalg.norm(q[:, ~HEAD], axis=1)[:, None] * self.rest_norms[start:stop]
        return np.nonzero(head >= threshold - BOUND_SLACK)

    def band_norm(self, block: np.ndarray, start: int, band: tuple[int, int]) -> np.ndarray:
        """Norms of ``block``'s rows inside ``band``; kept per band when held in memory."""
        if not self.in_memory:
            return np.linalg.norm(block[:, band_mask(*band)], axis=1)
        key = (int(band[0]), int(band[1]))
        if key not in self.band_norms:
            self.band_norms[key] = np.linalg.norm(self.flat[:, band_mask(*key)], axis=1)
        return self.band_norms[key][start : start + len(block)]

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.flat[ids], dtype=np.float32)


def list_count(rows: int) -> int:
    """Inverted lists for ``rows`` stored views: about :data:`LIST_SIZE` views each."""
    return int(np.clip(rows // LIST_SIZE, 16, 65536))


def informative_rows(flat: np.ndarray) -> np.ndarray:
    """Row numbers of the informative (non-zero) stored views, read a block at a time."""
    found = [
        np.flatnonzero(informative(flat[start : start + BLOCK_ROWS])) + start
        for start in range(0, len(flat), BLOCK_ROWS)
    ]
    return np.concatenate(found).astype(np.int64) if found else np.zeros(0, np.int64)


# Square bands whose energy the candidate index keeps per stored view: a thumbnail's band
# (rows x cols) holds the square of side min(rows, cols), so that square's energy bounds the
# stored view's energy in the band from below, and with it the banded similarity from above.
BAND_SQUARES = np.arange(MIN_BAND, HASH_SIZE)


def band_floors(vectors: np.ndarray) -> np.ndarray:
    """uint8 (rows, len(BAND_SQUARES)): per row and square band, the norm of the row's part
    inside the square in 255ths, rounded down (a lower bound, never above the true norm)."""
    energy = np.zeros((len(vectors), HASH_SIZE * HASH_SIZE), np.float64)
    energy[:, 1:] = np.square(np.asarray(vectors, np.float64))
    square = energy.reshape(-1, HASH_SIZE, HASH_SIZE).cumsum(axis=1).cumsum(axis=2)
    norms = np.sqrt(square[:, BAND_SQUARES - 1, BAND_SQUARES - 1])
    return np.clip(np.floor(norms * 255 - 1e-3), 0, 255).astype(np.uint8)


def padded(vectors: np.ndarray) -> np.ndarray:
    """float32 rows widened with zeros to :data:`PADDED_DIM` (inner products unchanged)."""
    out = np.zeros((len(vectors), PADDED_DIM), np.float32)
    out[:, : vectors.shape[1]] = vectors
    return out


class Lists:
    """How stored views are shared out among inverted lists: two-level spherical k-means.

    A view goes to the nearest leaf (list) inside the :data:`SPILL_CELLS` nearest of
    :attr:`top` centroids, so sharing out N views costs about N x 4 sqrt(lists) inner
    products, not N x lists. It is also kept in up to :data:`SPILL` - 1 more lists that are
    nearly as near (by :data:`SPILL_MARGIN` in cosine): a view between lists, the kind an
    upload's lists miss, is then in the lists of each side (scripts/bench_copy_scale.py)."""

    def __init__(self, top: np.ndarray, leaves: np.ndarray, first: np.ndarray) -> None:
        self.top = top  # (cells, dim)
        self.leaves = leaves  # (lists, dim): the leaves of cell c are first[c]:first[c + 1]
        self.first = first

    @classmethod
    def train(cls, sample: np.ndarray, nlist: int, seed: int = 0) -> Lists:
        """About ``nlist`` lists, each cell's share in proportion to the sample in it."""
        nlist = max(1, min(nlist, len(sample)))
        cells = max(1, min(round(math.sqrt(nlist)), len(sample)))
        top = kmeans(sample, cells, seed)
        where = np.argmax(sample @ top.T, axis=1)
        counts = np.bincount(where, minlength=cells)
        share = np.maximum(1, np.round(counts * nlist / max(1, counts.sum()))).astype(int)
        leaves, first = [], [0]
        for cell in range(cells):
            members = sample[where == cell]
            if not len(members):  # an empty cell keeps its centroid as its one leaf
                members = top[cell : cell + 1]
            leaves.append(kmeans(members, min(int(share[cell]), len(members)), seed))
            first.append(first[-1] + len(leaves[-1]))
        return cls(top, np.concatenate(leaves), np.array(first))

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """int64 (rows, SPILL): the lists each row of ``vectors`` (float32, padded) is kept
        in, nearest first; -1 where it is not kept in as many."""
        n, spill = len(vectors), min(SPILL, len(self.leaves))
        best = np.full((n, spill), -np.inf, np.float32)
        lists = np.full((n, spill), -1, np.int64)
        near = np.argsort(-(vectors @ self.top.T), axis=1)[:, :SPILL_CELLS]
        for rank in range(near.shape[1]):
            for cell in np.unique(near[:, rank]):
                rows = np.flatnonzero(near[:, rank] == cell)
                start, stop = self.first[cell], self.first[cell + 1]
                scores = np.concatenate([best[rows], vectors[rows] @ self.leaves[start:stop].T], 1)
                ids = np.concatenate(
                    [
                        lists[rows],
                        np.broadcast_to(np.arange(start, stop), (len(rows), stop - start)),
                    ],
                    1,
                )
                if scores.shape[1] > spill:  # the best few, then in order
                    top = np.argpartition(-scores, spill - 1, axis=1)[:, :spill]
                    scores = np.take_along_axis(scores, top, 1)
                    ids = np.take_along_axis(ids, top, 1)
                keep = np.argsort(-scores, axis=1, kind="stable")
                best[rows] = np.take_along_axis(scores, keep, 1)
                lists[rows] = np.take_along_axis(ids, keep, 1)
        lists[best < best[:, :1] - SPILL_MARGIN] = -1
        return lists


def kmeans(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` unit-length centroids of unit-length ``vectors`` (spherical k-means)."""
    if k <= 1:
        mean = vectors.mean(axis=0, keepdims=True)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
    clustering = faiss.Kmeans(vectors.shape[1], k, niter=15, spherical=True, seed=seed)
    clustering.cp.min_points_per_centroid = 1  # a small cell: no warning, it is expected
    clustering.cp.max_points_per_centroid = 4 * TRAIN_PER_LIST
    clustering.train(np.ascontiguousarray(vectors, np.float32))
    return clustering.centroids


class CandidateIndex:
    """An inverted file over every informative stored view (ids: item x views + view, as
    rows of the descriptors), and the descriptors it was built from, for narrow bands.

    Opened from an index directory with :meth:`open` (the lists memory-mapped: memory stays
    small, the operating system caches what queries read); built by :meth:`build`."""

    def __init__(
        self,
        ivf: faiss.IndexIVF,
        descriptors: np.ndarray,
        blank: np.ndarray,
        floors: np.ndarray,
    ) -> None:
        n, self.views, dim = descriptors.shape
        self.floors = floors  # uint8 (stored views, BAND_SQUARES): band_floors()
        self.ivf = ivf
        lists = faiss.downcast_InvertedLists(ivf.invlists)
        if isinstance(lists, faiss.OnDiskInvertedLists):
            lists.prefetch_nthread = 0  # else every search starts 32 threads to read ahead
        self.blank = blank  # rows of the items whose whole view is too plain to identify
        self.items = n
        self.flat = descriptors.reshape(n * self.views, dim)
        self.centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)[:, :dim]
        self.band_norms: dict[tuple[int, int], np.ndarray] = {}
        self.nprobe, self.nprobe_narrow = NPROBE, NPROBE_NARROW

    @classmethod
    def open(cls, directory: Path, descriptors: np.ndarray) -> CandidateIndex:
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
        directory = Path(directory)
        ivf = faiss.read_index(str(directory / fmt.COPY_INDEX), flags)
        return cls(
            ivf,
            descriptors,
            np.load(directory / fmt.COPY_BLANK),
            np.load(directory / fmt.COPY_BAND_NORMS, mmap_mode="r"),
        )

    @classmethod
    def build(cls, directory: Path, descriptors: np.ndarray, seed: int = 0) -> CandidateIndex:
        """Train, fill and write the index into ``directory`` (:data:`fmt.COPY_INDEX`, its
        lists :data:`fmt.COPY_INDEX_DATA`, and :data:`fmt.COPY_BLANK`), a block of stored
        views at a time: shards of the lists are written to disk and merged there, so memory
        stays bounded at any size."""
        directory = Path(directory)
        n, views, dim = descriptors.shape
        flat = descriptors.reshape(n * views, dim)
        rows = informative_rows(flat)
        blank = np.ones(n, bool)
        blank[rows[rows % views == 0] // views] = False
        np.save(directory / fmt.COPY_BLANK, np.flatnonzero(blank))
        floors = new_memmap(
            directory / fmt.COPY_BAND_NORMS, np.uint8, (len(flat), len(BAND_SQUARES))
        )
        for start in range(0, len(flat), BLOCK_ROWS):
            floors[start : start + BLOCK_ROWS] = band_floors(flat[start : start + BLOCK_ROWS])
        floors.flush()
        del floors
        rng = np.random.default_rng(seed)
        nlist = list_count(len(rows))
        wanted = min(len(rows), nlist * TRAIN_PER_LIST)
        sample = padded(flat[np.sort(rng.choice(rows, wanted, replace=False))])
        lists = Lists.train(sample, nlist, seed)
        del sample
        nlist = len(lists.leaves)
        quantizer = faiss.IndexFlatIP(PADDED_DIM)
        quantizer.add(lists.leaves)

        def empty() -> faiss.IndexIVFScalarQuantizer:
            ivf = faiss.IndexIVFScalarQuantizer(
                quantizer,
                PADDED_DIM,
                nlist,
                faiss.ScalarQuantizer.QT_fp16,
                faiss.METRIC_INNER_PRODUCT,
            )
            ivf.by_residual = False  # store the descriptors themselves: fp16 holds them exactly
            ivf.is_trained = True
            return ivf

        with tempfile.TemporaryDirectory(dir=directory, prefix=".copy-index-") as work:
            shards = []
            for start in range(0, len(rows), 4 * BLOCK_ROWS):
                ids = rows[start : start + 4 * BLOCK_ROWS]
                shard = empty()
                for part in range(0, len(ids), BLOCK_ROWS):
                    chunk = ids[part : part + BLOCK_ROWS]
                    vectors = padded(flat[chunk])
                    for where in lists.assign(vectors).T:
                        kept = np.flatnonzero(where >= 0)
                        # held in names: FAISS reads them through bare pointers
                        x, labels, keys = vectors[kept], chunk[kept], where[kept]
                        shard.add_core(
                            len(kept),
                            faiss.swig_ptr(x),
                            faiss.swig_ptr(labels),
                            faiss.swig_ptr(keys),
                        )
                shards.append(str(Path(work) / f"shard{len(shards)}"))
                faiss.write_index(shard, shards[-1])
                del shard
            ivf = empty()
            merge_ondisk(ivf, shards, str(directory / fmt.COPY_INDEX_DATA))
            faiss.write_index(ivf, str(directory / fmt.COPY_INDEX))
        return cls.open(directory, descriptors)

    def probes(self, queries: np.ndarray, band: tuple[int, int], nprobe: int):
        """(lists, inner products with their centroids) to scan for each query row: the
        nearest centroids, in the query's band when it is narrow (a thumbnail's stored
        original may carry much of its energy outside the band, pulling its list away)."""
        nprobe = min(nprobe, self.ivf.nlist)
        dots = queries @ self.centroids.T
        scores = dots
        if tuple(band) != FULL_BAND:
            key = (int(band[0]), int(band[1]))
            if key not in self.band_norms:
                inside = self.centroids[:, band_mask(*key)]
                self.band_norms[key] = np.maximum(np.linalg.norm(inside, axis=1), 1e-6)
            scores = dots / self.band_norms[key]
        keys = np.argpartition(-scores, nprobe - 1, axis=1)[:, :nprobe]
        return keys.astype(np.int64), np.take_along_axis(dots, keys, axis=1)

    def candidates(
        self,
        queries: np.ndarray,
        min_similarity: float,
        band: tuple[int, int] = FULL_BAND,
        need: float | None = None,
    ):
        """(lims, similarities, ids): per query row, the stored views at least
        ``min_similarity`` alike in the lists it probes (:meth:`probes`), ordered as
        :class:`Exhaustive` orders them. With ``need`` (a query in a narrow ``band``),
        only those whose floor in the band (:func:`band_floors`) leaves the rescaled
        similarity a chance to reach it."""
        q = np.ascontiguousarray(queries, np.float32)
        narrow = tuple(band) != FULL_BAND
        keys, dots = self.probes(q, band, self.nprobe_narrow if narrow else self.nprobe)
        keys, dots = np.ascontiguousarray(keys), np.ascontiguousarray(dots, np.float32)
        params = faiss.SearchParametersIVF(nprobe=keys.shape[1])
        result = faiss.RangeSearchResult(len(q))
        q = padded(q)
        self.ivf.range_search_preassigned_c(
            len(q),
            faiss.swig_ptr(q),
            float(np.nextafter(np.float32(min_similarity), np.float32(-1))),
            faiss.swig_ptr(keys),
            faiss.swig_ptr(dots),
            result,
            False,
            params,
        )
        lims = faiss.rev_swig_ptr(result.lims, len(q) + 1).astype(np.int64)
        sims = faiss.rev_swig_ptr(result.distances, int(lims[-1])).copy()
        ids = faiss.rev_swig_ptr(result.labels, int(lims[-1])).astype(np.int64)
        rows = np.repeat(np.arange(len(q)), np.diff(lims))
        if need is not None and len(ids):
            maybe = sims >= np.float32(need) * self.band_floor(ids, band)
            rows, sims, ids = rows[maybe], sims[maybe], ids[maybe]
        return by_row(rows, sims, ids, len(q))

    def view_pairs(self, view: int, min_similarity: float, neighbours: int = GROUP_NEIGHBOURS):
        """(item, item, similarity) of every two items whose stored views ``view`` are at
        least ``min_similarity`` alike and lie in one list or in lists whose centroids are
        among each other's ``neighbours`` nearest; each item with itself, each pair both
        ways round, once. Linear in the number of items, a list at a time: views this alike
        (duplicate grouping's 0.97 and up) are rarely farther apart, as the benchmark checks
        against exhaustive search (scripts/bench_copy_scale.py)."""
        lists = faiss.downcast_InvertedLists(self.ivf.invlists)
        members = []
        for number in range(self.ivf.nlist):
            ids = faiss.rev_swig_ptr(lists.get_ids(number), int(lists.list_size(number)))
            members.append(np.sort(ids[ids % self.views == view]))
        near = self.nearest_lists(neighbours)
        threshold = np.float32(min_similarity)
        found_a, found_b = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for number, mine in enumerate(members):
            if not len(mine):
                continue
            others = np.unique(np.concatenate([members[k] for k in near[number]]))
            a, b = np.nonzero(self.vectors(mine) @ self.vectors(others).T >= threshold)
            found_a.append(mine[a])
            found_b.append(others[b])
        a, b = np.concatenate(found_a), np.concatenate(found_b)
        a, b = np.concatenate([a, b]), np.concatenate([b, a])  # both ways round
        _, first = np.unique(a * len(self.flat) + b, return_index=True)
        a, b = a[first], b[first]
        alike = np.zeros(len(a), np.float32)
        for start in range(0, len(a), BLOCK_ROWS):
            part = slice(start, start + BLOCK_ROWS)
            alike[part] = np.einsum("ij,ij->i", self.vectors(a[part]), self.vectors(b[part]))
        return a // self.views, b // self.views, alike

    def nearest_lists(self, k: int) -> np.ndarray:
        """int (lists, k + 1): each list and the ``k`` lists whose centroids are nearest."""
        k = min(k + 1, len(self.centroids))
        near = np.empty((len(self.centroids), k), np.int64)
        step = max(1, BLOCK_ENTRIES // len(self.centroids))
        for start in range(0, len(self.centroids), step):
            alike = self.centroids[start : start + step] @ self.centroids.T
            alike[np.arange(len(alike)), np.arange(start, start + len(alike))] = np.inf
            near[start : start + step] = np.argpartition(-alike, k - 1, axis=1)[:, :k]
        return near

    def band_floor(self, ids: np.ndarray, band: tuple[int, int]) -> np.ndarray:
        """A lower bound of the norm of each stored view's part inside ``band``."""
        column = min(band) - int(BAND_SQUARES[0])
        order = np.argsort(ids, kind="stable")  # read the memory map in file order
        out = np.empty(len(ids), np.float32)
        out[order] = self.floors[ids[order], column]
        return out / np.float32(255)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """Stored vectors of ``ids``, read from the memory-mapped descriptors in file order."""
        order = np.argsort(ids, kind="stable")
        out = np.empty((len(ids), self.flat.shape[1]), np.float32)
        out[order] = self.flat[ids[order]]
        return out


def write_copy_index(
    directory: Path, descriptors: np.ndarray, min_items: int = CANDIDATE_MIN_ITEMS
) -> CandidateIndex | None:
    """Build time, once ``descriptors`` ((items, views, dim), best memory-mapped from
    :data:`fmt.DESCRIPTORS`) are written: write the candidate index into the index directory
    when there are ``min_items`` items or more, and return it (opened, for duplicate
    grouping). Below, write nothing and return None: search stays exhaustive."""
    directory = Path(directory)
    for name in (fmt.COPY_INDEX, fmt.COPY_INDEX_DATA, fmt.COPY_BLANK, fmt.COPY_BAND_NORMS):
        (directory / name).unlink(missing_ok=True)
    if len(descriptors) < min_items:
        return None
    return CandidateIndex.build(directory, descriptors)


def open_search(directory: Path, descriptors: np.ndarray) -> Exhaustive | CandidateIndex:
    """The candidate index of an index directory when it has one, else exhaustive search
    (in memory for a small index, read a block at a time for a large one built without)."""
    if (Path(directory) / fmt.COPY_INDEX).is_file():
        return CandidateIndex.open(directory, descriptors)
    return Exhaustive(descriptors, in_memory=len(descriptors) < CANDIDATE_MIN_ITEMS)


# A query view with a narrow band is searched down to this fraction of its threshold: its
# cosine with a stored view is then rescaled by that view's energy inside the band, so a
# stored view with under a quarter of its energy there (a busy picture, which a thumbnail
# this small cannot identify anyway) is not reached.
NARROW_FLOOR = 0.5


def banded_matches(
    search: Exhaustive | CandidateIndex,
    queries: np.ndarray,
    bands: np.ndarray,
    min_similarity: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query row, similarity, stored id) of every pair at least ``min_similarity`` alike.

    A query with a band narrower than the full block (``bands``: its DCT rows and columns,
    zero outside them, see fingerprint.py) is compared with the stored view's part
    inside the same band, and held to a stricter standard: its 1 - cosine counts in
    proportion to the coefficients it lacks, so a 12x12 band must reach 0.983 to count as
    0.97. The similarity returned is on that common scale. ``search``: :class:`Exhaustive`
    or :class:`CandidateIndex`."""
    found = []
    for rows, cols in np.unique(bands, axis=0):
        picked = np.flatnonzero((bands[:, 0] == rows) & (bands[:, 1] == cols))
        strictness = HASH_SIZE * HASH_SIZE / (rows * cols)
        need = 1 - (1 - min_similarity) / strictness
        narrow = strictness > 1
        band = (int(rows), int(cols))
        if narrow:
            lims, sims, ids = search.candidates(queries[picked], need * NARROW_FLOOR, band, need)
        else:
            lims, sims, ids = search.candidates(queries[picked], need, band)
        hit = picked[np.repeat(np.arange(len(picked)), np.diff(lims).astype(np.int64))]
        if narrow and len(ids):
            stored = search.vectors(ids)[:, band_mask(*band)]
            sims = sims / np.maximum(np.linalg.norm(stored, axis=1), 1e-6)
            keep = sims >= need
            hit, sims, ids = hit[keep], 1 - (1 - sims[keep]) * strictness, ids[keep]
        found.append((hit, sims.astype(np.float32), ids))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
    hit, sims, ids = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return hit, sims, ids
