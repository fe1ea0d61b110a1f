"""clip-retrieval's back-end protocol, so its ``ClipClient`` and front-end work against hibt.

``POST /knn-service``, ``POST /metadata`` and ``GET /indices-list`` take what
clip_retrieval/clip_client.py and the clip-retrieval front-end send and answer in their
shape: a list of ``{id, similarity, url, caption, ...}`` whose ``id`` is the item's row in
the named index (``/metadata`` takes those ids back). Search here is CLIP nearest neighbours
only, as clip-retrieval's is; copy detection and name matches are hibt's own API.

Fields hibt cannot honour are accepted and ignored (docs/protocols.md): ``use_mclip``
(no multilingual text tower), ``use_violence_detector`` (no violence classifier),
``aesthetic_score`` and ``aesthetic_weight`` (no aesthetic embeddings). ``use_safety_model``
leaves out the items hibt's safety scores flag.
``image_url`` is fetched only when the operator turns it on (HIBT_CLIP_FETCH_IMAGE_URLS),
and then never from private or loopback addresses, through redirects to them, or past the
upload size limit.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from hibt.config import Settings
from hibt.errors import BadImage, ProofError, QueryError
from hibt.server import answers, domain_proof, schemas
from hibt.server.answers import Candidate
from hibt.server.catalogue import Catalogue, Served

MAX_REDIRECTS = 3
FETCH_TIMEOUT = 10.0
# Fields a result always has, beside the item's published columns (its ``extra``).
RESULT_FIELDS = (
    "caption",
    "url",
    "title",
    "artist",
    "license",
    "source",
    "width",
    "height",
    "unsafe",
    "nsfw_score",
)


class KnnRequest(BaseModel):
    """What ClipClient.query and the clip-retrieval front-end POST. One of text, image,
    image_url and embedding_input is used, in that order of preference (as clip-retrieval)."""

    text: str | None = None
    image: str | None = Field(None, description="The image file's bytes, base64")
    image_url: str | None = Field(
        None, description="Fetched only when the operator allows it (HIBT_CLIP_FETCH_IMAGE_URLS)"
    )
    embedding_input: list[float] | None = Field(
        None, description="A query embedding of the index's dimension"
    )
    modality: Literal["image", "text"] = Field(
        "image", description="image: search the images' embeddings; text: the captions'"
    )
    num_images: int = Field(40, description="Results returned with their metadata")
    num_result_ids: int | None = Field(
        None, description="Results returned in all (ids and similarities beyond num_images)"
    )
    indice_name: str | None = Field(None, description="An index name from /indices-list")
    deduplicate: bool = Field(True, description="Keep one item per near-duplicate group")
    use_mclip: bool = Field(False, description="Ignored: no multilingual text model")
    use_safety_model: bool = Field(
        False,
        description="Leave out items hibt's safety scores flag (server/safety.py), as "
        "clip-retrieval's own back end does",
    )
    use_violence_detector: bool = Field(False, description="Ignored: no violence classifier")
    aesthetic_score: int | str | None = Field(None, description="Ignored")
    aesthetic_weight: float | str | None = Field(None, description="Ignored")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "text": "a red fox in the snow",
                    "modality": "image",
                    "num_images": 40,
                    "indice_name": "openclipart",
                    "deduplicate": True,
                }
            ]
        }
    }


class MetadataRequest(BaseModel):
    ids: list[int] = Field(max_length=10_000, description="ids from a /knn-service answer")
    indice_name: str | None = None

    model_config = {
        "json_schema_extra": {"examples": [{"ids": [12, 40], "indice_name": "openclipart"}]}
    }


class MetadataEntry(BaseModel):
    id: int
    metadata: dict[str, Any] | None = Field(
        description="The item's caption, url and other fields; null for a hidden item"
    )


KNN_EXAMPLE = [
    {
        "id": 12,
        "similarity": 0.3132,
        "url": "https://example.org/art/fox.png",
        "caption": "a red fox in the snow",
        "item_id": "3f2a9c0d1e4b5a67",
        "title": "Fox",
        "artist": "Jane Doe",
        "license": "CC0",
        "source": "fox.svg",
        "width": 640,
        "height": 480,
        "thumbnail_url": "/api/items/3f2a9c0d1e4b5a67/thumbnail",
        "opt_out": None,
    },
    {"id": 40, "similarity": 0.2977},
]
METADATA_EXAMPLE = {k: v for k, v in KNN_EXAMPLE[0].items() if k not in ("id", "similarity")}


def decode_base64(text: str, limit: int) -> bytes:
    """The bytes of a base64 image (a data: URL prefix is allowed), refused past ``limit``."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > (limit + 2) // 3 * 4 + 4:
        raise QueryError(f"the image is larger than the limit of {limit} bytes", 413)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise QueryError("image must be the image file's bytes in base64", 400) from None


