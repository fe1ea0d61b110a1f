"""Shared fixtures: one generated dataset and one index built from it with the tiny model."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from hibt.config import TINY_MODEL, Settings
from hibt.indexer.build import BuildResult, build_index
from hibt.indexer.model import Embedder, ModelSpec
from tests.datagen import Item, make_dataset

os.environ.setdefault("HIBT_OFFLINE", "1")  # tests never wait on a model hub
# ONNX exports of the test models go to a folder of this run, never the user's cache.
if "HIBT_MODEL_CACHE" not in os.environ:
    os.environ["HIBT_MODEL_CACHE"] = tempfile.mkdtemp(prefix="hibt-onnx-")
    atexit.register(shutil.rmtree, os.environ["HIBT_MODEL_CACHE"], True)


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
    from hibt.server.engine import Engine

    return Engine.open(built.index_dir, tiny_settings(), embedder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(targets: Path | str | list[str], **env: str) -> Iterator[str]:
    """`hibt serve` as a user starts it (one index directory, or several ``NAME=PATH``
    targets), on a free loopback port; yields its base URL."""
    port = free_port()
    args = [str(targets)] if isinstance(targets, Path | str) else [str(t) for t in targets]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hibt", "serve", *args, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180  # a busy 2-core machine imports torch slowly
        while True:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode() if proc.stdout else "died")
            try:
                if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)
