"""Building an index on a Ray cluster: ``hibt index SOURCE --out DIR --ray``.

The local build's per-record work (build.py) fans out as Ray Data stages over the
dataset's units of work (a webdataset shard, or a slice of ``chunk_size`` images of a
folder), with the same functions:

1. decode tasks read a unit's records, cut them into chunks as the local build does
   (``batched``: never across a shard), decode every record (``decode_one``: fingerprints,
   thumbnail, model input) and drop a key repeated inside the chunk (``split_results``);
2. embedding actors (``map_batches`` with a class: the model is loaded once per actor, on a
   GPU where the cluster has them, else under the CPU precision rules) embed each chunk in
   the local build's batches (``embed_records``) and write it to shared storage as a part
   (``PartStore``), named by its unit and its chunk within the unit, through a temporary
   name and a rename;
3. the driver commits the parts in dataset order as they arrive (rows, thumbnails, skipped
   files; a key that an earlier part already holds is skipped as a duplicate), shows the
   progress, and finishes as the local build does (``Builder.finalize``: vectors
   concatenated, FAISS trained on a sample and merged on disk, groups, manifest).

A retried task rewrites the same part under the same name and the driver takes each
(unit, chunk) once, so a retry neither loses nor repeats a record. A build interrupted as
a whole resumes: what the driver committed stays committed, parts already on storage are
committed without being computed again, and only units missing a part run. Ray is
imported only here, and only when a build asks for it (``pip install 'hibt[ray]'``).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hibt.config import Settings
from hibt.errors import BuildError, HibtError
from hibt.indexer import space
from hibt.indexer.build import (
    Builder,
    BuildResult,
    batched,
    check_target,
    chunk_arrays,
    decode_options,
    embed_records,
    image_code,
    item_row,
    progress_bar,
)
from hibt.indexer.build import split_results as split_chunk
from hibt.indexer.datasets import Dataset
from hibt.indexer.decode import DecodeOptions, decode_one
from hibt.indexer.records import Record

if TYPE_CHECKING:  # the model, and torch, load in the embedding actors and nowhere else
    from hibt.indexer.model import Embedder

RETRIES = 3  # attempts after the first for a task that raised
# What a decode task reserves: the largest image it may decode (HIBT_MAX_IMAGE_PIXELS) and a
# chunk of results. Resources unlike the actors' also keep Ray Data from fusing the decode
# tasks into the embedding actors, which would then decode only as many images at once as
# there are actors.
DECODE_MEMORY = 1 << 30
CPUS_PER_EMBEDDER = 4  # without GPUs: one embedding actor per this many cluster CPUs


class InjectedFault(RuntimeError):
    """Raised once by a stage named in HIBT_RAY_FAULT, to prove that retries work."""


# --- parts on shared storage ----------------------------------------------------------------
def part_name(unit: int, chunk: int, last: bool) -> str:
    """Deterministic per input shard: a retry or a rerun writes the same name again."""
    return f"{unit:06d}-{chunk:05d}{'-last' if last else ''}.npz"


def parse_part_name(name: str) -> tuple[int, int, bool] | None:
    stem = name.removesuffix(".npz")
    fields = stem.split("-")
    if not name.endswith(".npz") or len(fields) not in (2, 3) or not stem[:1].isdigit():
        return None
    return int(fields[0]), int(fields[1]), fields[-1] == "last"


class PartStore:
    """Part files under a path or an fsspec URL (s3://, gs://, ...). A part is written whole
    under a temporary name and then renamed, so no reader sees half of one, and a retried
    task replaces a part with the same bytes."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def write(self, name: str, data: bytes) -> None:
        self.fs.makedirs(self.root, exist_ok=True)
        temporary = self.path(f".{name}.{uuid.uuid4().hex}.tmp")
        self.fs.pipe_file(temporary, data)
        self.fs.mv(temporary, self.path(name))

    def read(self, name: str) -> bytes:
        return self.fs.cat_file(self.path(name))

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def names(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        return sorted(p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False))

    def remove(self) -> None:
        """The parts and temporary files; markers of injected faults stay (tests read them)."""
        names = self.names()
        for name in names:
            if not name.startswith(".fault-"):
                self.fs.rm(self.path(name))
        if not any(n.startswith(".fault-") for n in names) and self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)


def encode_part(ok: list, skipped: list, images: np.ndarray, captions: np.ndarray) -> bytes:
    """A part: the local build's chunk arrays (``chunk_arrays``), plus what the local build
    writes straight into its store: item rows (their ``idx`` is given when the driver
    commits the part), skipped files and thumbnails."""
    thumbnails = [d.thumbnail for _, d in ok]
    records = {
        "rows": [item_row(0, r, d) for r, d in ok],
        "skipped": [[r.key, r.source, why] for r, why in skipped],
        "read": len(ok) + len(skipped),
    }
    buffer = io.BytesIO()
    np.savez(
        buffer,
        **chunk_arrays(ok, images, captions),
        records=np.frombuffer(json.dumps(records).encode(), np.uint8),
        thumbnails=np.frombuffer(b"".join(thumbnails), np.uint8),
        thumbnail_ends=np.cumsum([len(t) for t in thumbnails], dtype=np.int64),
    )
    return buffer.getvalue()


