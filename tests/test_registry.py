"""The opt-out registry at scale: lookups that do not read the whole registry, a streamed
export, domain claims looked up by name, and old registry files migrated on open.

Cost is counted in SQLite virtual-machine steps (a progress handler), not in seconds, so the
tests say the same on a busy machine: reading a registry row costs steps, a page read from
the disk does not. scripts/bench_registry.py has the timings."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from hibt.config import Settings
from hibt.server import registry as registry_module
from hibt.server import schemas
from hibt.server.domain_proof import covers, suffixes
from hibt.server.optouts import OptOuts
from hibt.server.registry import SCHEMA_VERSION, Registry, connect, now, token_digest

HOSTS = 200
VERIFIED = ["site7.example", "site5.example"]  # domain claims on the items' own sites
BATCH = 1000  # items per claim, as the API allows


def url(n: int) -> str:
    return f"https://img{n % HOSTS}.site{n % 20}.example/art/{n}.png"


def item(n: int) -> dict:
    return {
        "id": f"item{n:08d}",
        "dataset": "test",
        "source": url(n),
        "url": url(n),
        "sha256": hashlib.sha256(str(n).encode()).hexdigest(),
        "phash": "0" * 64,
    }


def fill(registry: Registry, start: int, stop: int) -> None:
    """Opt items [start, stop) out through the real register(), BATCH per claim."""
    for first in range(start, stop, BATCH):
        registry.register([item(n) for n in range(first, min(first + BATCH, stop))], "", "", "")


def add_pending_claims(registry: Registry, count: int) -> None:
    """Many squatters' pending claims at once (claim_domain() commits each to disk)."""
    stamp = now()
    with registry.write() as conn:
        conn.executemany(
            "INSERT INTO domains(domain, claim_id, challenge, created_at) VALUES(?, ?, ?, ?)",
            ((f"squat{n}.example", "bulk", "x", stamp) for n in range(count)),
        )


def add_verified_claims(registry: Registry, domains: list[str]) -> None:
    stamp = now()
    with registry.write() as conn:
        conn.executemany(
            "INSERT INTO domains(domain, claim_id, challenge, status, created_at, verified_at) "
            "VALUES(?, 'bulk', 'x', 'verified', ?, ?)",
            ((domain, stamp, stamp) for domain in domains),
        )


@contextmanager
def steps(registry: Registry) -> Iterator[list[int]]:
    """Hundreds of SQLite VM steps run on this thread's registry connection meanwhile."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    conn = registry.conn()
    conn.set_progress_handler(tick, 100)
    try:
        yield count
    finally:
        conn.set_progress_handler(None, 100)


@contextmanager
def export_steps() -> Iterator[list[int]]:
    """The same, counted on the connection of its own an export reads from."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    def counted(*args, **kwargs) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_progress_handler(tick, 100)
        return conn

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry_module, "connect", counted)
        yield count


def optouts_over(registry: Registry, **settings) -> OptOuts:
    """OptOuts without an index: check, statuses and the item part of the export need none."""
    return OptOuts(SimpleNamespace(n=0, dataset="test"), registry, Settings(**settings))


def page(numbers: range) -> list[dict]:
    """Rows as the engine passes them to statuses()."""
    rows = [item(n) for n in numbers]
    return [{**r, "host": r["url"].split("/")[2]} for r in rows]


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> dict:
    """The cost of each read over a registry of 1,000 items, then of 30,000, then of 30,000
    with 20,000 pending domain claims and two verified ones (on sites of the registry's
    items that the check and the page do not ask about); and the export's lines."""
    registry = Registry(tmp_path_factory.mktemp("registry") / "r.sqlite")
    optouts = optouts_over(registry)
    urls = [url(n) for n in range(0, 1000, 10)] + [
        f"https://img3.site3.example/new{n}" for n in range(100)
    ]
    check = schemas.CheckRequest(urls=urls, include_pending=True)
    rows = page(range(0, 600, 10))

    def measure() -> dict:
        with steps(registry) as cost:
            answer = optouts.check(check)
        with steps(registry) as page_cost:
            marks = optouts.statuses(rows)
        assert len(answer.opted_out) == 100 and len(marks) == 60
        with export_steps() as export_cost:
            lines = [line for block in optouts.export("jsonl") for line in block.splitlines()]
        return {
            "check": cost[0],
            "statuses": page_cost[0],
            "export": export_cost[0],
            "lines": lines,
        }

    fill(registry, 0, 1000)
    small = measure()
    fill(registry, 1000, 30_000)
    large = measure()
    add_pending_claims(registry, 20_000)
    add_verified_claims(registry, VERIFIED)
    claimed = measure()
    return {"small": small, "large": large, "claimed": claimed, "registry": registry}