def fetch_image(url: str, limit: int, allow_private: bool) -> bytes:
    """GET an image_url as a domain proof is fetched (domain_proof.resolve): the name
    resolved once and refused unless every address is public, then the connection made to
    that address, so a second resolution cannot lead elsewhere (DNS rebinding). http(s)
    only, at most MAX_REDIRECTS redirects each checked the same way, at most ``limit``
    bytes, FETCH_TIMEOUT seconds in all."""
    deadline = time.monotonic() + FETCH_TIMEOUT
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port, parts = None, parts._replace(scheme="")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise QueryError("image_url must be an http or https URL", 400)
        try:
            address = domain_proof.resolve(parts.hostname, allow_private, deadline)
        except ProofError as exc:
            raise QueryError(f"cannot fetch image_url: {exc.message}", 400) from None
        netloc = f"[{address}]" if ":" in address else address
        pinned = urlunsplit(
            (parts.scheme, f"{netloc}:{port}" if port else netloc, parts.path, parts.query, "")
        )
        host = parts.hostname + (f":{port}" if port else "")
        try:
            status, body, location = fetch_pinned(pinned, host, parts.hostname, limit, deadline)
        except httpx.HTTPError as exc:
            raise QueryError(f"cannot fetch image_url: {type(exc).__name__}", 400) from None
        if location is None:
            if status != 200:
                raise QueryError(f"image_url answered HTTP {status}", 400)
            return body
        url = urljoin(url, location)
    raise QueryError(f"image_url redirects more than {MAX_REDIRECTS} times", 400)


def fetch_pinned(
    url: str, host: str, tls_name: str, limit: int, deadline: float
) -> tuple[int, bytes, str | None]:
    """(status, body, redirect location) from ``url`` (an address), asked for as ``host``."""
    timeout = httpx.Timeout(max(0.1, deadline - time.monotonic()))
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        request = client.build_request(
            "GET", url, headers={"Host": host}, extensions={"sni_hostname": tls_name}
        )
        response = client.send(request, stream=True)
        try:
            if response.is_redirect:
                return response.status_code, b"", response.headers.get("location", "")
            body = bytearray()
            if response.status_code == 200:
                for block in response.iter_bytes():
                    body += block
                    if len(body) > limit:
                        raise QueryError(
                            f"the image at image_url is larger than {limit} bytes", 413
                        )
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("deadline", request=request)
            return response.status_code, bytes(body), None
        finally:
            response.close()