def fail_once(fault: str, stage: str, unit: int, parts: PartStore) -> None:
    """The test hook: a stage named in ``fault`` ("decode:U,embed:U") raises on unit U the
    first time only, and one named "kill-STAGE:U" ends its worker process as a crash or an
    out-of-memory kill would; the marker each leaves beside the parts says that it did."""
    for kind in ("", "kill-"):
        marker = f".fault-{kind}{stage}-{unit}"
        if f"{kind}{stage}:{unit}" not in fault.split(",") or parts.exists(marker):
            continue
        parts.write(marker, b"failed once")
        if kind:
            os._exit(1)
        raise InjectedFault(f"injected fault in {stage} of unit {unit}")


# --- the two Ray Data stages ------------------------------------------------------------------
def with_last(chunks: Iterator[list[Record]]) -> Iterator[tuple[list[Record], bool]]:
    """Each chunk with whether it is the unit's last; an empty unit is one empty chunk."""
    current = next(chunks, [])
    for following in chunks:
        yield current, False
        current = following
    yield current, True


def decode_units(
    batch: dict[str, np.ndarray],
    dataset: Dataset,
    options: DecodeOptions,
    chunk_size: int,
    parts_url: str,
    fault: str,
) -> Iterator[dict[str, list]]:
    """Ray task: the decoded chunks of each unit in ``batch``, one output row per chunk."""
    parts = PartStore(parts_url)
    for number, spec in zip(batch["unit"], batch["spec"], strict=True):
        unit = int(number)
        chunks = batched(dataset.read(pickle.loads(spec)), chunk_size)
        for index, (chunk, last) in enumerate(with_last(chunks)):
            if last and index:
                fail_once(fault, "decode", unit, parts)  # after a chunk went downstream
            results = [decode_one((r.image_ref(), options)) for r in chunk]
            ok, skipped = split_chunk(chunk, results, set())
            payload = (
                [(replace(r, data=None), d) for r, d in ok],
                [(replace(r, data=None), why) for r, why in skipped],
            )
            yield {
                "unit": [unit],
                "chunk": [index],
                "last": [last],
                "records": [len(chunk)],
                "payload": [pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)],
            }
            if last and not index:
                fail_once(fault, "decode", unit, parts)


class EmbedChunks:
    """Ray actor: one model per actor, loaded once; embeds chunks and writes them as parts."""

    def __init__(self, settings: Settings, parts_url: str, device: str) -> None:
        import torch

        from hibt.indexer.model import embedder_from

        if device == "cpu":
            torch.set_num_threads(max(1, int(settings.ray_embed_cpus)))
        self.embedder = embedder_from(settings, device=device)
        self.settings = settings
        self.parts = PartStore(parts_url)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"unit": [], "chunk": [], "last": [], "records": [], "kept": []}
        for unit, chunk, last, records, payload in zip(
            batch["unit"],
            batch["chunk"],
            batch["last"],
            batch["records"],
            batch["payload"],
            strict=True,
        ):
            unit, chunk, last = int(unit), int(chunk), bool(last)
            fail_once(self.settings.ray_fault, "embed", unit, self.parts)
            ok, skipped = pickle.loads(payload)
            images, captions = embed_records(self.embedder, ok, self.settings.batch_size)
            self.parts.write(
                part_name(unit, chunk, last), encode_part(ok, skipped, images, captions)
            )
            for key, value in zip(out, (unit, chunk, last, int(records), len(ok)), strict=True):
                out[key].append(value)
        return out


# --- the driver -----------------------------------------------------------------------------
@dataclass
class Arrived:
    """The parts of one unit on storage so far: chunk -> records read, and the last chunk."""

    chunks: dict[int, int]
    last: int | None = None

    def complete(self) -> bool:
        return self.last is not None and all(c in self.chunks for c in range(self.last + 1))


def ray_staging_dir(out: Path) -> Path:
    """Apart from the local build's: its bookkeeping differs, so neither resumes the other."""
    return out.parent / f".{out.name}.building-ray"