def test_check_and_statuses_do_not_read_the_whole_registry(grown) -> None:
    # 29,000 more rows would cost thousands of hundred-step ticks if they were read.
    for read in ("check", "statuses"):
        assert grown["large"][read] <= grown["small"][read] * 1.5 + 10, (read, grown)


def test_domain_claims_are_looked_up_not_scanned(grown) -> None:
    for read in ("check", "statuses"):
        assert grown["claimed"][read] <= grown["large"][read] * 1.5 + 10, (read, grown)


def test_claims_change_neither_the_exports_item_rows_nor_their_cost(grown) -> None:
    """Domain claims are listed after the item opt-outs, never tested row by row: the item
    rows are the same lines, in the same order, whether or not claims cover their URLs, and
    20,000 squatters' pending claims (not exported) cost the export nothing to look past."""
    large, claimed = grown["large"], grown["claimed"]
    assert claimed["lines"][:30_000] == large["lines"]
    domains = [json.loads(line) for line in claimed["lines"][30_000:]]
    assert [(d["kind"], d["domain"], d["status"]) for d in domains] == [
        ("domain", domain, "verified") for domain in VERIFIED
    ]
    assert claimed["export"] <= large["export"] * 1.05 + 10, (large["export"], claimed["export"])


def test_export_streams_in_blocks(grown) -> None:
    """The first block comes before the registry is read; memory stays that of a block."""
    registry = grown["registry"]
    blocks = optouts_over(registry).export("jsonl")
    first = next(blocks)
    assert 500 <= first.count("\n") <= 5000
    tracemalloc.start()
    total = len(first)
    lines = first.count("\n")
    for block in blocks:
        total += len(block)
        lines += block.count("\n")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert lines == 30_002  # the verified claims; pending ones are not exported unless asked
    assert peak < total / 3, (peak, total)  # all of it in memory would be 2-3 times total
    csv_blocks = optouts_over(registry).export("csv")
    assert sum(block.count("\n") for block in csv_blocks) == 30_003


def test_export_is_one_snapshot(tmp_path) -> None:
    """Opt-outs made while an export streams do not tear it."""
    registry = Registry(tmp_path / "r.sqlite")
    fill(registry, 0, 3000)
    blocks = optouts_over(registry).export("jsonl")
    first = next(blocks)
    fill(registry, 3000, 4000)
    rows = [json.loads(line) for block in [first, *blocks] for line in block.splitlines()]
    assert len(rows) == 3000 and len({r["item_id"] for r in rows}) == 3000


def test_suffixes_are_the_covering_names() -> None:
    assert suffixes("a.b.example.com") == ["a.b.example.com", "b.example.com", "example.com", "com"]
    assert suffixes("art.localhost:8000") == ["art.localhost:8000", "localhost:8000"]
    assert suffixes("127.0.0.1:8000") == ["127.0.0.1:8000"] and suffixes("") == []
    assert covers("example.com", "www.example.com") and not covers("example.com", "badexample.com")
    assert not covers("0.0.1", "127.0.0.1")  # an address is not a subdomain


