"""Building an index from published embeddings (datasets/embeddings.py): no image is read,
decoded or embedded. Parts are copied in order into one memory-mapped vector file and their
metadata into the store, each part committed with the count of parts done, so a killed
ingest resumes at the next part; finishing is the image build's (build.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hibt.config import Settings
from hibt.errors import BuildError
from hibt.indexer import index_format as fmt
from hibt.indexer.build import Builder, BuildResult, check_target, staging_dir
from hibt.indexer.datasets.embeddings import EmbeddingsDataset, Part


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
    ) -> None:
        """``identity``: the model that made the vectors, as the manifest records it."""
        if identity["dim"] != dataset.dim:
            raise BuildError(
                f"{source} holds {dataset.dim}-d vectors, but {identity['name']} makes "
                f"{identity['dim']}-d ones: name the model that made them (LAION-5B: --model "
                "ViT-L-14 --pretrained openai)"
            )
        self.dataset, self.source, self.out = dataset, source, out
        self.settings, self.identity = settings, identity
        self.stage = staging_dir(out)
        self.rebuild = rebuild
        self.build_key = self.key_of("embeddings")

    def fingerprint_scheme(self) -> str:
        return "none (items known by URL and embedding)"

    def arrays(self, mode: str) -> dict[str, np.ndarray]:
        n, dim = self.dataset.estimated_size(), self.dataset.dim
        kinds = {"image": fmt.IMAGE_VECTORS}
        if self.dataset.has_text:
            kinds["caption"] = fmt.CAPTION_VECTORS
        return {
            kind: np.lib.format.open_memmap(self.stage / name, mode, np.float16, (n, dim))
            for kind, name in kinds.items()
        }

    def run(self) -> BuildResult:
        check_target(self.out)
        self.key = self.content_key()
        if not self.rebuild and (done := self.up_to_date(self.key)):
            return done
        self.open_stage()
        _, items_done, parts_done = self.progress()
        mode = "r+" if (self.stage / fmt.IMAGE_VECTORS).is_file() else "w+"
        arrays = self.arrays(mode)
        if parts_done:
            print(f"resuming after {parts_done} parts ({items_done} items)", file=sys.stderr)
        bar = tqdm(
            total=self.dataset.estimated_size(),
            initial=items_done,
            unit="item",
            desc="ingesting",
            dynamic_ncols=True,
            smoothing=0.1,
        )
        for part in self.dataset.parts[parts_done:]:
            self.ingest(part, items_done, arrays)
            items_done += part.rows
            parts_done += 1
            self.commit_progress(items_done, items_done, parts_done)
            bar.update(part.rows)
        bar.close()
        return self.finalize(items_done, parts_done)

    def ingest(self, part: Part, base: int, arrays: dict[str, np.ndarray]) -> None:
        """One part's vectors (unit length, float16) and metadata rows."""
        for kind, array in arrays.items():
            vectors = self.dataset.vectors(part, kind)
            for at in range(0, part.rows, 65_536):
                block = np.asarray(vectors[at : at + 65_536], np.float32)
                norms = np.linalg.norm(block, axis=1, keepdims=True)
                array[base + at : base + at + len(block)] = block / np.maximum(norms, 1e-12)
            array.flush()
        rows = self.dataset.item_rows(part, base)
        for row in rows:
            row["dup_group"] = row["idx"]  # no fingerprints: each item is its own group
        self.store.insert_items(rows)

    def final_arrays(self, n: int, chunks: int) -> dict[str, np.ndarray]:
        return self.arrays("r")

    def groups(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return np.arange(len(arrays["image"]), dtype=np.int64)
