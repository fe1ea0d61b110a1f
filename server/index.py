"""An index directory opened for reading: manifest, vectors, vector indexes, copy matcher and
the metadata store, all memory-mapped or opened lazily so that start-up costs the same at
ten thousand items and at ten million. What answers queries over it is engine.py."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from hibt.config import Settings
from hibt.errors import IndexDamaged
from hibt.indexer import index_format as fmt
from hibt.indexer import integrity
from hibt.indexer.copies.matching import CopyMatcher
from hibt.indexer.store import Store, Thumbnails
from hibt.indexer.vector_index import VectorIndex, VectorRows

# Reads of many metadata rows are split over this many connections, none given fewer rows
# (a page of results is read by the request's own thread: a hand-over costs more under load).
METADATA_READERS = 8
ROWS_PER_READ = 64
# From this many items a text query's name lookup runs beside its text encoder.
OVERLAP_FROM = 1_000_000
T = TypeVar("T")


class OpenIndex:
    def __init__(self, directory: Path, settings: Settings) -> None:
        self.directory = Path(directory)
        self.settings = settings
        self.manifest = fmt.read_manifest(self.directory)
        self.n = self.manifest.counts.items
        integrity.check(self.directory, self.manifest)
        try:
            self.open_files()
        except (OSError, ValueError, EOFError, RuntimeError, sqlite3.DatabaseError) as exc:
            raise integrity.damaged(self.directory, [f"it cannot be opened ({exc})"]) from exc
        self.local = threading.local()
        self.readers = ThreadPoolExecutor(METADATA_READERS, thread_name_prefix="metadata")

    def open_files(self) -> None:
        self.image_vectors = VectorRows(self.directory / fmt.IMAGE_VECTORS)
        self.faiss = {"images": self.vector_index(fmt.IMAGE_FAISS, self.image_vectors)}
        if self.manifest.captions:
            captions = VectorRows(self.directory / fmt.CAPTION_VECTORS)
            self.faiss["captions"] = self.vector_index(fmt.CAPTION_FAISS, captions)
        self.groups = np.load(self.directory / fmt.GROUPS, mmap_mode="r")
        self.has_images = self.manifest.kind == "images"
        self.copies = CopyMatcher.open(self.directory) if self.has_images else None
        self.hashes = self.copies.hashes if self.copies else None
        for name, index in self.faiss.items():
            if index.ntotal != self.n:
                raise IndexDamaged(
                    f"{self.directory} is damaged: its {name} vector index holds "
                    f"{index.ntotal} vectors, the manifest counts {self.n} items. Rebuild it "
                    "(hibt index --rebuild)"
                )

    @property
    def dataset(self) -> str:
        return self.manifest.dataset

    def vector_index(self, name: str, vectors: VectorRows) -> VectorIndex:
        s = self.settings
        return VectorIndex(self.directory / name, vectors, s.nprobe, s.rerank)

    def store(self) -> Store:
        """One read-only connection per thread (FastAPI runs sync endpoints in a pool)."""
        store = getattr(self.local, "store", None)
        if store is None:
            store = Store.open(self.directory / fmt.METADATA, readonly=True)
            self.local.store = store
        return store

    def items(self, idxs: Sequence[int]) -> dict[int, sqlite3.Row]:
        """Metadata of many rows, read in parts side by side (read_in_parts)."""
        found: dict[int, sqlite3.Row] = {}
        for rows in self.read_in_parts(Store.items, idxs)():
            found.update(rows)
        return found

    def read_in_parts(
        self, read: Callable[[Store, list[int]], T], idxs: Sequence[int]
    ) -> Callable[[], list[T]]:
        """Start ``read`` over parts of ``idxs`` on reader threads, each with its own
        connection, so that rows not in the page cache are fetched side by side rather than
        one after another (docs/scale.md has the figures); returns what collects them. The
        first part is read by the collecting thread itself, so a short list (one part) is
        never handed over: under load each hand-over cost more CPU than it saved."""
        idxs = list(idxs)
        step = max(ROWS_PER_READ, -(-len(idxs) // METADATA_READERS))
        first, *rest = [idxs[i : i + step] for i in range(0, len(idxs), step)] or [[]]
        started = [self.readers.submit(lambda p=p: read(self.store(), p)) for p in rest]

        def collect() -> list[T]:
            return [read(self.store(), first), *(part.result() for part in started)]

        return collect

    def meanwhile(self, fn: Callable[..., T], *args: object) -> Callable[[], T]:
        """``fn(*args)`` started on a reader thread when this index is big enough for its
        lookups to cost more than the hand-over (milliseconds at 10M), else run by the
        collecting thread; returns what collects it."""
        if self.n < OVERLAP_FROM:
            return lambda: fn(*args)
        return self.readers.submit(fn, *args).result

    def thumbnails(self) -> Thumbnails:
        thumbs = getattr(self.local, "thumbnails", None)
        if thumbs is None:
            thumbs = Thumbnails.open(self.directory / fmt.THUMBNAILS, readonly=True)
            self.local.thumbnails = thumbs
        return thumbs

    def phash_hex(self, idx: int) -> str:
        """The whole-image perceptual hash, as builders' filter scripts compare it; empty for
        items known only by URL."""
        return bytes(self.hashes[idx, 0]).hex() if self.hashes is not None else ""
