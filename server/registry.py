"""The opt-out registry: artists' "do not train on this", kept apart from the read-only index.

One SQLite file in WAL mode (by default beside the index directory, so rebuilding the index
never touches it). Opt-outs name items by their stable id and carry the file's sha256 and
perceptual hash, so they survive rebuilds and can be applied to other copies of the data.
Claims are private: the claimant gets a random token once, and only its sha256 is stored.
Every write is committed before the answer and recorded in an append-only audit table.

Every read answers from an index, never by reading the whole registry: a batch check looks
its URLs, hashes and ids up in the ``optouts`` indexes, and a host's domain claims are found
by looking its name and its parent domains up in the ``domains`` index, so neither the number
of opt-outs nor the number of domain claims slows an answer down (scripts/bench_registry.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hibt.errors import RegistryError

# A domain claim not verified within this time lapses: it no longer marks anything, and the
# domain is open to others' claims as before. (A module constant until hibt/config.py has a
# setting for it.)
PENDING_DOMAIN_TTL = timedelta(days=7)

# The registry as version 0 of this code made it. A file is brought up to SCHEMA_VERSION by
# MIGRATIONS, so files written by older versions still open.
BASE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS claims (
        id TEXT PRIMARY KEY,
        token_sha256 TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        contact TEXT NOT NULL DEFAULT '',
        note TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL
    )""",
    # One row per opted-out item for as long as any claim on it stands: claim_id and
    # created_at are its first claimant's; every claimant is in optout_claims.
    """CREATE TABLE IF NOT EXISTS optouts (
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
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS optouts_active ON optouts(item_id) "
    "WHERE withdrawn_at IS NULL",
    """CREATE TABLE IF NOT EXISTS domains (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        domain TEXT NOT NULL,
        claim_id TEXT NOT NULL REFERENCES claims(id),
        challenge TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        created_at TEXT NOT NULL,
        verified_at TEXT,
        withdrawn_at TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        action TEXT NOT NULL,
        claim_id TEXT NOT NULL,
        detail TEXT NOT NULL
    )""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END""",
)

# The lookup indexes, by name (scripts/bench_registry.py drops and remakes them around a bulk
# load). Active rows only, and covering what a lookup returns, so a check reads no table row.
INDEXES = {
    "optouts_url_active": "CREATE INDEX IF NOT EXISTS optouts_url_active "
    "ON optouts(url, status) WHERE withdrawn_at IS NULL",
    "optouts_sha256_active": "CREATE INDEX IF NOT EXISTS optouts_sha256_active "
    "ON optouts(sha256, status) WHERE withdrawn_at IS NULL",
    "optout_claims_active": "CREATE INDEX IF NOT EXISTS optout_claims_active "
    "ON optout_claims(optout) WHERE withdrawn_at IS NULL",
    # Looked up by name (a host and its parent domains), never scanned.
    "domains_open": "CREATE INDEX IF NOT EXISTS domains_open "
    "ON domains(domain, status, created_at) WHERE withdrawn_at IS NULL",
    # The first claim verified wins: at most one verified claim per domain.
    "domains_verified": "CREATE UNIQUE INDEX IF NOT EXISTS domains_verified "
    "ON domains(domain) WHERE withdrawn_at IS NULL AND status = 'verified'",
    "domains_claim": "CREATE INDEX IF NOT EXISTS domains_claim ON domains(claim_id)",
}

# Version 1: every claimant's claim on an item is recorded (optout_claims), not only the
# first one's; several pending claims may wait on one domain; indexes for lookups by name.
MIGRATION_1 = (
    # Each claim on each item, in the order the claim listed them (position).
    """CREATE TABLE IF NOT EXISTS optout_claims (
        claim_id TEXT NOT NULL REFERENCES claims(id),
        position INTEGER NOT NULL,
        optout INTEGER NOT NULL REFERENCES optouts(seq),
        withdrawn_at TEXT,
        PRIMARY KEY (claim_id, position)
    ) WITHOUT ROWID""",
    # Until now each item row held its one claimant.
    "INSERT INTO optout_claims(claim_id, position, optout, withdrawn_at) "
    "SELECT claim_id, seq, seq, withdrawn_at FROM optouts",
    "DROP INDEX IF EXISTS optouts_url",
    "DROP INDEX IF EXISTS optouts_sha256",
    "DROP INDEX IF EXISTS domains_active",  # one open claim per domain: squatters blocked owners
    *INDEXES.values(),
)
MIGRATIONS = (MIGRATION_1,)
SCHEMA_VERSION = len(MIGRATIONS)

EXPORT_ITEM_COLUMNS = "item_id, dataset, source, url, sha256, phash, status, created_at"
# A domain claim that counts: verified, or (when asked for) pending and not yet lapsed.
OPEN_CLAIM = "withdrawn_at IS NULL AND (status = 'verified' OR (:pending AND created_at > :cutoff))"
VERIFIED_CLAIM = "withdrawn_at IS NULL AND status = 'verified'"  # read from domains_verified
IN_LIST = "IN (SELECT value FROM json_each(?))"  # one bound JSON array, any length
# A domain's claims in one row (GROUP BY domain): verified when one of them is, dated by that
# claim, else by the first pending one.
DOMAIN_SUMMARY = (
    "domain, CASE WHEN max(status = 'verified') THEN 'verified' ELSE 'pending' END, "
    "coalesce(max(CASE WHEN status = 'verified' THEN created_at END), min(created_at))"
)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def pending_cutoff() -> str:
    """Pending domain claims made at or before this time have lapsed."""
    return (datetime.now(UTC) - PENDING_DOMAIN_TTL).isoformat(timespec="seconds")


def expires_at(created_at: str) -> str:
    return (datetime.fromisoformat(created_at) + PENDING_DOMAIN_TTL).isoformat(timespec="seconds")


def lapses(claim: dict) -> str | None:
    """When a pending domain claim lapses; None once verified."""
    return expires_at(claim["created_at"]) if claim["status"] == "pending" else None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def connect(path: Path, check_same_thread: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=30, isolation_level=None, check_same_thread=check_same_thread
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = FULL")  # committed means on disk
    return conn


class Registry:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.migrate()

    def migrate(self) -> None:
        """Create the registry, or bring an older file up to date in place: in one
        transaction, so a file is either migrated or left as it was. (On a large registry
        the first open after an upgrade takes a while: new indexes are built.)"""
        conn = self.conn()
        conn.execute("PRAGMA journal_mode = WAL")
        if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        with self.write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another opener's?
            if version >= SCHEMA_VERSION:
                return
            for statement in BASE_SCHEMA:
                conn.execute(statement)
            for migration in MIGRATIONS[version:]:
                for statement in migration:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def conn(self) -> sqlite3.Connection:
        """One connection per thread; writers wait for each other instead of failing."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = connect(self.path)
        return conn

    def write(self):
        """A write transaction taken up front, so concurrent writers serialise cleanly."""
        return _Transaction(self.conn())

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A connection of its own for a long read (the export): one consistent view of the
        registry from start to end, usable from whichever thread streams the answer (one
        at a time). Closing it ends the read transaction."""
        conn = connect(self.path, check_same_thread=False)
        conn.row_factory = None  # plain tuples: the export reads every row
        try:
            conn.execute("BEGIN")
            yield conn
        finally:
            conn.close()

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
        """Opt items out under a new claim. An item already opted out stays one record (the
        export lists it once), and this claim on it is recorded too: the item stays opted out
        while any claim on it stands. ``already`` names those items."""
        with self.write() as conn:
            claim_id, token = self.new_claim(conn, name, contact, note)
            added, already = [], []
            for position, item in enumerate(items):
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
                if cursor.rowcount:
                    seq = cursor.lastrowid
                    added.append(item["id"])
                else:
                    seq = conn.execute(
                        "SELECT seq FROM optouts WHERE item_id = ? AND withdrawn_at IS NULL",
                        (item["id"],),
                    ).fetchone()[0]
                    already.append(item["id"])
                conn.execute(
                    "INSERT INTO optout_claims(claim_id, position, optout) VALUES(?, ?, ?)",
                    (claim_id, position, seq),
                )
            self.audit(conn, "register", claim_id, {"added": added, "already": already})
        return {"receipt": claim_id, "token": token, "added": added, "already": already}

    def view(self, claim_id: str, token: str) -> dict:
        claim = self.authorise(claim_id, token)
        conn = self.conn()
        optouts = conn.execute(
            "SELECT o.item_id, o.source, o.url, o.status, c.withdrawn_at "
            "FROM optout_claims c JOIN optouts o ON o.seq = c.optout "
            "WHERE c.claim_id = ? ORDER BY c.position",
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
            "items": [{**r, "created_at": claim["created_at"]} for r in map(dict, optouts)],
            "domains": [{**r, "expires_at": lapses(r)} for r in map(dict, domains)],
        }

    def withdraw(self, claim_id: str, token: str, item_ids: Sequence[str] | None) -> dict:
        """Withdraw this claim (on some items, or on everything). An item stops being opted
        out when no claim on it stands any more."""
        self.authorise(claim_id, token)
        with self.write() as conn:
            stamp = now()
            sql = (
                "UPDATE optout_claims SET withdrawn_at = ? "
                "WHERE claim_id = ? AND withdrawn_at IS NULL"
            )
            args: list = [stamp, claim_id]
            if item_ids is not None:
                sql += (
                    " AND optout IN (SELECT seq FROM optouts "
                    f"WHERE item_id {IN_LIST} AND withdrawn_at IS NULL)"
                )
                args.append(json.dumps(list(item_ids)))
            ended = conn.execute(sql + " RETURNING position, optout", args).fetchall()
            ended.sort(key=lambda r: r["position"])
            seqs = json.dumps([r["optout"] for r in ended])
            conn.execute(
                f"UPDATE optouts SET withdrawn_at = ? WHERE seq {IN_LIST} "
                "AND withdrawn_at IS NULL AND NOT EXISTS (SELECT 1 FROM optout_claims c "
                "WHERE c.optout = optouts.seq AND c.withdrawn_at IS NULL)",
                (stamp, seqs),
            )
            item_of = dict(
                conn.execute(f"SELECT seq, item_id FROM optouts WHERE seq {IN_LIST}", (seqs,))
            )
            domains = []
            if item_ids is None:
                domains = conn.execute(
                    "UPDATE domains SET withdrawn_at = ? "
                    "WHERE claim_id = ? AND withdrawn_at IS NULL "
                    "RETURNING domain",
                    (stamp, claim_id),
                ).fetchall()
            withdrawn = {
                "items": [item_of[r["optout"]] for r in ended],
                "domains": [r[0] for r in domains],
            }
            self.audit(conn, "withdraw", claim_id, withdrawn)
        return withdrawn

    # --- domains -------------------------------------------------------------------------
    def claim_domain(self, domain: str, name: str, contact: str) -> dict:
        """A pending claim on ``domain``. Several may wait on one domain (a squatter's claim
        cannot lock its owner out); once one is verified, the domain takes no more."""
        with self.write() as conn:
            if self.verified_claim(conn, domain):
                raise RegistryError(f"{domain} already has a verified opt-out claim", 409)
            claim_id, token = self.new_claim(conn, name, contact, "")
            challenge = f"hibt-optout-verification={secrets.token_urlsafe(18)}"
            created = now()
            conn.execute(
                "INSERT INTO domains(domain, claim_id, challenge, created_at) VALUES(?, ?, ?, ?)",
                (domain, claim_id, challenge, created),
            )
            self.audit(conn, "claim_domain", claim_id, {"domain": domain})
        return {
            "receipt": claim_id,
            "token": token,
            "domain": domain,
            "challenge": challenge,
            "expires_at": expires_at(created),
        }

    def verified_claim(self, conn: sqlite3.Connection, domain: str) -> str | None:
        """The claim id of the verified claim on ``domain``, if there is one."""
        row = conn.execute(
            "SELECT claim_id FROM domains "
            "WHERE domain = ? AND withdrawn_at IS NULL AND status = 'verified'",
            (domain,),
        ).fetchone()
        return row[0] if row else None

    def domain_claim(self, claim_id: str, token: str, domain: str) -> sqlite3.Row:
        """This receipt's open claim on ``domain``; refused when it lapsed unverified or
        another claim on the domain was verified first."""
        self.authorise(claim_id, token)
        conn = self.conn()
        row = conn.execute(
            "SELECT * FROM domains WHERE claim_id = ? AND domain = ? AND withdrawn_at IS NULL",
            (claim_id, domain),
        ).fetchone()
        if row is None:
            raise RegistryError(f"this receipt has no open claim on {domain}", 404)
        if row["status"] == "pending":
            if row["created_at"] <= pending_cutoff():
                raise RegistryError(
                    f"this claim on {domain} lapsed unverified at {expires_at(row['created_at'])}"
                    "; claim the domain again",
                    410,
                )
            if self.verified_claim(conn, domain):
                raise RegistryError(f"another claim on {domain} was verified first", 409)
        return row

    def mark_verified(self, claim_id: str, domain: str, how: str) -> None:
        with self.write() as conn:
            try:
                done = conn.execute(
                    "UPDATE domains SET status = 'verified', verified_at = ? "
                    "WHERE claim_id = ? AND domain = ? AND withdrawn_at IS NULL "
                    "AND status = 'pending'",
                    (now(), claim_id, domain),
                ).rowcount
            except sqlite3.IntegrityError:  # domains_verified: another claim won the race
                raise RegistryError(f"another claim on {domain} was verified first", 409) from None
            if done:
                self.audit(conn, "verify_domain", claim_id, {"domain": domain, "how": how})

    # --- reading -------------------------------------------------------------------------
    def claimed_domains(
        self, names: Iterable[str], pending: bool, conn: sqlite3.Connection | None = None
    ) -> dict[str, tuple[str, str]]:
        """Which of these domain names have a claim that counts: (status, created_at), as the
        export lists the domain (verified when any claim on it is); pending ones only when
        asked. One indexed lookup per name, however many claims there are."""
        names = sorted(set(names))
        if not names:
            return {}
        rows = (conn or self.conn()).execute(
            f"SELECT {DOMAIN_SUMMARY} FROM domains "
            f"WHERE domain IN (SELECT value FROM json_each(:names)) AND {OPEN_CLAIM} "
            "GROUP BY domain",
            {"names": json.dumps(names), "pending": pending, "cutoff": pending_cutoff()},
        )
        return {domain: (status, created) for domain, status, created in rows}

    def status_of(self, item_ids: Iterable[str], digests: Iterable[str]) -> dict[str, str]:
        """Active opt-out status by item id and by content hash (indexed lookups)."""
        rows = self.conn().execute(
            f"SELECT item_id, sha256, status FROM optouts WHERE item_id {IN_LIST} "
            "AND withdrawn_at IS NULL "
            "UNION ALL "
            f"SELECT item_id, sha256, status FROM optouts WHERE sha256 {IN_LIST} "
            "AND withdrawn_at IS NULL",
            (json.dumps(list(item_ids)), json.dumps([d for d in digests if d])),
        )
        out: dict[str, str] = {}
        for r in rows:
            out[r["item_id"]] = r["status"]
            if r["sha256"]:
                out[f"sha256:{r['sha256']}"] = r["status"]
        return out

    def opted_out_by(self, column: str, values: Sequence[str]) -> dict[str, str]:
        """Status of the active opt-outs whose ``column`` (item_id, url or sha256) is one of
        ``values``: one indexed lookup each, whatever the registry's size."""
        if column not in ("item_id", "url", "sha256"):
            raise ValueError(column)
        values = [v for v in dict.fromkeys(values) if v]
        if not values:
            return {}
        rows = self.conn().execute(
            f"SELECT {column}, status FROM optouts "
            f"WHERE {column} {IN_LIST} AND withdrawn_at IS NULL",
            (json.dumps(values),),
        )
        out: dict[str, str] = {}
        for value, status in rows:
            if out.get(value) != "verified":
                out[value] = status
        return out

    def export_items(self, conn: sqlite3.Connection) -> sqlite3.Cursor:
        """Active item opt-outs, oldest first, as a cursor (never all in memory)."""
        return conn.execute(
            f"SELECT {EXPORT_ITEM_COLUMNS} FROM optouts WHERE withdrawn_at IS NULL ORDER BY seq"
        )

    def export_domains(self, conn: sqlite3.Connection, pending: bool) -> sqlite3.Cursor:
        """One row per claimed domain, in the order first claimed: verified when a claim on
        it is (with that claim's date); pending ones only when asked. Without them only the
        verified claims' index is read, so squatters' pending claims, however many, cost
        the export nothing."""
        which = OPEN_CLAIM if pending else VERIFIED_CLAIM
        return conn.execute(
            f"SELECT {DOMAIN_SUMMARY} FROM domains WHERE {which} GROUP BY domain ORDER BY min(seq)",
            {"pending": pending, "cutoff": pending_cutoff()},
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
