"""Builds after faults: a source that changed between a kill and the re-run, a kill at every
phase of the real command, a full disk, outputs that cannot work."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hibt import config
from hibt.cli import app
from hibt.config import TINY_MODEL
from hibt.errors import BuildError
from hibt.indexer import faults
from hibt.indexer import index_format as fmt
from hibt.indexer.build import Builder, build_index, staging_dir
from tests.conftest import tiny_settings
from tests.datagen import drawing, save

ARRAYS = (
    fmt.IMAGE_VECTORS,
    fmt.CAPTION_VECTORS,
    fmt.DESCRIPTORS,
    fmt.FINGERPRINTS,
    fmt.COLOURS,
    fmt.GROUPS,
)


def images(folder: Path, seeds: range) -> Path:
    folder.mkdir(exist_ok=True)
    for seed in seeds:
        save(drawing(seed), folder / f"img_{seed:03d}.png")
        (folder / f"img_{seed:03d}.txt").write_text(f"drawing number {seed}")
    return folder


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Ten captioned images; its folder name is the dataset name, in every item id."""
    return images(tmp_path_factory.mktemp("faults") / "src", range(10))


@pytest.fixture(scope="module")
def reference(source, embedder, tmp_path_factory) -> Path:
    """The uninterrupted build of ``source`` that every faulted one must end equal to."""
    out = tmp_path_factory.mktemp("reference") / "index"
    return build_index(source, out, embedder, tiny_settings(chunk_size=4)).index_dir