class RayBuilder(Builder):
    """The local Builder with its streaming pass run by Ray; finishing is the same."""

    def __init__(
        self,
        dataset: Dataset,
        source: str,
        out: Path,
        identity: dict,
        settings: Settings,
        rebuild: bool = True,
        fresh: bool = False,
    ) -> None:
        """``identity``: the model's, as the manifest records it; the driver loads no model;
        ``fresh``: discard an unfinished build (and its parts) rather than resume it."""
        if not hasattr(dataset, "units"):
            raise BuildError(f"{source} cannot be split into units of work for Ray")
        self.dataset, self.source, self.out = dataset, source, out
        self.settings, self.identity = settings, identity
        self.stage = ray_staging_dir(out)
        self.rebuild, self.fresh = rebuild, fresh
        self.options = decode_options(settings, identity["image_size"])
        self.build_key = self.key_of(image_code())

    def parts_url(self) -> str:
        """Parts of this build's content only: another source or setting writes elsewhere."""
        base = self.settings.ray_parts or str(self.stage / "parts")
        return f"{base.rstrip('/')}/{self.key[:16]}"

    def run(self) -> BuildResult:
        check_target(self.out)
        self.key = self.content_key()
        if not self.rebuild and (done := self.up_to_date(self.key)):
            return done
        self.resume()
        records_done, items_done, _ = self.progress()
        if records_done:
            print(f"resuming after {records_done} records ({items_done} indexed)", file=sys.stderr)
        self.bar = progress_bar(self.dataset.estimated_size(), records_done, "img", "indexing")
        self.commit_ready()
        todo = [u for u in range(self.next_unit(), len(self.units)) if not self.complete(u)]
        if todo:
            for row in run_stages(self, todo):
                unit, chunk = int(row["unit"]), int(row["chunk"])
                if chunk not in self.arrived.get(unit, Arrived({})).chunks:
                    self.bar.update(int(row["records"]))
                self.register(unit, chunk, bool(row["last"]), int(row["records"]))
                self.commit_ready()
        if self.next_unit() < len(self.units):
            raise BuildError(
                f"the Ray stages ended with unit {self.next_unit()} unfinished; run the same "
                "command again to resume"
            )
        self.bar.close()
        _, items_done, chunks_done = self.progress()
        result = self.finalize(items_done, chunks_done)
        self.parts.remove()
        return result

    def resume(self) -> None:
        """The staging store as last committed (discarded when built from other content),
        the units of work, and the parts already on storage."""
        self.open_stage()
        if self.store.get_state("content_key", self.key) != self.key:
            print(
                f"discarding an unfinished build of other content in {self.stage}", file=sys.stderr
            )
            self.store.close()
            shutil.rmtree(self.stage)
            self.open_stage()
        self.store.set_state("content_key", self.key)
        self.store.commit()
        self.parts = PartStore(self.parts_url())
        self.units = self.dataset.units(self.settings.chunk_size)
        self.arrived: dict[int, Arrived] = {}
        for name in self.parts.names():
            if (parsed := parse_part_name(name)) is not None:
                self.register(*parsed, records=0)  # counted when committed

    # --- bookkeeping of arrived parts ------------------------------------------------------
    def register(self, unit: int, chunk: int, last: bool, records: int) -> None:
        arrived = self.arrived.setdefault(unit, Arrived({}))
        arrived.chunks.setdefault(chunk, records)
        if last:
            arrived.last = chunk

    def complete(self, unit: int) -> bool:
        return unit in self.arrived and self.arrived[unit].complete()

    def next_unit(self) -> int:
        return int(self.store.get_state("ray_next_unit", "0"))

    def commit_ready(self) -> None:
        """Commit, in dataset order, every unit whose parts have all arrived."""
        while (unit := self.next_unit()) < len(self.units) and self.complete(unit):
            first = int(self.store.get_state("ray_next_chunk", "0"))
            last = self.arrived[unit].last or 0
            for chunk in range(first, last + 1):
                self.commit_part(unit, chunk, chunk == last)
            self.bar.set_postfix_str(f"units {unit + 1}/{len(self.units)}", refresh=False)

    def commit_part(self, unit: int, chunk: int, last: bool) -> None:
        """One part into the staging store, as the local build commits a chunk; a key an
        earlier part holds is skipped as a duplicate, and its row left out of the arrays."""
        name = part_name(unit, chunk, last)
        with np.load(io.BytesIO(self.parts.read(name))) as part:
            records = json.loads(part["records"].tobytes())
            blob, ends = part["thumbnails"].tobytes(), part["thumbnail_ends"]
        rows, skipped = records["rows"], [tuple(s) for s in records["skipped"]]
        records_done, items_done, chunks_done = self.progress()
        known = self.store.known_ids([row["id"] for row in rows])
        keep = [i for i, row in enumerate(rows) if row["id"] not in known]
        skipped += [
            (row["key"], row["source"], "duplicate key in dataset")
            for row in rows
            if row["id"] in known
        ]
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        self.thumbnails.insert(
            (items_done + j, blob[starts[i] : ends[i]]) for j, i in enumerate(keep)
        )
        self.thumbnails.conn.commit()
        self.store.insert_items({**rows[i], "idx": items_done + j} for j, i in enumerate(keep))
        self.store.record_skipped(skipped)
        whole = len(keep) == len(rows)
        self.store.set_state(f"chunk_{chunks_done}", json.dumps([name, None if whole else keep]))
        self.store.set_state("ray_next_unit", str(unit + 1 if last else unit))
        self.store.set_state("ray_next_chunk", str(0 if last else chunk + 1))
        if not self.arrived[unit].chunks.get(chunk):  # found on storage at start: counted now
            self.bar.update(records["read"])
        self.commit_progress(
            records_done + records["read"], items_done + len(keep), chunks_done + 1
        )

    def read_chunk(self, number: int) -> dict[str, np.ndarray]:
        name, keep = json.loads(self.store.get_state(f"chunk_{number}"))
        with np.load(io.BytesIO(self.parts.read(name))) as part:
            arrays = {key: part[key] for key in self.outputs()}
        if keep is not None:
            arrays = {key: array[keep] for key, array in arrays.items()}
        return arrays


