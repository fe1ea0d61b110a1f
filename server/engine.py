"""The query engine over one index directory: text, image and vector queries.

An answer is one ranked list built from three kinds of evidence, strongest first: copies of
an uploaded image (perceptual hashes), items whose metadata names the query (FTS5 phrase
match), then CLIP nearest neighbours. Near-duplicates inside the dataset are collapsed to
one result that carries the size of its group.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from indexer import index_format as fmt
from indexer import metadata_db
from indexer.config import Settings
from indexer.fingerprint import Fingerprints, plain, query_fingerprints
from indexer.images import BadImage, decode
from indexer.model import Embedder, ModelSpec
from server import schemas
from server.copies import CopyMatch, CopyMatcher, CopyThresholds

KIND_ORDER = {"exact_copy": 0, "near_copy": 1, "name_match": 2, "similar": 3}
# FTS5 bm25 weights, in metadata_db.FTS_COLUMNS order: a hit on the artist field counts most.
BM25_WEIGHTS = (10.0, 4.0, 2.0, 1.0, 1.0, 1.0)
TOKEN = re.compile(r"[^\W_]+")


class QueryError(ValueError):
    """A query the engine refuses; ``status`` is the HTTP status that fits."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Candidate:
    idx: int
    match: str
    hash_distance: int | None = None
    copy_similarity: float | None = None
    matched_fields: list[str] = field(default_factory=list)


