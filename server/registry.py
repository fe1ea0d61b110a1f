"""The opt-out registry: artists' "do not train on this", kept apart from the read-only index.

One SQLite file in WAL mode (by default beside the index directory, so rebuilding the index
never touches it). Opt-outs name items by their stable id and carry the file's sha256 and
perceptual hash, so they survive rebuilds and can be applied to other copies of the data.
Claims are private: the claimant gets a random token once, and only its sha256 is stored.
Every write is committed before the answer and recorded in an append-only audit table.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from hibt.errors import RegistryError

SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS claims (
    id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    contact TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS optouts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    dataset TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL DEFAULT '',
    phash TEXT NOT NULL DEFAULT '',
    claim_id TEXT NOT NULL REFERENCES claims(id),
    status TEXT NOT NULL DEFAULT 'unverified',
    created_at TEXT NOT NULL,
    withdrawn_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS optouts_active ON optouts(item_id) WHERE withdrawn_at IS NULL;
CREATE INDEX IF NOT EXISTS optouts_sha256 ON optouts(sha256);
CREATE INDEX IF NOT EXISTS optouts_url ON optouts(url);
CREATE TABLE IF NOT EXISTS domains (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    domain TEXT NOT NULL,
    claim_id TEXT NOT NULL REFERENCES claims(id),
    challenge TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    created_at TEXT NOT NULL,
    verified_at TEXT,
    withdrawn_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS domains_active ON domains(domain) WHERE withdrawn_at IS NULL;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    claim_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn().executescript(SCHEMA)

    def conn(self) -> sqlite3.Connection:
        """One connection per thread; writers wait for each other instead of failing."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA synchronous = FULL")  # committed means on disk
            self.local.conn = conn
        return conn

    def write(self):
        """A write transaction taken up front, so concurrent writers serialise cleanly."""
        return _Transaction(self.conn())

    # --- claims --------------------------------------------------------------------------
    def new_claim(
        self, conn: sqlite3.Connection, name: str, contact: str, note: str
    ) -> tuple[str, str]:
        claim_id = secrets.token_urlsafe(9)
        token = secrets.token_urlsafe(24)
        conn.execute(
            "INSERT INTO claims(id, token_sha256, name, contact, note, created_at) "
            "VALUES(?, ?, ?, ?, ?, ?)",
            (claim_id, token_digest(token), name, contact, note, now()),
        )
        return claim_id, token

    def authorise(self, claim_id: str, token: str) -> sqlite3.Row:
        row = self.conn().execute("SELECT * FROM claims WHERE id = ?", (claim_id,)).fetchone()
        expected = row["token_sha256"] if row else token_digest(secrets.token_urlsafe(24))
        if not hmac.compare_digest(expected, token_digest(token or "")) or row is None:
            raise RegistryError("unknown receipt or wrong token", 403)
        return row

    def audit(self, conn: sqlite3.Connection, action: str, claim_id: str, detail: dict) -> None:
        conn.execute(
            "INSERT INTO audit(at, action, claim_id, detail) VALUES(?, ?, ?, ?)",
            (now(), action, claim_id, json.dumps(detail, sort_keys=True)),
        )

    # --- item opt-outs -------------------------------------------------------------------
    def register(self, items: Sequence[dict], name: str, contact: str, note: str) -> dict:
        """Opt items out; an item already opted out stays one record (idempotent)."""
        with self.write() as conn:
            claim_id, token = self.new_claim(conn, name, contact, note)
            added, already = [], []
            for item in items:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO optouts(item_id, dataset, source, url, sha256, phash, "
                    "claim_id, created_at) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item["id"],
                        item["dataset"],
                        item["source"],
                        item["url"],
                        item["sha256"],
                        item["phash"],
                        claim_id,
                        now(),
                    ),
                )
                (added if cursor.rowcount else already).append(item["id"])
            self.audit(conn, "register", claim_id, {"added": added, "already": already})
        return {"receipt": claim_id, "token": token, "added": added, "already": already}

    def view(self, claim_id: str, token: str) -> dict:
        claim = self.authorise(claim_id, token)
        conn = self.conn()
        optouts = conn.execute(
            "SELECT item_id, source, url, status, created_at, withdrawn_at FROM optouts "
            "WHERE claim_id = ? ORDER BY seq",
            (claim_id,),
        ).fetchall()
        domains = conn.execute(
            "SELECT domain, status, challenge, created_at, verified_at, withdrawn_at FROM domains "
            "WHERE claim_id = ? ORDER BY seq",
            (claim_id,),
        ).fetchall()
        return {
            "receipt": claim_id,
            "name": claim["name"],
            "contact": claim["contact"],
            "note": claim["note"],
            "created_at": claim["created_at"],
            "items": [dict(r) for r in optouts],
            "domains": [dict(r) for r in domains],
        }

    def withdraw(self, claim_id: str, token: str, item_ids: Sequence[str] | None) -> dict:
        self.authorise(claim_id, token)
        with self.write() as conn:
            sql = "UPDATE optouts SET withdrawn_at = ? WHERE claim_id = ? AND withdrawn_at IS NULL"
            args: list = [now(), claim_id]
            if item_ids is not None:
                sql += " AND item_id IN (SELECT value FROM json_each(?))"
                args.append(json.dumps(list(item_ids)))
            items = conn.execute(sql + " RETURNING item_id", args).fetchall()
            domains = []
            if item_ids is None:
                domains = conn.execute(
                    "UPDATE domains SET withdrawn_at = ? "
                    "WHERE claim_id = ? AND withdrawn_at IS NULL "
                    "RETURNING domain",
                    (now(), claim_id),
                ).fetchall()
            withdrawn = {"items": [r[0] for r in items], "domains": [r[0] for r in domains]}
            self.audit(conn, "withdraw", claim_id, withdrawn)
        return withdrawn

    # --- domains -------------------------------------------------------------------------
    def claim_domain(self, domain: str, name: str, contact: str) -> dict:
        with self.write() as conn:
            existing = conn.execute(
                "SELECT status FROM domains WHERE domain = ? AND withdrawn_at IS NULL", (domain,)
            ).fetchone()
            if existing:
                raise RegistryError(f"{domain} already has a {existing[0]} opt-out claim", 409)
            claim_id, token = self.new_claim(conn, name, contact, "")
            challenge = f"hibt-optout-verification={secrets.token_urlsafe(18)}"
            conn.execute(
                "INSERT INTO domains(domain, claim_id, challenge, created_at) VALUES(?, ?, ?, ?)",
                (domain, claim_id, challenge, now()),
            )
            self.audit(conn, "claim_domain", claim_id, {"domain": domain})
        return {"receipt": claim_id, "token": token, "domain": domain, "challenge": challenge}

    def domain_claim(self, claim_id: str, token: str, domain: str) -> sqlite3.Row:
        self.authorise(claim_id, token)
        row = (
            self.conn()
            .execute(
                "SELECT * FROM domains WHERE claim_id = ? AND domain = ? AND withdrawn_at IS NULL",
                (claim_id, domain),
            )
            .fetchone()
        )
        if row is None:
            raise RegistryError(f"this receipt has no open claim on {domain}", 404)
        return row

    def mark_verified(self, claim_id: str, domain: str, how: str) -> None:
        with self.write() as conn:
            conn.execute(
                "UPDATE domains SET status = 'verified', verified_at = ? "
                "WHERE claim_id = ? AND domain = ? AND withdrawn_at IS NULL",
                (now(), claim_id, domain),
            )
            self.audit(conn, "verify_domain", claim_id, {"domain": domain, "how": how})

    # --- reading -------------------------------------------------------------------------
    def active_domains(self) -> dict[str, str]:
        rows = self.conn().execute("SELECT domain, status FROM domains WHERE withdrawn_at IS NULL")
        return {r["domain"]: r["status"] for r in rows}

    def domain_claims(self) -> list[dict]:
        """Active domain claims, oldest first, as the export lists them."""
        rows = self.conn().execute(
            "SELECT domain, status, created_at FROM domains WHERE withdrawn_at IS NULL ORDER BY seq"
        )
        return [dict(r) for r in rows]

    def status_of(self, item_ids: Iterable[str], digests: Iterable[str]) -> dict[str, str]:
        """Active opt-out status by item id and by content hash (one query)."""
        rows = (
            self.conn()
            .execute(
                "SELECT item_id, sha256, status FROM optouts WHERE withdrawn_at IS NULL AND "
                "(item_id IN (SELECT value FROM json_each(?)) "
                "OR sha256 IN (SELECT value FROM json_each(?)))",
                (json.dumps(list(item_ids)), json.dumps([d for d in digests if d])),
            )
            .fetchall()
        )
        out: dict[str, str] = {}
        for r in rows:
            out[r["item_id"]] = r["status"]
            if r["sha256"]:
                out[f"sha256:{r['sha256']}"] = r["status"]
        return out

    def active_items(self) -> list[sqlite3.Row]:
        return (
            self.conn()
            .execute(
                "SELECT item_id, dataset, source, url, sha256, phash, status, created_at "
                "FROM optouts "
                "WHERE withdrawn_at IS NULL ORDER BY seq"
            )
            .fetchall()
        )

    def audit_log(self) -> list[sqlite3.Row]:
        return self.conn().execute("SELECT * FROM audit ORDER BY seq").fetchall()


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
