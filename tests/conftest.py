"""Shared fixtures: one generated dataset and one index built from it with the tiny model."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hibt.config import TINY_MODEL, Settings
from hibt.indexer.build import BuildResult, build_index
from hibt.indexer.copies import verify
from hibt.indexer.model import Embedder, ModelSpec
from scripts.serving import serving as serve_command
from tests.datagen import Item, make_dataset

ROOT = Path(__file__).resolve().parent.parent

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


def python_lines(
    script: str,
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> list[str]:
    """What ``script`` printed, line by line, run by a fresh Python (it must succeed): for
    what this process's own state (imports, heap) would change."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@contextmanager
def serving(targets: Path | str | list[str], **env: str) -> Iterator[str]:
    """`hibt serve` as a user starts it (one index directory, or several ``NAME=PATH``
    targets), on a free loopback port; yields its base URL."""
    with serve_command(targets, env) as served:
        yield served.base


@pytest.fixture(autouse=True)
def fresh_verification() -> None:
    """verify.py keeps its last few pairs laid on one grid, pictures' fills and views: each
    test starts without them, so that none reads an answer kept under another test's
    constants."""
    verify.forget()
