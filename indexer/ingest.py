"""Building an index from published embeddings (datasets/embeddings.py): no image is read,
decoded or embedded. Parts are copied in order into one memory-mapped vector file and their
metadata into the store, each part committed with the count of parts done, so a killed
ingest resumes at the next part; finishing is the image build's (build.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from hibt.config import Settings
from hibt.errors import BuildError, IndexUnreadable
from hibt.indexer import index_format as fmt
from hibt.indexer import space
from hibt.indexer.build import (
    Builder,
    BuildResult,
    check_target,
    progress_bar,
    staging_dir,
    tidy_published,
)
from hibt.indexer.datasets.embeddings import EmbeddingsDataset, Part
from hibt.indexer.faults import parse
from hibt.indexer.store import Store
from hibt.indexer.vector_index import default_factory, parts_dir

SAMPLE = 1 << 16  # bytes read at each end of a part's files for its signature


class EmbeddingBuilder(Builder):
    kind: fmt.Kind = "embeddings"

    def __init__(
        self,
        dataset: EmbeddingsDataset,
        source: str,
        out: Path,
        identity: dict,
        settings: Settings,
        rebuild: bool = True,
        add: bool = False,
        fresh: bool = False,
    ) -> None:
        """``identity``: the model that made the vectors, as the manifest records it;
        ``add``: append the parts that the index at ``out`` does not hold yet; ``fresh``:
        discard an unfinished ingest rather than resume it."""
        if identity["dim"] != dataset.dim:
            raise BuildError(
                f"{source} holds {dataset.dim}-d vectors, but {identity['name']} makes "
                f"{identity['dim']}-d ones: name the model that made them (LAION-5B: --model "
                "ViT-L-14 --pretrained openai)"
            )
        self.dataset, self.source, self.out = dataset, source, out
        self.settings, self.identity = settings, identity
        self.stage = staging_dir(out)
        self.rebuild = rebuild and not add
        self.add = add
        self.fresh = fresh and not add
        self.build_key = self.key_of("embeddings")

    def fingerprint_scheme(self) -> str:
        return "none (items known by URL and embedding)"

    def files(self) -> dict[str, str]:
        """Vector file per kind of vector this dataset publishes."""
        files = {"image": fmt.IMAGE_VECTORS}
        if self.dataset.has_text:
            files["caption"] = fmt.CAPTION_VECTORS
        return files

    def arrays(self, mode: str) -> dict[str, np.ndarray]:
        n, dim = self.dataset.estimated_size(), self.dataset.dim
        if mode == "w+":
            return {
                kind: space.new_memmap(self.stage / name, np.float16, (n, dim))
                for kind, name in self.files().items()
            }
        return {
            kind: np.lib.format.open_memmap(self.stage / name, mode, np.float16, (n, dim))
            for kind, name in self.files().items()
        }

    def space_needed(self, n: int | None) -> int | None:
        """The vector files (allocated whole at the start) and the vector indexes."""
        if not n:
            return None
        dim = self.dataset.dim
        factory = self.settings.faiss_factory or default_factory(n, dim)
        per_vector = 2 * dim + space.index_bytes_per_vector(dim, factory)
        return n * len(self.files()) * per_vector

    def run(self) -> BuildResult:
        check_target(self.out)
        parse(self.settings.fault_at)
        self.key = self.content_key()
        tidy_published(self.out)
        if not self.rebuild and (done := self.up_to_date(self.key)):
            return done
        if not self.fresh and not self.add and (staged := self.staged_complete()):
            return staged
        n = self.dataset.estimated_size()
        space.check_free(self.stage, self.out, self.space_needed(n), n)
        if self.add and not (self.stage / fmt.METADATA).is_file():
            self.stage_from_index()
        self.open_stage()
        if (changed := self.changed_part()) is not None:
            if self.add:
                raise BuildError(
                    f"part {changed} of {self.source} changed since it was indexed; "
                    "index it again without --add"
                )
            self.start_afresh(f"part {changed} changed since it was staged")
        elif (staged_rows := self.staged_rows()) not in (None, n):
            self.start_afresh(f"{self.source} has {n} rows now, {staged_rows} when staged")
        _, items_done, parts_done = self.progress()
        mode = "r+" if (self.stage / fmt.IMAGE_VECTORS).is_file() else "w+"
        arrays = self.arrays(mode)
        if parts_done:
            print(f"resuming after {parts_done} parts ({items_done} items)", file=sys.stderr)
        self.bar = progress_bar(n, items_done, "item", "ingesting")
        for part in self.dataset.parts[parts_done:]:
            self.ingest(part, items_done, arrays)
            self.store.set_state(f"part_{part.number}", self.signature(part))
            items_done += part.rows
            parts_done += 1
            self.commit_progress(items_done, items_done, parts_done)
            self.bar.update(part.rows)
        self.bar.close()
        return self.finalize(items_done, parts_done)

    @staticmethod
    def signature(part: Part) -> str:
        """The part's rows, and a digest of its files' sizes, heads and tails: a changed
        or re-generated part shows, without reading gigabytes."""
        digest = hashlib.sha256(str(part.rows).encode())
        for path in (part.image, part.metadata):
            size = path.stat().st_size
            with open(path, "rb") as f:
                digest.update(f"{size}".encode() + f.read(SAMPLE))
                f.seek(max(0, size - SAMPLE))
                digest.update(f.read(SAMPLE))
        return digest.hexdigest()

    def start_afresh(self, why: str) -> None:
        """An unfinished --add starts again from the index, anything else from nothing."""
        if not self.add:
            return super().start_afresh(why)
        print(f"{why}: adding afresh", file=sys.stderr)
        self.close()
        shutil.rmtree(self.stage)
        self.stage_from_index()
        self.open_stage()

    def staged_rows(self) -> int | None:
        """Rows of the staged vector file, allocated for the parts there were: parts
        published since must start the ingest afresh, as the file has no room for them."""
        path = self.stage / fmt.IMAGE_VECTORS
        if not path.is_file():
            return None
        return np.load(path, mmap_mode="r").shape[0]

    def changed_part(self) -> int | None:
        """The first part ingested already whose files have changed since: rows are tied to
        their part and position, so it would misalign every row after it."""
        done = int(self.store.get_state("chunks_done", "0"))
        for part in self.dataset.parts[:done]:
            if self.store.get_state(f"part_{part.number}") != self.signature(part):
                return part.number
        return None

    def stage_from_index(self) -> None:
        """The staging directory as the published index, with room for the new parts: its
        metadata copied, its vectors copied into larger files, its vector index parts
        linked (they are reused, not trained or added again)."""
        try:
            manifest = fmt.read_manifest(self.out)
        except IndexUnreadable as exc:
            raise BuildError(f"--add needs an index at {self.out}: {exc.message}") from None
        if manifest.kind != "embeddings":
            raise BuildError("--add appends parts of published embeddings; rebuild this index")
        self.stage.mkdir(parents=True)
        shutil.copy2(self.out / fmt.METADATA, self.stage / fmt.METADATA)
        staged = Store.open(self.stage / fmt.METADATA)
        same = staged.get_state("build_key") == self.build_key
        staged.close()
        if not same:
            shutil.rmtree(self.stage)
            raise BuildError(
                f"{self.out} was built from another source or model; --add needs the same"
            )
        arrays = self.arrays("w+")
        for kind, name in self.files().items():
            old, array = np.load(self.out / name, mmap_mode="r"), arrays[kind]
            for at in range(0, len(old), 1_000_000):
                stop = min(len(old), at + 1_000_000)
                array[at:stop] = old[at:stop]
            array.flush()
        for name in (fmt.IMAGE_FAISS, fmt.CAPTION_FAISS):
            old_parts = parts_dir(self.out / name)
            if old_parts.is_dir():
                new_parts = parts_dir(self.stage / name)
                new_parts.mkdir()
                for f in old_parts.iterdir():
                    os.link(f, new_parts / f.name)
        print(f"adding to {self.out}: {manifest.counts.items} items kept", file=sys.stderr)

    def ingest(self, part: Part, base: int, arrays: dict[str, np.ndarray]) -> None:
        """One part's vectors (unit length, float16) and metadata rows."""
        for kind, array in arrays.items():
            vectors = self.dataset.vectors(part, kind)
            for at in range(0, part.rows, 65_536):
                block = np.asarray(vectors[at : at + 65_536], np.float32)
                norms = np.linalg.norm(block, axis=1, keepdims=True)
                array[base + at : base + at + len(block)] = block / np.maximum(norms, 1e-12)
            array.flush()
        for rows in self.dataset.item_rows(part, base):
            for row in rows:
                row["dup_group"] = row["idx"]  # no fingerprints: each item is its own group
            self.store.insert_items(rows)

    def final_arrays(self, n: int, chunks: int) -> dict[str, np.ndarray]:
        return self.arrays("r")

    def groups(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return np.arange(len(arrays["image"]), dtype=np.int64)
