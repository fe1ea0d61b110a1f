"""The query engine over one opened index (index.py): text, image and vector queries.

An answer is one ranked list built from three kinds of evidence, strongest first: copies of
an uploaded image (perceptual fingerprints), items whose metadata names the query (FTS5
phrase match), then CLIP nearest neighbours. Near-duplicates inside the dataset are
collapsed to one result that carries the size of its group. answers.py shapes the response.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from hibt.config import Settings
from hibt.errors import BadImage, QueryError
from hibt.indexer import index_format as fmt
from hibt.indexer.copies.fingerprint import Fingerprints, plain, query_fingerprints
from hibt.indexer.copies.grid import Grid
from hibt.indexer.copies.matching import CopyMatch, CopyThresholds
from hibt.indexer.copies.rivals import Checked, grey_copy, same_picture, settle
from hibt.indexer.copies.verify import Verdict
from hibt.indexer.images import (
    LoadedImage,
    MemoryBudget,
    Redecode,
    least_side,
    thumbnail_pixels,
)
from hibt.indexer.model import Embedder, embedder_from
from hibt.indexer.records import site_range
from hibt.indexer.store import Store
from hibt.server import answers, schemas, verifiers
from hibt.server.answers import Candidate
from hibt.server.index import OpenIndex
from hibt.server.names import normalise_tokens
from hibt.server.safety import Safety
from hibt.server.verifiers import Task, Thumbnail

KIND_ORDER = {
    "exact_copy": 0,
    "near_copy": 1,
    "edited_copy": 1,
    "likely_copy": 1,
    "name_match": 2,
    "similar": 3,
}
COPY_KINDS = ("exact_copy", "near_copy", "edited_copy")


class Visibility(Protocol):
    """What the opt-out registry tells the engine: which of some rows to hide, and each
    item's status. Asked about the candidates of one answer, never the whole registry."""

    def hidden_among(self, idxs: list[int]) -> set[int]: ...

    def statuses(self, rows: list[sqlite3.Row]) -> dict[str, str]: ...


class NoOptOuts:
    """Visibility without a registry: nothing hidden, nothing marked."""

    def hidden_among(self, idxs: list[int]) -> set[int]:
        return set()

    def statuses(self, rows: list[sqlite3.Row]) -> dict[str, str]:
        return {}


def with_room(need: int, collapse: bool) -> int:
    """Candidates to ask for to fill ``need`` answers: room for the duplicates a collapse
    folds and the few hidden items. Every candidate costs an exact re-score, so no more is
    asked without a collapse."""
    return need * (2 if collapse else 1) + 64


def sites_of(counted: Iterable[dict[str, int]], limit: int = 10) -> list[schemas.SiteCount]:
    """Where the name matches come from: the hosts with the most of them, from the counts
    of each part of the matches."""
    total: Counter[str] = Counter()
    for counts in counted:
        total.update(counts)
    top = sorted(total.items(), key=lambda pair: (-pair[1], pair[0]))[:limit]
    return [schemas.SiteCount(site=host, count=n) for host, n in top]


