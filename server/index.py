"""An index directory opened for reading: manifest, vectors, FAISS indexes, copy matcher and
the metadata store. What answers queries over it is engine.py."""

from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np
from hibt.indexer import index_format as fmt
from hibt.indexer.copies.matching import CopyMatcher
from hibt.indexer.store import Store

from hibt.config import Settings

NPROBE = 32  # inverted lists searched per query, for IVF indexes


class OpenIndex:
    def __init__(self, directory: Path, settings: Settings) -> None:
        self.directory = Path(directory)
        self.settings = settings
        self.manifest = fmt.read_manifest(self.directory)
        self.n = self.manifest.counts.items
        self.image_vectors = np.load(self.directory / fmt.IMAGE_VECTORS, mmap_mode="r")
        self.faiss = {
            "images": self.read_faiss(fmt.IMAGE_FAISS),
            "captions": self.read_faiss(fmt.CAPTION_FAISS),
        }
        self.hashes = np.load(self.directory / fmt.FINGERPRINTS, mmap_mode="r")
        self.copies = CopyMatcher(
            np.load(self.directory / fmt.DESCRIPTORS),
            self.hashes,
            np.load(self.directory / fmt.COLOURS),
        )
        self.local = threading.local()
        self.groups = self.store().groups()

    @property
    def dataset(self) -> str:
        return self.manifest.dataset

    def read_faiss(self, name: str) -> faiss.Index:
        index = faiss.read_index(str(self.directory / name))
        if "IVF" in self.manifest.faiss_factory:
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", NPROBE)
        return index

    def store(self) -> Store:
        """One read-only connection per thread (FastAPI runs sync endpoints in a pool)."""
        store = getattr(self.local, "store", None)
        if store is None:
            store = Store.open(self.directory / fmt.METADATA, readonly=True)
            self.local.store = store
        return store

    def phash_hex(self, idx: int) -> str:
        """The whole-image perceptual hash, as builders' filter scripts compare it."""
        return bytes(self.hashes[idx, 0]).hex()
