"""The index directory: the one format the indexer writes and the server reads.

Documented for people in docs/index-format.md; bump :data:`FORMAT_VERSION` on any change
a reader of the previous version would misread.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from hibt.errors import IndexUnreadable

FORMAT_VERSION = 7
# Older formats this version still reads. Format 6 differs only in recording no file sizes
# and checksums (Manifest.files): such an index is served with its shapes and counts
# checked, and a warning that a rebuild gives it the rest (indexer/integrity.py).
UNCHECKED_FORMATS = (6,)
TOOL_VERSION = "0.1.0"

MANIFEST = "manifest.json"
IMAGE_VECTORS = "image_vectors.npy"
CAPTION_VECTORS = "caption_vectors.npy"
IMAGE_FAISS = "image.faiss"
CAPTION_FAISS = "caption.faiss"
FINGERPRINTS = "fingerprints.npy"
DESCRIPTORS = "descriptors.npy"
COLOURS = "colours.npy"
METADATA = "metadata.sqlite"
THUMBNAILS = "thumbnails.sqlite"
GROUPS = "groups.npy"
REPORT = "report.json"
# Copy search at scale (indexer/copies/search.py): present only in indexes of many items,
# where copy search reads them instead of scanning every stored view.
COPY_INDEX = "copy_index.faiss"  # inverted file over the stored views' descriptors
COPY_INDEX_DATA = "copy_index.ivfdata"  # its lists, memory-mapped
COPY_BLANK = "copy_blank.npy"  # rows of the items too plain to identify (matched by colour)
COPY_BAND_NORMS = "copy_band_norms.npy"  # per stored view, its energy in low bands (floors)
# What every index has, and what only an index built from image files has (copy
# fingerprints and thumbnails); an index of published embeddings has captions only when
# text embeddings were published.
COMMON_FILES = (IMAGE_VECTORS, IMAGE_FAISS, GROUPS, METADATA)
IMAGE_FILES = (FINGERPRINTS, DESCRIPTORS, COLOURS, THUMBNAILS)
CAPTION_FILES = (CAPTION_VECTORS, CAPTION_FAISS)
Kind = Literal["images", "embeddings"]


class ModelInfo(BaseModel):
    name: str
    pretrained: str | None
    checkpoint_sha256: str | None
    dim: int
    image_size: int
    semantic: bool


class Counts(BaseModel):
    items: int
    skipped: int
    with_caption: int
    duplicate_groups: int


class FileInfo(BaseModel):
    """One file of the index as it was written: checked at start by its size and the digest
    of its ends (``sample``), by `hibt verify` in full (``sha256``)."""

    size: int
    sample: str  # sha256 of the size, the first and the last 64 KiB
    sha256: str
    shape: list[int] | None = None  # .npy files: the array's shape and dtype
    dtype: str | None = None


class Safety(BaseModel):
    """Who scored how many items for explicit content (indexer/nsfw.py)."""

    scored: int
    sources: dict[str, int]  # items per source: open_nsfw, laion:punsafe, laion:NSFW
    model: str | None = None  # the classifier's name and package version, when it ran


class Manifest(BaseModel):
    format_version: int
    tool_version: str
    dataset: str
    source: str
    model: ModelInfo
    # "images": built from image files (copy fingerprints, thumbnails); "embeddings": from
    # published vectors and URLs (indexer/datasets/embeddings.py).
    kind: Kind = "images"
    captions: bool = True  # caption vectors and their FAISS index are present
    faiss_factory: str
    fingerprint: str
    counts: Counts
    built_at: str
    build_seconds: float
    # What it was built from and with (indexer/build.py's content key): `hibt index` leaves
    # an index with the same key as it is. None in indexes from before it was recorded.
    content_key: str | None = None
    # Every other file of the directory (relative path -> FileInfo); None before format 7.
    files: dict[str, FileInfo] | None = None
    # None: no item has a safety score (an index built before they were kept, a build with
    # scoring off, published metadata without punsafe/NSFW): nothing is flagged.
    safety: Safety | None = None

    def write(self, directory: Path) -> None:
        """Written last, through a rename: its presence marks a complete index."""
        tmp = directory / f"{MANIFEST}.tmp"
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(directory / MANIFEST)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise IndexUnreadable(f"{directory} is not an index directory (it does not exist)")
    if not path.is_file():
        raise IndexUnreadable(
            f"{directory} has no {MANIFEST}: it is not an index, or its build did not finish "
            "(run `hibt index` again; it resumes)"
        )
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except ValueError as exc:
        raise IndexUnreadable(f"{path} is unreadable: {exc}") from exc
    if manifest.format_version not in (FORMAT_VERSION, *UNCHECKED_FORMATS):
        raise IndexUnreadable(
            f"{directory} uses index format {manifest.format_version}; this version of hibt "
            f"reads format {FORMAT_VERSION}. Rebuild it with `hibt index`."
        )
    missing = [name for name in required_files(manifest) if not (directory / name).is_file()]
    if missing:
        raise IndexUnreadable(f"{directory} is incomplete: missing {', '.join(missing)}")
    return manifest


def required_files(manifest: Manifest) -> tuple[str, ...]:
    files = COMMON_FILES + (IMAGE_FILES if manifest.kind == "images" else ())
    return files + (CAPTION_FILES if manifest.captions else ())


def check_model(manifest: Manifest, identity: dict) -> None:
    """Refuse to answer queries with a model other than the one that built the index, and
    say which of its name, weights and dimension differ."""
    built = manifest.model.model_dump()
    fields = ("name", "pretrained", "checkpoint_sha256", "dim")
    differ = [f"{f} {built[f]} vs {identity[f]}" for f in fields if built[f] != identity[f]]
    if differ:
        raise IndexUnreadable(
            f"index was built with model {built['name']} "
            f"({built['pretrained'] or built['checkpoint_sha256']}), but the server loaded "
            f"{identity['name']} ({identity['pretrained'] or identity['checkpoint_sha256']}): "
            f"{', '.join(differ)} (index vs server); query embeddings would not be comparable"
        )
