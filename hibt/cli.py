"""The ``hibt`` command: index a dataset, search an index, serve it over HTTP. Heavy imports
wait inside each command, so ``hibt --help`` answers at once."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from hibt.config import Settings, get_settings
from hibt.errors import HibtError

# OpenMP threads that spin while they wait (libgomp's default) stall FAISS training for tens
# of minutes when another process holds the cores; set before torch or faiss loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Reverse-image search over AI training sets."
)

ModelOpt = Annotated[str | None, typer.Option(help="open_clip model name, or tiny-test")]
PretrainedOpt = Annotated[str | None, typer.Option(help="open_clip pretrained tag")]
CheckpointOpt = Annotated[Path | None, typer.Option(help="local open_clip checkpoint file")]


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


@contextmanager
def refusals() -> Iterator[None]:
    """Any refusal becomes one error line and its exit status (ModelUnavailable: 3, which
    scripts/demo.sh tests for), never a traceback."""
    try:
        yield
    except HibtError as exc:
        fail(exc.message, exc.exit_code)


def settings_with(**overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    return get_settings().model_copy(update=values)


def non_semantic_warning(model: str) -> None:
    typer.secho(
        f"note: model {model} has random weights; similarity results are NOT semantic "
        "(copy detection and name search are unaffected)",
        err=True,
        fg=typer.colors.YELLOW,
    )


@app.command()
def index(
    source: Annotated[
        Path,
        typer.Argument(
            help="image folder, Openclipart tree, .tar shards, or published embeddings "
            "(img_emb/ + metadata/ parts, as LAION publishes them)"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="index directory to write")],
    name: Annotated[str | None, typer.Option(help="dataset name (part of every item id)")] = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    checkpoint: CheckpointOpt = None,
    precision: Annotated[str | None, typer.Option(help="auto, bf16, int8 or fp32")] = None,
    faiss_factory: Annotated[str | None, typer.Option(help="FAISS index_factory string")] = None,
    batch_size: Annotated[int | None, typer.Option(help="images per encoder batch")] = None,
    workers: Annotated[int | None, typer.Option(help="decoder processes (-1: none)")] = None,
    rebuild: Annotated[
        bool,
        typer.Option(
            help="build again from the start, even when OUT is up to date with SOURCE "
            "(an unfinished build is discarded, not resumed)"
        ),
    ] = False,
    add: Annotated[
        bool,
        typer.Option(help="published embeddings: append the parts OUT does not hold yet"),
    ] = False,
    ray: Annotated[
        bool, typer.Option(help="decode and embed on a Ray cluster (pip install 'hibt[ray]')")
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to join (auto, HOST:6379, ray://HOST:10001); "
            "default: RAY_ADDRESS, a cluster started here, else a local Ray"
        ),
    ] = None,
    parts: Annotated[
        str | None,
        typer.Option(
            help="with --ray: where workers write parts, a path every node sees or "
            "an fsspec URL (s3://bucket/prefix)"
        ),
    ] = None,
) -> None:
    """Embed every image and caption of SOURCE into an index directory (resumable), or
    ingest published embeddings (then --model/--pretrained name the model that made them).
    An index built from the same files with the same model and settings is left as is."""
    from hibt.indexer.build import build_index
    from hibt.indexer.model import spec_from

    settings = settings_with(
        model=model,
        pretrained=pretrained,
        checkpoint=checkpoint and str(checkpoint),
        precision=precision,
        faiss_factory=faiss_factory,
        batch_size=batch_size,
        decode_workers=workers,
        ray_address=ray_address,
        ray_parts=parts,
    )
    if not spec_from(settings).semantic:
        non_semantic_warning(settings.model)
    with refusals():
        result = build_index(
            source, out, None, settings, name, rebuild, add, fresh=rebuild, ray=ray
        )
    m = result.manifest
    if result.reused:
        typer.echo(
            f"{out} is up to date with {source} ({m.counts.items} images, built "
            f"{m.built_at}); nothing to do (--rebuild builds it again)"
        )
        return
    typer.echo(
        f"indexed {m.counts.items} items into {out} in {m.build_seconds:.0f}s; "
        f"skipped {m.counts.skipped} (see {out / 'report.json'}); "
        f"{m.counts.duplicate_groups} distinct after grouping near-duplicates"
    )
    typer.echo(
        f"safety scores: {m.safety.scored} items ({', '.join(sorted(m.safety.sources))})"
        if m.safety
        else "safety scores: none (nothing will be blurred or hidden)"
    )


def warn_if_not_semantic(index_dir: Path) -> None:
    from hibt.indexer.index_format import read_manifest

    built = read_manifest(index_dir).model
    if not built.semantic:
        non_semantic_warning(built.name)


@app.command()
def search(
    index_dir: Annotated[Path, typer.Argument(help="index directory")],
    query: Annotated[str | None, typer.Argument(help="text query")] = None,
    image: Annotated[Path | None, typer.Option(help="search with this image instead")] = None,
    k: Annotated[int, typer.Option("--k", "-k", help="number of results")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Print the nearest neighbours of a text or an image."""
    from hibt.server.engine import Engine

    if (query is None) == (image is None):
        fail("give either a text QUERY or --image PATH")
    if image is not None and not image.is_file():
        fail(f"{image} is not a file")
    with refusals():
        warn_if_not_semantic(index_dir)
        engine = Engine.open(index_dir, settings_with(checkpoint=checkpoint and str(checkpoint)))
        if image is not None:
            response = engine.search_image(image.read_bytes(), k)
        else:
            response = engine.search_text(query or "", k)
    if as_json:
        typer.echo(response.model_dump_json(indent=2))
        return
    print_results(response)


