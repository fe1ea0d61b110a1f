"""Examples in the OpenAPI document (/docs) for every endpoint: each parameter, each JSON or
text request body and each answer. The answers are built from the schemas' own models, so
an example that stops matching its schema fails at start-up, not in a reader's client.

Kept apart from the routes so that the routes read as what they do; ``with_examples``
attaches them to the document FastAPI generates.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from hibt.server import clip_compat, do_not_train, schemas

MODEL = schemas.ModelSummary(
    name="ViT-B-32", pretrained="laion2b_s34b_b79k", dim=512, semantic=True
)
ITEM = "3f2a9c0d1e4b5a67"
RECEIPT, TOKEN = "Hba99EVP73Fe", "o7vQPSBzcvFSzLRsoWCMZcmmEZb2WPL8"


def result(match: str = "exact_copy", **fields: Any) -> schemas.Result:
    base = {
        "id": ITEM,
        "match": match,
        "score": 0.9312,
        "copy_similarity": 0.9987 if match.endswith("copy") else None,
        "hash_distance": 4 if match.endswith("copy") else None,
        "caption": "A red fox in the snow, watercolour",
        "title": "Fox in snow",
        "artist": "Jane Doe",
        "license": "CC-BY 4.0",
        "source": "jane/fox.png",
        "url": "https://janedoe.art/portfolio/fox.png",
        "width": 1200,
        "height": 900,
        "duplicates": 2,
        "thumbnail_url": f"/api/items/{ITEM}/thumbnail",
        "image_url": f"/api/items/{ITEM}/image",
    }
    return schemas.Result(**{**base, **fields})


def search(query_type: str = "image", **fields: Any) -> schemas.SearchResponse:
    image = query_type == "image"
    base = {
        "query": "image upload (1200x900 PNG)" if image else "Jane Doe",
        "query_type": query_type,
        "model": MODEL,
        "total_items": 7012,
        "counts": schemas.MatchCounts(exact_copy=1, copy_pictures=1)
        if image
        else schemas.MatchCounts(name_match=14),
        "copy_verdict": "1 picture found among 7012 images is a copy of this image (1 file: "
        "1 exact); the best match is “Sunflowers at dusk” (exact copy)"
        if image
        else None,
        "offset": 0,
        "k": 60,
        "next_offset": 60,
        "results": [result() if image else result("name_match", matched_fields=["artist"])],
        "sites": [] if image else [schemas.SiteCount(site="janedoe.art", count=12)],
        "took_ms": 41.7,
    }
    return schemas.SearchResponse(**{**base, **fields})


def stats() -> schemas.Stats:
    return schemas.Stats(
        dataset="openclipart",
        items=7012,
        skipped=3,
        with_caption=7012,
        duplicate_groups=6870,
        largest_duplicate_groups=[{"group": 17, "size": 9, "example_id": ITEM}],
        model=MODEL,
        faiss_factory="Flat",
        fingerprint="dct-v3",
        built_at="2026-11-30T12:00:00Z",
        format_version=7,
        safety="7012 items scored for explicit content (open_nsfw 7012); 0 at or above 0.5 "
        "are blurred in safe mode",
        safety_scored=7012,
        unsafe_threshold=0.5,
    )


def dumped(model: Any) -> Any:
    if isinstance(model, list):
        return [dumped(m) for m in model]
    return model.model_dump(mode="json") if hasattr(model, "model_dump") else model


def answers() -> dict[tuple[str, str], Any]:
    """(METHOD, path) -> the example answer."""
    image = search()
    several = schemas.MultiSearchResponse(
        query=image.query,
        query_type="image",
        summary="exact copy in 1 of 2 datasets: openclipart",
        found_in=["openclipart"],
        answers=[
            schemas.IndexAnswer(index="openclipart", found_copy=True, response=image),
            schemas.IndexAnswer(
                index="laion-sample",
                found_copy=False,
                response=search(
                    total_items=100000,
                    counts=schemas.MatchCounts(),
                    copy_verdict="no likely copy among 100000 items known by URL",
                    results=[result("similar", url_only=True, copy_similarity=None)],
                ),
            ),
        ],
        took_ms=88.2,
    )
    claim = schemas.DomainClaim(
        receipt=RECEIPT,
        token=TOKEN,
        domain="janedoe.art",
        challenge="hibt-verify-7c1f2e",
        expires_at="2026-12-07T12:00:00+00:00",
        instructions="Publish a file at https://janedoe.art/.well-known/hibt-optout.txt ...",
    )
    return {
        ("GET", "/api/health"): schemas.Health(status="ok", items=7012),
        ("GET", "/api/stats"): stats(),
        ("GET", "/api/search"): search("text"),
        ("GET", "/api/search/site"): search(
            "site",
            query="janedoe.art",
            counts=schemas.MatchCounts(site_match=12),
            copy_verdict=None,
            results=[result("site_match", score=None)],
        ),
        ("POST", "/api/search/batch"): schemas.BatchResponse(responses=[search("text")]),
        ("POST", "/api/search/image"): image,
        ("POST", "/api/search/vector"): search(
            "vector", query="vector", counts=schemas.MatchCounts(), copy_verdict=None
        ),
        ("GET", "/api/items/{item_id}"): schemas.ItemDetail(
            **result("similar").model_dump(),
            key="jane/fox.png",
            sha256="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            keywords="fox, snow, watercolour",
            duplicate_ids=["7d1e0c5b9a3f2e41"],
        ),
        ("POST", "/api/optouts"): schemas.OptOutReceipt(
            receipt=RECEIPT,
            token=TOKEN,
            manage_url=f"/optout.html#receipt={RECEIPT}&token={TOKEN}",
            added=[ITEM],
            already=[],
        ),
        ("POST", "/api/optouts/check"): schemas.CheckResponse(
            opted_out=[
                schemas.CheckHit(
                    query="https://janedoe.art/fox.png", by="domain", status="verified"
                )
            ]
        ),
        ("GET", "/api/optouts/{receipt}"): schemas.OptOutView(
            receipt=RECEIPT,
            name="Jane Doe",
            contact="jane@janedoe.art",
            note="",
            created_at="2026-11-30T12:00:00+00:00",
            items=[
                schemas.ClaimedItem(
                    item_id=ITEM,
                    source="jane/fox.png",
                    url="https://janedoe.art/portfolio/fox.png",
                    status="unverified",
                    created_at="2026-11-30T12:00:00+00:00",
                    withdrawn_at=None,
                )
            ],
            domains=[],
        ),
        ("POST", "/api/optouts/{receipt}/withdraw"): schemas.Withdrawn(items=[ITEM], domains=[]),
        ("POST", "/api/domains"): claim,
        ("POST", "/api/domains/{domain}/verify"): schemas.DomainVerified(
            domain="janedoe.art", how="file"
        ),
        ("GET", "/api/indices"): schemas.IndicesResponse(
            indices=[
                schemas.IndexInfo(
                    name="openclipart",
                    dataset="openclipart",
                    kind="images",
                    items=7012,
                    model=MODEL,
                    default=True,
                )
            ]
        ),
        ("GET", "/api/search/all"): schemas.MultiSearchResponse(
            query="Jane Doe",
            query_type="text",
            summary="'Jane Doe' is named in 1 of 2 datasets: openclipart (14)",
            found_in=["openclipart"],
            answers=[
                schemas.IndexAnswer(index="openclipart", found_copy=False, response=search("text"))
            ],
            took_ms=52.0,
        ),
        ("POST", "/api/search/image/all"): several,
        ("POST", do_not_train.PATH): do_not_train.UrlsAnswer(**do_not_train.EXAMPLE_ANSWER),
        ("GET", "/indices-list"): ["openclipart", "laion-sample"],
        ("POST", "/knn-service"): clip_compat.KNN_EXAMPLE,
        ("POST", "/metadata"): [{"id": 12, "metadata": clip_compat.METADATA_EXAMPLE}],
    }


REQUESTS: dict[tuple[str, str], Any] = {
    ("POST", "/api/search/batch"): {"queries": ["Jane Doe", "a red fox in the snow"], "k": 10},
    ("POST", "/api/search/vector"): {"vector": [0.012, -0.034, 0.051], "k": 20},
    ("POST", "/api/optouts"): {
        "item_ids": [ITEM],
        "name": "Jane Doe",
        "contact": "jane@janedoe.art",
        "note": "My portfolio, taken without asking",
    },
    ("POST", "/api/optouts/check"): {
        "urls": ["https://janedoe.art/fox.png", "https://example.com/cat.jpg"],
        "sha256": [],
        "ids": [],
    },
    ("POST", "/api/optouts/{receipt}/withdraw"): {"item_ids": [ITEM]},
    ("POST", "/api/domains"): {"domain": "janedoe.art", "name": "Jane Doe"},
    ("POST", "/api/domains/{domain}/verify"): {"receipt": RECEIPT},
    ("POST", "/knn-service"): {
        "text": "a red fox in the snow",
        "modality": "image",
        "num_images": 40,
        "indice_name": "openclipart",
        "deduplicate": True,
    },
    ("POST", "/metadata"): {"ids": [12, 40], "indice_name": "openclipart"},
    ("POST", do_not_train.PATH): do_not_train.EXAMPLE_BODY,
}

PARAMETERS: dict[str, Any] = {
    "q": "Jane Doe",
    "k": 20,
    "offset": 0,
    "target": "images",
    "collapse": True,
    "safe": True,
    "index": "openclipart",
    "indices": "openclipart,laion-sample",
    "site": "janedoe.art/portfolio",
    "item_id": ITEM,
    "receipt": RECEIPT,
    "domain": "janedoe.art",
    "authorization": f"Bearer {TOKEN}",
    "format": "jsonl",
    "include_pending": False,
}
BINARY = {  # a thumbnail is lossless WebP for a drawing, JPEG for a photo (images.py)
    ("GET", "/api/items/{item_id}/thumbnail"): ("image/webp", "image/jpeg"),
    ("GET", "/api/items/{item_id}/image"): ("image/*",),
}
EXPORT_LINE = (
    '{"kind": "item", "dataset": "openclipart", "item_id": "3f2a9c0d1e4b5a67", '
    '"source": "jane/fox.png", "url": "https://janedoe.art/portfolio/fox.png", '
    '"domain": "janedoe.art", "sha256": "", "phash": "", "status": "unverified", '
    '"created_at": "2026-11-30T12:00:00+00:00"}\n'
)


def with_examples(document: dict) -> dict:
    """``document`` (FastAPI's OpenAPI dict) with every known example attached."""
    examples = {key: dumped(value) for key, value in answers().items()}
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            key = (method.upper(), path)
            if path == do_not_train.PATH:
                param_examples = {**PARAMETERS, "authorization": "API your-key"}
            else:
                param_examples = PARAMETERS
            for param in op.get("parameters", []):
                if param["name"] in param_examples:
                    param["example"] = param_examples[param["name"]]
            body = op.get("requestBody", {}).get("content", {})
            for kind, content in body.items():
                if key in REQUESTS and kind in ("application/json", "text/plain"):
                    content["example"] = REQUESTS[key]
            ok = op["responses"].get("200") or op["responses"].get("201") or {}
            if key in BINARY:
                binary = {"schema": {"type": "string", "format": "binary"}}
                ok["content"] = {kind: binary for kind in BINARY[key]}
            elif path == "/api/optouts/export":
                ok["content"]["application/x-ndjson"]["example"] = EXPORT_LINE
                ok["content"]["text/csv"]["example"] = "kind,dataset,item_id,...\n"
            elif key in examples:
                ok.setdefault("content", {}).setdefault("application/json", {})["example"] = (
                    examples[key]
                )
    return document


def install(app: FastAPI) -> None:
    """Make the app's /openapi.json carry the examples (built once, on first request)."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = with_examples(generate())
        return app.openapi_schema

    app.openapi = openapi
