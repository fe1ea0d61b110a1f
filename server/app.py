"""HTTP API (JSON under /api, OpenAPI at /docs) and the static web page."""

import os
from importlib.resources import files
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, Header, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from hibt import __version__
from hibt.config import Settings
from hibt.errors import HibtError, QueryError, RegistryError
from hibt.indexer.model import Embedder, embedder_from
from hibt.server import schemas
from hibt.server.docs import add_docs
from hibt.server.engine import Engine, Visibility
from hibt.server.headers import SecurityHeaders
from hibt.server.index import OpenIndex
from hibt.server.limits import BodyLimit, Busy, QueryGate, Slots
from hibt.server.optouts import OptOuts, open_optouts
from hibt.server.ratelimit import RateLimiter
from hibt.server.removals import Removals, read_keys

WEB_DIR = Path(str(files("hibt.web")))
ERRORS = {
    400: {"model": schemas.ErrorBody},
    404: {"model": schemas.ErrorBody},
    413: {"model": schemas.ErrorBody},
    415: {"model": schemas.ErrorBody},
    422: {"model": schemas.ErrorBody},
    503: {"model": schemas.ErrorBody},  # busy: retry after Retry-After seconds
}
UPLOAD_BLOCK = 1 << 20


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


def create_app(engine: Engine, settings: Settings, optouts: OptOuts | None = None) -> FastAPI:
    app = FastAPI(
        title="hibt: is my work in this training set?",
        version=__version__,
        description="Search an image-caption dataset by text, image or embedding. Results say "
        "whether they are copies of an uploaded image, name matches or merely similar.",
        docs_url=None,  # served from here by add_docs, not from a CDN
        redoc_url=None,
    )
    app.state.engine = engine
    # Innermost first: the query queue, the body's byte count, then the headers on all.
    running = settings.max_concurrent_queries or 2 * (os.cpu_count() or 1)
    app.add_middleware(QueryGate, running, settings.max_queued_queries, settings.queue_wait_s)
    app.add_middleware(BodyLimit, settings.max_upload_bytes, settings.max_json_bytes)
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(HibtError)
    def refused(_: Request, exc: HibtError) -> JSONResponse:
        """Every refusal is JSON with a message a person can act on."""
        retry = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=retry)

    @app.get("/api/health", response_model=schemas.Health)
    def health() -> schemas.Health:
        return schemas.Health(status="ok", items=engine.n)

    @app.get("/api/stats", response_model=schemas.Stats)
    def stats() -> schemas.Stats:
        return engine.stats()

    @app.get("/api/search", response_model=schemas.SearchResponse, responses=ERRORS)
    def search_text(
        q: Annotated[str, Query(description="Words, a caption, or an artist's name")],
        k: Annotated[int, Query(ge=1, le=settings.max_k)] = settings.default_k,
        offset: Annotated[int, Query(ge=0)] = 0,
        target: Annotated[str, Query(pattern="^(images|captions)$")] = "images",
        collapse: bool = True,
    ) -> schemas.SearchResponse:
        return engine.search_text(q, k, offset, target, collapse)

    @app.get("/api/search/site", response_model=schemas.SearchResponse, responses=ERRORS)
    def search_site(
        site: Annotated[
            str, Query(description="A domain (with its subdomains) or a folder: example.com/jane")
        ],
        k: Annotated[int, Query(ge=1, le=settings.max_k)] = settings.default_k,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> schemas.SearchResponse:
        return engine.search_site(site, k, offset)

    @app.post("/api/search/batch", response_model=schemas.BatchResponse, responses=ERRORS)
    def search_batch(body: schemas.BatchTextQuery) -> schemas.BatchResponse:
        return schemas.BatchResponse(
            responses=[engine.search_text(q, body.k) for q in body.queries]
        )

    @app.post("/api/search/image", response_model=schemas.SearchResponse, responses=ERRORS)
    def search_image(
        image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, GIF, BMP or TIFF")],
        k: Annotated[int, Query(ge=1, le=settings.max_k)] = settings.default_k,
        offset: Annotated[int, Query(ge=0)] = 0,
        collapse: bool = True,
    ) -> schemas.SearchResponse:
        data = read_upload(image, settings.max_upload_bytes)
        return engine.search_image(data, k, offset, collapse)

    @app.post("/api/search/vector", response_model=schemas.SearchResponse, responses=ERRORS)
    def search_vector(body: schemas.VectorQuery) -> schemas.SearchResponse:
        return engine.search_vector(body)

    @app.get("/api/items/{item_id}", response_model=schemas.ItemDetail, responses=ERRORS)
    def item(item_id: str) -> schemas.ItemDetail:
        return engine.item(item_id)

    @app.get("/api/items/{item_id}/thumbnail", responses=ERRORS)
    def thumbnail(item_id: str) -> Response:
        return Response(
            engine.thumbnail(item_id),
            media_type="image/jpeg",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @app.get("/api/items/{item_id}/image", responses=ERRORS)
    def original(item_id: str) -> Response:
        data, media_type = engine.original(item_id)
        return Response(data, media_type=media_type)

    @app.exception_handler(HTTPException)
    def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code)

    if optouts is not None:
        add_optout_routes(app, optouts, settings)
    add_docs(app, WEB_DIR)
    if WEB_DIR.is_dir():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def add_optout_routes(app: FastAPI, optouts: OptOuts, settings: Settings) -> None:
    limiter = RateLimiter(settings.writes_per_minute, max_keys=settings.rate_limit_max_clients)

    def limited(request: Request) -> None:
        client = request.client.host if request.client else "unknown"
        if not limiter.allow(client):
            raise RegistryError("too many opt-out requests from this address; wait a minute", 429)

    write = [Depends(limited)]
    creates = {"status_code": 201, "dependencies": write, "responses": ERRORS}

    @app.post("/api/optouts", response_model=schemas.OptOutReceipt, **creates)
    def register(body: schemas.OptOutRequest) -> schemas.OptOutReceipt:
        return optouts.register(body)

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


def open_app(index_dir: Path, settings: Settings, embedder: Embedder | None = None) -> FastAPI:
    """The whole service over one index directory, as `hibt serve` runs it: the index, its
    opt-out registry (which decides what the engine hides and marks) and the HTTP app."""
    index = OpenIndex(index_dir, settings)
    optouts = open_optouts(index, settings)
    visibility: Visibility = optouts
    if settings.removed:
        visibility = Removals(read_keys(Path(settings.removed)), index, optouts)
    embedder = embedder or embedder_from(settings, index.manifest.model)
    return create_app(Engine(index, settings, embedder, visibility), settings, optouts)