class ClipService:
    """The knn and metadata services over the catalogue's indexes."""

    def __init__(self, catalogue: Catalogue, settings: Settings) -> None:
        self.catalogue, self.settings = catalogue, settings

    def query_vector(self, served: Served, request: KnnRequest) -> np.ndarray:
        engine, s = served.engine, self.settings
        if request.text:
            return engine.embedder.encode_texts([engine.check_text(request.text)])[0]
        if request.image or request.image_url:
            if request.image:
                data = decode_base64(request.image, s.max_upload_bytes)
            elif not s.clip_fetch_image_urls:
                raise QueryError(
                    "this server does not fetch image_url (HIBT_CLIP_FETCH_IMAGE_URLS is off); "
                    "send the image itself, base64, as image",
                    400,
                )
            else:
                data = fetch_image(request.image_url, s.max_upload_bytes, s.clip_fetch_private)
            try:
                loaded = engine.decode_upload(data)  # within the engine's decode budget
            except BadImage as exc:
                raise QueryError(f"cannot use this image: {exc.reason}", exc.status) from None
            return engine.embedder.encode_images([loaded.image])[0]
        if request.embedding_input is not None:
            return self.unit(served, request.embedding_input)
        raise QueryError("send one of text, image, image_url or embedding_input", 422)

    @staticmethod
    def unit(served: Served, values: list[float]) -> np.ndarray:
        dim = served.engine.embedder.dim
        vector = np.asarray(values, dtype=np.float32)
        if vector.shape != (dim,) or not np.all(np.isfinite(vector)):
            raise QueryError(f"embedding_input must be {dim} finite numbers for this index")
        norm = float(np.linalg.norm(vector))
        if norm == 0:
            raise QueryError("embedding_input must not be all zeros")
        return vector / norm

    def limits(self, request: KnnRequest) -> tuple[int, int]:
        most = self.settings.clip_max_results
        shown = request.num_images
        total = request.num_result_ids if request.num_result_ids is not None else shown
        for name, value in (("num_images", shown), ("num_result_ids", total)):
            if not 1 <= value <= most:
                raise QueryError(f"{name} must be between 1 and {most}", 422)
        return shown, max(shown, total)

    def knn(self, request: KnnRequest) -> list[dict]:
        served = self.catalogue.get(request.indice_name)
        engine = served.engine
        shown, total = self.limits(request)
        target = "images" if request.modality == "image" else "captions"
        engine.check_target(target)
        vector = self.query_vector(served, request)
        # The engine's ranking without its other evidence: hidden items left out, one item
        # per duplicate group when deduplicating.
        neighbours = engine.rank([], vector, target, total, request.deduplicate)
        if request.use_safety_model:
            store, threshold = engine.index.store(), engine.safety.threshold
            flagged = store.flagged_among([c.idx for c in neighbours], threshold)
            neighbours = [c for c in neighbours if c.idx not in flagged]
        metadata = self.metadata_of(served, [c.idx for c in neighbours[:shown]])
        out = []
        for c in neighbours:
            entry = dict(metadata.get(c.idx) or {})
            entry.update(id=c.idx, similarity=round(c.cosine, 6))
            out.append(entry)
        return out

    def metadata_of(self, served: Served, idxs: list[int]) -> dict[int, dict]:
        """Each item's fields as the front-end reads them: caption and url first, then hibt's
        (its string id as item_id, the page's thumbnail, the opt-out status) and the
        dataset's published columns."""
        engine = served.engine
        hidden = engine.visibility.hidden_among(idxs)
        rows = engine.index.items([i for i in idxs if i not in hidden])
        statuses = engine.visibility.statuses(list(rows.values()))
        out = {}
        for idx, row in rows.items():
            link = engine.link_query
            # The protocol has no blurred pictures: a client leaves flagged items out with
            # use_safety_model, or filters on the unsafe field itself.
            result = answers.result_of(
                row, Candidate(idx, "similar"), None, [], None, engine.safety, False, link
            )
            meta = {**result.extra, **{f: getattr(result, f) for f in RESULT_FIELDS}}
            meta.update(
                item_id=result.id,
                thumbnail_url=result.thumbnail_url,
                opt_out=statuses.get(result.id),
            )
            out[idx] = meta
        return out

    def metadata(self, request: MetadataRequest) -> list[MetadataEntry]:
        served = self.catalogue.get(request.indice_name)
        n = served.engine.n
        bad = next((i for i in request.ids if not 0 <= i < n), None)
        if bad is not None:
            raise QueryError(f"no item {bad} in index {served.name!r} (ids are 0 to {n - 1})", 404)
        found = self.metadata_of(served, list(dict.fromkeys(request.ids)))
        return [MetadataEntry(id=i, metadata=found.get(i)) for i in request.ids]


def read_json(body: bytes, model: type[BaseModel]) -> Any:
    """A JSON body whatever its Content-Type: ClipClient sends none (its Flask back end
    reads with ``force=True``)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise QueryError(f"the body must be JSON (UTF-8): {exc}", 400) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise QueryError(problems, 422) from None


def json_body(model: type[BaseModel]) -> dict:
    """The OpenAPI request body of an endpoint that parses its own JSON."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def router(catalogue: Catalogue, settings: Settings) -> APIRouter:
    api = APIRouter(tags=["clip-retrieval"])
    service = ClipService(catalogue, settings)
    errors = {code: {"model": schemas.ErrorBody} for code in (400, 404, 413, 415, 422)}

    @api.get(
        "/indices-list",
        response_model=list[str],
        responses={200: {"content": {"application/json": {"example": ["openclipart"]}}}},
    )
    def indices_list() -> list[str]:
        """The indexes' names, the default first (clip-retrieval's /indices-list)."""
        return catalogue.names

    @api.post(
        "/knn-service",
        response_model=list[dict[str, Any]],
        responses={200: {"content": {"application/json": {"example": KNN_EXAMPLE}}}, **errors},
        openapi_extra=json_body(KnnRequest),
    )
    async def knn_service(request: Request) -> list[dict[str, Any]]:
        """Nearest neighbours of a text, an image (base64 or, when allowed, image_url) or an
        embedding, as clip-retrieval's back end answers: metadata for the first num_images,
        then ids and similarities up to num_result_ids. Ignored: use_mclip,
        use_safety_model, use_violence_detector, aesthetic_score, aesthetic_weight."""
        body = read_json(await request.body(), KnnRequest)
        return await run_in_threadpool(service.knn, body)

    @api.post(
        "/metadata",
        response_model=list[MetadataEntry],
        responses={
            200: {
                "content": {
                    "application/json": {
                        "example": [{"id": 12, "metadata": METADATA_EXAMPLE}],
                    }
                }
            },
            **errors,
        },
        openapi_extra=json_body(MetadataRequest),
    )
    async def metadata(request: Request) -> list[MetadataEntry]:
        """The metadata of ids a /knn-service answer gave (clip-retrieval's /metadata)."""
        body = read_json(await request.body(), MetadataRequest)
        return await run_in_threadpool(service.metadata, body)

    return api