# The registry file as the first release wrote it.
VERSION_0 = """
PRAGMA journal_mode = WAL;
CREATE TABLE claims (id TEXT PRIMARY KEY, token_sha256 TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '', contact TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL);
CREATE TABLE optouts (seq INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL,
    dataset TEXT NOT NULL, source TEXT NOT NULL DEFAULT '', url TEXT NOT NULL DEFAULT '',
    sha256 TEXT NOT NULL DEFAULT '', phash TEXT NOT NULL DEFAULT '',
    claim_id TEXT NOT NULL REFERENCES claims(id), status TEXT NOT NULL DEFAULT 'unverified',
    created_at TEXT NOT NULL, withdrawn_at TEXT);
CREATE UNIQUE INDEX optouts_active ON optouts(item_id) WHERE withdrawn_at IS NULL;
CREATE INDEX optouts_sha256 ON optouts(sha256);
CREATE INDEX optouts_url ON optouts(url);
CREATE TABLE domains (seq INTEGER PRIMARY KEY AUTOINCREMENT, domain TEXT NOT NULL,
    claim_id TEXT NOT NULL REFERENCES claims(id), challenge TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', created_at TEXT NOT NULL, verified_at TEXT,
    withdrawn_at TEXT);
CREATE UNIQUE INDEX domains_active ON domains(domain) WHERE withdrawn_at IS NULL;
CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
    action TEXT NOT NULL, claim_id TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit table is append-only'); END;
"""


def old_registry(path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(VERSION_0)
    stamp = now()
    conn.execute(
        "INSERT INTO claims VALUES('old', ?, 'Ada', '', '', ?)", (token_digest("secret"), stamp)
    )
    for n in range(3):
        conn.execute(
            "INSERT INTO optouts(item_id, dataset, source, url, sha256, phash, claim_id, "
            "created_at, withdrawn_at) VALUES(?, 'test', ?, ?, ?, '', 'old', ?, ?)",
            (item(n)["id"], url(n), url(n), item(n)["sha256"], stamp, stamp if n == 2 else None),
        )
    conn.execute(
        "INSERT INTO domains(domain, claim_id, challenge, created_at) "
        "VALUES('old.example', 'old', 'x', ?)",
        (stamp,),
    )
    conn.commit()
    conn.close()


def test_an_old_registry_is_migrated_in_place(tmp_path) -> None:
    path = tmp_path / "old.sqlite"
    old_registry(path)
    registry = Registry(path)
    conn = registry.conn()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    view = registry.view("old", "secret")
    assert [(i["item_id"], i["withdrawn_at"] is None) for i in view["items"]] == [
        (item(0)["id"], True),
        (item(1)["id"], True),
        (item(2)["id"], False),
    ]
    assert [d["domain"] for d in view["domains"]] == ["old.example"]
    # What version 0 could not do: a second claimant, and a second pending domain claim.
    second = registry.register([item(0)], "Bo", "", "")
    assert second["already"] == [item(0)["id"]]
    registry.withdraw("old", "secret", None)
    still = registry.opted_out_by("item_id", [item(0)["id"], item(1)["id"]])
    assert still == {item(0)["id"]: "unverified"}
    assert registry.claim_domain("old.example", "", "")["domain"] == "old.example"
    Registry(path)  # opening again leaves it be
    assert conn.execute("SELECT count(*) FROM optout_claims").fetchone()[0] == 4


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path, monkeypatch) -> None:
    path = tmp_path / "old.sqlite"
    old_registry(path)
    broken = (*registry_module.MIGRATION_1, "THIS IS NOT SQL")
    monkeypatch.setattr(registry_module, "MIGRATIONS", (broken,))
    with pytest.raises(sqlite3.OperationalError):
        Registry(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "optout_claims" not in tables and {"optouts_url", "domains_active"} <= tables


def test_url_host_is_host_of() -> None:
    """The export's cached host parsing answers as records.host_of does."""
    from hibt.indexer.records import host_of
    from hibt.server.optouts import url_host

    for u in (
        "https://Example.COM/a/b.png",
        "http://art.localhost:8000/x",
        "https://user:pw@host.example:443/x?y=1",
        "https://host.example?q=a/b",
        "  https://spaced.example/x",
        "HTTPS://UPPER.example",
        "ftp://files.example/x",
        "https://bad.example:99999/x",
        "not a url",
        "",
    ):
        assert url_host(u) == host_of(u), u
