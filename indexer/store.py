"""The index's SQLite file, and the only home of its SQL: item metadata, thumbnails, skipped
files, build state and the FTS5 name index. (The opt-out registry's SQL lives in
server/registry.py: a separate file with a separate life.)

Row ``idx`` of ``items`` is row ``idx`` of every vector file and the id in every FAISS index.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

ITEM_COLUMNS = (
    "idx",
    "id",
    "key",
    "source",
    "path",
    "url",
    "host",
    "site",
    "caption",
    "title",
    "artist",
    "license",
    "keywords",
    "width",
    "height",
    "sha256",
    "extra",
    "dup_group",
    "dup_count",
    "nsfw",
    "nsfw_source",
)
# Columns added since the first format, with their definitions: an index built before
# lacks them (its reads see NULL), and a store opened for writing gains them.
LATER_COLUMNS = {"nsfw": "REAL", "nsfw_source": "TEXT"}
FTS_COLUMNS = ("artist", "title", "caption", "keywords", "source", "url")

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL,
    source TEXT NOT NULL,
    path TEXT,
    url TEXT NOT NULL DEFAULT '',
    host TEXT NOT NULL DEFAULT '',
    site TEXT NOT NULL DEFAULT '',
    caption TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL DEFAULT '',
    artist TEXT NOT NULL DEFAULT '',
    license TEXT NOT NULL DEFAULT '',
    keywords TEXT NOT NULL DEFAULT '',
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '',
    dup_group INTEGER,
    dup_count INTEGER NOT NULL DEFAULT 1,
    nsfw REAL,  -- P(explicit), indexer/nsfw.py; NULL: not scored
    nsfw_source TEXT  -- who gave it: open_nsfw, laion:punsafe, laion:NSFW
);
CREATE TABLE IF NOT EXISTS skipped (
    key TEXT PRIMARY KEY, source TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS build_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# unicode61 folds case and (with remove_diacritics 2) accents, and splits on punctuation, so
# "Zoë O'Brien", "zoe obrien" and "@zoe" all meet the same tokens.
FTS_SCHEMA = f"""
CREATE INDEX IF NOT EXISTS items_sha256 ON items(sha256);
CREATE INDEX IF NOT EXISTS items_host ON items(host);
CREATE INDEX IF NOT EXISTS items_site ON items(site);
CREATE INDEX IF NOT EXISTS items_dup_group ON items(dup_group);
CREATE INDEX IF NOT EXISTS items_nsfw ON items(nsfw);
DROP TABLE IF EXISTS items_fts;
CREATE VIRTUAL TABLE items_fts USING fts5(
    {", ".join(FTS_COLUMNS)}, content='items', content_rowid='idx',
    tokenize="unicode61 remove_diacritics 2"
);
INSERT INTO items_fts(items_fts) VALUES('rebuild');
"""


# FTS5 bm25 weights, in FTS_COLUMNS order: a hit on the artist field counts most.
BM25_WEIGHTS = (10.0, 4.0, 2.0, 1.0, 1.0, 1.0)
ITEM_SELECT = f"SELECT {', '.join(ITEM_COLUMNS)} FROM items"
BUILD_CACHE_KB = 256 * 1024


def item_select(present: set[str]) -> str:
    """The SELECT of ITEM_COLUMNS, with NULL for a later column the file does not have."""
    columns = [c if c in present else f"NULL AS {c}" for c in ITEM_COLUMNS]
    return f"SELECT {', '.join(columns)} FROM items"


IN_LIST = "IN (SELECT value FROM json_each(?))"  # one bound JSON array, any length


def connect(path: Path, readonly: bool, schema: str) -> sqlite3.Connection:
    """Read-only for the server (any thread may use it), or writable with ``schema`` made."""
    if readonly:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    conn = sqlite3.connect(path)
    # A build inserts millions of rows into the id and site indexes at random places: with
    # SQLite's default 2 MB page cache every insert would re-read its index pages.
    conn.execute(f"PRAGMA cache_size = -{BUILD_CACHE_KB}")
    conn.executescript(schema)
    return conn


def add_later_columns(conn: sqlite3.Connection) -> None:
    """Bring an older store up to the schema (a staged build or an index being added to)."""
    present = {r[1] for r in conn.execute("PRAGMA table_info(items)")}
    for name, kind in LATER_COLUMNS.items():
        if name not in present:
            conn.execute(f"ALTER TABLE items ADD COLUMN {name} {kind}")


def as_json(values: Iterable) -> str:
    return json.dumps(list(values))


class Store:
    """Named reads and writes over one connection (one per thread on the server)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        present = {r[1] for r in conn.execute("PRAGMA table_info(items)")}
        self.has_safety = "nsfw" in present  # False in an index built before safety scores
        self.select = item_select(present)

    @classmethod
    def open(cls, path: Path, readonly: bool = False) -> Store:
        conn = connect(path, readonly, SCHEMA)
        if not readonly:
            add_later_columns(conn)
        conn.row_factory = sqlite3.Row
        return cls(conn)

    def commit(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    # --- build state -------------------------------------------------------------------
    def get_state(self, name: str, default: str = "") -> str:
        row = self.conn.execute("SELECT value FROM build_state WHERE name = ?", (name,)).fetchone()
        return row["value"] if row else default

    def set_state(self, name: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO build_state(name, value) VALUES(?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    # --- writes (build) ----------------------------------------------------------------
    def insert_items(self, rows: Iterable[dict]) -> None:
        """Rows as dicts of ITEM_COLUMNS; dup_group may wait for set_groups()."""
        columns = [c for c in ITEM_COLUMNS if c != "dup_count"]
        self.conn.executemany(
            f"INSERT INTO items({', '.join(columns)}) VALUES({', '.join('?' * len(columns))})",
            ([row.get(c) for c in columns] for row in rows),
        )

    def record_skipped(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """(key, source, reason) of files that could not be indexed."""
        self.conn.executemany(
            "INSERT OR REPLACE INTO skipped(key, source, reason) VALUES(?, ?, ?)", rows
        )

    def set_groups(self, groups: np.ndarray) -> None:
        counts = np.bincount(groups)
        self.conn.executemany(
            "UPDATE items SET dup_group = ?, dup_count = ? WHERE idx = ?",
            ((int(g), int(counts[g]), i) for i, g in enumerate(groups)),
        )

    def set_safety(self, scores: Iterable[tuple[int, float | None, str | None]]) -> None:
        """(idx, score, source) of items scored after they were written."""
        self.conn.executemany(
            "UPDATE items SET nsfw = ?, nsfw_source = ? WHERE idx = ?",
            ((score, source, idx) for idx, score, source in scores),
        )

    def build_indexes(self) -> None:
        """The lookup indexes and the FTS5 name index, made once after the bulk inserts (an
        index kept up to date row by row slows a large build several times over)."""
        self.conn.executescript(FTS_SCHEMA)

    # --- reads ---------------------------------------------------------------------------
    def known_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these ids are already stored (one query for many)."""
        rows = self.conn.execute(f"SELECT id FROM items WHERE id {IN_LIST}", (as_json(ids),))
        return {r[0] for r in rows}

    def items(self, idxs: Sequence[int]) -> dict[int, sqlite3.Row]:
        """Metadata of many rows in one indexed query (not one query per result)."""
        if not idxs:
            return {}
        rows = self.conn.execute(
            f"{self.select} WHERE idx {IN_LIST}", (as_json(int(i) for i in idxs),)
        ).fetchall()
        return {row["idx"]: row for row in rows}

    def by_id(self, item_id: str) -> sqlite3.Row | None:
        return self.conn.execute(f"{self.select} WHERE id = ?", (item_id,)).fetchone()

    def by_ids(self, ids: Sequence[str]) -> dict[str, sqlite3.Row]:
        rows = self.conn.execute(f"{self.select} WHERE id {IN_LIST}", (as_json(ids),))
        return {r["id"]: r for r in rows}

    def idxs_by_sha256(self, sha256: str) -> list[int]:
        return [
            r[0] for r in self.conn.execute("SELECT idx FROM items WHERE sha256 = ?", (sha256,))
        ]

    def in_site(self, low: str, high: str, limit: int = -1, offset: int = 0) -> list[sqlite3.Row]:
        """Items whose site key is in [low, high) (records.site_range), in site order."""
        return self.conn.execute(
            f"{self.select} WHERE site >= ? AND site < ? ORDER BY site, idx LIMIT ? OFFSET ?",
            (low, high, limit, offset),
        ).fetchall()

    def count_in_site(self, low: str, high: str, cap: int) -> int:
        """How many items are in [low, high), counted up to ``cap``."""
        return self.conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM items WHERE site >= ? AND site < ? LIMIT ?)",
            (low, high, cap),
        ).fetchone()[0]

    def name_matches(self, match: str, limit: int, cap: int) -> tuple[list[int], list[int]]:
        """(the best ``limit`` rows whose metadata matches the FTS5 ``match``; all of its
        matches up to ``cap``, in row order). The count and the sites come from that one
        evaluation of the phrase. Under ``cap`` matches the page is ranked by bm25; a query
        that matches more (a common word over millions of captions) takes them in row order,
        as ranking them all would cost a scan of every match."""
        found = [
            r[0]
            for r in self.conn.execute(
                "SELECT rowid FROM items_fts WHERE items_fts MATCH ? LIMIT ?", (match, cap)
            )
        ]
        if len(found) >= cap or len(found) <= 1:
            return found[:limit], found
        weights = ", ".join(str(w) for w in BM25_WEIGHTS)
        rows = self.conn.execute(
            "SELECT rowid FROM items_fts WHERE items_fts MATCH ? "
            f"ORDER BY bm25(items_fts, {weights}), rowid LIMIT ?",
            (match, limit),
        )
        return [r[0] for r in rows], found

    def host_counts(self, rows: list[int]) -> dict[str, int]:
        """How many of ``rows`` come from each host (items known by URL)."""
        found = self.conn.execute(
            f"SELECT host, count(*) FROM items WHERE idx {IN_LIST} AND host != '' GROUP BY host",
            (as_json(rows),),
        )
        return dict(found.fetchall())

    def duplicate_ids(self, row: sqlite3.Row, limit: int = 100) -> list[str]:
        """Ids of the other members of ``row``'s duplicate group, in index order. Most
        items are alone in theirs (every item known only by URL): no query then, as an
        index made before items_dup_group would scan the whole table for it."""
        if row["dup_count"] <= 1:
            return []
        rows = self.conn.execute(
            "SELECT id FROM items WHERE dup_group = ? AND idx != ? ORDER BY idx LIMIT ?",
            (row["dup_group"], row["idx"], limit),
        )
        return [r[0] for r in rows]

    def largest_groups(self, limit: int = 10) -> list[dict]:
        rows = self.conn.execute(
            "SELECT dup_group, dup_count, min(id) AS example FROM items WHERE dup_count > 1 "
            "GROUP BY dup_group ORDER BY dup_count DESC, dup_group LIMIT ?",
            (limit,),
        )
        return [{"size": r["dup_count"], "example_id": r["example"]} for r in rows]

    def sha256s(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT sha256 FROM items ORDER BY idx")]

    def distinct_files(self) -> list[sqlite3.Row]:
        """(idx, path) of the first item of each distinct local file, in index order."""
        return self.conn.execute(
            "SELECT min(idx) AS idx, path FROM items WHERE path IS NOT NULL GROUP BY sha256 "
            "ORDER BY idx"
        ).fetchall()

    def safety_sources(self) -> dict[str, int]:
        """How many items each source of safety scores scored."""
        if not self.has_safety:
            return {}
        rows = self.conn.execute(
            "SELECT nsfw_source, count(*) FROM items WHERE nsfw IS NOT NULL GROUP BY nsfw_source"
        )
        return {r[0]: r[1] for r in rows}

    def flagged_among(self, idxs: Sequence[int], threshold: float) -> set[int]:
        """Which of these rows score ``threshold`` or more."""
        if not self.has_safety or not idxs:
            return set()
        rows = self.conn.execute(
            f"SELECT idx FROM items WHERE idx {IN_LIST} AND nsfw >= ?",
            (as_json(int(i) for i in idxs), threshold),
        )
        return {r[0] for r in rows}

    def count_flagged(self, threshold: float) -> int:
        if not self.has_safety:
            return 0
        return self.conn.execute(
            "SELECT count(*) FROM items WHERE nsfw >= ?", (threshold,)
        ).fetchone()[0]

    def skipped(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT key, source, reason FROM skipped")]

    def count_with_caption(self) -> int:
        return self.conn.execute("SELECT count(*) FROM items WHERE caption != ''").fetchone()[0]


class Thumbnails:
    """The thumbnails' own SQLite file: image bytes by row (lossless WebP or JPEG:
    images.thumbnail_bytes; the column keeps its first name, so older indexes open), kept out
    of the metadata so that stays small and hot."""

    SCHEMA = "CREATE TABLE IF NOT EXISTS thumbnails (idx INTEGER PRIMARY KEY, jpeg BLOB NOT NULL)"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, path: Path, readonly: bool = False) -> Thumbnails:
        return cls(connect(path, readonly, cls.SCHEMA))

    def insert(self, pairs: Iterable[tuple[int, bytes]]) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO thumbnails(idx, jpeg) VALUES(?, ?)", pairs)

    def get(self, idx: int) -> bytes | None:
        row = self.conn.execute("SELECT jpeg FROM thumbnails WHERE idx = ?", (idx,)).fetchone()
        return row[0] if row else None