def print_results(response) -> None:
    if response.copy_verdict:
        typer.echo(response.copy_verdict)
    counts = response.counts
    if counts.name_match:
        typer.echo(f"{counts.name_match} items name '{response.query}'")
    for rank, r in enumerate(response.results, 1):
        extra = f" sim={r.copy_similarity:.3f}" if r.copy_similarity is not None else ""
        extra += " UNSAFE" if r.unsafe else ""
        typer.echo(
            f"{rank:3d}. [{r.match}{extra}] {r.score:.3f}  {r.caption[:70]!r}  "
            f"by {r.artist or 'unknown'}  ({r.license or 'licence unknown'})  {r.source}"
        )


@app.command()
def serve(
    index_dirs: Annotated[
        list[str],
        typer.Argument(
            help="index directories, each PATH (named by its manifest) or NAME=PATH; the "
            "first is the default one",
            metavar="INDEX...",
        ),
    ],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Serve the JSON API and the web page for one index or several."""
    from hibt.server.limits import one_thread_per_query

    one_thread_per_query()  # before what it limits is imported
    import uvicorn

    from hibt.server.app import open_app
    from hibt.server.catalogue import parse_target
    from hibt.server.optouts import registry_path

    settings = settings_with(checkpoint=checkpoint and str(checkpoint))
    paths = [parse_target(arg)[1] for arg in index_dirs]
    with refusals():
        for path in paths:
            warn_if_not_semantic(path)
        app_ = open_app(index_dirs, settings)
    for served in app_.state.catalogue:
        served.engine.verifiers.start()
        typer.echo(
            f"serving {served.engine.n} images from {served.engine.index.directory} as "
            f"index {served.name!r}",
            err=True,
        )
    typer.echo(f"at http://{host}:{port}/ (API docs at /docs)", err=True)
    typer.echo(f"opt-out registry: {registry_path(paths[0], settings)}", err=True)
    uvicorn.run(
        app_,
        host=host,
        port=port,
        log_level="info",
        forwarded_allow_ips=settings.trusted_proxies,
    )


@app.command()
def verify(index_dir: Annotated[Path, typer.Argument(help="index directory")]) -> None:
    """Read every file of an index against the sizes and checksums its manifest records
    (serving checks only sizes, shapes and each file's ends)."""
    from hibt.indexer.integrity import verify as verify_index
    from hibt.indexer.space import human

    with refusals():
        done = verify_index(index_dir)
    for note in done.notes:
        typer.secho(f"warning: {note}", err=True, fg=typer.colors.YELLOW)
    typer.echo(
        f"{index_dir}: {done.files} files ({human(done.bytes)}) match the checksums its "
        f"manifest records; shapes and counts agree ({done.seconds:.1f}s)"
    )


@app.command()
def info(index_dir: Annotated[Path, typer.Argument(help="index directory")]) -> None:
    """Print an index's manifest."""
    from hibt.indexer.index_format import read_manifest

    with refusals():
        typer.echo(read_manifest(index_dir).model_dump_json(indent=2))


if __name__ == "__main__":
    sys.exit(app())
