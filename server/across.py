"""Searching every index a server serves at once: the artist's question is "which of the sets
used to train these models hold my work?", never about one dataset.

``GET /api/indices`` lists the indexes; ``GET /api/search/all`` and
``POST /api/search/image/all`` ask each of them (or those named in ``indices``) and answer
per index, with a one-line summary of where the work was found. A text is embedded once
per distinct model (catalogue.Catalogue.text_vectors).
"""

import time
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile

from hibt.config import Settings
from hibt.errors import QueryError
from hibt.server import answers, schemas
from hibt.server.catalogue import Catalogue, Served
from hibt.server.safety import Safe

COPY_KINDS = ("exact_copy", "near_copy", "edited_copy", "likely_copy")
Names = Annotated[
    str | None,
    Query(description="Comma-separated index names from /api/indices; all of them by default"),
]


def chosen(catalogue: Catalogue, names: str | None) -> list[Served]:
    if not names:
        return list(catalogue)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise QueryError("indices names no index", 422)
    return [catalogue.get(n) for n in dict.fromkeys(wanted)]


def best_copy(response: schemas.SearchResponse) -> str | None:
    """The strongest copy kind this answer found, if any."""
    return next((kind for kind in COPY_KINDS if getattr(response.counts, kind)), None)


def copy_summary(found: dict[str, str], total: int) -> str:
    """'exact copy in 2 of 3 datasets: a, b' (kinds named per dataset when they differ)."""
    if not found:
        return f"no copy of this image in any of the {total} datasets"
    kinds = set(found.values())
    label = kinds.pop().replace("_", " ") if len(kinds) == 1 else "copy"
    where = ", ".join(
        name if len(set(found.values())) == 1 else f"{name} ({kind.split('_')[0]})"
        for name, kind in found.items()
    )
    return f"{label} in {len(found)} of {total} datasets: {where}"


def name_summary(query: str, named: dict[str, int], total: int) -> str:
    if not named:
        return f"no caption, title or artist field names {query!r} in the {total} datasets"
    where = ", ".join(f"{name} ({n})" for name, n in named.items())
    return f"{query!r} is named in {len(named)} of {total} datasets: {where}"


def router(
    catalogue: Catalogue, settings: Settings, read_upload: Callable[[UploadFile, int], bytes]
) -> APIRouter:
    """``read_upload``: the app's one reader of uploads, with its byte limit."""
    api = APIRouter(tags=["Several indexes"])
    errors = {c: {"model": schemas.ErrorBody} for c in (400, 404, 413, 415, 422)}

    @api.get("/api/indices", response_model=schemas.IndicesResponse)
    def indices() -> schemas.IndicesResponse:
        """Every index this server serves, the default one first, with its size and model."""
        return schemas.IndicesResponse(
            indices=[
                schemas.IndexInfo(
                    name=s.name,
                    dataset=s.engine.manifest.dataset,
                    kind=s.engine.manifest.kind,
                    items=s.engine.n,
                    model=answers.model_summary(s.engine),
                    default=s is catalogue.default,
                )
                for s in catalogue
            ]
        )

    @api.get("/api/search/all", response_model=schemas.MultiSearchResponse, responses=errors)
    def search_all(
        q: Annotated[str, Query(description="Words, a caption, or an artist's name")],
        k: Annotated[int, Query(ge=1, le=settings.max_k)] = 20,
        indices: Names = None,
        safe: Safe = True,
    ) -> schemas.MultiSearchResponse:
        """A text searched in every index (or those named): each index's answer, and which
        of them name it. The text is embedded once per distinct model."""
        started = time.perf_counter()
        among = chosen(catalogue, indices)
        query = catalogue.default.engine.check_text(q)
        vectors = catalogue.text_vectors(query, among)
        out, named = [], {}
        for s in among:
            response = s.engine.search_text(query, k, vector=vectors[s.name], safe=safe)
            if response.counts.name_match:
                named[s.name] = response.counts.name_match
            out.append(schemas.IndexAnswer(index=s.name, found_copy=False, response=response))
        return schemas.MultiSearchResponse(
            query=query,
            query_type="text",
            summary=name_summary(query, named, len(among)),
            found_in=list(named),
            answers=out,
            took_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    @api.post("/api/search/image/all", response_model=schemas.MultiSearchResponse, responses=errors)
    def search_image_all(
        image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, GIF, BMP or TIFF")],
        k: Annotated[int, Query(ge=1, le=settings.max_k)] = 20,
        indices: Names = None,
        safe: Safe = True,
    ) -> schemas.MultiSearchResponse:
        """An image searched in every index (or those named): each index's copy verdict
        and results, and a summary such as 'exact copy in 2 of 3 datasets'."""
        started = time.perf_counter()
        among = chosen(catalogue, indices)
        data = read_upload(image, settings.max_upload_bytes)
        out, found = [], {}
        for s in among:
            response = s.engine.search_image(data, k, safe=safe)
            kind = best_copy(response)
            if kind:
                found[s.name] = kind
            out.append(schemas.IndexAnswer(index=s.name, found_copy=bool(kind), response=response))
        return schemas.MultiSearchResponse(
            query=out[0].response.query,
            query_type="image",
            summary=copy_summary(found, len(among)),
            found_in=list(found),
            answers=out,
            took_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    return api