def rows(index: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{index / fmt.METADATA}?mode=ro", uri=True)
    try:
        return conn.execute(
            "SELECT idx, id, key, sha256, caption, dup_group FROM items ORDER BY idx"
        ).fetchall()
    finally:
        conn.close()


def assert_same_index(index: Path, reference: Path) -> None:
    """The same items in the same rows, the same vectors, fingerprints and groups."""
    assert rows(index) == rows(reference)
    for name in ARRAYS:
        assert np.array_equal(np.load(index / name), np.load(reference / name)), name
    report = json.loads((index / fmt.REPORT).read_text())
    assert report == json.loads((reference / fmt.REPORT).read_text())
    assert fmt.read_manifest(index).counts == fmt.read_manifest(reference).counts


@contextmanager
def killed_after(chunks: int) -> Iterator[None]:
    """The build inside stops, as a kill would stop it, once ``chunks`` chunks are written."""
    original, calls = Builder.write_chunk, {"n": 0}

    def crash(self, *args, **kwargs):
        if calls["n"] == chunks:
            raise KeyboardInterrupt("simulated kill")
        calls["n"] += 1
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(Builder, "write_chunk", crash)
        yield


# --- 9: resume by identity -----------------------------------------------------------------
@pytest.mark.parametrize("change", ["added", "changed", "removed"])
def test_a_source_changed_between_kill_and_rerun_is_indexed_as_it_is_now(
    change, embedder, tmp_path
) -> None:
    """A file added, changed or removed before where the killed build stopped is indexed as
    it is now: none dropped, no bogus duplicate, and the index is then truly up to date."""
    src = images(tmp_path / "src", range(10))
    out, settings = tmp_path / "index", tiny_settings(chunk_size=4)
    with killed_after(2):  # 8 of 10 records done
        build_index(src, out, embedder, settings)
    if change == "added":
        save(drawing(99), src / "img_000a.png")  # sorts among the records done
    elif change == "changed":
        save(drawing(77), src / "img_002.png")
    else:
        (src / "img_002.png").unlink()
    resumed = build_index(src, out, embedder, settings, rebuild=False)
    assert not any("duplicate" in s["reason"] for s in resumed.skipped)
    reference = build_index(src, tmp_path / "reference", embedder, settings)
    assert_same_index(out, reference.index_dir)
    assert build_index(src, out, embedder, settings, rebuild=False).reused


# --- 10: a kill at every phase of the real command ------------------------------------------
KILL_POINTS = (
    "chunk_saved",
    "arrays_written",
    "chunks_removed",
    "indexes_written",
    "manifest_written",
    "old_set_aside",
)


def test_the_command_killed_at_every_phase_ends_with_the_uninterrupted_index(
    source, reference, tmp_path
) -> None:
    """`hibt index` killed (SIGKILL, by the fault hook) at each named phase in turn, each
    run resuming from what the previous kill left, then run to the end: the index is the
    uninterrupted build's, and nothing stale is left beside it. An old index at --out makes
    publication set it aside, so that kill point is reached too."""
    out = tmp_path / "index"
    out.mkdir()
    (out / fmt.MANIFEST).write_text("{}")  # an old, unreadable index: replaced
    env = {**os.environ, "HIBT_CHUNK_SIZE": "4", "HIBT_DECODE_WORKERS": "-1"}
    env["HIBT_PRECISION"] = "fp32"  # as the in-process embedder of the reference
    env["HIBT_RUNTIME"] = "torch"
    args = ["index", str(source), "--out", str(out), "--model", TINY_MODEL]
    assert set(KILL_POINTS) == set(faults.PHASES)
    driver = [sys.executable, "-m", "tests.kill_at_phases", ",".join(KILL_POINTS), *args]
    done = subprocess.run(driver, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ended = json.loads(done.stdout.splitlines()[-1])
    expected = {phase: -signal.SIGKILL for phase in KILL_POINTS}
    assert ended == {**expected, "(none)": 0}, done.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]  # nothing stale
    assert_same_index(out, reference)


@pytest.fixture
def cli_env(monkeypatch):
    """The CLI in this process, with settings from the environment read afresh."""
    monkeypatch.setenv("HIBT_CHUNK_SIZE", "4")
    monkeypatch.setenv("HIBT_DECODE_WORKERS", "-1")
    monkeypatch.setenv("HIBT_PRECISION", "fp32")  # as the in-process embedder
    monkeypatch.setenv("HIBT_RUNTIME", "torch")
    config.get_settings.cache_clear()
    yield monkeypatch
    config.get_settings.cache_clear()


def test_rebuild_clears_a_stale_staging_directory(source, reference, embedder, tmp_path, cli_env):
    """A staging directory that cannot be resumed (its chunk files gone) is discarded, with
    a word, by any run; --rebuild discards whatever is staged."""
    out = tmp_path / "index"
    with killed_after(2):
        build_index(source, out, embedder, tiny_settings(chunk_size=4))
    for chunk in (staging_dir(out) / "chunks").iterdir():
        chunk.unlink()
    result = CliRunner().invoke(
        app, ["index", str(source), "--out", str(out), "--model", TINY_MODEL]
    )
    assert result.exit_code == 0, result.output
    assert "starting afresh" in result.output
    assert_same_index(out, reference)
    with killed_after(1):
        build_index(source, out, embedder, tiny_settings(chunk_size=4), rebuild=True)
    rebuilt = CliRunner().invoke(
        app, ["index", str(source), "--out", str(out), "--model", TINY_MODEL, "--rebuild"]
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "resuming" not in rebuilt.output and "discarding" in rebuilt.output
    assert not staging_dir(out).exists()
    assert_same_index(out, reference)


# --- 11: disk full and outputs that cannot work ---------------------------------------------
@pytest.mark.parametrize("phase", ["chunk_saved", "arrays_written"])
def test_a_full_disk_is_one_clear_line_and_the_build_resumes(
    phase, source, reference, tmp_path, cli_env
) -> None:
    out = tmp_path / "index"
    cli_env.setenv("HIBT_FAULT_AT", f"{phase}:enospc")
    config.get_settings.cache_clear()
    command = ["index", str(source), "--out", str(out), "--model", TINY_MODEL]
    full = CliRunner().invoke(app, command)
    assert full.exit_code == 2, full.output
    errors = [line for line in full.output.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), full.output
    assert "disk" in errors[0] and "full" in errors[0] and "again" in errors[0]
    assert staging_dir(out).is_dir() and not out.exists()
    cli_env.delenv("HIBT_FAULT_AT")
    config.get_settings.cache_clear()
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 0, again.output
    assert_same_index(out, reference)


def test_an_unknown_fault_phase_is_refused(embedder, tmp_path) -> None:
    """A misspelt phase would make a fault test pass without a fault."""
    src = images(tmp_path / "src", range(2))
    with pytest.raises(BuildError, match="no phase"):
        build_index(src, tmp_path / "index", embedder, tiny_settings(fault_at="nowhere"))


def test_out_on_a_mount_point_is_refused_before_any_work(embedder, tmp_path, monkeypatch):
    src = images(tmp_path / "src", range(2))
    mount = tmp_path / "disk"
    mount.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: Path(p) == mount or real(p))
    monkeypatch.setattr(Builder, "write_chunk", lambda *a: pytest.fail("work started"))
    with pytest.raises(BuildError, match="mount point") as refused:
        build_index(src, mount, embedder, tiny_settings())
    assert str(mount / "index") in refused.value.message  # says what to do instead
    assert not staging_dir(mount).exists()


def test_out_that_is_a_file_a_link_or_unwritable_is_refused(
    embedder, tmp_path, monkeypatch
) -> None:
    src = images(tmp_path / "src", range(2))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(BuildError, match="is a file"):
        build_index(src, tmp_path / "file", embedder, tiny_settings())
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BuildError, match="symbolic link"):
        build_index(src, tmp_path / "link", embedder, tiny_settings())
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access  # root may write anywhere: the check is what is tested
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real(p, mode))
    with pytest.raises(BuildError, match="cannot write in"):
        build_index(src, locked / "deeper" / "index", embedder, tiny_settings())


def test_too_little_free_space_is_refused_before_any_work(embedder, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    src = images(tmp_path / "src", range(4))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    monkeypatch.setattr(Builder, "write_chunk", lambda *a: pytest.fail("work started"))
    with pytest.raises(BuildError, match=r"needs about .* free") as refused:
        build_index(src, tmp_path / "index", embedder, tiny_settings())
    assert "another --out" in refused.value.message
