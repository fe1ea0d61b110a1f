"""img2dataset / webdataset shards: ``.tar`` files of ``KEY.jpg|png|webp`` + ``KEY.txt`` +
``KEY.json`` members (the format LAION subsets are distributed in)."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from hibt.indexer.datasets.folder import fields_from_mapping
from hibt.indexer.records import Record

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def split_member(name: str) -> tuple[str, str]:
    """webdataset's rule: the key is everything up to the first dot of the basename."""
    directory, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), ext.lower()


class WebDataset:
    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = path
        self.shards = [path] if path.is_file() else sorted(path.glob("*.tar"))
        self.name = name or (path.stem if path.is_file() else path.resolve().name)

    @staticmethod
    def accepts(path: Path) -> bool:
        if path.is_file():
            return path.suffix == ".tar"
        return path.is_dir() and any(path.glob("*.tar"))

    def estimated_size(self) -> int | None:
        return None  # counting would mean reading every shard twice

    def __iter__(self) -> Iterator[Record]:
        for shard in self.shards:
            yield from self.read_shard(shard)

    def units(self, size: int) -> list[Path]:
        """Units of work for a cluster: one per shard, whatever ``size``."""
        return list(self.shards)

    def read(self, unit: Path) -> Iterator[Record]:
        return self.read_shard(unit)

    def read_shard(self, shard: Path) -> Iterator[Record]:
        group: dict[str, bytes] = {}
        current: str | None = None
        with tarfile.open(shard, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = split_member(member.name)
                if key != current and current is not None:
                    yield from self.to_record(shard, current, group)
                    group = {}
                current = key
                extracted = tar.extractfile(member)
                group[ext] = extracted.read() if extracted else b""
        if current is not None:
            yield from self.to_record(shard, current, group)

    def to_record(self, shard: Path, key: str, group: dict[str, bytes]) -> Iterator[Record]:
        image_ext = next((e for e in IMAGE_EXTS if e in group), None)
        if image_ext is None:
            return
        meta: dict = {}
        if "json" in group:
            try:
                loaded = json.loads(group["json"].decode("utf-8", errors="replace"))
                meta = loaded if isinstance(loaded, dict) else {}
            except ValueError:
                meta = {}
        fields = fields_from_mapping(meta)
        if "txt" in group:
            fields["caption"] = group["txt"].decode("utf-8", errors="replace").strip()
        source = fields.get("url") or f"{shard.name}#{key}.{image_ext}"
        yield Record(
            dataset=self.name,
            key=f"{shard.name}/{key}",
            source=source,
            data=group[image_ext],
            shard=shard.name,
            **fields,
        )
