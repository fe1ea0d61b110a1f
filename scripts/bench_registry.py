"""The opt-out registry at scale: batch checks, result marks, hiding and the export.

Builds (once, kept in --work) a registry file of N item opt-outs through the registry's own
schema, with URLs on a few thousand hosts, BATCH items per claim as the API allows and 1% of
them withdrawn, plus an index of M items on the same hosts (half of them opted out). Then,
each phase in a fresh process so memory is its own, it measures through the real code
(OptOuts over Registry): a 10,000-URL check, statuses() for a page of 60 results,
hidden_among() for 2,000 candidates, and the export (rows/s and peak RSS); then a check and
part of the export over HTTP (FastAPI's TestClient on the real routes). It does so with no
domain claims, then with --claims claims (1% verified, the rest pending, a tenth of those
lapsed), which must leave every figure within about 10%. The two are measured in turn, round
after round (the export: --export-runs each, the best counting), so that other load on the
machine falls on both alike; each figure is also given in CPU time (this process's), which
such load does not inflate.

    python scripts/bench_registry.py                      # N = 200,000: a minute or two
    nice -n 10 python scripts/bench_registry.py --rows 10000000

The generator alone uses synchronous=OFF and no journal, in big transactions with the lookup
indexes made after the load; the file is then left in WAL mode as the server opens it.
Figures are with the file in the OS page cache (it is read just before); a registry larger
than memory would add a disk read per looked-up URL that misses the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent

BATCH = 1000  # items per claim (the API's max_optout_items)
SITES_CLAIMED = 10  # registry sites with a verified claim, and as many with a pending one
COMMIT_EVERY = 1_000_000
STAMP = "2025-01-01T00:00:00+00:00"
TLDS = ("com", "net", "org", "art")
PREFIXES = ("www", "img", "cdn", "art", "media", "static")


# --- the synthetic data ------------------------------------------------------------------
def host(h: int) -> str:
    """Host h of the registry's few thousand: subdomains of sites, several per site."""
    return f"{PREFIXES[h % len(PREFIXES)]}.site{h // len(PREFIXES)}.{TLDS[h % len(TLDS)]}"


def url(i: int, hosts: int) -> str:
    return f"https://{host(i % hosts)}/works/{i:x}.jpg"


def digest(i: int, salt: bytes) -> str:
    return hashlib.blake2b(i.to_bytes(8, "little"), digest_size=32, key=salt).hexdigest()


def item_id(i: int) -> str:
    return f"{i:016x}"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate_registry(path: Path, rows: int, hosts: int) -> float:
    """N opt-outs in the registry's schema (made by Registry itself), loaded in bulk."""
    from hibt.server.registry import Registry

    started = time.perf_counter()
    Registry(path).conn().close()  # the real schema, at the real version
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = OFF")  # the generator only: a crash means start again
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -1000000")
    tables = ("optouts", "optout_claims", "domains", "claims")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        f"AND tbl_name IN ({','.join('?' * len(tables))})",
        tables,
    ).fetchall()
    for name, _ in indexes:  # made again after the load: sorting once beats growing them
        conn.execute(f"DROP INDEX {name}")
    for start in range(0, rows, COMMIT_EVERY):
        stop = min(start + COMMIT_EVERY, rows)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO claims(id, token_sha256, name, contact, note, created_at) "
            "VALUES(?, ?, '', '', '', ?)",
            ((f"bulk{c:09d}", "0" * 64, STAMP) for c in range(start // BATCH, -(-stop // BATCH))),
        )
        conn.executemany(
            "INSERT INTO optouts(seq, item_id, dataset, source, url, sha256, phash, claim_id, "
            "created_at, withdrawn_at) VALUES(?, ?, 'bench', ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    i + 1,
                    item_id(i),
                    u,
                    u,
                    digest(i, b"sha"),
                    digest(i, b"phash"),
                    f"bulk{i // BATCH:09d}",
                    STAMP,
                    STAMP if i % 100 == 99 else None,
                )
                for i in range(start, stop)
                for u in (url(i, hosts),)
            ),
        )
        conn.executemany(
            "INSERT INTO optout_claims(claim_id, position, optout, withdrawn_at) "
            "VALUES(?, ?, ?, ?)",
            (
                (f"bulk{i // BATCH:09d}", i % BATCH, i + 1, STAMP if i % 100 == 99 else None)
                for i in range(start, stop)
            ),
        )
        conn.execute("COMMIT")
        print(f"  {stop:,} rows, {time.perf_counter() - started:.0f} s", flush=True)
    for name, sql in indexes:
        t = time.perf_counter()
        conn.execute(sql)
        print(f"  index {name}: {time.perf_counter() - t:.0f} s", flush=True)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    return time.perf_counter() - started


