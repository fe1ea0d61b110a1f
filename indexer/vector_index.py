"""The CLIP vector indexes: written at build time, opened memory-mapped at serve time.

Small indexes are exact (``Flat``). Large ones follow LAION's own recipe (autofaiss and
clip-retrieval): a compressed IVF-PQ index trained once on a sample, vectors added part by
part into separate files, the inverted lists then merged on disk into one ``.ivfdata`` file
that the server memory-maps, so RAM holds little more than the coarse quantiser. A
compressed index ranks near-identical items badly (its quantisation error exceeds their
differences), so the top candidates are re-scored exactly from the float16 vectors on disk
(:meth:`VectorIndex.search`). The measured figures are in docs/scale.md.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from pathlib import Path

import faiss
import numpy as np

EXACT_LIMIT = 200_000  # up to this many vectors an exact index is fast enough
TRAIN_PER_LIST = 40  # k-means wants about this many training points per inverted list
MAX_TRAIN = 327_680  # 20 a list at 16,384 lists: k-means costs sample x lists x dim
HNSW_LISTS = 131_072  # from here a flat quantiser's cost per vector outgrows an HNSW graph's
HNSW_ADD_EF = 256  # HNSW's default (16) files a quarter of the vectors in a wrong list
SCAN_CODES = 160_000  # PQ codes a query scans by default, about 10 ms here (docs/scale.md)
MIN_NPROBE, MAX_NPROBE = 128, 1024
ADD_BLOCK = 65_536
PART_ROWS = 1_000_000  # vectors per separately written part before the on-disk merge


def default_factory(n: int, dim: int) -> str:
    """Exact while it is cheap, then IVF-PQ (the autofaiss rule of thumb for nlist: about
    4 sqrt(n), a power of two) with 8 dimensions per PQ byte; "np" skips polysemous training,
    minutes of work a re-ranked index never uses. The coarse quantiser is flat (exact) while
    it can be: a vector filed in a list other than its nearest centroid's is missed by the
    queries that probe that centroid, and an HNSW quantiser searched at its default depth
    did that to 24% of the vectors at 10M (docs/scale.md)."""
    if n <= EXACT_LIMIT:
        return "Flat"
    nlist = 2 ** round(math.log2(4 * math.sqrt(n)))
    quantiser = "_HNSW32" if nlist >= HNSW_LISTS else ""
    return f"IVF{nlist}{quantiser},PQ{dim // 8}x8np"


def default_nprobe(nlist: int, ntotal: int) -> int:
    """As many lists as hold about SCAN_CODES vectors. Where the lists are small (fewer
    vectors, or more lists than 4 sqrt(N)) a query's true neighbours are spread over more of
    them: at 1M, 656 of 4,096 lists find as many (recall@10 0.95) as 262 of 16,384 at 10M."""
    per_list = max(1, ntotal // max(1, nlist))
    return min(nlist, MAX_NPROBE, max(MIN_NPROBE, round(SCAN_CODES / per_list)))


def is_exact(factory: str) -> bool:
    return factory == "Flat"


def as_float32(block: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(block, dtype=np.float32)


def train_sample(vectors: np.ndarray, nlist: int) -> np.ndarray:
    """Rows spread over the whole file, read in order (a memory map reads them cheaply)."""
    n = len(vectors)
    size = min(n, max(TRAIN_PER_LIST * nlist, 50_000), MAX_TRAIN)
    rows = np.sort(np.random.default_rng(0).choice(n, size, replace=False))
    return as_float32(vectors[rows])


def trained(vectors: np.ndarray, factory: str) -> faiss.Index:
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        ivf = faiss.extract_index_ivf(index) if "IVF" in factory else None
        nlist = ivf.nlist if ivf is not None else 1024
        index.train(train_sample(vectors, nlist))
    return index


def add_blocks(index: faiss.Index, vectors: np.ndarray, start: int, stop: int) -> None:
    quantiser = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
    if isinstance(quantiser, faiss.IndexHNSW):
        quantiser.hnsw.efSearch = max(quantiser.hnsw.efSearch, HNSW_ADD_EF)
    for at in range(start, stop, ADD_BLOCK):
        block = vectors[at : min(stop, at + ADD_BLOCK)]
        index.add_with_ids(as_float32(block), np.arange(at, at + len(block), dtype=np.int64))


def parts_dir(path: Path) -> Path:
    return path.parent / f"{path.name}.parts"


def write_index(vectors: np.ndarray, factory: str, path: Path) -> None:
    """Write the index over ``vectors`` (rows are ids) to ``path``; a compressed one also
    writes ``path`` with ``.ivfdata``. A compressed index keeps its trained quantiser and
    its parts (``path``.parts/, each named by its rows) beside it: an interrupted run, or
    ``hibt index --add`` with more rows, trains nothing again and adds only the rows no
    part holds yet."""
    if is_exact(factory) or "IVF" not in factory:
        index = trained(vectors, factory)
        for at in range(0, len(vectors), ADD_BLOCK):
            index.add(as_float32(vectors[at : at + ADD_BLOCK]))
        faiss.write_index(index, str(path))
        return
    work = parts_dir(path)
    work.mkdir(exist_ok=True)
    empty = work / "trained.index"
    if not empty.is_file():
        print(f"training {factory} on a sample", file=sys.stderr)
        faiss.write_index(trained(vectors, factory), str(empty))
    wanted = [(a, min(len(vectors), a + PART_ROWS)) for a in range(0, len(vectors), PART_ROWS)]
    names = {work / f"rows_{a:012d}_{b:012d}.index" for a, b in wanted}
    for stale in set(work.glob("rows_*.index")) - names:
        stale.unlink()  # a last part that has since grown
    for start, stop in wanted:
        part = work / f"rows_{start:012d}_{stop:012d}.index"
        if not part.is_file():
            index = faiss.read_index(str(empty))
            add_blocks(index, vectors, start, stop)
            faiss.write_index(index, str(part) + ".tmp")
            Path(str(part) + ".tmp").replace(part)
            print(f"  vectors {start:,}-{stop:,} added", file=sys.stderr)
    merge_on_disk(empty, sorted(names), path)


def merge_on_disk(empty: Path, parts: list[Path], path: Path) -> None:
    """One index whose inverted lists live in ``path``.ivfdata, found beside it on load."""
    from faiss.contrib.ondisk import merge_ondisk

    index = faiss.read_index(str(empty))
    data = path.with_suffix(path.suffix + ".ivfdata")
    data.unlink(missing_ok=True)
    merge_ondisk(index, [str(p) for p in parts], str(data))
    faiss.write_index(index, str(path))


# numpy parses a .npy header with ast.literal_eval, and CPython 3.11 keeps the AST
# constructor's recursion depth per interpreter, not per thread: two threads parsing at once
# (integrity.describe reads headers a few files at a time) can fail with "SystemError: AST
# constructor recursion depth mismatch" (CPython gh-106905). Headers are read one at a time.
HEADER_LOCK = threading.Lock()


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of a .npy file, reading its header only."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        with HEADER_LOCK:
            shape, _, dtype = read(f)
        return shape, np.dtype(dtype), f.tell()


class VectorRows:
    """Rows of a float16 .npy file read with pread, not a memory map: the pages a memory map
    touches stay in the server's resident memory, which at ten million rows would grow
    towards the whole file; these reads leave only the kernel's reclaimable cache."""

    def __init__(self, path: Path) -> None:
        shape, self.dtype, self.offset = npy_header(path)
        self.path, self.shape = path, shape
        self.row_bytes = self.dtype.itemsize * int(np.prod(shape[1:]))
        self.fd = os.open(path, os.O_RDONLY)
        # Rows are read at random: without this the kernel reads ahead about 128 KB around
        # each 1 KB row that misses the page cache, filling it with rows nobody asked for.
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_RANDOM)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, ids) -> np.ndarray:
        if np.ndim(ids) == 0:
            return self.read([int(ids)])[0]
        return self.read(ids)

    def read(self, ids) -> np.ndarray:
        out = np.empty((len(ids), *self.shape[1:]), self.dtype)
        flat = out.reshape(len(ids), -1).view(np.uint8)
        starts = [self.offset + int(row) * self.row_bytes for row in ids]
        # Ask for every row first, then read: the kernel has all the misses in flight at
        # once instead of one after another (docs/scale.md has the figures).
        for at in starts:
            os.posix_fadvise(self.fd, at, self.row_bytes, os.POSIX_FADV_WILLNEED)
        for i, at in enumerate(starts):
            flat[i] = np.frombuffer(os.pread(self.fd, self.row_bytes, at), np.uint8)
        return out


