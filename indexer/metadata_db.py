"""The index's SQLite file: item metadata, thumbnails, skipped files and the FTS5 table.

Row ``idx`` of ``items`` is row ``idx`` of every vector file and the id in every FAISS index.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

ITEM_COLUMNS = (
    "idx",
    "id",
    "key",
    "source",
    "path",
    "url",
    "host",
    "caption",
    "title",
    "artist",
    "license",
    "keywords",
    "width",
    "height",
    "sha256",
    "dup_group",
    "dup_count",
)
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
    caption TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL DEFAULT '',
    artist TEXT NOT NULL DEFAULT '',
    license TEXT NOT NULL DEFAULT '',
    keywords TEXT NOT NULL DEFAULT '',
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    dup_group INTEGER,
    dup_count INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS items_sha256 ON items(sha256);
CREATE INDEX IF NOT EXISTS items_host ON items(host);
CREATE TABLE IF NOT EXISTS thumbnails (idx INTEGER PRIMARY KEY, jpeg BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS skipped (
    key TEXT PRIMARY KEY, source TEXT NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS build_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# unicode61 folds case and (with remove_diacritics 2) accents, and splits on punctuation, so
# "Zoë O'Brien", "zoe obrien" and "@zoe" all meet the same tokens.
FTS_SCHEMA = f"""
DROP TABLE IF EXISTS items_fts;
CREATE VIRTUAL TABLE items_fts USING fts5(
    {", ".join(FTS_COLUMNS)}, content='items', content_rowid='idx',
    tokenize="unicode61 remove_diacritics 2"
);
INSERT INTO items_fts(items_fts) VALUES('rebuild');
"""


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path)
        conn.executescript(SCHEMA)
    conn.row_factory = sqlite3.Row
    return conn


def get_state(conn: sqlite3.Connection, name: str, default: str = "") -> str:
    row = conn.execute("SELECT value FROM build_state WHERE name = ?", (name,)).fetchone()
    return row["value"] if row else default


def set_state(conn: sqlite3.Connection, name: str, value: str) -> None:
    conn.execute(
        "INSERT INTO build_state(name, value) VALUES(?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def insert_items(conn: sqlite3.Connection, rows: Iterable[dict]) -> None:
    columns = [c for c in ITEM_COLUMNS if c not in ("dup_group", "dup_count")]
    conn.executemany(
        f"INSERT INTO items({', '.join(columns)}) VALUES({', '.join('?' * len(columns))})",
        ([row[c] for c in columns] for row in rows),
    )


def fetch_items(conn: sqlite3.Connection, idxs: Sequence[int]) -> dict[int, sqlite3.Row]:
    """Metadata of many rows in one indexed query (not one query per result)."""
    if not idxs:
        return {}
    rows = conn.execute(
        f"SELECT {', '.join(ITEM_COLUMNS)} FROM items "
        "WHERE idx IN (SELECT value FROM json_each(?))",
        (json.dumps([int(i) for i in idxs]),),
    ).fetchall()
    return {row["idx"]: row for row in rows}