def generate_index(folder: Path, items: int, rows: int, hosts: int) -> None:
    """An index's metadata (the real Store) of M items on the registry's hosts: even ones
    are opted-out items (same id, URL and hash), odd ones are not in the registry."""
    from hibt.indexer import records
    from hibt.indexer import store as store_module

    folder.mkdir(parents=True, exist_ok=True)
    store = store_module.Store.open(folder / "metadata.sqlite")
    site_of = getattr(records, "site_of", None)  # a column some versions of the index have
    stride = max(1, rows // max(1, items // 2))

    def row(idx: int) -> dict:
        i = idx // 2 * stride
        if idx % 2 or i >= rows:
            i = rows + idx
        u = url(i, hosts)
        values = {c: "" for c in store_module.ITEM_COLUMNS}
        values.update(
            idx=idx,
            id=item_id(i),
            key=f"k{idx}",
            source=u,
            url=u,
            host=records.host_of(u),
            width=512,
            height=512,
            sha256=digest(i, b"sha"),
            path=None,
        )
        if "site" in values and site_of:
            values["site"] = site_of(u)
        return values

    store.insert_items(row(idx) for idx in range(items))
    # The lookup indexes (host, site key) and FTS, made after the load as the builder does.
    (getattr(store, "build_indexes", None) or store.build_name_index)()
    store.commit()
    store.close()


def add_claims(path: Path, args: argparse.Namespace, rng: random.Random) -> None:
    """--claims domain claims, the squatters' kind mostly: pending on names of their own, a
    tenth of them long lapsed; 1% verified. A few of each are on the registry's own sites
    (SITES_CLAIMED), so that checks, marks and the export meet them; the rest only cost
    what claims must not: the time to look past them."""
    from hibt.server.registry import Registry
    from hibt.server.registry import now as registry_now

    old = "2000-01-01T00:00:00+00:00"
    sites = max(1, args.hosts // len(PREFIXES))
    on_sites = rng.sample(range(sites), min(sites, 2 * SITES_CLAIMED))
    registry = Registry(path)
    stamp = registry_now()
    rows = [
        (f"site{n}.{TLDS[n % len(TLDS)]}", status, stamp, stamp if status == "verified" else None)
        for n, status in zip(on_sites, ["verified", "pending"] * SITES_CLAIMED, strict=False)
    ]
    rows += [
        (f"verified{n}.example", "verified", stamp, stamp)
        for n in range(max(0, args.claims // 100 - len(rows) // 2))
    ]
    rows += [
        (f"squat{n}.example", "pending", old if n % 10 == 0 else stamp, None)
        for n in range(max(0, args.claims - len(rows)))
    ]
    with registry.write() as conn:
        conn.execute("DELETE FROM domains")
        conn.executemany(
            "INSERT INTO domains(domain, claim_id, challenge, status, created_at, verified_at) "
            "VALUES(?, 'bulk-domains', 'x', ?, ?, ?)",
            rows,
        )
    registry.conn().close()


def generate(args: argparse.Namespace) -> None:
    """The registry and the index, unless --work has them already."""
    work, path = Path(args.work), registry_file(args)
    if not path.exists():
        print(f"generating {path.name} ...", flush=True)
        try:
            seconds = generate_registry(path, args.rows, args.hosts)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        print(f"generated in {seconds:.0f} s ({args.rows / seconds:,.0f} rows/s)")
    made = work / "index" / "made.json"
    wanted = json.dumps([args.index_items, args.rows, args.hosts])
    if not made.exists() or made.read_text() != wanted:
        (work / "index" / "metadata.sqlite").unlink(missing_ok=True)
        generate_index(work / "index", args.index_items, args.rows, args.hosts)
        made.write_text(wanted)


def drop_claims(path: Path) -> None:
    from hibt.server.registry import Registry

    registry = Registry(path)
    with registry.write() as conn:
        conn.execute("DELETE FROM domains")
    registry.conn().close()


# --- measuring (in a fresh process per phase) ----------------------------------------------
class BenchIndex:
    """What OptOuts asks of an OpenIndex, over the generated metadata: a Store per thread,
    the item count, the dataset name and each item's pHash."""

    def __init__(self, folder: Path, items: int) -> None:
        import numpy as np

        from hibt.indexer.store import Store

        self.directory, self.n, self.dataset = folder, items, "bench"
        self.local = threading.local()
        self.open_store = lambda: Store.open(folder / "metadata.sqlite", readonly=True)
        self.hashes = np.random.default_rng(2).integers(0, 256, (items, 32), dtype=np.uint8)

    def store(self):
        store = getattr(self.local, "store", None)
        if store is None:
            store = self.local.store = self.open_store()
        return store

    def phash_hex(self, idx: int) -> str:
        return bytes(self.hashes[idx]).hex()


def percentiles(times: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times)
    return {
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "n": len(ms),
    }


def check_urls(rng: random.Random, rows: int, hosts: int) -> list[str]:
    """Half opted-out URLs, a quarter new URLs on the registry's hosts (which domain claims
    may cover), a quarter on hosts it has never seen."""
    urls = [url(rng.randrange(rows), hosts) for _ in range(5000)]
    urls += [
        f"https://{host(rng.randrange(hosts))}/new/{rng.getrandbits(48):x}.jpg" for _ in range(2500)
    ]
    urls += [f"https://elsewhere{rng.randrange(10**6)}.net/{n}.png" for n in range(2500)]
    rng.shuffle(urls)
    return urls


def open_optouts(args: argparse.Namespace, **settings):
    from hibt.config import Settings
    from hibt.server.optouts import OptOuts
    from hibt.server.registry import Registry

    index = BenchIndex(Path(args.work) / "index", args.index_items)
    return OptOuts(index, Registry(registry_file(args)), Settings(**settings))


def measure_lookups(args: argparse.Namespace) -> dict:
    """Check, statuses and hidden_among, with no claims and with --claims claims in turn,
    round after round, so that other load on the machine falls on both alike."""
    from hibt.server import schemas

    optouts = open_optouts(args, hide_opted_out=True)
    index, path = optouts.index, registry_file(args)
    rng = random.Random(3)
    rounds = 5
    states = {"plain": lambda: drop_claims(path), "claimed": lambda: add_claims(path, args, rng)}
    names = ("check", "statuses", "hidden")
    times: dict = {state: {name: [] for name in names} for state in states}
    cpu: dict = {state: {name: [] for name in names} for state in states}  # this thread's
    hits: dict = dict.fromkeys(states, 0)
    store = index.store()
    for number in range(rounds):
        for state, arrange in states.items():
            arrange()
            requests = [
                schemas.CheckRequest(urls=check_urls(rng, args.rows, args.hosts))
                for _ in range(-(-args.repeats // rounds) + 1)
            ]
            for n, request in enumerate(requests):
                t, c = time.perf_counter(), time.thread_time()
                answer = optouts.check(request)
                if n:  # the first one warms the connection and the caches
                    times[state]["check"].append(time.perf_counter() - t)
                    cpu[state]["check"].append(time.thread_time() - c)
                    hits[state] += len(answer.opted_out)
            for _ in range(40):
                rows = list(store.items(rng.sample(range(index.n), 60)).values())
                t, c = time.perf_counter(), time.thread_time()
                optouts.statuses(rows)
                times[state]["statuses"].append(time.perf_counter() - t)
                cpu[state]["statuses"].append(time.thread_time() - c)
            for _ in range(10):
                idxs = rng.sample(range(index.n), 2000)
                t, c = time.perf_counter(), time.thread_time()
                optouts.hidden_among(idxs)
                times[state]["hidden"].append(time.perf_counter() - t)
                cpu[state]["hidden"].append(time.thread_time() - c)
        print(f"  round {number + 1} of {rounds}", file=sys.stderr, flush=True)
    drop_claims(path)
    return {
        state: {
            "check_10k_urls": {
                **percentiles(times[state]["check"]),
                "cpu_p50_ms": percentiles(cpu[state]["check"])["p50_ms"],
                "hits_per_check": hits[state] // len(times[state]["check"]),
            },
            "statuses_60": {
                **percentiles(times[state]["statuses"]),
                "cpu_p50_ms": percentiles(cpu[state]["statuses"])["p50_ms"],
            },
            "hidden_among_2000": {
                **percentiles(times[state]["hidden"]),
                "cpu_p50_ms": percentiles(cpu[state]["hidden"])["p50_ms"],
            },
        }
        for state in states
    }


def measure_export(args: argparse.Namespace) -> dict:
    """Both export formats through OptOuts.export, in a process of their own (peak RSS)."""
    optouts = open_optouts(args)
    out: dict = {"rss_before_mb": round(rss_mb(), 1)}
    for kind in args.kinds.split(","):
        t, c = time.perf_counter(), time.process_time()
        lines = size = 0
        items_done = items_cpu = None  # when the item opt-outs are out, the domain rows begin
        for block in optouts.export(kind):
            if items_done is None and any(m in block for m in ('"kind": "domain"', "\ndomain,")):
                items_done, items_cpu = time.perf_counter() - t, time.process_time() - c
            lines += block.count("\n")
            size += len(block)
        seconds, cpu = time.perf_counter() - t, time.process_time() - c
        items = lines - (kind == "csv")
        out[f"export_{kind}"] = {
            "rows": items,
            "seconds": round(seconds, 1),
            "rows_per_s": round(items / seconds),
            "item_rows_per_s": round(args.rows * 0.99 / (items_done or seconds)),
            "rows_per_cpu_s": round(items / cpu),
            "item_rows_per_cpu_s": round(args.rows * 0.99 / (items_cpu or cpu)),
            "claims_cpu_s": round(cpu - (items_cpu or cpu), 2),  # domain rows and their items
            "mb": round(size / 1e6, 1),
        }
    out["rss_peak_mb"] = round(rss_mb(), 1)
    return out


def measure_http(args: argparse.Namespace) -> dict:
    """The check and the export through the real routes (app.add_optout_routes)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from hibt.server.app import add_optout_routes

    optouts = open_optouts(args)
    app = FastAPI()
    add_optout_routes(app, optouts, optouts.settings)
    client = TestClient(app)
    rng = random.Random(4)
    bodies = [json.dumps({"urls": check_urls(rng, args.rows, args.hosts)}) for _ in range(12)]
    times = []
    for n, body in enumerate(bodies):
        t = time.perf_counter()
        answer = client.post(
            "/api/optouts/check", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 200, answer.text
        if n >= 2:
            times.append(time.perf_counter() - t)
    out = {"http_check_10k_urls": percentiles(times)}
    limit = min(args.rows, 1_000_000)
    t = time.perf_counter()
    lines = 0
    with client.stream("GET", "/api/optouts/export") as response:
        for chunk in response.iter_text():
            lines += chunk.count("\n")
            if lines >= limit:
                break
    seconds = time.perf_counter() - t
    out["http_export_jsonl"] = {"rows": lines, "rows_per_s": round(lines / seconds)}
    return out


def registry_file(args: argparse.Namespace) -> Path:
    return Path(args.work) / f"registry-{args.rows}-{args.hosts}.sqlite"


def run_phase(args: argparse.Namespace, phase: str, *more: str) -> dict:
    command = [sys.executable, __file__, *sys.argv[1:], "--phase", phase, *more]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{phase} failed:\n{done.stdout}{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def query_plans(path: Path) -> list[str]:
    """How SQLite answers the check's lookups: each must name an index, none a scan."""
    conn = sqlite3.connect(path)
    plans = []
    for column in ("url", "sha256", "item_id"):
        rows = conn.execute(
            f"EXPLAIN QUERY PLAN SELECT {column}, status FROM optouts "
            f"WHERE {column} IN (SELECT value FROM json_each(?)) AND withdrawn_at IS NULL",
            ("[]",),
        ).fetchall()
        plans.append(f"{column}: " + "; ".join(r[-1] for r in rows))
    rows = conn.execute(
        "EXPLAIN QUERY PLAN SELECT domain, max(status = 'verified') FROM domains WHERE domain IN "
        "(SELECT value FROM json_each(?)) AND withdrawn_at IS NULL AND (status = 'verified' OR "
        "(1 AND created_at > '')) GROUP BY domain",
        ("[]",),
    ).fetchall()
    plans.append("domains: " + "; ".join(r[-1] for r in rows))
    conn.close()
    return plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="item opt-outs (N)")
    parser.add_argument("--hosts", type=int, default=3000)
    parser.add_argument("--index-items", type=int, default=100_000, help="items in the index")
    parser.add_argument("--claims", type=int, default=100_000, help="domain claims, phase 2")
    parser.add_argument("--repeats", type=int, default=30, help="10,000-URL checks per phase")
    parser.add_argument("--work", default=str(ROOT / "data" / "bench-registry"))
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument("--export-runs", type=int, default=3, help="the best one counts")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--kinds", default="jsonl,csv", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        if args.phase == "generate":
            generate(args)
            return
        phases = {"http": measure_http, "lookups": measure_lookups, "export": measure_export}
        result = phases[args.phase](args)
        print(json.dumps(result))
        return

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SQLITE_TMPDIR", str(work))  # index sorts spill here, not to /tmp
    path = registry_file(args)
    print(
        f"CPU: {cpu_model()} ({os.cpu_count()} cores); Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )
    print(
        f"registry: {args.rows:,} item opt-outs on {args.hosts:,} hosts; "
        f"index: {args.index_items:,} items"
    )
    # In a process of its own: the measuring processes are started from this one, and a
    # child's peak RSS (getrusage) starts from its parent's size when it was forked.
    command = [sys.executable, __file__, *sys.argv[1:], "--phase", "generate"]
    subprocess.run(command, check=True)
    size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.name + "-*"))
    print(f"file: {size / 1e9:.2f} GB, {size / args.rows:.0f} bytes per opt-out")
    for plan in query_plans(path):
        print(f"plan {plan}")
    with open(path, "rb") as f:  # into the page cache, as on a server that has been running
        while f.read(1 << 24):
            pass

    claims = f"{args.claims:,} claims"
    print("lookups, with 0 and with", claims, "in turn ...", flush=True)
    lookups = run_phase(args, "lookups")
    print("export ...", flush=True)
    runs: dict = {"plain": [], "claimed": []}
    for number in range(args.export_runs):  # in turn, as the lookups
        for state in runs:
            if state == "plain":
                drop_claims(path)
            else:
                add_claims(path, args, random.Random(5))
            kinds = "jsonl,csv" if number == 0 else "jsonl"
            runs[state].append(run_phase(args, "export", "--kinds", kinds))
    drop_claims(path)
    export = {}
    for state, results in runs.items():
        best = max(results, key=lambda r: r["export_jsonl"]["rows_per_s"])
        export[state] = {**results[0], "export_jsonl": dict(best["export_jsonl"])}
        # CPU time, which other load on the machine inflates far less than wall time: the
        # median over the runs, not the best run's.
        for stat in ("rows_per_cpu_s", "item_rows_per_cpu_s", "claims_cpu_s"):
            runs_cpu = [r["export_jsonl"][stat] for r in results]
            export[state]["export_jsonl"][stat] = round(statistics.median(runs_cpu), 2)
        export[state]["rss_peak_mb"] = max(r["rss_peak_mb"] for r in results)
    http = {} if args.no_http else run_phase(args, "http")
    print(json.dumps({"lookups": lookups, "export": export, "http": http}, indent=1))

    def line(name: str, plain, claimed) -> None:
        if plain > 1000:
            plain, claimed = f"{plain:,.0f}", f"{claimed:,.0f}"
        print(f"{name:34}{plain:>14}{claimed:>18}")

    print()
    line("", "0 claims", claims)
    for key in ("check_10k_urls", "statuses_60", "hidden_among_2000"):
        for stat in ("p50_ms", "p99_ms", "cpu_p50_ms"):
            line(f"{key} {stat}", lookups["plain"][key][stat], lookups["claimed"][key][stat])
    for key in ("export_jsonl", "export_csv"):
        for stat in ("rows_per_s", "item_rows_per_s", "rows_per_cpu_s", "item_rows_per_cpu_s"):
            line(f"{key} {stat}", export["plain"][key][stat], export["claimed"][key][stat])
        line(
            f"{key} claims_cpu_s",
            export["plain"][key]["claims_cpu_s"],
            export["claimed"][key]["claims_cpu_s"],
        )
    line("export peak RSS, MB", export["plain"]["rss_peak_mb"], export["claimed"]["rss_peak_mb"])
    if http:
        print(
            f"HTTP (TestClient): check p50 {http['http_check_10k_urls']['p50_ms']} ms, "
            f"p99 {http['http_check_10k_urls']['p99_ms']} ms; export "
            f"{http['http_export_jsonl']['rows_per_s']:,} rows/s"
        )


if __name__ == "__main__":
    main()
