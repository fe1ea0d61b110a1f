"""A folder of images with captions from sidecar files or one metadata table.

Captions come from, in order of precedence: ``NAME.json`` beside the image, ``NAME.txt``
beside the image, or a row of ``metadata.jsonl|.csv|.parquet`` at the folder's root whose
``file_name`` (Hugging Face imagefolder convention; ``file``, ``path`` and ``image`` work
too) is the image's path relative to the root.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hibt.indexer.records import Record

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
FILE_COLUMNS = ("file_name", "file", "path", "image", "filename")
ALIASES: dict[str, tuple[str, ...]] = {
    "caption": ("caption", "text", "TEXT", "description", "alt"),
    "title": ("title", "name"),
    "artist": ("artist", "creator", "author", "photographer"),
    "license": ("license", "LICENSE", "licence", "rights"),
    "url": ("url", "URL", "source_url", "page_url"),
    "keywords": ("keywords", "tags", "subject"),
}


def fields_from_mapping(row: dict[str, Any]) -> dict[str, str]:
    """Map a metadata row with any of the common column names onto Record fields."""
    out: dict[str, str] = {}
    for field, names in ALIASES.items():
        for name in names:
            value = row.get(name)
            if value is None or value == "":
                continue
            if isinstance(value, list | tuple):
                value = ", ".join(str(v) for v in value)
            out[field] = str(value).strip()
            break
    return out


def read_metadata_table(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of a metadata table keyed by the relative image path they describe."""
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    elif path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = next((str(row[c]) for c in FILE_COLUMNS if row.get(c)), None)
        if key:
            table[Path(key).as_posix().lstrip("./")] = row
    return table


def read_sidecar(image: Path) -> dict[str, str]:
    sidecar_json = image.with_suffix(".json")
    if sidecar_json.is_file():
        try:
            data = json.loads(sidecar_json.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict):
            return fields_from_mapping(data)
    sidecar_txt = image.with_suffix(".txt")
    if sidecar_txt.is_file():
        return {"caption": sidecar_txt.read_text(encoding="utf-8", errors="replace").strip()}
    return {}


class FolderDataset:
    def __init__(self, root: Path, name: str | None = None) -> None:
        self.root = root
        self.name = name or root.resolve().name
        table_path = next((root / m for m in METADATA_FILES if (root / m).is_file()), None)
        self.table = read_metadata_table(table_path) if table_path else {}

    def image_paths(self) -> list[Path]:
        return sorted(
            p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )

    def estimated_size(self) -> int | None:
        return len(self.image_paths())

    def __iter__(self) -> Iterator[Record]:
        return map(self.record, self.image_paths())

    def record(self, path: Path) -> Record:
        rel = path.relative_to(self.root).as_posix()
        fields = read_sidecar(path)
        row = self.table.get(rel)
        if row is not None:
            fields = {**fields_from_mapping(row), **fields}
        return Record(dataset=self.name, key=rel, source=rel, path=path, **fields)

    def units(self, size: int) -> list[tuple[Path, ...]]:
        """The images in order, ``size`` at a time: units of work for a cluster."""
        paths = self.image_paths()
        return [tuple(paths[at : at + size]) for at in range(0, len(paths), size)]

    def read(self, unit: tuple[Path, ...]) -> Iterator[Record]:
        return map(self.record, unit)
