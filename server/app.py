"""HTTP API (JSON under /api, OpenAPI at /docs) and the static web page."""

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, Header, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from hibt import __version__
from hibt.config import Settings
from hibt.errors import HibtError, QueryError, RegistryError
from hibt.indexer.model import Embedder, embedder_from
from hibt.server import across, answers, clip_compat, do_not_train, openapi_examples, schemas
from hibt.server.catalogue import Catalogue, Served, model_key, parse_target, unique_name
from hibt.server.docs import add_docs
from hibt.server.engine import Engine, Visibility
from hibt.server.headers import SecurityHeaders
from hibt.server.index import OpenIndex
from hibt.server.limits import BodyLimit, Busy, QueryGate, Slots, query_places
from hibt.server.optouts import OptOuts, registry_path
from hibt.server.ratelimit import RateLimiter
from hibt.server.registry import Registry
from hibt.server.removals import Removals, read_keys
from hibt.server.safety import Safe

WEB_DIR = Path(str(files("hibt.web")))
ERRORS = {
    400: {"model": schemas.ErrorBody},
    403: {"model": schemas.ErrorBody},
    404: {"model": schemas.ErrorBody},
    413: {"model": schemas.ErrorBody},
    415: {"model": schemas.ErrorBody},
    422: {"model": schemas.ErrorBody},
    503: {"model": schemas.ErrorBody},  # busy: retry after Retry-After seconds
}
UPLOAD_BLOCK = 1 << 20
IndexName = Annotated[
    str | None,
    Query(description="Which index to search (a name from /api/indices); the first by default"),
]


def read_upload(upload: UploadFile, limit: int) -> bytes:
    """Read at most ``limit`` bytes; one copy in memory, refused as soon as it is too big."""
    if upload.size is not None and upload.size > limit:
        raise QueryError(f"upload is larger than the limit of {limit} bytes", 413)
    buffer = bytearray()
    while block := upload.file.read(UPLOAD_BLOCK):
        buffer += block
        if len(buffer) > limit:
            raise QueryError(f"upload is larger than the limit of {limit} bytes", 413)
    if not buffer:
        raise QueryError("the upload is empty", 400)
    return bytes(buffer)


