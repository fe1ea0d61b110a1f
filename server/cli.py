"""The ``hibt`` command: index a dataset, search an index, serve it over HTTP."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from indexer.config import TINY_MODEL, Settings, get_settings

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Reverse-image search over AI training sets."
)

MODEL_UNAVAILABLE = 3  # exit status scripts can test for (scripts/demo.sh does)

ModelOpt = Annotated[str | None, typer.Option(help="open_clip model name, or tiny-test")]
PretrainedOpt = Annotated[str | None, typer.Option(help="open_clip pretrained tag")]
CheckpointOpt = Annotated[Path | None, typer.Option(help="local open_clip checkpoint file")]


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


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
    source: Annotated[Path, typer.Argument(help="image folder, Openclipart tree or .tar shards")],
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
        bool, typer.Option(help="build again even when OUT is up to date with SOURCE")
    ] = False,
) -> None:
    """Embed every image and caption of SOURCE into an index directory (resumable). An
    index built from the same files with the same model and settings is left as it is."""
    from indexer.build import BuildError, build_index
    from indexer.datasets import DatasetError
    from indexer.model import ModelUnavailable

    settings = settings_with(
        model=model,
        pretrained=pretrained,
        checkpoint=checkpoint and str(checkpoint),
        precision=precision,
        faiss_factory=faiss_factory,
        batch_size=batch_size,
        decode_workers=workers,
    )
    try:
        embedder = make_embedder(settings)
        result = build_index(source, out, embedder, settings, name, rebuild)
    except ModelUnavailable as exc:
        fail(str(exc), MODEL_UNAVAILABLE)
    except (BuildError, DatasetError) as exc:
        fail(str(exc))
    m = result.manifest
    if result.reused:
        typer.echo(
            f"{out} is up to date with {source} ({m.counts.items} images, built "
            f"{m.built_at}); nothing to do (--rebuild builds it again)"
        )
        return
    typer.echo(
        f"indexed {m.counts.items} images into {out} in {m.build_seconds:.0f}s; "
        f"skipped {m.counts.skipped} (see {out / 'report.json'}); "
        f"{m.counts.duplicate_groups} distinct after grouping near-duplicates"
    )


def make_embedder(settings: Settings):
    from indexer.model import Embedder, ModelSpec

    tiny = settings.model == TINY_MODEL
    spec = ModelSpec(settings.model, None if tiny else settings.pretrained, settings.checkpoint)
    if not spec.semantic:
        non_semantic_warning(settings.model)
    return Embedder(spec, precision=settings.precision)


def open_engine(index_dir: Path, settings: Settings):
    from indexer.index_format import IndexError_
    from indexer.model import ModelUnavailable
    from server.engine import Engine

    try:
        engine = Engine(index_dir, settings)
    except IndexError_ as exc:
        fail(str(exc))
    except ModelUnavailable as exc:
        fail(str(exc), MODEL_UNAVAILABLE)
    if not engine.manifest.model.semantic:
        non_semantic_warning(engine.manifest.model.name)
    return engine


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
    from server.engine import QueryError

    if (query is None) == (image is None):
        fail("give either a text QUERY or --image PATH")
    engine = open_engine(index_dir, settings_with(checkpoint=checkpoint and str(checkpoint)))
    try:
        if image is not None:
            if not image.is_file():
                fail(f"{image} is not a file")
            response = engine.search_image(image.read_bytes(), k)
        else:
            response = engine.search_text(query or "", k)
    except QueryError as exc:
        fail(exc.message)
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
        typer.echo(
            f"{rank:3d}. [{r.match}{extra}] {r.score:.3f}  {r.caption[:70]!r}  "
            f"by {r.artist or 'unknown'}  ({r.license or 'licence unknown'})  {r.source}"
        )


@app.command()
def serve(
    index_dir: Annotated[Path, typer.Argument(help="index directory")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Serve the JSON API and the web page for an index."""
    import uvicorn

    from server.app import create_app
    from server.optouts import open_optouts

    settings = settings_with(checkpoint=checkpoint and str(checkpoint))
    engine = open_engine(index_dir, settings)
    optouts = open_optouts(engine, index_dir, settings)
    typer.echo(
        f"serving {engine.n} images from {index_dir} at http://{host}:{port}/ (API docs at /docs)",
        err=True,
    )
    typer.echo(f"opt-out registry: {optouts.registry.path}", err=True)
    uvicorn.run(create_app(engine, settings, optouts), host=host, port=port, log_level="info")


@app.command()
def info(index_dir: Annotated[Path, typer.Argument(help="index directory")]) -> None:
    """Print an index's manifest."""
    from indexer.index_format import IndexError_, read_manifest

    try:
        typer.echo(read_manifest(index_dir).model_dump_json(indent=2))
    except IndexError_ as exc:
        fail(str(exc))


if __name__ == "__main__":
    sys.exit(app())
