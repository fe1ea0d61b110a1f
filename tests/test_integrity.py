"""A damaged index is refused with a clear error at start, and `hibt verify` reads every
byte against the checksums its manifest records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hibt.cli import app
from hibt.errors import IndexDamaged, IndexUnreadable
from hibt.indexer import index_format as fmt
from hibt.indexer import integrity
from hibt.server.index import OpenIndex
from tests.conftest import tiny_settings


@pytest.fixture
def index(built, tmp_path) -> Path:
    """A copy of the demo index to damage."""
    return Path(shutil.copytree(built.index_dir, tmp_path / "index"))


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(index: Path, change) -> None:
    manifest = json.loads((index / fmt.MANIFEST).read_text())
    change(manifest)
    (index / fmt.MANIFEST).write_text(json.dumps(manifest))


def search(index: Path, *args: str):
    return CliRunner().invoke(app, ["search", str(index), "teapot", *args])


def refused_at_start(index: Path, *words: str) -> str:
    """Opening fails with IndexDamaged naming ``words``; the command prints one error line
    (no traceback, no bare "Aborted.")."""
    with pytest.raises(IndexDamaged) as damaged:
        OpenIndex(index, tiny_settings())
    for word in words:
        assert word in damaged.value.message, damaged.value.message
    result = search(index)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return damaged.value.message


def test_the_manifest_records_every_file_with_its_size_and_checksums(built) -> None:
    manifest = fmt.read_manifest(built.index_dir)
    files = {p.name for p in built.index_dir.iterdir() if p.name != fmt.MANIFEST}
    assert manifest.files is not None and set(manifest.files) == files
    vectors = manifest.files[fmt.IMAGE_VECTORS]
    assert vectors.size == (built.index_dir / fmt.IMAGE_VECTORS).stat().st_size
    assert vectors.shape == [manifest.counts.items, manifest.model.dim]
    assert vectors.dtype == "float16" and len(vectors.sha256) == 64


def test_an_intact_index_opens_and_verifies(built) -> None:
    OpenIndex(built.index_dir, tiny_settings())
    result = CliRunner().invoke(app, ["verify", str(built.index_dir)])
    assert result.exit_code == 0, result.output
    assert "match" in result.output


def test_a_truncated_file_is_refused(index) -> None:
    path = index / fmt.IMAGE_VECTORS
    path.write_bytes(path.read_bytes()[:-100])
    refused_at_start(index, fmt.IMAGE_VECTORS, "bytes", "rebuild")


def test_an_empty_fingerprint_file_is_refused_not_aborted(index) -> None:
    (index / fmt.FINGERPRINTS).write_bytes(b"")
    refused_at_start(index, fmt.FINGERPRINTS)


def test_flipped_bytes_at_either_end_are_refused_at_start(index) -> None:
    flip(index / fmt.DESCRIPTORS, 200)
    refused_at_start(index, fmt.DESCRIPTORS, "changed")


def test_swapped_vector_files_are_refused(index) -> None:
    image, caption = index / fmt.IMAGE_VECTORS, index / fmt.CAPTION_VECTORS
    image.rename(index / "swap")
    caption.rename(image)
    (index / "swap").rename(caption)
    refused_at_start(
        index, f"{fmt.IMAGE_VECTORS} has changed", f"holds what {fmt.CAPTION_VECTORS} held"
    )


def test_wrong_counts_in_the_manifest_are_refused(index) -> None:
    edit_manifest(index, lambda m: m["counts"].update(items=m["counts"]["items"] + 1))
    message = refused_at_start(index, "rows")
    assert fmt.IMAGE_VECTORS in message


def test_verify_reads_every_byte_and_finds_what_start_does_not(index, monkeypatch) -> None:
    """Bytes flipped in the middle of a file escape the cheap check at start (its ends
    only) and are found by `hibt verify`."""
    monkeypatch.setattr(integrity, "SAMPLE", 1024)  # ends of 1 KiB: the files are small
    files = {k: v.model_dump() for k, v in integrity.describe(index).items()}
    edit_manifest(index, lambda m: m.update(files=files))
    path = index / fmt.DESCRIPTORS
    flip(path, path.stat().st_size // 2)
    OpenIndex(index, tiny_settings())  # what start reads is intact
    result = CliRunner().invoke(app, ["verify", str(index)])
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and fmt.DESCRIPTORS in result.output
    assert "checksum" in result.output and fmt.IMAGE_VECTORS not in result.output


def test_an_index_of_the_previous_format_opens_with_a_warning(index, capsys) -> None:
    """Format 6 recorded no checksums: it is served (its shapes and counts still checked),
    with a warning that says how to have the checks."""
    edit_manifest(index, lambda m: (m.pop("files"), m.update(format_version=6)))
    OpenIndex(index, tiny_settings())
    assert "rebuild" in capsys.readouterr().err
    result = CliRunner().invoke(app, ["verify", str(index)])
    assert result.exit_code == 0 and "no checksums" in result.output, result.output
    np.save(index / fmt.GROUPS, np.zeros(3, np.int64))  # and shapes are still checked
    with pytest.raises(IndexDamaged, match=fmt.GROUPS):
        OpenIndex(index, tiny_settings())


def test_a_model_mismatch_names_what_differs(built) -> None:
    manifest = fmt.read_manifest(built.index_dir)
    other = {**manifest.model.model_dump(), "dim": 512, "name": "ViT-B-32"}
    with pytest.raises(IndexUnreadable, match="not be comparable") as refused:
        fmt.check_model(manifest, other)
    assert "dim 64 vs 512" in refused.value.message
    assert "name tiny-test vs ViT-B-32" in refused.value.message
    assert "pretrained" not in refused.value.message
