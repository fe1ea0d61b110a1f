"""Shaping answers: a ranked page of candidates into results with metadata, scores and
opt-out status; the copy verdict in words; item detail and index statistics."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

from hibt.errors import QueryError
from hibt.indexer.store import FTS_COLUMNS
from hibt.server import schemas
from hibt.server.names import contains_phrase, normalise_tokens
from hibt.server.safety import Safety, blurred

if TYPE_CHECKING:
    from hibt.server.engine import Engine


@dataclass
class Candidate:
    """An item in a ranked answer, with the evidence that put it there."""

    idx: int
    match: str
    hash_distance: int | None = None
    copy_similarity: float | None = None
    cosine: float | None = None  # from the vector index, for the neighbours it found
    against: str | None = None  # the vectors that cosine is to: "images" or "captions"
    edited_region: str | None = None  # an edited copy: where the upload differs


@dataclass
class Page:
    """What a query asked for, beside the ranked candidates."""

    query: str
    query_type: str
    vector: np.ndarray | None  # None for site queries: no CLIP score to give
    offset: int
    k: int
    counts: schemas.MatchCounts
    verdict: str | None
    started: float
    return_vectors: bool = False
    safe: bool = True  # safe mode: flagged items' pictures blurred or withheld (safety.py)


def respond(
    engine: Engine, ranked: list[Candidate], page: Page, more: bool | None = None
) -> schemas.SearchResponse:
    """``ranked`` from the first result on; or, with ``more`` given, this page alone."""
    if more is None:
        shown = ranked[page.offset : page.offset + page.k]
        more = len(ranked) == page.offset + page.k and page.offset + page.k < engine.n
    else:
        shown = ranked[: page.k]
    phrase = normalise_tokens(page.query) if page.query_type == "text" else []
    shaped = results(engine, shown, page.vector, phrase, page.return_vectors, page.safe)
    return schemas.SearchResponse(
        query=page.query,
        query_type=page.query_type,
        model=model_summary(engine),
        total_items=engine.n,
        counts=page.counts,
        copy_verdict=page.verdict,
        offset=page.offset,
        k=page.k,
        next_offset=page.offset + page.k if more else None,
        results=shaped,
        safe=page.safe,
        unsafe_results=sum(r.unsafe for r in shaped),
        took_ms=round((time.perf_counter() - page.started) * 1000, 2),
    )


def results(
    engine: Engine,
    shown: list[Candidate],
    vector: np.ndarray | None,
    phrase: list[str],
    return_vectors: bool,
    safe: bool = True,
) -> list[schemas.Result]:
    index = engine.index
    rows = index.items([c.idx for c in shown])
    idxs = sorted(rows)  # memory-mapped rows read in file order
    score_of: dict[int, float | None] = {
        c.idx: round(c.cosine, 5) for c in shown if c.against == "images"
    }
    unscored = [i for i in idxs if i not in score_of]  # in file order
    if vector is not None and unscored:
        scores = np.asarray(index.image_vectors[unscored], np.float32) @ vector
        score_of.update(zip(unscored, (round(s, 5) for s in scores.tolist()), strict=True))
    opted = engine.visibility.statuses(list(rows.values()))
    out = []
    for cand in shown:
        row = rows[cand.idx]
        fields = [f for f in FTS_COLUMNS if phrase and contains_phrase(row[f], phrase)]
        vec = index.image_vectors[cand.idx].astype(float).tolist() if return_vectors else None
        result = result_of(
            row, cand, score_of.get(cand.idx), fields, vec, engine.safety, safe, engine.link_query
        )
        result.opt_out = opted.get(row["id"])
        out.append(result)
    return out


def result_of(
    row: sqlite3.Row,
    cand: Candidate,
    score: float | None,
    fields: list[str],
    vector: list[float] | None,
    safety: Safety,
    safe: bool,
    link_query: str = "",
) -> schemas.Result:
    """``link_query``: what the server's own links to the item need to name its index."""
    local = row["path"] is not None or row["sha256"] != ""  # an image file was indexed
    flagged = safety.flagged(row)
    thumbnail_url, image_url = picture_urls(row, local, flagged, safe, link_query)
    # Rows of the index's own store: validating a thousand of them per answer cost a third
    # of a 1,000-result query.
    return schemas.Result.model_construct(
        id=row["id"],
        match=cand.match,
        score=score,
        hash_distance=cand.hash_distance,
        copy_similarity=cand.copy_similarity,
        edited_region=cand.edited_region,
        matched_fields=fields,
        caption=row["caption"],
        title=row["title"],
        artist=row["artist"],
        license=row["license"],
        source=row["source"],
        url=row["url"],
        width=row["width"],
        height=row["height"],
        duplicates=row["dup_count"],
        thumbnail_url=thumbnail_url,
        image_url=image_url,
        url_only=not local,
        unsafe=flagged,
        nsfw_score=row["nsfw"],
        nsfw_source=row["nsfw_source"],
        extra=json.loads(row["extra"]) if row["extra"] else {},
        vector=vector,
    )


