"""Building an index directory from a dataset: streamed, resumable, published atomically.

Work happens in a hidden staging directory beside the target (``.NAME.building``). Records
are processed in chunks; each chunk's vectors are saved and its metadata committed together
with the count of records done, so a killed build resumes at the last chunk. Only a
finished build gets a manifest and is renamed into place, so a server never opens half an
index.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from hibt.config import Settings
from hibt.errors import BuildError, IndexUnreadable
from hibt.indexer import index_format as fmt
from hibt.indexer import integrity, nsfw, space
from hibt.indexer.copies.fingerprint import (
    COLOUR_BYTES,
    DESCRIPTOR_DIM,
    HASH_BITS,
    HASH_BYTES,
    code_digest,
)
from hibt.indexer.copies.groups import duplicate_groups
from hibt.indexer.copies.search import write_copy_index
from hibt.indexer.copies.views import INDEX_VARIANTS
from hibt.indexer.datasets import Dataset, open_dataset
from hibt.indexer.decode import Decoded, DecodeOptions, decode_one
from hibt.indexer.faults import fault_point, parse
from hibt.indexer.images import DECODE_VERSION
from hibt.indexer.records import Record
from hibt.indexer.store import Store, Thumbnails
from hibt.indexer.vector_index import default_factory, write_index

if TYPE_CHECKING:  # torch loads only where a model does: Ray's decode tasks never import it
    from hibt.indexer.model import Embedder

CHUNKS = "chunks"


@dataclass
class BuildResult:
    manifest: fmt.Manifest
    index_dir: Path
    skipped: list[dict]
    reused: bool = False  # the index was already up to date: nothing was built


# Settings that change what a build writes (the rest only change how fast it goes).
CONTENT_SETTINGS = {
    "precision",
    "runtime",
    "max_image_pixels",
    "max_image_bytes",
    "working_size",
    "thumbnail_size",
    "faiss_factory",
    "duplicate_group_min_similarity",
    "duplicate_group_max_colour",
    "nsfw_scoring",
}


def source_digest(source: Path) -> str:
    """sha256 over the path, size and modification time of every file under ``source``:
    an index stays up to date while this does, and no file needs reading to tell."""
    root = Path(source).expanduser()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        name = path.relative_to(root) if path != root else path.name
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def image_code() -> str:
    """What the code that turns an image file into stored rows is: the copy fingerprints'
    code and how files are decoded (an index made by other code is not resumed or reused)."""
    return f"{code_digest()}.d{DECODE_VERSION}"


def staging_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.building"


def check_target(out: Path) -> None:
    """Never replace a folder that is not an index: it may hold someone's files; and refuse
    outputs the build could not publish to before any work (space.check_output)."""
    space.check_output(out)
    if out.exists() and not (out / fmt.MANIFEST).is_file() and any(out.iterdir()):
        raise BuildError(f"{out} exists and is not an index directory; choose another --out")


def record_signature(record: Record) -> bytes:
    """What a record is, as far as a resumed build must tell: its key, its metadata and its
    file's size and time (or its bytes' length and CRC, inside a shard)."""
    if record.data is not None:
        made = f"{len(record.data)}:{zlib.crc32(record.data)}"
    else:
        try:
            stat = record.path.stat() if record.path else None
            made = f"{stat.st_size}:{stat.st_mtime_ns}" if stat else "-"
        except OSError:
            made = "missing"
        made += f":{record.path}"
    fields = (record.key, record.caption, record.title, record.artist, record.license)
    return "\0".join((*fields, record.url, record.keywords, made)).encode() + b"\n"


def chunk_signature(chunk: list[Record]) -> str:
    """Taken when a chunk is formed, before its files are read: a file changed after that is
    seen as changed by a resumed build."""
    digest = hashlib.sha256()
    for record in chunk:
        digest.update(record_signature(record))
    return digest.hexdigest()


def records_digest(previous: str, signature: str) -> str:
    """The running digest of the records done, one chunk further: a resumed build compares it
    with the records the source now yields before where it stopped."""
    return hashlib.sha256(f"{previous}:{signature}".encode()).hexdigest()


def decode_workers(settings: Settings, costs: StageCosts | None = None) -> int:
    """Decoder processes beside the encoder; a negative setting decodes in this process.

    Unless set, chosen from what images have cost so far (``costs``): the cores' share
    that decoding takes of the work, so decoding keeps up with the encoder without
    processes (and their memory) that would only wait. A slow encoder (ViT-B-32 on a CPU)
    needs one on two cores; a fast one (the tiny test model) one per core. Without costs:
    the most it may use.
    """
    if settings.decode_workers:
        return settings.decode_workers
    cores = os.cpu_count() or 2
    if costs is None:
        return max(1, min(4, cores))
    share = costs.decode / max(costs.decode + costs.encode, 1e-9)
    return max(1, min(cores, math.ceil(cores * share - 0.25)))


@dataclass(frozen=True)
class StageCosts:
    """CPU seconds an image costs in a decoder (everything decode_one does) and in the
    building process (encoding its image and caption, writing), as measured so far."""

    decode: float
    encode: float


def progress_bar(total: int | None, done: int, unit: str, what: str) -> tqdm:
    """Rate and ETA on the terminal, counted from where a resumed build left off."""
    return tqdm(total=total, initial=done, unit=unit, desc=what, dynamic_ncols=True, smoothing=0.1)


def batched(items: Iterator[Record], size: int) -> Iterator[list[Record]]:
    """Chunks of up to ``size`` records that never straddle two shards: a chunk is then the
    same unit of work here and on a Ray cluster (indexer/distributed.py), so both builds
    embed the same batches and write the same vectors."""
    for _, shard in itertools.groupby(items, key=lambda record: record.shard):
        while chunk := list(itertools.islice(shard, size)):
            yield chunk


def decode_options(settings: Settings, model_image_size: int) -> DecodeOptions:
    return DecodeOptions(
        max_pixels=settings.max_image_pixels,
        max_bytes=settings.max_image_bytes,
        working_size=settings.working_size,
        thumbnail_size=settings.thumbnail_size,
        model_image_size=model_image_size,
        score_nsfw=settings.nsfw_scoring,
    )


def kept_results(
    chunk: list[Record],
    results: Iterable[Decoded | str],
    seen: set[str],
    skipped: list[tuple[Record, str]],
) -> Iterator[tuple[Record, Decoded]]:
    """Kept records with their decoded images, as the results come; a skipped record goes
    into ``skipped`` with the reason. A record whose id is in ``seen`` (indexed already) is
    a duplicate key. Adds kept ids to ``seen``."""
    for record, result in zip(chunk, results, strict=True):
        if isinstance(result, str):
            skipped.append((record, result))
        elif record.id in seen:
            skipped.append((record, "duplicate key in dataset"))
        else:
            seen.add(record.id)
            yield record, result


def split_results(
    chunk: list[Record], results: list[Decoded | str], seen: set[str]
) -> tuple[list[tuple[Record, Decoded]], list[tuple[Record, str]]]:
    """(kept records with their decoded images, skipped records with the reason)."""
    skipped: list[tuple[Record, str]] = []
    ok = list(kept_results(chunk, results, seen, skipped))
    return ok, skipped


def embed_records(
    embedder: Embedder,
    ok: list[tuple[Record, Decoded]],
    batch_size: int,
    advance: Callable[[int], object] = lambda n: None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image and caption vectors (float16) of a chunk's kept records, ``batch_size`` at a
    time; ``advance`` hears how many are done after each batch."""
    _, images, captions = embed_stream(embedder, ok, batch_size, advance)
    return images, captions