def normalise_tokens(text: str) -> list[str]:
    """The same folding as FTS5's unicode61 tokenizer with remove_diacritics."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return TOKEN.findall(stripped)


def contains_phrase(text: str, phrase: list[str]) -> bool:
    tokens = normalise_tokens(text)
    n = len(phrase)
    return any(tokens[i : i + n] == phrase for i in range(len(tokens) - n + 1))


def load_embedder(manifest: fmt.Manifest, settings: Settings) -> Embedder:
    """The model that built the index, with a local checkpoint if one is configured."""
    info = manifest.model
    spec = ModelSpec(name=info.name, pretrained=info.pretrained, checkpoint=settings.checkpoint)
    return Embedder(spec, precision=settings.precision)


class Engine:
    def __init__(self, directory: Path, settings: Settings, embedder: Embedder | None = None):
        self.directory = Path(directory)
        self.settings = settings
        self.manifest = fmt.read_manifest(self.directory)
        self.embedder = embedder or load_embedder(self.manifest, settings)
        fmt.check_model(self.manifest, self.embedder.identity())
        self.n = self.manifest.counts.items
        self.image_vectors = np.load(self.directory / fmt.IMAGE_VECTORS, mmap_mode="r")
        self.indexes = {
            "images": self.read_faiss(fmt.IMAGE_FAISS),
            "captions": self.read_faiss(fmt.CAPTION_FAISS),
        }
        self.fingerprints = np.load(self.directory / fmt.FINGERPRINTS, mmap_mode="r")
        self.copies = CopyMatcher(
            np.load(self.directory / fmt.DESCRIPTORS),
            self.fingerprints,
            np.load(self.directory / fmt.COLOURS),
        )
        self.optouts = None  # set by the server: server.optouts.OptOuts
        self.thresholds = CopyThresholds.from_settings(settings)
        self.local = threading.local()
        groups = self.db().execute("SELECT idx, dup_group FROM items ORDER BY idx").fetchall()
        self.groups = np.array([g["dup_group"] for g in groups], dtype=np.int64)

    def read_faiss(self, name: str) -> faiss.Index:
        index = faiss.read_index(str(self.directory / name))
        if "IVF" in self.manifest.faiss_factory:
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", 32)
        return index

    def db(self) -> sqlite3.Connection:
        """One read-only connection per thread (FastAPI runs sync endpoints in a pool)."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = metadata_db.connect(self.directory / fmt.METADATA, readonly=True)
            self.local.conn = conn
        return conn

    # --- public queries ----------------------------------------------------------------
    def search_text(
        self, query: str, k: int, offset: int = 0, target: str = "images", collapse: bool = True
    ) -> schemas.SearchResponse:
        started = time.perf_counter()
        query = self.check_text(query)
        self.check_page(k, offset)
        vector = self.embedder.encode_texts([query])[0]
        phrase = normalise_tokens(query)
        names, name_total = self.name_matches(phrase, offset + k)
        ranked = self.rank(names, vector, target, offset + k, collapse)
        counts = schemas.MatchCounts(name_match=name_total)
        return self.respond(query, "text", ranked, vector, offset, k, counts, None, started)

    def search_image(
        self, data: bytes, k: int, offset: int = 0, collapse: bool = True
    ) -> schemas.SearchResponse:
        started = time.perf_counter()
        self.check_page(k, offset)
        try:
            loaded = decode(data, self.settings.max_upload_pixels, self.settings.working_size)
        except BadImage as exc:
            status = (
                415 if "not a recognised" in exc.reason else 413 if "limit" in exc.reason else 400
            )
            raise QueryError(status, f"cannot use this upload: {exc.reason}") from None
        vector = self.embedder.encode_images([loaded.image])[0]
        prints = query_fingerprints(loaded.image)
        copies = self.copy_candidates(data, prints, vector)
        counts = schemas.MatchCounts(
            exact_copy=sum(c.match == "exact_copy" for c in copies),
            near_copy=sum(c.match == "near_copy" for c in copies),
        )
        ranked = self.rank(copies, vector, "images", offset + k, collapse)
        verdict = self.copy_verdict(counts, plain(prints), copies)
        desc = f"image upload ({loaded.width}x{loaded.height} {loaded.format})"
        return self.respond(desc, "image", ranked, vector, offset, k, counts, verdict, started)

    def search_vector(self, query: schemas.VectorQuery) -> schemas.SearchResponse:
        started = time.perf_counter()
        self.check_page(query.k, query.offset)
        vector = np.asarray(query.vector, dtype=np.float32)
        if vector.shape != (self.embedder.dim,) or not np.all(np.isfinite(vector)):
            raise QueryError(422, f"vector must be {self.embedder.dim} finite numbers")
        norm = float(np.linalg.norm(vector))
        if norm == 0:
            raise QueryError(422, "vector must not be all zeros")
        vector /= norm
        ranked = self.rank([], vector, query.target, query.offset + query.k, collapse=False)
        return self.respond(
            "vector",
            "vector",
            ranked,
            vector,
            query.offset,
            query.k,
            schemas.MatchCounts(),
            None,
            started,
            query.return_vectors,
        )

    # --- validation ----------------------------------------------------------------------
    def check_text(self, query: str) -> str:
        cleaned = " ".join("".join(c for c in query if c.isprintable()).split())
        if not cleaned:
            raise QueryError(422, "the query is empty")
        if len(cleaned) > self.settings.max_query_chars:
            raise QueryError(
                422, f"the query is longer than {self.settings.max_query_chars} characters"
            )
        return cleaned

    def check_page(self, k: int, offset: int) -> None:
        if not 1 <= k <= self.settings.max_k:
            raise QueryError(422, f"k must be between 1 and {self.settings.max_k}")
        if not 0 <= offset <= 10 * self.settings.max_k:
            raise QueryError(422, f"offset must be between 0 and {10 * self.settings.max_k}")

    # --- evidence ------------------------------------------------------------------------
    def name_matches(self, phrase: list[str], limit: int) -> tuple[list[Candidate], int]:
        """Items whose metadata contains the query as a phrase, best bm25 first."""
        if not phrase:
            return [], 0
        match = '"' + " ".join(phrase) + '"'
        conn = self.db()
        total = conn.execute(
            "SELECT count(*) FROM items_fts WHERE items_fts MATCH ?", (match,)
        ).fetchone()[0]
        weights = ", ".join(str(w) for w in BM25_WEIGHTS)
        rows = conn.execute(
            f"SELECT rowid FROM items_fts WHERE items_fts MATCH ? "
            f"ORDER BY bm25(items_fts, {weights}), rowid LIMIT ?",
            (match, limit),
        ).fetchall()
        return [Candidate(r[0], "name_match") for r in rows], total

    def knn(self, vector: np.ndarray, target: str, count: int) -> list[tuple[int, float]]:
        scores, ids = self.indexes[target].search(vector[None, :].astype(np.float32), count)
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        if target == "captions":  # items without a caption have a zero caption vector
            pairs = [(i, s) for i, s in pairs if s != 0.0]
        return sorted(pairs, key=lambda p: (-round(p[1], 6), p[0]))

    def rank(
        self, strong: list[Candidate], vector: np.ndarray, target: str, need: int, collapse: bool
    ) -> list[Candidate]:
        """Strong evidence first, then CLIP neighbours, each item and group once."""
        hidden = self.optouts.hidden() if self.optouts else set()
        count = min(self.n, need * 2 + 64)
        while True:
            similar = [Candidate(i, "similar") for i, _ in self.knn(vector, target, count)]
            ranked = self.dedupe(strong + similar, collapse, hidden)
            if len(ranked) >= need or count >= self.n:
                return ranked[:need]
            count = min(self.n, count * 4)

    def dedupe(
        self, candidates: list[Candidate], collapse: bool, hidden: set[int]
    ) -> list[Candidate]:
        seen_items = set(hidden)
        seen_groups: set[int] = set()
        out = []
        for cand in candidates:
            group = int(self.groups[cand.idx])
            if cand.idx in seen_items or (collapse and group in seen_groups):
                continue
            seen_items.add(cand.idx)
            seen_groups.add(group)
            out.append(cand)
        return out

    def copy_candidates(
        self, data: bytes, prints: Fingerprints, vector: np.ndarray
    ) -> list[Candidate]:
        """Exact and near copies, closest first; the same bytes beat any hash. Look-alikes come
        after them, as similar: fingerprints just under the near-copy threshold (a copy
        recoloured past recognition, a sibling drawing), or blank items like a blank upload."""
        t = self.thresholds
        matches = self.copies.match(prints, t.lookalike, t.exact_colour, t.uncut)
        sha = hashlib.sha256(data).hexdigest()
        for row in self.db().execute("SELECT idx FROM items WHERE sha256 = ?", (sha,)):
            matches[row[0]] = CopyMatch(row[0], 1.0, 0.0, 0, same_bytes=True)
        labelled = [(m, m.label(self.thresholds)) for m in matches.values()]
        ranked = sorted(
            ((m, kind) for m, kind in labelled if kind),
            key=lambda p: (
                KIND_ORDER[p[1]],
                p[0].rank_key(),
                -float(self.image_vectors[p[0].idx] @ vector),
                p[0].idx,
            ),
        )
        return [
            Candidate(m.idx, kind, m.hash_distance, None if m.blank else round(m.similarity, 4))
            for m, kind in ranked
        ]

    def copy_verdict(
        self, counts: schemas.MatchCounts, blank: bool, copies: list[Candidate]
    ) -> str:
        found = counts.exact_copy + counts.near_copy
        if found:
            return (
                f"{counts.exact_copy} exact and {counts.near_copy} near copies of this image "
                f"found among {self.n} images"
            )
        if blank:
            return (
                f"this image is almost blank, too plain to tell a copy of it from another "
                f"plain image among {self.n} images"
            )
        verdict = f"no copy of this image found among {self.n} images"
        if copies:  # look-alikes, closest first
            verdict += (
                f"; the closest look-alike has fingerprint similarity "
                f"{copies[0].copy_similarity:.3f}, under the {self.thresholds.near} a near "
                f"copy needs"
            )
        return verdict

    # --- answers -------------------------------------------------------------------------
    def respond(
        self,
        query: str,
        query_type: str,
        ranked: list[Candidate],
        vector: np.ndarray,
        offset: int,
        k: int,
        counts: schemas.MatchCounts,
        verdict: str | None,
        started: float,
        return_vectors: bool = False,
    ) -> schemas.SearchResponse:
        page = ranked[offset : offset + k]
        phrase = normalise_tokens(query) if query_type == "text" else []
        results = self.results(page, vector, phrase, return_vectors)
        more = len(ranked) == offset + k and offset + k < self.n
        return schemas.SearchResponse(
            query=query,
            query_type=query_type,
            model=self.model_summary(),
            total_items=self.n,
            counts=counts,
            copy_verdict=verdict,
            offset=offset,
            k=k,
            next_offset=offset + k if more else None,
            results=results,
            took_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    def results(
        self, page: list[Candidate], vector: np.ndarray, phrase: list[str], return_vectors: bool
    ) -> list[schemas.Result]:
        rows = metadata_db.fetch_items(self.db(), [c.idx for c in page])
        idxs = sorted(rows)  # memory-mapped rows read in file order
        scores = np.asarray(self.image_vectors[idxs], np.float32) @ vector if idxs else []
        score_of = dict(zip(idxs, np.asarray(scores).tolist(), strict=True))
        opted = self.optouts.statuses(list(rows.values())) if self.optouts else {}
        out = []
        for cand in page:
            row = rows[cand.idx]
            fields = [
                f for f in metadata_db.FTS_COLUMNS if phrase and contains_phrase(row[f], phrase)
            ]
            vec = self.image_vectors[cand.idx].astype(float).tolist() if return_vectors else None
            result = self.result(row, cand, round(score_of[cand.idx], 5), fields, vec)
            result.opt_out = opted.get(row["id"])
            out.append(result)
        return out

    @staticmethod
    def result(
        row: sqlite3.Row,
        cand: Candidate,
        score: float,
        fields: list[str],
        vector: list[float] | None,
    ) -> schemas.Result:
        return schemas.Result(
            id=row["id"],
            match=cand.match,
            score=score,
            hash_distance=cand.hash_distance,
            copy_similarity=cand.copy_similarity,
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
            thumbnail_url=f"/api/items/{row['id']}/thumbnail",
            image_url=f"/api/items/{row['id']}/image",
            vector=vector,
        )

    def copies_hash_hex(self, idx: int) -> str:
        """The whole-image perceptual hash, as builders' filter scripts compare it."""
        return bytes(self.fingerprints[idx, 0]).hex()

    def model_summary(self) -> schemas.ModelSummary:
        info = self.manifest.model
        return schemas.ModelSummary(
            name=info.name, pretrained=info.pretrained, dim=info.dim, semantic=info.semantic
        )

    # --- items ---------------------------------------------------------------------------
    def row_by_id(self, item_id: str) -> sqlite3.Row:
        row = (
            self.db()
            .execute(
                f"SELECT {', '.join(metadata_db.ITEM_COLUMNS)} FROM items WHERE id = ?", (item_id,)
            )
            .fetchone()
        )
        if row is None:
            raise QueryError(404, f"no item with id {item_id!r}")
        return row

    def item(self, item_id: str) -> schemas.ItemDetail:
        row = self.row_by_id(item_id)
        dups = (
            self.db()
            .execute(
                "SELECT id FROM items WHERE dup_group = ? AND idx != ? ORDER BY idx LIMIT 100",
                (row["dup_group"], row["idx"]),
            )
            .fetchall()
        )
        base = self.result(row, Candidate(row["idx"], "similar"), 1.0, [], None)
        return schemas.ItemDetail(
            **base.model_dump(),
            key=row["key"],
            sha256=row["sha256"],
            keywords=row["keywords"],
            duplicate_ids=[d[0] for d in dups],
        )

    def thumbnail(self, item_id: str) -> bytes:
        row = self.row_by_id(item_id)
        thumb = (
            self.db().execute("SELECT jpeg FROM thumbnails WHERE idx = ?", (row["idx"],)).fetchone()
        )
        if thumb is None:
            raise QueryError(404, "this item has no thumbnail")
        return thumb[0]

    def original_path(self, item_id: str) -> Path:
        """The indexed file, from the index's own record: never a path a client sent."""
        row = self.row_by_id(item_id)
        path = Path(row["path"]) if row["path"] else None
        if path is None or not path.is_file():
            raise QueryError(404, "the original file is not available on this server")
        return path

    def stats(self) -> schemas.Stats:
        m = self.manifest
        groups = (
            self.db()
            .execute(
                "SELECT dup_group, dup_count, min(id) AS example FROM items WHERE dup_count > 1 "
                "GROUP BY dup_group ORDER BY dup_count DESC, dup_group LIMIT 10"
            )
            .fetchall()
        )
        return schemas.Stats(
            dataset=m.dataset,
            items=m.counts.items,
            skipped=m.counts.skipped,
            with_caption=m.counts.with_caption,
            duplicate_groups=m.counts.duplicate_groups,
            largest_duplicate_groups=[
                {"size": g["dup_count"], "example_id": g["example"]} for g in groups
            ],
            model=self.model_summary(),
            faiss_factory=m.faiss_factory,
            fingerprint=m.fingerprint,
            built_at=m.built_at,
            format_version=m.format_version,
        )