def picture_urls(
    row: sqlite3.Row, local: bool, flagged: bool, safe: bool, link_query: str = ""
) -> tuple[str | None, str | None]:
    """(thumbnail, image) URLs. A flagged item in safe mode gets only its thumbnail, which
    the server blurs, or nothing to load when it is known only by URL; out of safe mode its
    own URLs carry safe=false, so the server sends them as they are. ``link_query`` names
    the item's index when the server has several."""
    ours = f"/api/items/{row['id']}"
    if not local:
        return (None, None) if flagged and safe else (row["url"], row["url"])
    if not flagged:
        return f"{ours}/thumbnail{link_query}", f"{ours}/image{link_query}"
    if safe:
        return f"{ours}/thumbnail{link_query}", None
    query = f"{link_query}&safe=false" if link_query else "?safe=false"
    return f"{ours}/thumbnail{query}", f"{ours}/image{query}"


def copy_verdict(
    engine: Engine, counts: schemas.MatchCounts, blank: bool, copies: list[Candidate]
) -> str:
    n = engine.n
    if counts.likely_copy:
        return (
            f"{counts.likely_copy} likely copies of this image among {n} items known by URL: "
            f"their CLIP image embeddings are at least "
            f"{engine.settings.likely_copy_min_similarity} alike (a threshold not calibrated "
            "on this dataset)"
        )
    if not engine.index.has_images:
        return (
            f"no likely copy among {n} items known by URL (none has a CLIP image embedding "
            f"{engine.settings.likely_copy_min_similarity} or more alike)"
        )
    files = counts.exact_copy + counts.near_copy + counts.edited_copy
    if files:
        return copies_found(engine, counts, files, copies[0])
    if blank:
        return (
            f"this image is almost blank, too plain to tell a copy of it from another "
            f"plain image among {n} images"
        )
    if counts.undecided_files:
        return (
            f"no certain copy among {n} images: this image is as close to "
            f"{counts.undecided_files} files that differ from each other (the closest "
            "are shown first as similar), so which one, if any, it copies cannot be told"
        )
    verdict = f"no copy of this image found among {n} images"
    if not copies:
        return verdict
    closest, near = copies[0].copy_similarity, engine.thresholds.near
    if closest is not None and closest >= near:  # turned down by verification
        return (
            f"{verdict}; the closest look-alike (fingerprint similarity {closest:.3f}) "
            "differs from it in detail when compared region by region"
        )
    return (
        f"{verdict}; the closest look-alike has fingerprint similarity {closest:.3f}, "
        f"under the {near} a near copy needs"
    )


def copies_found(engine: Engine, counts: schemas.MatchCounts, files: int, best: Candidate) -> str:
    """The verdict when copies were found: distinct pictures (duplicate groups) first, then
    the files they hold by kind, then the best match by name. Openclipart holds one star
    drawn with 34, 36, 38 points...: counted by file, one upload had "86 near copies"."""
    kinds = ", ".join(
        f"{number} {kind}"
        for number, kind in (
            (counts.exact_copy, "exact"),
            (counts.near_copy, "near"),
            (counts.edited_copy, "edited"),
        )
        if number
    )
    pictures = counts.copy_pictures
    name = item_name(engine.index.store().items([best.idx])[best.idx])
    what = best.match.replace("_", " ")
    if best.edited_region:
        what += f", changed {where_changed(best.edited_region)}"
    return (
        f"{pictures} {'picture' if pictures == 1 else 'distinct pictures'} found among "
        f"{engine.n} images {'is a copy' if pictures == 1 else 'are copies'} of this image "
        f"({files} {'file' if files == 1 else 'files'}: {kinds}); the best match is "
        f"“{name}” ({what})"
    )


