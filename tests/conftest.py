"""Shared fixtures: one generated dataset and one index built from it with the tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from indexer.build import BuildResult, build_index
from indexer.config import TINY_MODEL, Settings
from indexer.model import Embedder, ModelSpec
from tests.datagen import Item, make_dataset

os.environ.setdefault("HIBT_OFFLINE", "1")  # tests never wait on a model hub


def tiny_settings(**overrides: object) -> Settings:
    base = {"model": TINY_MODEL, "pretrained": None, "chunk_size": 8, "decode_workers": -1}
    return Settings(**{**base, **overrides})


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder(ModelSpec(TINY_MODEL))


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Item]]:
    root = tmp_path_factory.mktemp("dataset")
    return root, make_dataset(root)


@pytest.fixture(scope="session")
def built(tmp_path_factory, dataset, embedder) -> BuildResult:
    """Built once through real decoder processes, as `hibt index` does."""
    out = tmp_path_factory.mktemp("indexes") / "demo-index"
    return build_index(dataset[0], out, embedder, tiny_settings(decode_workers=1))


@pytest.fixture(scope="session")
def engine(built, embedder):
    from server.engine import Engine

    return Engine(built.index_dir, tiny_settings(), embedder)