def embed_stream(
    embedder: Embedder,
    pairs: Iterable[tuple[Record, Decoded]],
    batch_size: int,
    advance: Callable[[int], object] = lambda n: None,
) -> tuple[list[tuple[Record, Decoded]], np.ndarray, np.ndarray]:
    """(the pairs, their image and caption vectors in float16), each batch encoded as soon
    as its records are decoded: the encoder works while decoders finish the chunk. A
    record's model input is let go once encoded (150 KB an image)."""
    dim, pairs = embedder.dim, iter(pairs)
    kept: list[tuple[Record, Decoded]] = []
    images, captions = [np.zeros((0, dim), np.float16)], [np.zeros((0, dim), np.float16)]
    while part := list(itertools.islice(pairs, batch_size)):
        images.append(embedder.encode_pixels(np.stack([d.pixels for _, d in part])))
        vectors = np.zeros((len(part), dim), np.float16)
        texts = [(i, r.caption) for i, (r, _) in enumerate(part) if r.caption.strip()]
        if texts:
            vectors[[i for i, _ in texts]] = embedder.encode_texts([t for _, t in texts])
        captions.append(vectors)
        for _, decoded in part:
            decoded.pixels = None
        kept.extend(part)
        advance(len(part))
    return kept, np.concatenate(images).astype(np.float16), np.concatenate(captions)