def run_stages(builder: RayBuilder, todo: list[int]) -> Iterator[dict]:
    """Summaries of the parts written, in the order they finish."""
    try:
        yield from stages(builder, todo).iter_rows()
    except Exception as exc:
        raise hibt_cause(exc) from exc


def stages(builder: RayBuilder, todo: list[int]):
    """The two Ray Data stages over the units ``todo``, planned, not yet run."""
    import ray
    import ray.data

    # A task that raised runs again and its outputs are replayed past those already passed
    # on (the stages are deterministic); a killed worker's task or actor is retried by Ray
    # core (Ray Data's default). The driver shows its own progress bar.
    context = ray.data.DataContext.get_current()
    context.retried_map_errors = True
    context.max_map_retries = RETRIES
    context.enable_progress_bars = False
    settings = builder.settings
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 1))
    embedders = settings.ray_embedders or gpus or max(1, cpus // CPUS_PER_EMBEDDER)
    items = [
        {"unit": u, "spec": pickle.dumps(builder.units[u], protocol=pickle.HIGHEST_PROTOCOL)}
        for u in todo
    ]
    data = ray.data.from_items(items, override_num_blocks=len(items))
    data = data.map_batches(
        decode_units,
        batch_size=1,
        fn_kwargs={
            "dataset": builder.dataset,
            "options": builder.options,
            "chunk_size": settings.chunk_size,
            "parts_url": builder.parts.url,
            "fault": settings.ray_fault,
        },
        num_cpus=1,
        memory=DECODE_MEMORY,
    )
    data = data.map_batches(
        EmbedChunks,
        batch_size=1,
        fn_constructor_kwargs={
            "settings": settings,
            "parts_url": builder.parts.url,
            "device": "cuda" if gpus else "cpu",
        },
        compute=ray.data.ActorPoolStrategy(size=embedders),
        num_cpus=settings.ray_embed_cpus,
        num_gpus=1 if gpus else 0,
    )
    return data


def hibt_cause(exc: BaseException) -> HibtError:
    """The HibtError a worker raised (a missing model, say) if any, else a BuildError."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, HibtError):
            return seen
        seen = seen.__cause__ or seen.__context__
    line = next((s for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
    return BuildError(f"the Ray build failed ({line}); run the same command again to resume")


def check_parts_shared(settings: Settings) -> None:
    """Parts in the staging directory reach the driver only from workers on its machine."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if settings.ray_parts is None and len(nodes) > 1:
        raise BuildError(
            f"the Ray cluster has {len(nodes)} nodes: give --parts (HIBT_RAY_PARTS) a path "
            "every node can write and this machine read, or an fsspec URL (s3://...)"
        )


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (Ray's own discovery when None); True when this
    call started Ray and so should shut it down."""
    try:
        import ray
    except ImportError:
        raise BuildError("--ray needs Ray: pip install 'hibt[ray]'") from None
    if ray.is_initialized():
        return False
    ray.init(address=address)
    return True


def build_on_ray(
    dataset: Dataset,
    source: str,
    out: Path,
    embedder: Embedder | None,
    settings: Settings,
    rebuild: bool = True,
    fresh: bool = False,
) -> BuildResult:
    """Build the index of ``dataset`` with Ray at ``settings.ray_address``."""
    from hibt.indexer.model import declared_identity, spec_from, weights_source

    weights_source(spec_from(settings))  # a missing model fails here, not in every actor
    identity = embedder.identity() if embedder else declared_identity(spec_from(settings))
    builder = RayBuilder(dataset, source, out, identity, settings, rebuild, fresh)
    started = connect(settings.ray_address)
    try:
        check_parts_shared(settings)
        with space.full_disk_reported(builder.stage):
            return builder.run()
    finally:
        if started:
            import ray

            ray.shutdown()