class VectorIndex:
    """A vector index opened for search, with exact re-ranking for compressed ones."""

    def __init__(self, path: Path, vectors: VectorRows, nprobe: int | None, rerank: int) -> None:
        # An index with lists on disk finds its .ivfdata beside it; others are memory-mapped
        # whole (the two flags together crash on an on-disk index).
        on_disk = path.with_suffix(path.suffix + ".ivfdata").is_file()
        flag = faiss.IO_FLAG_ONDISK_SAME_DIR if on_disk else faiss.IO_FLAG_MMAP
        self.index = faiss.read_index(str(path), flag)
        self.vectors = vectors
        self.exact = isinstance(self.index, faiss.IndexFlat)
        self.rerank = 0 if self.exact else rerank
        if not self.exact:
            ivf = faiss.extract_index_ivf(self.index)
            nprobe = nprobe or default_nprobe(ivf.nlist, ivf.ntotal)
            params = faiss.ParameterSpace()
            params.set_index_parameter(self.index, "nprobe", nprobe)
            quantiser = faiss.downcast_index(ivf.quantizer)
            if isinstance(quantiser, faiss.IndexHNSW):
                params.set_index_parameter(self.index, "quantizer_efSearch", max(64, nprobe * 2))

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def search(self, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, cosines) of the ``count`` nearest rows, best first; exact cosines."""
        want = min(self.ntotal, max(count, self.rerank))
        scores, ids = self.index.search(as_float32(query[None, :]), want)
        ids, scores = ids[0], scores[0]
        keep = ids >= 0
        ids, scores = ids[keep], scores[keep]
        if self.rerank and len(ids):
            order = np.argsort(ids)  # rows read in file order
            exact = np.empty(len(ids), np.float32)
            exact[order] = as_float32(self.vectors[ids[order]]) @ as_float32(query)
            scores = exact
        best = np.argsort(-scores, kind="stable")[:count]
        return ids[best], scores[best]
