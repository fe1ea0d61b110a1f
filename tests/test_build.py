"""Building an index: contents, bad files, atomic publication, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hibt.config import TINY_MODEL
from hibt.errors import BuildError, IndexUnreadable
from hibt.indexer import index_format as fmt
from hibt.indexer.build import Builder, build_index, staging_dir
from hibt.indexer.datasets import open_dataset
from tests.conftest import tiny_settings
from tests.datagen import BROKEN


def test_manifest_and_counts(built, dataset) -> None:
    _, items = dataset
    manifest = fmt.read_manifest(built.index_dir)
    assert manifest.counts.items == len(items)
    assert manifest.counts.skipped == len(BROKEN) + 1  # + the truncated PNG
    assert manifest.model.name == TINY_MODEL and manifest.model.semantic is False
    assert manifest.format_version == fmt.FORMAT_VERSION
    assert manifest.faiss_factory == "Flat"
    assert manifest.fingerprint == "dct255+phash256 x 7"


def test_bad_files_are_listed_with_reasons(built) -> None:
    report = json.loads((built.index_dir / fmt.REPORT).read_text())
    reasons = {row["key"]: row["reason"] for row in report["skipped"]}
    assert reasons["broken/empty.png"] == "empty file"
    assert "not a recognised image" in reasons["broken/not-an-image.jpg"]
    assert "over the limit" in reasons["broken/bomb.png"]
    assert "truncated" in reasons["broken/truncated.png"]


def test_vectors_are_unit_float16(built, dataset) -> None:
    vectors = np.load(built.index_dir / fmt.IMAGE_VECTORS)
    captions = np.load(built.index_dir / fmt.CAPTION_VECTORS)
    assert vectors.dtype == np.float16 and vectors.shape == (len(dataset[1]), 64)
    assert np.allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1, atol=2e-3)
    assert np.allclose(np.linalg.norm(captions.astype(np.float32), axis=1), 1, atol=2e-3)


def test_metadata_and_fts(built) -> None:
    conn = sqlite3.connect(built.index_dir / fmt.METADATA)
    rows = conn.execute("SELECT artist, license, sha256, width FROM items").fetchall()
    assert all(len(sha) == 64 and width == 160 for _, _, sha, width in rows)
    hits = conn.execute("SELECT count(*) FROM items_fts WHERE items_fts MATCH '\"zoe o brien\"'")
    assert hits.fetchone()[0] == sum(1 for artist, *_ in rows if artist == "Zoë O'Brien")


def test_staging_is_gone_after_success(built) -> None:
    assert not staging_dir(built.index_dir).exists()


def test_refuses_to_overwrite_a_folder_that_is_not_an_index(dataset, embedder, tmp_path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(BuildError, match="not an index"):
        build_index(dataset[0], out, embedder, tiny_settings())
    assert (out / "thesis.tex").exists()


def test_crash_midway_leaves_no_index_and_resume_matches_clean_build(
    dataset, embedder, built, tmp_path, monkeypatch
) -> None:
    out = tmp_path / "resumed"
    calls = {"n": 0}
    original = Builder.write_chunk

    def crash_after_two(self, *args, **kwargs):
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill")
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Builder, "write_chunk", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        build_index(dataset[0], out, embedder, tiny_settings())
    with pytest.raises(IndexUnreadable):
        fmt.read_manifest(out)  # nothing a server could open
    monkeypatch.setattr(Builder, "write_chunk", original)

    resumed_chunks: list[int] = []

    def record_chunk(self, number, *args):
        resumed_chunks.append(number)
        return original(self, number, *args)

    monkeypatch.setattr(Builder, "write_chunk", record_chunk)
    build_index(dataset[0], out, embedder, tiny_settings())
    assert resumed_chunks[0] == 2  # the two finished chunks were not redone
    for name in (fmt.IMAGE_VECTORS, fmt.CAPTION_VECTORS, fmt.FINGERPRINTS):
        assert np.array_equal(np.load(out / name), np.load(built.index_dir / name))


def test_sigkill_during_build_then_resume(dataset, tmp_path) -> None:
    """The real command, killed with SIGKILL while it works, then run again."""
    out = tmp_path / "killed"
    # torch encodes: the one-off ONNX export (15 s of CPU, 86 s wall on a loaded 2-core
    # machine) would otherwise spend the deadline below before any chunk is done.
    env = {**os.environ, "HIBT_CHUNK_SIZE": "4", "HIBT_DECODE_WORKERS": "-1"}
    env["HIBT_RUNTIME"] = "torch"
    cmd = [
        sys.executable,
        "-m",
        "hibt",
        "index",
        str(dataset[0]),
        "--out",
        str(out),
        "--model",
        TINY_MODEL,
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = staging_dir(out) / fmt.METADATA
    deadline = time.time() + 60
    while time.time() < deadline:
        if db.exists() and chunks_done(db) >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / fmt.MANIFEST).exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "resuming after" in done.stderr
    assert fmt.read_manifest(out).counts.items == len(dataset[1])
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "is up to date" in again.stdout, again.stderr


def chunks_done(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)
        row = conn.execute("SELECT value FROM build_state WHERE name='chunks_done'").fetchone()
        conn.close()
        return int(row[0]) if row else 0
    except sqlite3.Error:
        return 0


def test_rebuild_replaces_an_existing_index(dataset, embedder, tmp_path) -> None:
    out = tmp_path / "twice"
    first = build_index(dataset[0], out, embedder, tiny_settings())
    second = build_index(dataset[0], out, embedder, tiny_settings())
    assert second.manifest.counts == first.manifest.counts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["twice"]


def test_an_up_to_date_index_is_left_as_it_is(dataset, embedder, tmp_path) -> None:
    """Running the demo a second time must not index everything again; a changed file or a
    setting that changes the contents must."""
    src = tmp_path / "src"
    src.mkdir()
    for item in dataset[1][:6]:
        (src / item.path.name).write_bytes(item.path.read_bytes())
    out = tmp_path / "index"
    first = build_index(src, out, embedder, tiny_settings(), rebuild=False)
    again = build_index(src, out, embedder, tiny_settings(), rebuild=False)
    assert not first.reused and again.reused
    assert again.manifest == first.manifest
    forced = build_index(src, out, embedder, tiny_settings(), rebuild=True)
    assert not forced.reused and forced.manifest.built_at >= first.manifest.built_at
    smaller = build_index(src, out, embedder, tiny_settings(thumbnail_size=64), rebuild=False)
    assert not smaller.reused
    (src / dataset[1][7].path.name).write_bytes(dataset[1][7].path.read_bytes())
    grown = build_index(src, out, embedder, tiny_settings(thumbnail_size=64), rebuild=False)
    assert not grown.reused and grown.manifest.counts.items == 7
    changed = "hibt.indexer.build.code_digest"  # fingerprints computed another way
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(changed, lambda: "other fingerprint code")
        refingerprinted = build_index(
            src, out, embedder, tiny_settings(thumbnail_size=64), rebuild=False
        )
    assert not refingerprinted.reused


def test_empty_dataset_is_an_error(embedder, tmp_path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.png").write_bytes(b"")
    with pytest.raises(BuildError, match="no usable image"):
        build_index(tmp_path / "src", tmp_path / "out", embedder, tiny_settings())


def test_stable_ids_survive_a_rebuild(built, dataset) -> None:
    ids = {r.id for r in open_dataset(dataset[0])}
    conn = sqlite3.connect(built.index_dir / fmt.METADATA)
    assert {row[0] for row in conn.execute("SELECT id FROM items")} <= ids


def test_opening_with_another_format_version_fails(built, tmp_path) -> None:
    manifest = json.loads((built.index_dir / fmt.MANIFEST).read_text())
    copy = tmp_path / "old-format"
    copy.mkdir()
    manifest["format_version"] = 999
    (copy / fmt.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IndexUnreadable, match="format 999"):
        fmt.read_manifest(copy)


def test_opening_with_another_model_fails(built) -> None:
    manifest = fmt.read_manifest(built.index_dir)
    other = {
        "name": "ViT-B-32",
        "pretrained": "laion2b_s34b_b79k",
        "checkpoint_sha256": None,
        "dim": 512,
    }
    with pytest.raises(IndexUnreadable, match="not be comparable"):
        fmt.check_model(manifest, other)


def test_decoder_count_follows_measured_costs(monkeypatch) -> None:
    """Decoders take the cores' share that decoding has of an image's CPU time: one on two
    cores beside a slow encoder, one a core beside a fast one; a setting wins."""
    from hibt.indexer.build import StageCosts, decode_workers

    auto = tiny_settings(decode_workers=0)
    slow, fast = StageCosts(decode=0.010, encode=0.040), StageCosts(decode=0.010, encode=0.001)
    for cores, expected in ((2, (1, 2)), (8, (2, 8))):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert (decode_workers(auto, slow), decode_workers(auto, fast)) == expected
    assert decode_workers(tiny_settings(decode_workers=3), fast) == 3


def test_streamed_decoding_with_chosen_workers_writes_the_same_index(
    dataset, embedder, built, tmp_path
) -> None:
    """Decoders chosen by measured costs (started as needed, fed a few images at a time
    across chunk ends) give the index one decoder process gives."""
    out = tmp_path / "auto"
    build_index(dataset[0], out, embedder, tiny_settings(decode_workers=0))
    for name in (fmt.IMAGE_VECTORS, fmt.CAPTION_VECTORS, fmt.FINGERPRINTS, fmt.DESCRIPTORS):
        assert np.array_equal(np.load(out / name), np.load(built.index_dir / name))
