"""Readers that turn a dataset on disk into a deterministic stream of Records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from hibt.errors import DatasetError
from hibt.indexer.records import Record

__all__ = ["Dataset", "DatasetError", "open_dataset"]


class Dataset(Protocol):
    name: str

    def __iter__(self) -> Iterator[Record]: ...

    def estimated_size(self) -> int | None: ...


def open_dataset(source: str | Path, name: str | None = None) -> Dataset:
    """Pick the reader from what is on disk; the order matters (most specific first)."""
    from hibt.indexer.datasets.embeddings import EmbeddingsDataset
    from hibt.indexer.datasets.folder import FolderDataset
    from hibt.indexer.datasets.openclipart import OpenclipartDataset
    from hibt.indexer.datasets.webdataset import WebDataset

    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset source {path} does not exist")
    if EmbeddingsDataset.accepts(path):
        return EmbeddingsDataset(path, name)
    if WebDataset.accepts(path):
        return WebDataset(path, name)
    if OpenclipartDataset.accepts(path):
        return OpenclipartDataset(path, name)
    if path.is_dir():
        return FolderDataset(path, name)
    raise DatasetError(
        f"{path} is neither a folder of images, an Openclipart tree, webdataset .tar shards "
        "nor published embeddings (img_emb/, metadata/)"
    )