class Engine:
    def __init__(
        self,
        index: OpenIndex,
        settings: Settings,
        embedder: Embedder,
        visibility: Visibility | None = None,
    ) -> None:
        fmt.check_model(index.manifest, embedder.identity())
        self.index, self.settings, self.embedder = index, settings, embedder
        self.visibility = visibility or NoOptOuts()
        self.safety = Safety(index.manifest.safety, settings)
        self.thresholds = CopyThresholds.from_settings(settings)
        # What links to this index's items need when it is served beside others (catalogue.py).
        self.link_query = ""
        self.decodes = MemoryBudget(settings.decode_memory_bytes)
        self.verifiers = verifiers.of(verifiers.processes(settings))

    @classmethod
    def open(
        cls,
        directory: Path,
        settings: Settings,
        embedder: Embedder | None = None,
        visibility: Visibility | None = None,
    ) -> Engine:
        """The engine over an index directory, with the model that built it by default."""
        index = OpenIndex(directory, settings)
        return cls(
            index, settings, embedder or embedder_from(settings, index.manifest.model), visibility
        )

    @property
    def n(self) -> int:
        return self.index.n

    @property
    def manifest(self):
        return self.index.manifest

    @property
    def groups(self) -> np.ndarray:
        return self.index.groups

    # --- public queries ----------------------------------------------------------------
    def search_text(
        self,
        query: str,
        k: int,
        offset: int = 0,
        target: str = "images",
        collapse: bool = True,
        vector: np.ndarray | None = None,
        safe: bool = True,
    ) -> schemas.SearchResponse:
        """``vector``: the cleaned query's embedding, when the caller already has it (a
        search over several indexes embeds a text once per model); ``safe``: safe mode, as
        in every query (server/safety.py)."""
        started = time.perf_counter()
        query = self.check_text(query)
        self.check_page(k, offset)
        self.check_target(target)
        # In a big index the name phrase is looked up while the text is embedded, and the
        # hosts of many matches are counted while the neighbours are ranked.
        phrase = normalise_tokens(query)
        names_found = self.index.meanwhile(
            self.name_matches, phrase, with_room(offset + k, collapse)
        )
        if vector is None:
            vector = self.embedder.encode_texts([query])[0]
        names, found = names_found()
        hosts = self.index.read_in_parts(Store.host_counts, found)
        ranked = self.rank(names, vector, target, offset + k, collapse)
        counts = schemas.MatchCounts(
            name_match=len(found), name_match_capped=len(found) >= self.settings.max_name_count
        )
        page = answers.Page(query, "text", vector, offset, k, counts, None, started, safe=safe)
        response = answers.respond(self, ranked, page)
        response.sites = sites_of(hosts()) if found else []
        return response

    def search_image(
        self, data: bytes, k: int, offset: int = 0, collapse: bool = True, safe: bool = True
    ) -> schemas.SearchResponse:
        started = time.perf_counter()
        self.check_page(k, offset)
        try:
            loaded = self.decode_upload(data)
        except BadImage as exc:
            raise QueryError(f"cannot use this upload: {exc.reason}", exc.status) from None
        vector = self.embedder.encode_images([loaded.image])[0]
        if self.index.has_images:
            prints = query_fingerprints(loaded.image, self.upload_grid(loaded, data))
            (copies, rivals), blank = self.copy_candidates(data, prints, vector), plain(prints)
        else:
            copies, rivals, blank = self.likely_copies(vector), 0, False
        counts = schemas.MatchCounts(
            exact_copy=sum(c.match == "exact_copy" for c in copies),
            near_copy=sum(c.match == "near_copy" for c in copies),
            edited_copy=sum(c.match == "edited_copy" for c in copies),
            likely_copy=sum(c.match == "likely_copy" for c in copies),
            copy_pictures=len(
                {int(self.groups[c.idx]) for c in copies if c.match in (*COPY_KINDS, "likely_copy")}
            ),
            undecided_files=rivals,
        )
        ranked = self.rank(copies, vector, "images", offset + k, collapse)
        verdict = answers.copy_verdict(self, counts, blank, copies)
        desc = f"image upload ({loaded.width}x{loaded.height} {loaded.format})"
        page = answers.Page(desc, "image", vector, offset, k, counts, verdict, started, safe=safe)
        return answers.respond(self, ranked, page)

    def search_vector(self, query: schemas.VectorQuery) -> schemas.SearchResponse:
        started = time.perf_counter()
        self.check_page(query.k, query.offset)
        vector = np.asarray(query.vector, dtype=np.float32)
        if vector.shape != (self.embedder.dim,) or not np.all(np.isfinite(vector)):
            raise QueryError(f"vector must be {self.embedder.dim} finite numbers")
        norm = float(np.linalg.norm(vector))
        if norm == 0:
            raise QueryError("vector must not be all zeros")
        vector /= norm
        ranked = self.rank([], vector, query.target, query.offset + query.k, collapse=False)
        page = answers.Page(
            "vector",
            "vector",
            vector,
            query.offset,
            query.k,
            schemas.MatchCounts(),
            None,
            started,
            query.return_vectors,
            query.safe,
        )
        return answers.respond(self, ranked, page)

    def search_site(
        self, site: str, k: int, offset: int = 0, safe: bool = True
    ) -> schemas.SearchResponse:
        """Every item from a domain (with its subdomains) or a folder of a site, in URL order:
        an artist's portfolio as the dataset holds it."""
        started = time.perf_counter()
        self.check_page(k, offset)
        site = self.check_text(site)
        low, high = site_range(site)
        if "." not in low.split("/")[0].strip("."):
            raise QueryError("give a site as a domain, optionally with a path: example.com/jane")
        store = self.index.store()
        rows = store.in_site(low, high, k + 1, offset)
        hidden = self.hidden_among([r["idx"] for r in rows])
        shown = [Candidate(r["idx"], "site_match") for r in rows if r["idx"] not in hidden]
        total = store.count_in_site(low, high, self.settings.max_count)
        counts = schemas.MatchCounts(
            site_match=total, site_match_capped=total >= self.settings.max_count
        )
        page = answers.Page(site, "site", None, offset, k, counts, None, started, safe=safe)
        return answers.respond(self, shown, page, more=len(rows) > k)

    # --- items and statistics (shaped in answers.py) ----------------------------------
    def item(self, item_id: str, safe: bool = True) -> schemas.ItemDetail:
        return answers.item(self, item_id, safe)

    def thumbnail(self, item_id: str, safe: bool = True) -> bytes:
        return answers.thumbnail(self, item_id, safe)

    def original(self, item_id: str, safe: bool = True) -> tuple[bytes, str]:
        return answers.original(self, item_id, safe)

    def stats(self) -> schemas.Stats:
        return answers.stats(self)

    # --- validation ----------------------------------------------------------------------
    def check_text(self, query: str) -> str:
        cleaned = " ".join("".join(c for c in query if c.isprintable()).split())
        if not cleaned:
            raise QueryError("the query is empty")
        if len(cleaned) > self.settings.max_query_chars:
            raise QueryError(f"the query is longer than {self.settings.max_query_chars} characters")
        return cleaned

    def check_target(self, target: str) -> None:
        if target not in self.index.faiss:
            raise QueryError(
                f"this index has no {target} to search (its dataset published no caption "
                "embeddings); use target=images"
            )

    def upload_grid(self, loaded: LoadedImage, data: bytes) -> Grid | None:
        """A lossless upload as the build keeps a stored file: held to the pixel against a
        stored file on its grid (grid.Grid). Where its reduction left a remainder, a flip of
        it lies half a pixel off the flipped file's grid (a flipped copy of a nearly
        symmetric picture would be closer unflipped, its one asymmetric detail then taken
        for a difference): the file is decoded again under the flip a candidate needs."""
        if not loaded.lossless:
            return None
        image = thumbnail_pixels(loaded.image, self.settings.thumbnail_size)
        if loaded.turns_kept:
            return Grid(image, (loaded.width, loaded.height))
        again = functools.partial(self.upload_file(data), self.decodes)
        return Grid(image, (loaded.width, loaded.height), again)

    def decode_upload(self, data: bytes) -> LoadedImage:
        """An upload decoded as the build decodes a stored file (reduced alike, least_side),
        within the upload limits and the decode memory budget."""
        return self.upload_file(data).decoded(self.decodes)

    def upload_file(self, data: bytes) -> Redecode:
        """The upload's bytes with how they are decoded, here and under a flip (upload_grid)."""
        s = self.settings
        least = self.upload_least_side()
        return Redecode(data, s.max_upload_pixels, s.working_size, least, s.thumbnail_size)

    def upload_least_side(self) -> int:
        """The shortest side an upload is decoded down to: the build's (decode.decode_one),
        so an upload and the stored image it copies are reduced alike."""
        return least_side(self.embedder.image_size, self.settings.thumbnail_size)

    def check_page(self, k: int, offset: int) -> None:
        if not 1 <= k <= self.settings.max_k:
            raise QueryError(f"k must be between 1 and {self.settings.max_k}")
        if not 0 <= offset <= 10 * self.settings.max_k:
            raise QueryError(f"offset must be between 0 and {10 * self.settings.max_k}")

    # --- evidence ------------------------------------------------------------------------
    def name_matches(self, phrase: list[str], limit: int) -> tuple[list[Candidate], list[int]]:
        """Items whose metadata contains the query as a phrase, best bm25 first; and the
        rows of all matches, counted up to ``max_name_count``."""
        if not phrase:
            return [], []
        match = '"' + " ".join(phrase) + '"'
        cap = self.settings.max_name_count
        rows, found = self.index.store().name_matches(match, limit, cap)
        return [Candidate(r, "name_match") for r in rows], found

    def knn(self, vector: np.ndarray, target: str, count: int) -> list[tuple[int, float]]:
        ids, scores = self.index.faiss[target].search(vector, count)
        pairs = [(int(i), float(s)) for i, s in zip(ids, scores, strict=True)]
        if target == "captions":  # items without a caption have a zero caption vector
            pairs = [(i, s) for i, s in pairs if s != 0.0]
        return sorted(pairs, key=lambda p: (-round(p[1], 6), p[0]))

    def rank(
        self, strong: list[Candidate], vector: np.ndarray, target: str, need: int, collapse: bool
    ) -> list[Candidate]:
        """Strong evidence first, then CLIP neighbours, each item and group once."""
        count = min(self.n, with_room(need, collapse))
        while True:
            pairs = self.knn(vector, target, count)
            similar = [Candidate(i, "similar", cosine=s, against=target) for i, s in pairs]
            candidates = strong + similar
            hidden = self.hidden_among([c.idx for c in candidates])
            ranked = self.dedupe(candidates, collapse, hidden)
            if len(ranked) >= need or count >= self.n:
                return ranked[:need]
            count = min(self.n, count * 4)

    def hidden_among(self, idxs: list[int]) -> set[int]:
        """Rows no answer shows: opted out or removed (the Visibility), or flagged unsafe
        where the operator hides those."""
        return self.visibility.hidden_among(idxs) | self.safety.hidden_among(
            self.index.store(), idxs
        )

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

    def likely_copies(self, vector: np.ndarray) -> list[Candidate]:
        """Items known only by URL and embedding whose image embedding is at least the
        likely-copy cosine from the upload's: the only copy evidence such items allow."""
        need = self.settings.likely_copy_min_similarity
        pairs = self.knn(vector, "images", 100)
        return [
            Candidate(i, "likely_copy", copy_similarity=round(s, 4)) for i, s in pairs if s >= need
        ]

    def copy_candidates(
        self, data: bytes, prints: Fingerprints, vector: np.ndarray
    ) -> tuple[list[Candidate], int]:
        """Exact and near copies, closest first; the same bytes beat any hash. Look-alikes come
        after them, as similar: fingerprints just under the near-copy threshold (a copy
        recoloured past recognition, a sibling drawing), or blank items like a blank upload.
        Within a kind, what verification measured closest comes first (a grey upload of a
        red arrow is nearer the red arrow than the purple one, which the descriptor cannot
        say). Also the number of files the upload could not be told apart from (rivals.py)."""
        labelled, verdicts, rivals = self.verified_matches(data, prints)
        kept = [(m, kind) for m, kind in labelled if kind]
        clip = self.clip_scores([m.idx for m, _ in kept], vector)
        unverified = Verdict("different")
        ranked = sorted(
            kept,
            key=lambda p: (
                KIND_ORDER[p[1]],
                verdicts.get(p[0].idx, unverified).distance,
                p[0].rank_key(),
                -clip[p[0].idx],
                p[0].idx,
            ),
        )
        candidates = [
            Candidate(
                m.idx,
                kind,
                m.hash_distance,
                None if m.blank else round(m.similarity, 4),
                edited_region=verdicts[m.idx].region if kind == "edited_copy" else None,
            )
            for m, kind in ranked
        ]
        return candidates, rivals

    def verified_matches(
        self, data: bytes, prints: Fingerprints
    ) -> tuple[list[tuple[CopyMatch, str | None]], dict[int, Verdict], int]:
        """The upload's fingerprint matches labelled and verified (:meth:`verified`); also
        what calibration reads (scripts/calibrate_copy_distance.py)."""
        t = self.thresholds
        matches = self.index.copies.match(prints, t.lookalike, t.exact_colour, t.uncut)
        for idx in self.index.store().idxs_by_sha256(hashlib.sha256(data).hexdigest()):
            matches[idx] = CopyMatch(idx, 1.0, 0.0, 0, same_bytes=True)
        return self.verified([(m, m.label(t)) for m in matches.values()], prints)

    def clip_scores(self, idxs: list[int], vector: np.ndarray) -> dict[int, float]:
        """Each item's image embedding against the upload's, its rows read in one call (a
        family of look-alikes has hundreds) and in file order, as answers.py reads them."""
        if not idxs:
            return {}
        ordered = sorted(set(idxs))
        rows = self.index.image_vectors[np.asarray(ordered, np.int64)]
        return {idx: float(row @ vector) for idx, row in zip(ordered, rows, strict=True)}

    def verified(
        self, labelled: list[tuple[CopyMatch, str | None]], prints: Fingerprints
    ) -> tuple[list[tuple[CopyMatch, str | None]], dict[int, Verdict], int]:
        """The copies, best first, verified region by region against their stored
        thumbnails (verify.py): the same picture keeps its label, a picture with a caption
        or logo laid over it becomes an edited copy, and a sibling (a template shared, a
        detail redrawn) is only similar. Then weighed against each other (rivals.py): only
        the closest picture is a copy, and none when others are as close. Copies past the
        verification limit are shown as look-alikes: unverified, they are not counted. Also
        returns each verified candidate's verdict, and the files no copy could be told from."""
        copies = sorted(
            (p for p in labelled if p[1] in COPY_KINDS),
            key=lambda p: (p[0].rank_key(), p[0].idx),
        )[: self.settings.copy_verify_limit]
        thumbnail = functools.cache(self.stored_thumbnail)  # each decoded once a query
        checked = self.checked([m for m, _ in copies], prints, thumbnail)
        settled = settle(checked, alike(thumbnail, same_picture), alike(thumbnail, grey_copy))
        verdicts = {c.idx: c.verdict for c in checked}
        out = []
        for m, kind in labelled:
            if kind in COPY_KINDS and m.idx not in settled.copies:
                kind = "similar"
            elif kind in COPY_KINDS and verdicts[m.idx].kind == "edited":
                kind = "edited_copy"
            out.append((m, kind))
        return out, verdicts, settled.rivals

    def checked(
        self,
        copies: list[CopyMatch],
        prints: Fingerprints,
        thumbnail: Callable[[int], Thumbnail | None],
    ) -> list[Checked]:
        """Each copy's verdict, in this thread and the verifier processes (verifiers.py);
        files of the same bytes met alike are verified once (a drawing kept many times over
        would be verified as many times)."""
        rows = self.index.store().items([m.idx for m in copies])
        keys, tasks = [], {}
        for m in copies:
            sha256 = rows[m.idx]["sha256"]
            alike = dataclasses.replace(m, idx=-1) if sha256 else m  # no digest: its own
            keys.append((sha256, *dataclasses.astuple(alike)))
            tasks.setdefault(keys[-1], Task(m, (rows[m.idx]["width"], rows[m.idx]["height"])))
        found = self.verifiers.verdicts(
            prints, list(tasks.values()), thumbnail, self.index.thumbnails().get
        )
        by_file = dict(zip(tasks, found, strict=True))
        return [
            Checked(m.idx, rows[m.idx]["sha256"], by_file[key])
            for m, key in zip(copies, keys, strict=True)
        ]

    def stored_thumbnail(self, idx: int) -> Thumbnail | None:
        data = self.index.thumbnails().get(idx)
        return None if data is None else Thumbnail.of(data)


def alike(
    thumbnail: Callable[[int], Thumbnail | None],
    test: Callable[[Image.Image, Image.Image], bool],
) -> Callable[[int, int], bool]:
    """A test of two stored items (rivals.py): whether both thumbnails exist and pass ``test``."""

    def both(a: int, b: int) -> bool:
        first, second = thumbnail(a), thumbnail(b)
        return first is not None and second is not None and test(first.image, second.image)

    return both
