"""Building on Ray (indexer/distributed.py): a local Ray builds from webdataset shards the
same index as the single-machine build, bit for bit, and a task that fails once is retried
without losing or repeating a record. Skipped where Ray is not installed."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hibt.cli import app
from hibt.config import get_settings
from hibt.indexer import index_format as fmt
from hibt.indexer.build import BuildResult, build_index
from hibt.indexer.store import ITEM_COLUMNS
from tests.conftest import tiny_settings
from tests.datagen import drawing
from tests.test_build_faults import ARRAYS  # the arrays an image index holds

ray = pytest.importorskip("ray")

CHUNK = 4  # small chunks: a shard spans several, so parts and their order are exercised


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def jpeg(seed: int) -> bytes:
    buffer = io.BytesIO()
    drawing(seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_shards(root: Path) -> None:
    """Three shards of 7, 0 and 9 records: captions, a broken image, a copy, and a key that
    comes again further into its shard (the duplicate is in a later chunk than the first)."""
    root.mkdir()
    for s, count in enumerate((7, 0, 9)):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for i in range(count):
                key = f"{s:05d}{1 if (s, i) == (2, 6) else i:04d}"
                image = b"not an image" if (s, i) == (2, 3) else jpeg(s * 100 + i % 8)
                add(tar, f"{key}.jpg", image)
                if i % 3:
                    add(tar, f"{key}.txt", f"a drawing number {i} of shard {s}".encode())
                meta = {"url": f"https://example.org/{s}/{i}.jpg", "artist": f"Artist {i % 2}"}
                add(tar, f"{key}.json", json.dumps(meta).encode())


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module: starting one costs seconds."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ray") / "shards"
    write_shards(root)
    return root


@pytest.fixture(scope="module")
def local(shards, embedder, tmp_path_factory) -> BuildResult:
    """The single-machine build, its encoder on one thread as each Ray actor's is (float
    sums split over threads round differently in the last bit)."""
    import torch

    out = tmp_path_factory.mktemp("local") / "index"
    settings = tiny_settings(precision="fp32", runtime="torch", chunk_size=CHUNK)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_index(shards, out, embedder, settings)
    finally:
        torch.set_num_threads(threads)


def ray_build(shards: Path, out: Path, **settings: object) -> BuildResult:
    # torch, as the local build's embedder (ONNX Runtime rounds the last bit otherwise)
    base = {"precision": "fp32", "runtime": "torch", "chunk_size": CHUNK, "ray_embedders": 1}
    config = tiny_settings(**{**base, **settings})
    return build_index(shards, out, None, config, ray=True)


def items(index: Path) -> list[tuple]:
    with sqlite3.connect(index / fmt.METADATA) as conn:
        return conn.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items ORDER BY idx").fetchall()


def thumbnails(index: Path) -> list[tuple]:
    with sqlite3.connect(index / fmt.THUMBNAILS) as conn:
        return conn.execute("SELECT idx, jpeg FROM thumbnails ORDER BY idx").fetchall()


def assert_same_index(a: Path, b: Path) -> None:
    """Same rows, metadata, thumbnails and skipped files; every array equal bit for bit."""
    assert items(a) == items(b)
    assert thumbnails(a) == thumbnails(b)
    for name in ARRAYS:
        x, y = np.load(a / name), np.load(b / name)
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
    report_a, report_b = (json.loads((i / fmt.REPORT).read_text()) for i in (a, b))
    assert report_a["counts"] == report_b["counts"]
    key = lambda s: (s["key"], s["reason"])  # noqa: E731
    assert sorted(report_a["skipped"], key=key) == sorted(report_b["skipped"], key=key)
    manifest_a, manifest_b = fmt.read_manifest(a), fmt.read_manifest(b)
    assert manifest_a.content_key == manifest_b.content_key
    assert manifest_a.model == manifest_b.model


@pytest.fixture(scope="module")
def faulty(ray_session, shards, tmp_path_factory) -> tuple[BuildResult, Path]:
    """A Ray build in which tasks fail once: decode of unit 0 after its first chunk went
    downstream, decode of unit 2 after two, an embedding of unit 2; and the worker decoding
    unit 1 dies, and the embedding actor with a chunk of unit 0."""
    root = tmp_path_factory.mktemp("faulty")
    parts = root / "parts"
    faults = "decode:0,decode:2,embed:2,kill-decode:1,kill-embed:0"
    url = parts.as_uri()  # an fsspec URL, as s3://bucket/prefix would be
    return ray_build(shards, root / "index", ray_parts=url, ray_fault=faults), parts


def test_ray_build_is_the_local_build(faulty, local, embedder) -> None:
    from hibt.server.engine import Engine

    result = faulty[0]
    assert result.manifest.counts.items == local.manifest.counts.items == 14
    reasons = {s["key"]: s["reason"] for s in result.skipped}
    assert reasons["00002.tar/000020001"] == "duplicate key in dataset"
    assert "00002.tar/000020003" in reasons  # the broken image
    assert_same_index(local.index_dir, result.index_dir)
    assert not result.index_dir.with_name(".index.building-ray").exists()
    assert not list(faulty[1].rglob("*.npz"))  # parts are removed once the index is published

    settings = tiny_settings(precision="fp32")
    engines = [Engine.open(i, settings, embedder) for i in (local.index_dir, result.index_dir)]
    for query in ("a drawing number 2", "shard 0", "Artist 1"):
        ids = [[r.id for r in e.search_text(query, 5).results] for e in engines]
        assert ids[0] == ids[1] and ids[0]
    upload = jpeg(205)
    ids = [[r.id for r in e.search_image(upload, 5).results] for e in engines]
    assert ids[0] == ids[1] and ids[0]


def test_a_task_that_fails_once_is_retried_without_loss_or_repeat(faulty, local) -> None:
    result, parts = faulty
    fired = sorted(p.name for p in parts.rglob(".fault-*"))
    assert fired == [
        ".fault-decode-0",
        ".fault-decode-2",
        ".fault-embed-2",
        ".fault-kill-decode-1",
        ".fault-kill-embed-0",
    ]
    ids = [row[1] for row in items(result.index_dir)]
    assert len(ids) == len(set(ids)) == local.manifest.counts.items


def finished_units(parts: Path) -> set[int]:
    from hibt.indexer.distributed import parse_part_name

    found = [parse_part_name(p.name) for p in parts.rglob("*.npz")]
    lasts = {unit: chunk for unit, chunk, last in found if last}
    return {
        unit
        for unit, last in lasts.items()
        if all((unit, c) in {(u, k) for u, k, _ in found} for c in range(last + 1))
    }


def test_an_interrupted_build_resumes_from_its_parts(
    ray_session, shards, local, tmp_path, monkeypatch
) -> None:
    """A driver stopped midway leaves parts on storage; run again, it commits them without
    computing them again and builds the same index."""
    from hibt.indexer import distributed

    stages = distributed.run_stages

    def stopping(builder, todo):
        for n, row in enumerate(stages(builder, todo)):
            if n == 4:  # 6 parts in all: any 4 of them finish at least one unit
                raise KeyboardInterrupt
            yield row

    parts, out = tmp_path / "parts", tmp_path / "index"
    monkeypatch.setattr(distributed, "run_stages", stopping)
    with pytest.raises(KeyboardInterrupt):
        ray_build(shards, out, ray_parts=str(parts))
    monkeypatch.setattr(distributed, "run_stages", stages)
    finished = finished_units(parts)
    assert finished and not out.exists()
    # Run again from the command line. A finished unit that ran again would trip its fault
    # and leave the marker.
    faults = ",".join(f"decode:{u}" for u in sorted(finished))
    settings = {"model": "tiny-test", "precision": "fp32", "runtime": "torch", "chunk_size": CHUNK}
    settings |= {"ray_embedders": 1, "ray_fault": faults, "decode_workers": -1}
    for name, value in settings.items():
        monkeypatch.setenv(f"HIBT_{name.upper()}", str(value))
    get_settings.cache_clear()
    try:
        command = ["index", str(shards), "--out", str(out), "--ray", "--parts", str(parts)]
        done = CliRunner().invoke(app, command)
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 0, done.output
    assert "indexed 14 items" in done.output
    assert not list(parts.rglob(".fault-*"))
    assert_same_index(local.index_dir, out)


def test_decode_runs_in_tasks_apart_from_the_embedding_actors(
    ray_session, shards, tmp_path, capsys
) -> None:
    """Ray Data fuses a task stage into the next actor stage when their resources match;
    fused, images would be decoded only as many at a time as there are actors."""
    from hibt.indexer.datasets import open_dataset
    from hibt.indexer.distributed import PartStore, RayBuilder, stages
    from hibt.indexer.model import declared_identity, spec_from

    settings = tiny_settings(chunk_size=CHUNK, ray_parts=str(tmp_path))
    identity = declared_identity(spec_from(settings))
    builder = RayBuilder(open_dataset(shards), str(shards), tmp_path / "i", identity, settings)
    builder.key, builder.units = builder.content_key(), builder.dataset.units(CHUNK)
    builder.parts = PartStore(builder.parts_url())
    stages(builder, [0, 1, 2]).explain()
    physical = capsys.readouterr().out.split("Physical Plan (Optimized)")[1]
    assert "ActorPoolMapOperator[MapBatches(EmbedChunks)]" in physical
    assert "TaskPoolMapOperator[MapBatches(decode_units)]" in physical