def bearer(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise RegistryError("send the private token as 'Authorization: Bearer TOKEN'", 401)
    return token.strip()


def answered(model: BaseModel) -> Response:
    """A search answer serialised once. Returned as a model, FastAPI would dump it to a dict
    and validate it again against ``response_model`` (about 14 ms of a 1,000-result answer);
    ``response_model`` still documents it."""
    return Response(model.model_dump_json(), media_type="application/json")


def create_app(
    engine: Engine,
    settings: Settings,
    optouts: OptOuts | None = None,
    catalogue: Catalogue | None = None,
) -> FastAPI:
    """The HTTP app over ``engine``'s index, or over every index of ``catalogue`` (whose first
    is ``engine``'s) when the server serves several."""
    catalogue = catalogue or Catalogue([Served(index_name(engine), engine, optouts)])
    app = FastAPI(
        title="hibt: is my work in this training set?",
        version=__version__,
        description="Search an image-caption dataset by text, image or embedding. Results say "
        "whether they are copies of an uploaded image, name matches or merely similar.",
        docs_url=None,  # served from here by add_docs, not from a CDN
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.catalogue = catalogue
    # Innermost first: the query queue, the body's byte count, then the headers on all.
    places = query_places(settings)
    app.add_middleware(QueryGate, *places, settings.queue_wait_s, settings.queue_target_s)
    app.add_middleware(BodyLimit, settings.max_upload_bytes, settings.max_json_bytes)
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(HibtError)
    def refused(_: Request, exc: HibtError) -> JSONResponse:
        """Every refusal is JSON with a message a person can act on."""
        retry = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=retry)

    @app.get("/api/health", response_model=schemas.Health)
    def health() -> schemas.Health:
        return schemas.Health(status="ok", items=sum(s.engine.n for s in catalogue))

    @app.get("/api/stats", response_model=schemas.Stats, responses=ERRORS)
    def stats(index: IndexName = None) -> schemas.Stats:
        return catalogue.engine(index).stats()

    @app.get("/api/search", response_model=schemas.SearchResponse, responses=ERRORS)
    def search_text(
        q: Annotated[str, Query(description="Words, a caption, or an artist's name")],
        k: Annotated[int, Query(ge=1, le=settings.max_k)] = settings.default_k,
        offset: Annotated[int, Query(ge=0)] = 0,
        target: Annotated[str, Query(pattern="^(images|captions)$")] = "images",
        collapse: bool = True,
        index: IndexName = None,
        safe: Safe = True,
    ) -> Response:
        return answered(
            catalogue.engine(index).search_text(q, k, offset, target, collapse, safe=safe)
        )

    @app.get("/api/search/site", response_model=schemas.SearchResponse, responses=ERRORS)
    def search_site(
        site: Annotated[
            str, Query(description="A domain (with its subdomains) or a folder: example.com/jane")
        ],
        k: Annotated[int, Query(ge=1, le=settings.max_k)] = settings.default_k,
        offset: Annotated[int, Query(ge=0)] = 0,
        index: IndexName = None,
        safe: Safe = True,
    ) -> Response:
        return answered(catalogue.engine(index).search_site(site, k, offset, safe))

    @app.post("/api/search/batch", response_model=schemas.BatchResponse, responses=ERRORS)
    def search_batch(body: schemas.BatchTextQuery, index: IndexName = None) -> Response:
        chosen = catalogue.engine(index)
        return answered(
            schemas.BatchResponse(
                responses=[chosen.search_text(q, body.k, safe=body.safe) for q in body.queries]
            )
        )

    @app.post("/api/search/image", response_model=schemas.SearchResponse, responses=ERRORS)
    def search_image(
        image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, GIF, BMP or TIFF")],
        k: Annotated[int, Query(ge=1, le=settings.max_k)] = settings.default_k,
        offset: Annotated[int, Query(ge=0)] = 0,
        collapse: bool = True,
        index: IndexName = None,
        safe: Safe = True,
    ) -> Response:
        data = read_upload(image, settings.max_upload_bytes)
        return answered(catalogue.engine(index).search_image(data, k, offset, collapse, safe))

    @app.post("/api/search/vector", response_model=schemas.SearchResponse, responses=ERRORS)
    def search_vector(body: schemas.VectorQuery, index: IndexName = None) -> Response:
        return answered(catalogue.engine(index).search_vector(body))

    @app.get("/api/items/{item_id}", response_model=schemas.ItemDetail, responses=ERRORS)
    def item(item_id: str, index: IndexName = None, safe: Safe = True) -> schemas.ItemDetail:
        return catalogue.engine(index).item(item_id, safe)

    @app.get("/api/items/{item_id}/thumbnail", responses=ERRORS)
    def thumbnail(item_id: str, index: IndexName = None, safe: Safe = True) -> Response:
        """In safe mode a flagged item's thumbnail is blurred here, however it is asked for."""
        data = catalogue.engine(index).thumbnail(item_id, safe)
        return Response(
            data,
            media_type=answers.media_type(data),
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @app.get("/api/items/{item_id}/image", responses=ERRORS)
    def original(item_id: str, index: IndexName = None, safe: Safe = True) -> Response:
        """Refused (403) in safe mode when the item is flagged."""
        data, media_type = catalogue.engine(index).original(item_id, safe)
        return Response(data, media_type=media_type)

    @app.exception_handler(HTTPException)
    def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code)

    if optouts is not None:
        add_optout_routes(app, optouts, settings, catalogue)
        app.include_router(do_not_train.router(optouts, settings))
    app.include_router(clip_compat.router(catalogue, settings))
    app.include_router(across.router(catalogue, settings, read_upload))
    openapi_examples.install(app)
    add_docs(app, WEB_DIR)
    if WEB_DIR.is_dir():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def add_optout_routes(
    app: FastAPI, optouts: OptOuts, settings: Settings, catalogue: Catalogue
) -> None:
    """The registry's endpoints. ``optouts`` is the default index's; item opt-outs name
    their index (the registry is one for all of them)."""
    limiter = RateLimiter(settings.writes_per_minute, max_keys=settings.rate_limit_max_clients)

    def limited(request: Request) -> None:
        client = request.client.host if request.client else "unknown"
        if not limiter.allow(client):
            raise RegistryError("too many opt-out requests from this address; wait a minute", 429)

    write = [Depends(limited)]
    creates = {"status_code": 201, "dependencies": write, "responses": ERRORS}

    @app.post("/api/optouts", response_model=schemas.OptOutReceipt, **creates)
    def register(body: schemas.OptOutRequest) -> schemas.OptOutReceipt:
        return (catalogue.get(body.index).optouts or optouts).register(body)

    @app.get(
        "/api/optouts/export",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
    )
    def export(
        format: Annotated[str, Query(pattern="^(jsonl|csv)$")] = "jsonl",
        include_pending: Annotated[
            bool,
            Query(
                description="Also list domain claims still pending verification (anyone can "
                "make one; it proves nothing) and the items they cover"
            ),
        ] = False,
    ) -> StreamingResponse:
        """The whole registry for dataset builders, streamed from one snapshot of it (a
        registry of any size is never held in memory)."""
        media = "application/x-ndjson" if format == "jsonl" else "text/csv"
        return StreamingResponse(
            optouts.export(format, include_pending),
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="optouts.{format}"'},
        )

    @app.post("/api/optouts/check", response_model=schemas.CheckResponse)
    def check(body: schemas.CheckRequest) -> schemas.CheckResponse:
        """Which of up to 10,000 URLs, hashes and ids each are opted out (indexed lookups)."""
        return optouts.check(body)

    @app.get("/api/optouts/{receipt}", response_model=schemas.OptOutView, responses=ERRORS)
    def view(receipt: str, authorization: Annotated[str, Header()] = "") -> schemas.OptOutView:
        return schemas.OptOutView(**optouts.registry.view(receipt, bearer(authorization)))

    @app.post(
        "/api/optouts/{receipt}/withdraw",
        response_model=schemas.Withdrawn,
        dependencies=write,
        responses=ERRORS,
    )
    def withdraw(
        receipt: str, body: schemas.WithdrawRequest, authorization: Annotated[str, Header()] = ""
    ) -> schemas.Withdrawn:
        token = bearer(authorization)
        return schemas.Withdrawn(**optouts.registry.withdraw(receipt, token, body.item_ids))

    claimed = {409: {"model": schemas.ErrorBody}, 410: {"model": schemas.ErrorBody}}

    @app.post(
        "/api/domains",
        response_model=schemas.DomainClaim,
        **{**creates, "responses": {**ERRORS, **claimed}},
    )
    def claim_domain(body: schemas.DomainClaimRequest) -> schemas.DomainClaim:
        return optouts.claim_domain(body)

    checks = Slots(settings.max_concurrent_verifications, "domain checks")

    @app.post(
        "/api/domains/{domain}/verify",
        response_model=schemas.DomainVerified,
        dependencies=write,
        responses={**ERRORS, **claimed},
    )
    async def verify_domain(
        domain: str, body: schemas.DomainVerifyRequest, authorization: Annotated[str, Header()] = ""
    ) -> schemas.DomainVerified:
        """Fetches from the claimant's site on threads of its own (a slow site never holds
        up searches), at most a few at once, each by a deadline."""
        token = bearer(authorization)
        return await checks.run(optouts.verify_domain, domain, body.receipt, token)


def index_name(engine: Engine) -> str:
    return unique_name(engine.manifest.dataset, set())


def open_app(
    index_dirs: Path | str | Sequence[Path | str],
    settings: Settings,
    embedder: Embedder | None = None,
) -> FastAPI:
    """The whole service, as `hibt serve` runs it, over one index directory or several
    (each ``PATH`` or ``NAME=PATH``): the indexes, the opt-out registry they share (which
    decides what each engine hides and marks) and the HTTP app. Indexes built with the same
    model share one loaded model; ``embedder`` serves those whose model it is."""
    targets = [index_dirs] if isinstance(index_dirs, Path | str) else list(index_dirs)
    parsed = [parse_target(str(t)) for t in targets]
    indexes = [(name, OpenIndex(path, settings)) for name, path in parsed]
    registry = Registry(registry_path(indexes[0][1].directory, settings))
    embedders = {model_key(embedder): embedder} if embedder else {}
    removed = read_keys(Path(settings.removed)) if settings.removed else None
    served, taken = [], set()
    for name, index in indexes:
        key = tuple(sorted(index.manifest.model.model_dump().items()))
        if key not in embedders:
            embedders[key] = embedder_from(settings, index.manifest.model)
        optouts = OptOuts(index, registry, settings)
        visibility: Visibility = optouts
        if removed is not None:
            visibility = Removals(removed, index, optouts)
        name = name or unique_name(index.dataset, taken)
        taken.add(name)
        engine = Engine(index, settings, embedders[key], visibility)
        served.append(Served(name, engine, optouts))
    catalogue = Catalogue(served)
    first = catalogue.default
    return create_app(first.engine, settings, first.optouts, catalogue)