def chunk_arrays(
    ok: list[tuple[Record, Decoded]], images: np.ndarray, captions: np.ndarray
) -> dict[str, np.ndarray]:
    """A chunk file's arrays (the keys of Builder.outputs), as saved in ``chunks/N.npz``."""
    hashes = np.zeros((len(ok), INDEX_VARIANTS, HASH_BYTES), np.uint8)
    descriptors = np.zeros((len(ok), INDEX_VARIANTS, DESCRIPTOR_DIM), np.float16)
    colours = np.zeros((len(ok), COLOUR_BYTES), np.uint8)
    for i, (_, decoded) in enumerate(ok):
        hashes[i], colours[i] = decoded.hashes, decoded.colour
        descriptors[i] = decoded.descriptors
    return {
        "image": images,
        "caption": captions,
        "hashes": hashes,
        "descriptors": descriptors,
        "colours": colours,
    }


class Builder:
    def __init__(
        self,
        dataset: Dataset,
        source: str,
        out: Path,
        embedder: Embedder,
        settings: Settings,
        rebuild: bool = True,
        fresh: bool = False,
    ) -> None:
        """``rebuild``: False leaves an index at ``out`` built from the same files with the
        same model and settings as it is; ``fresh`` discards an unfinished build instead of
        resuming it."""
        self.dataset, self.source, self.out = dataset, source, out
        self.embedder, self.settings = embedder, settings
        self.identity = embedder.identity()
        self.stage = staging_dir(out)
        self.rebuild = rebuild
        self.fresh = fresh
        self.bar: tqdm = tqdm(disable=True)  # replaced by the real bar in run()
        self.decoding: DecodeStream | None = None  # while run() decodes
        self.options = decode_options(settings, embedder.image_size)
        if settings.nsfw_scoring:
            nsfw.bundled_model()  # a missing classifier stops the build here, not per image
        self.build_key = self.key_of(image_code())

    def key_of(self, code: str) -> str:
        """What an unfinished build in the staging directory must share to be resumed."""
        return json.dumps(
            {
                "source": self.source,
                "dataset": self.dataset.name,
                "model": self.identity,
                "format": fmt.FORMAT_VERSION,
                "code": code,
                "chunk": self.settings.chunk_size,
            },
            sort_keys=True,
        )

    def content_key(self) -> str:
        """Everything the index's contents follow from: the build key, the settings that
        change what is written, and the source files as they are now."""
        settings = self.settings.model_dump(include=CONTENT_SETTINGS)
        parts = [self.build_key, json.dumps(settings, sort_keys=True), source_digest(self.source)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def up_to_date(self, key: str) -> BuildResult | None:
        try:
            manifest = fmt.read_manifest(self.out)
        except IndexUnreadable:
            return None
        if manifest.content_key != key:
            return None
        report = json.loads((self.out / fmt.REPORT).read_text())
        return BuildResult(manifest, self.out, report["skipped"], reused=True)

    # --- staging and resume --------------------------------------------------------------
    def open_stage(self) -> None:
        db_path = self.stage / fmt.METADATA
        if self.stage.exists() and self.fresh:
            print(f"discarding the unfinished build in {self.stage} (--rebuild)", file=sys.stderr)
            shutil.rmtree(self.stage)
        elif db_path.is_file():
            staged = Store.open(db_path)
            same = staged.get_state("build_key") == self.build_key
            staged.close()
            if not same:
                print(
                    f"discarding an unfinished build of another configuration in {self.stage}",
                    file=sys.stderr,
                )
                shutil.rmtree(self.stage)
        (self.stage / CHUNKS).mkdir(parents=True, exist_ok=True)
        self.store = Store.open(db_path)
        self.thumbnails = Thumbnails.open(self.stage / fmt.THUMBNAILS)
        self.store.set_state("build_key", self.build_key)
        self.store.set_state("started_at", self.store.get_state("started_at", str(time.time())))
        self.store.commit()

    def progress(self) -> tuple[int, int, int]:
        """(records done, items kept, chunks written) as last committed."""
        return tuple(
            int(self.store.get_state(k, "0")) for k in ("records_done", "items_done", "chunks_done")
        )

    def close(self) -> None:
        """Let go of the staging files, dropping what was not committed (after a failure the
        staging directory is as the last committed step left it)."""
        if (bar := getattr(self, "bar", None)) is not None:
            bar.close()  # an error line then starts on a line of its own
        for conn in (getattr(self, "store", None), getattr(self, "thumbnails", None)):
            if conn is not None:
                conn.conn.close()

    def start_afresh(self, why: str) -> None:
        print(f"{why}: starting afresh", file=sys.stderr)
        self.close()
        shutil.rmtree(self.stage)
        self.open_stage()

    def stale_staging(self) -> str | None:
        """Why the staging directory cannot be resumed, if it cannot: finishing was recorded
        for other sources, or files it needs are gone."""
        chunks = int(self.store.get_state("chunks_done", "0"))
        if self.store.get_state("arrays_done"):
            if self.store.get_state("arrays_key") != self.key:
                return "the source changed since the unfinished build finished its pass"
            names = [name for name, _, _ in self.outputs().values()]
        else:
            names = [f"{CHUNKS}/{number:06d}.npz" for number in range(chunks)]
        if missing := [name for name in names if not (self.stage / name).is_file()]:
            return f"the unfinished build in {self.stage} lacks {missing[0]}"
        return None

    def resumed_records(self) -> Iterator[Record]:
        """The records after those done, once the records done are the ones the source still
        yields first (same keys, metadata and files); otherwise the staging is discarded
        and every record comes. Added, changed or removed files are then never dropped."""
        if why := self.stale_staging():
            self.start_afresh(why)
        records_done = self.progress()[0]
        records = iter(self.dataset)
        if self.store.get_state("arrays_done"):
            return iter(())  # the pass was finished over the source as it still is
        if not records_done:
            return records
        digest = ""
        for chunk in batched(itertools.islice(records, records_done), self.settings.chunk_size):
            digest = records_digest(digest, chunk_signature(chunk))
        if digest != self.store.get_state("records_digest"):
            self.start_afresh(
                "the source changed before where the unfinished build stopped "
                "(a file added, changed or removed)"
            )
            return iter(self.dataset)
        return records

    # --- the streaming pass --------------------------------------------------------------
    def run(self) -> BuildResult:
        check_target(self.out)
        parse(self.settings.fault_at)
        self.key = self.content_key()
        tidy_published(self.out)
        if not self.rebuild and (done := self.up_to_date(self.key)):
            return done
        if not self.fresh and (staged := self.staged_complete()):
            return staged
        n = self.dataset.estimated_size()
        space.check_free(self.stage, self.out, self.space_needed(n), n)
        self.open_stage()
        records = self.resumed_records()
        records_done, items_done, chunks_done = self.progress()
        if records_done:
            print(f"resuming after {records_done} records ({items_done} indexed)", file=sys.stderr)
        self.bar = progress_bar(self.dataset.estimated_size(), records_done, "img", "indexing")
        chunks = batched(records, self.settings.chunk_size)
        with DecodeStream(chunks, self.options, self.settings) as self.decoding:
            for chunk, signed, results in self.decoding:
                records_done, items_done, chunks_done = self.finish_chunk(
                    chunk, results, signed, records_done, items_done, chunks_done
                )
        self.bar.close()
        return self.finalize(items_done, chunks_done)

    def finish_chunk(
        self,
        chunk: list[Record],
        results: Iterable[Decoded | str],
        signed: str,
        records_done: int,
        items_done: int,
        chunks_done: int,
    ) -> tuple[int, int, int]:
        """Write a chunk as its records are decoded and commit it with the progress and the
        records' digest (``signed``: its chunk_signature)."""
        kept = self.process_chunk(chunk, results, items_done, chunks_done)
        progress = (records_done + len(chunk), items_done + kept, chunks_done + 1)
        digest = records_digest(self.store.get_state("records_digest"), signed)
        self.store.set_state("records_digest", digest)
        self.commit_progress(*progress)
        return progress

    def process_chunk(
        self, chunk: list[Record], results: Iterable[Decoded | str], base: int, number: int
    ) -> int:
        skipped: list[tuple[Record, str]] = []
        seen = self.store.known_ids([r.id for r in chunk])
        return self.write_chunk(number, base, kept_results(chunk, results, seen, skipped), skipped)

    def write_chunk(
        self,
        number: int,
        base: int,
        pairs: Iterable[tuple[Record, Decoded]],
        skipped: list[tuple[Record, str]],
    ) -> int:
        """Encode the kept records as they come (``skipped`` fills meanwhile), then write
        the chunk's arrays, thumbnails and rows; the number kept."""
        cpu, done = time.process_time(), 0

        def encoded(n: int) -> None:
            nonlocal done
            done += n
            self.bar.update(n)  # kept ones advance the bar per encoder batch: a smooth ETA
            if self.decoding is not None:
                self.decoding.balance((time.process_time() - cpu) / done)

        ok, images, captions = embed_stream(self.embedder, pairs, self.settings.batch_size, encoded)
        self.bar.update(len(skipped))
        np.savez(self.stage / CHUNKS / f"{number:06d}.npz", **chunk_arrays(ok, images, captions))
        rows = [item_row(base + i, r, d) for i, (r, d) in enumerate(ok)]
        # Thumbnails first: a chunk whose metadata is committed has its thumbnails on disk.
        self.thumbnails.insert((base + i, d.thumbnail) for i, (_, d) in enumerate(ok))
        self.thumbnails.conn.commit()
        fault_point(self.settings, "chunk_saved")
        self.store.insert_items(rows)
        self.store.record_skipped((r.key, r.source, why) for r, why in skipped)
        return len(ok)

    def commit_progress(self, records: int, items: int, chunks: int) -> None:
        for name, value in (
            ("records_done", records),
            ("items_done", items),
            ("chunks_done", chunks),
        ):
            self.store.set_state(name, str(value))
        self.store.commit()

    # --- finishing -----------------------------------------------------------------------
    def finalize(self, n: int, chunks: int) -> BuildResult:
        if n == 0:
            raise BuildError(f"no usable image found in {self.source}; nothing to index")
        print(f"finishing: writing vectors and FAISS indexes for {n} items", file=sys.stderr)
        arrays = self.final_arrays(n, chunks)
        factory = self.settings.faiss_factory or default_factory(n, self.identity["dim"])
        write_index(arrays["image"], factory, self.stage / fmt.IMAGE_FAISS)
        if "caption" in arrays:
            write_index(arrays["caption"], factory, self.stage / fmt.CAPTION_FAISS)
        print("finishing: duplicate groups and the name index", file=sys.stderr)
        groups = self.groups(arrays)
        np.save(self.stage / fmt.GROUPS, groups)
        self.store.build_indexes()
        skipped = self.store.skipped()
        with_caption = self.store.count_with_caption()
        safety = self.safety_info()
        started = float(self.store.get_state("started_at", str(time.time())))
        self.store.commit()
        fault_point(self.settings, "indexes_written")
        self.close()
        shutil.rmtree(self.stage / CHUNKS, ignore_errors=True)
        manifest = fmt.Manifest(
            format_version=fmt.FORMAT_VERSION,
            tool_version=fmt.TOOL_VERSION,
            dataset=self.dataset.name,
            source=self.source,
            model=fmt.ModelInfo(**self.identity),
            kind=self.kind,
            captions="caption" in arrays,
            faiss_factory=factory,
            fingerprint=self.fingerprint_scheme(),
            counts=fmt.Counts(
                items=n,
                skipped=len(skipped),
                with_caption=with_caption,
                duplicate_groups=len(np.unique(groups)),
            ),
            built_at=fmt.now_iso(),
            build_seconds=round(time.time() - started, 1),
            content_key=self.key,
            safety=safety,
        )
        (self.stage / fmt.REPORT).write_text(
            json.dumps({"counts": manifest.counts.model_dump(), "skipped": skipped}, indent=2)
        )
        manifest.files = integrity.describe(self.stage)
        manifest.write(self.stage)
        fault_point(self.settings, "manifest_written")
        publish(self.stage, self.out, self.settings)
        return BuildResult(manifest=manifest, index_dir=self.out, skipped=skipped)

    def staged_complete(self) -> BuildResult | None:
        """A staging directory that was finished (manifest written) for exactly this build
        but not yet published, as a kill can leave it: published now, nothing redone."""
        try:
            manifest = fmt.read_manifest(self.stage)
        except IndexUnreadable:
            return None
        if manifest.content_key != self.key:
            return None
        skipped = json.loads((self.stage / fmt.REPORT).read_text())["skipped"]
        publish(self.stage, self.out, self.settings)
        return BuildResult(manifest=manifest, index_dir=self.out, skipped=skipped)

    def space_needed(self, n: int | None) -> int | None:
        """A low estimate of the bytes a build of ``n`` records writes: the chunk files and
        the final arrays, which exist together while finishing, and the vector indexes
        (thumbnails and metadata come on top)."""
        if not n:
            return None
        row = sum(np.dtype(t).itemsize * int(np.prod(s)) for _, t, s in self.outputs().values())
        dim = self.identity["dim"]
        factory = self.settings.faiss_factory or default_factory(n, dim)
        return n * (2 * row + 2 * space.index_bytes_per_vector(dim, factory))

    kind: fmt.Kind = "images"

    def safety_info(self) -> fmt.Safety | None:
        """Who scored how many items; None when nothing was scored."""
        sources = self.store.safety_sources()
        if not sources:
            return None
        model = nsfw.model_version() if nsfw.OPEN_NSFW in sources else None
        return fmt.Safety(scored=sum(sources.values()), sources=sources, model=model)

    def fingerprint_scheme(self) -> str:
        return f"dct{DESCRIPTOR_DIM}+phash{HASH_BITS} x {INDEX_VARIANTS}"

    def final_arrays(self, n: int, chunks: int) -> dict[str, np.ndarray]:
        return self.concatenate(n, chunks)

    def groups(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """Near-duplicate group (its leader's row) of every row; stored in the metadata for
        item pages and as groups.npy for collapsing answers."""
        candidates = write_copy_index(self.stage, arrays["descriptors"])
        groups = duplicate_groups(
            arrays["descriptors"][:, 0, :],
            arrays["colours"],
            self.store.sha256s(),
            self.settings.duplicate_group_min_similarity,
            self.settings.duplicate_group_max_colour,
            candidates,
        )
        self.store.set_groups(groups)
        return groups

    def outputs(self) -> dict[str, tuple[str, type, tuple[int, ...]]]:
        """npz key in a chunk -> (final file, dtype, shape of one row)."""
        dim = self.identity["dim"]
        return {
            "image": (fmt.IMAGE_VECTORS, np.float16, (dim,)),
            "caption": (fmt.CAPTION_VECTORS, np.float16, (dim,)),
            "hashes": (fmt.FINGERPRINTS, np.uint8, (INDEX_VARIANTS, HASH_BYTES)),
            "descriptors": (fmt.DESCRIPTORS, np.float16, (INDEX_VARIANTS, DESCRIPTOR_DIM)),
            "colours": (fmt.COLOURS, np.uint8, (COLOUR_BYTES,)),
        }

    def read_chunk(self, number: int) -> dict[str, np.ndarray]:
        """Chunk ``number``'s arrays, by the keys of :meth:`outputs`."""
        with np.load(self.stage / CHUNKS / f"{number:06d}.npz") as part:
            return {key: part[key] for key in self.outputs()}

    def concatenate(self, n: int, chunks: int) -> dict[str, np.ndarray]:
        """Chunk files into the final arrays, through memory maps: memory stays flat. Once
        they are recorded the chunk files go, and a resumed finish opens the arrays."""
        if self.store.get_state("arrays_done"):
            return {
                key: np.load(self.stage / name, mmap_mode="r")
                for key, (name, _, _) in self.outputs().items()
            }
        arrays = {
            key: space.new_memmap(self.stage / name, dtype, (n, *shape))
            for key, (name, dtype, shape) in self.outputs().items()
        }
        row = 0
        for number in range(chunks):
            part = self.read_chunk(number)
            m = len(part["image"])
            for key, array in arrays.items():
                array[row : row + m] = part[key]
            row += m
        if row != n:
            raise BuildError(
                f"staging is inconsistent ({row} vectors for {n} items); delete "
                f"{self.stage} and build again"
            )
        for array in arrays.values():
            array.flush()
        fault_point(self.settings, "arrays_written")
        self.store.set_state("arrays_done", str(n))
        self.store.set_state("arrays_key", self.key)
        self.store.commit()
        shutil.rmtree(self.stage / CHUNKS)
        fault_point(self.settings, "chunks_removed")
        return arrays


WINDOW_PER_WORKER = 8  # decodes in flight a worker: enough that none waits for work


class DecodeStream:
    """A build's records decoded by worker processes, in order, chunk by chunk.

    A few decodes a worker are in flight, not whole chunks: the encoder starts on a
    chunk's first batch while the rest decodes (neither waits for the other), workers go
    on into the next chunk across a chunk's end, and what waits in memory is a window of
    images, not chunks. A chunk's signature is taken when it is formed, before any of its
    files is read. With decode_workers unset the workers are as many as the measured
    costs call for (:meth:`balance`): one to start, another started when needed. The
    workers are spawned: they import no torch and never hold the model.
    """

    def __init__(
        self, chunks: Iterator[list[Record]], options: DecodeOptions, settings: Settings
    ) -> None:
        self.chunks, self.options, self.settings = chunks, options, settings
        self.limit = decode_workers(settings)  # negative: decode in this process
        self.wanted = 1 if settings.decode_workers == 0 else self.limit
        self.pools: list = []
        self.formed: deque[tuple[list[Record], str]] = deque()
        self.feed: deque[Record] = deque()  # records of formed chunks not yet sent
        self.pending: deque = deque()  # sent, in record order
        self.sent, self.decode_cpu, self.decoded = 0, 0.0, 0

    def __enter__(self) -> DecodeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        for pool in self.pools:
            pool.terminate()
            pool.join()

    def __iter__(self) -> Iterator[tuple[list[Record], str, Iterator[Decoded | str]]]:
        """(chunk, its signature, its results as they come); each chunk's results are read
        to the end before the next chunk is asked for."""
        while self.formed or self.form():
            chunk, signed = self.formed.popleft()
            yield chunk, signed, self.results(len(chunk))

    def form(self) -> bool:
        chunk = next(self.chunks, None)
        if chunk is None:
            return False
        self.formed.append((chunk, chunk_signature(chunk)))  # before its files are read
        self.feed.extend(chunk)
        return True

    def results(self, n: int) -> Iterator[Decoded | str]:
        for _ in range(n):
            self.top_up()
            result = self.pending.popleft().get()
            if isinstance(result, Decoded):
                self.decode_cpu, self.decoded = self.decode_cpu + result.cpu, self.decoded + 1
            yield result

    def top_up(self) -> None:
        while len(self.pending) < WINDOW_PER_WORKER * max(1, self.wanted):
            if not self.feed and not self.form():
                return
            self.send(self.feed.popleft())

    def send(self, record: Record) -> None:
        task = (record.image_ref(), self.options)
        if self.limit < 0:
            self.pending.append(_Done(decode_one(task)))
            return
        if len(self.pools) < self.wanted:
            self.pools.append(multiprocessing.get_context("spawn").Pool(1))
        self.pending.append(self.pools[self.sent % self.wanted].apply_async(decode_one, (task,)))
        self.sent += 1

    def balance(self, rest: float) -> None:
        """Workers for what an image costs: ``rest``, CPU seconds of this process's work
        (encoding, writing) an image, against the workers' decode seconds an image."""
        if self.settings.decode_workers or not self.decoded:
            return
        wanted = decode_workers(self.settings, StageCosts(self.decode_cpu / self.decoded, rest))
        if wanted != self.wanted:
            tqdm.write(
                f"decoding in {wanted} processes (CPU an image: decoding "
                f"{1000 * self.decode_cpu / self.decoded:.0f} ms, encoding and writing "
                f"{1000 * rest:.0f} ms)",
                file=sys.stderr,
            )
            self.wanted = wanted


@dataclass
class _Done:
    """A decode done in this process, answering as a worker's would."""

    value: Decoded | str

    def get(self) -> Decoded | str:
        return self.value


def item_row(idx: int, record: Record, decoded: Decoded) -> dict:
    return {
        "idx": idx,
        "id": record.id,
        "key": record.key,
        "source": record.source,
        "path": str(record.path.resolve()) if record.path else None,
        "url": record.url,
        "host": record.host,
        "site": record.site,
        "caption": record.caption,
        "title": record.title,
        "artist": record.artist,
        "license": record.license,
        "keywords": record.keywords,
        "width": decoded.width,
        "height": decoded.height,
        "sha256": decoded.sha256,
        "extra": "",
        "nsfw": decoded.nsfw,
        "nsfw_source": nsfw.OPEN_NSFW if decoded.nsfw is not None else None,
    }


def old_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.old"


def publish(stage: Path, out: Path, settings: Settings) -> None:
    """Swap the finished staging directory into place; an old index is removed after. A
    kill between the two renames leaves the old index aside and the new one staged: the
    next run publishes the staged one (Builder.staged_complete)."""
    old = old_dir(out)
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        out.rename(old)
        fault_point(settings, "old_set_aside")
    stage.rename(out)
    if old.exists():
        shutil.rmtree(old)


def tidy_published(out: Path) -> None:
    """An old index left aside by a kill after the new one was published."""
    if (out / fmt.MANIFEST).is_file() and old_dir(out).exists():
        shutil.rmtree(old_dir(out))


def build_index(
    source: str | Path,
    out: Path,
    embedder: Embedder | None,
    settings: Settings,
    name: str | None = None,
    rebuild: bool = True,
    add: bool = False,
    fresh: bool = False,
    ray: bool = False,
) -> BuildResult:
    """Index ``source`` into ``out``. Image datasets are embedded with ``embedder`` (the
    settings' model when None); published embeddings need no model loaded: the settings
    (or ``embedder``) name the model that made them, and ``add`` appends the parts the
    index does not hold yet. ``fresh`` discards an unfinished build rather than resume it;
    ``ray``: decode and embed images on the Ray cluster at ``settings.ray_address``
    (indexer/distributed.py). A full disk is one BuildError saying what to do; the build
    then resumes."""
    from hibt.indexer.datasets.embeddings import EmbeddingsDataset
    from hibt.indexer.ingest import EmbeddingBuilder
    from hibt.indexer.model import declared_identity, embedder_from, spec_from

    dataset = open_dataset(source, name)
    if isinstance(dataset, EmbeddingsDataset):
        if ray:
            print("published embeddings are copied, not embedded: ingesting here", file=sys.stderr)
        identity = embedder.identity() if embedder else declared_identity(spec_from(settings))
        builder: Builder = EmbeddingBuilder(
            dataset, str(source), Path(out), identity, settings, rebuild, add, fresh
        )
    elif add:
        raise BuildError("--add appends parts of published embeddings; rebuild an image index")
    elif ray:
        from hibt.indexer.distributed import build_on_ray

        return build_on_ray(dataset, str(source), Path(out), embedder, settings, rebuild, fresh)
    else:
        embedder = embedder or embedder_from(settings)
        builder = Builder(dataset, str(source), Path(out), embedder, settings, rebuild, fresh)
    with space.full_disk_reported(builder.stage):
        try:
            return builder.run()
        finally:
            builder.close()