def where_changed(region: str) -> str:
    """Where an edited copy differs, as the verdict says it: "at the bottom right", "in
    several places" (verify.region's words)."""
    return "in several places" if region == "several places" else f"at the {region}"


def item_name(row: Mapping[str, str | None]) -> str:
    """What a sentence calls a stored item: its title or caption, else the file name its URL or
    path ends in (many LAION rows have no caption, and an id means nothing to an artist),
    else its id."""
    text = row["title"] or row["caption"]
    if text:
        return text
    for where in (row["url"], row["path"]):
        name = PurePosixPath(unquote(urlsplit(where or "").path)).name
        if name:
            return name
    return row["id"]


def model_summary(engine: Engine) -> schemas.ModelSummary:
    info = engine.manifest.model
    return schemas.ModelSummary(
        name=info.name, pretrained=info.pretrained, dim=info.dim, semantic=info.semantic
    )


# --- items ---------------------------------------------------------------------------------
def row_by_id(engine: Engine, item_id: str) -> sqlite3.Row:
    """The item's row; an item the operator hides as flagged is no item to any client."""
    row = engine.index.store().by_id(item_id)
    if row is None or (engine.safety.hide and engine.safety.flagged(row)):
        raise QueryError(f"no item with id {item_id!r}", 404)
    return row


def item(engine: Engine, item_id: str, safe: bool = True) -> schemas.ItemDetail:
    row = row_by_id(engine, item_id)
    cand = Candidate(row["idx"], "similar")
    base = result_of(row, cand, 1.0, [], None, engine.safety, safe, engine.link_query)
    return schemas.ItemDetail(
        **base.model_dump(),
        key=row["key"],
        sha256=row["sha256"],
        keywords=row["keywords"],
        duplicate_ids=engine.index.store().duplicate_ids(row),
    )


def thumbnail(engine: Engine, item_id: str, safe: bool = True) -> bytes:
    """The stored thumbnail; blurred in safe mode when the item is flagged, however it was
    asked for."""
    row = row_by_id(engine, item_id)
    data = engine.index.thumbnails().get(row["idx"]) if engine.index.has_images else None
    if data is None:
        raise QueryError("this item has no thumbnail", 404)
    return blurred(data) if safe and engine.safety.flagged(row) else data


def original(engine: Engine, item_id: str, safe: bool = True) -> tuple[bytes, str]:
    """The indexed file's bytes and media type, from the index's own record (never a path a
    client sent), and only while it is still that file: a regular file inside the dataset's
    folder, not a link out of it, whose bytes hash to what was indexed. Read once, checked
    and sent from memory, so it cannot be swapped between the check and the answer. Refused
    in safe mode when the item is flagged."""
    row = row_by_id(engine, item_id)
    if safe and engine.safety.flagged(row):
        raise QueryError(
            "this image may be explicit (its safety score is at or above "
            f"{engine.safety.threshold}); ask again with safe=false to see it",
            403,
        )
    gone = QueryError("the original file is not available on this server", 404)
    if not row["path"] or not row["sha256"]:
        raise gone
    try:
        real = Path(row["path"]).resolve(strict=True)
        if not real.is_relative_to(Path(engine.manifest.source).resolve(strict=True)):
            raise gone
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_size > engine.settings.max_image_bytes:
                raise gone
            data = f.read()
    except OSError:
        raise gone from None
    if hashlib.sha256(data).hexdigest() != row["sha256"]:
        raise gone
    return data, media_type(data)


def media_type(data: bytes) -> str:
    """The image's media type from its own header (served with nosniff, so it must be right)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.get_format_mimetype() or "application/octet-stream"
    except (OSError, ValueError):
        return "application/octet-stream"


def stats(engine: Engine) -> schemas.Stats:
    m = engine.manifest
    return schemas.Stats(
        dataset=m.dataset,
        items=m.counts.items,
        skipped=m.counts.skipped,
        with_caption=m.counts.with_caption,
        duplicate_groups=m.counts.duplicate_groups,
        largest_duplicate_groups=engine.index.store().largest_groups(),
        model=model_summary(engine),
        faiss_factory=m.faiss_factory,
        fingerprint=m.fingerprint,
        built_at=m.built_at,
        format_version=m.format_version,
        safety=engine.safety.describe(engine.index.store()),
        safety_scored=m.safety.scored if m.safety else 0,
        unsafe_threshold=engine.safety.threshold,
        hide_unsafe=engine.safety.hide,
    )
