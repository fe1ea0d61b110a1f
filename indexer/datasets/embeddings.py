"""Published embeddings: the layout LAION publishes, clip-retrieval's ``inference`` writes
and embedding-reader streams. No image is needed.

    img_emb/img_emb_N.npy        float16 or float32 (rows, dim), one part per N
    text_emb/text_emb_N.npy      optional, the captions' embeddings, same rows
    metadata/metadata_N.parquet  url, caption and whatever else, same rows in the same order

Row i of a part's metadata is row i of its vectors. Every part is checked before anything
is read: a part missing from one folder, a gap in the numbering, a short part, another
dtype or dimension stops the build with the part's name, never a silent misalignment (the
failure clip-retrieval's users hit when a part was missing).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hibt.errors import DatasetError
from hibt.indexer.nsfw import published_score
from hibt.indexer.records import host_of, site_of, stable_id

PART = re.compile(r"_(\d+)\.(npy|parquet)$")
FOLDERS = {
    "image": ("img_emb", ".npy"),
    "text": ("text_emb", ".npy"),
    "metadata": ("metadata", ".parquet"),
}
COLUMNS: dict[str, tuple[str, ...]] = {
    "caption": ("caption", "TEXT", "text"),
    "url": ("url", "URL"),
    "license": ("LICENSE", "license"),
    "width": ("width", "WIDTH", "original_width"),
    "height": ("height", "HEIGHT", "original_height"),
    "title": ("title",),
    "artist": ("artist",),
}
# Kept per item as JSON: LAION's safety and quality columns, and the published hashes.
EXTRA = ("similarity", "NSFW", "punsafe", "pwatermark", "aesthetic", "md5", "hash", "key")
VECTOR_DTYPES = (np.float16, np.float32)
ROW_BATCH = 65_536  # metadata rows turned into Python objects at a time


@dataclass(frozen=True)
class Part:
    number: int
    image: Path
    text: Path | None
    metadata: Path
    rows: int


def numbered(folder: Path, suffix: str) -> dict[int, Path]:
    found = {}
    for path in folder.iterdir() if folder.is_dir() else ():
        match = PART.search(path.name)
        if match and path.suffix == suffix:
            found[int(match.group(1))] = path
    return found


def vectors_header(path: Path) -> tuple[int, int, np.dtype]:
    """(rows, dim, dtype) from the .npy header alone."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path} is not a readable .npy file ({exc})") from None
    if array.ndim != 2 or array.dtype not in VECTOR_DTYPES:
        raise DatasetError(
            f"{path} holds {array.dtype} {array.shape}; expected a float16 or float32 "
            "(rows, dim) array"
        )
    return array.shape[0], array.shape[1], array.dtype


class EmbeddingsDataset:
    """Parts of published embeddings and metadata, checked for alignment up front."""

    def __init__(self, root: Path, name: str | None = None) -> None:
        self.root = Path(root)
        self.name = name or self.root.resolve().name
        self.parts, self.dim, self.has_text = self.check()

    @staticmethod
    def accepts(path: Path) -> bool:
        return (path / "img_emb").is_dir() and (path / "metadata").is_dir()

    def estimated_size(self) -> int:
        return sum(p.rows for p in self.parts)

    def check(self) -> tuple[list[Part], int, bool]:
        files = {k: numbered(self.root / d, s) for k, (d, s) in FOLDERS.items()}
        numbers = sorted(files["image"])
        if not numbers:
            raise DatasetError(f"{self.root / 'img_emb'} holds no img_emb_N.npy parts")
        has_text = bool(files["text"])
        for kind in ("metadata", "text") if has_text else ("metadata",):
            if sorted(files[kind]) != numbers:
                missing = sorted(set(numbers) ^ set(files[kind]))
                raise DatasetError(
                    f"{kind} parts do not match img_emb parts: part(s) {missing} are in one "
                    f"folder and not the other; every part needs its vectors and metadata"
                )
        gaps = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
        if gaps:
            raise DatasetError(f"parts {gaps} are missing between {numbers[0]} and {numbers[-1]}")
        parts, dims = [], set()
        for n in numbers:
            rows, dim, _ = vectors_header(files["image"][n])
            dims.add(dim)
            counts = {"metadata rows": pq.ParquetFile(files["metadata"][n]).metadata.num_rows}
            if has_text:
                text_rows, text_dim, _ = vectors_header(files["text"][n])
                counts["text vectors"] = text_rows
                dims.add(text_dim)
            for what, count in counts.items():
                if count != rows:
                    raise DatasetError(
                        f"part {n} is misaligned: {rows} image vectors but {count} {what}"
                    )
            parts.append(
                Part(n, files["image"][n], files["text"].get(n), files["metadata"][n], rows)
            )
        if len(dims) != 1:
            raise DatasetError(f"parts disagree on the embedding dimension: {sorted(dims)}")
        return parts, dims.pop(), has_text

    def __iter__(self) -> Iterator[dict]:
        for part in self.parts:
            for rows in self.item_rows(part, 0):
                yield from rows

    def vectors(self, part: Part, kind: str = "image") -> np.ndarray:
        """The part's vectors, memory-mapped."""
        path = part.image if kind == "image" else part.text
        return np.load(path, mmap_mode="r")

    def item_rows(self, part: Part, base: int, batch: int = ROW_BATCH) -> Iterator[list[dict]]:
        """The store's rows for one part, numbered from ``base`` and tied by part and
        position, in batches: a published part holds about a million rows, too many to
        hold as Python objects at once."""
        at = 0
        for record_batch in pq.ParquetFile(part.metadata).iter_batches(batch):
            yield self.batch_rows(part, base + at, at, record_batch)
            at += record_batch.num_rows

    def batch_rows(self, part: Part, base: int, first: int, batch: pa.RecordBatch) -> list[dict]:
        columns = {c: batch.column(c).to_pylist() for c in batch.schema.names}
        fields = {
            f: next((columns[c] for c in names if c in columns), None)
            for f, names in COLUMNS.items()
        }
        extras = [c for c in EXTRA if c in columns]
        rows = []
        for i in range(batch.num_rows):
            value = {f: (col[i] if col is not None else None) for f, col in fields.items()}
            url = str(value["url"] or "")
            key = f"{part.number}:{first + i}"
            extra = {c: columns[c][i] for c in extras if columns[c][i] is not None}
            score, source = published_score(extra) or (None, None)
            rows.append(
                {
                    "idx": base + i,
                    "id": stable_id(self.name, key),
                    "key": key,
                    "source": url,
                    "path": None,
                    "url": url,
                    "host": host_of(url),
                    "site": site_of(url),
                    "caption": str(value["caption"] or ""),
                    "title": str(value["title"] or ""),
                    "artist": str(value["artist"] or ""),
                    "license": str(value["license"] or ""),
                    "keywords": "",
                    "width": int(value["width"] or 0),
                    "height": int(value["height"] or 0),
                    "sha256": "",
                    "extra": json.dumps(extra, default=str) if extra else "",
                    "nsfw": score,
                    "nsfw_source": source,
                }
            )
        return rows
