"""The opt-out registry, through the API and through the real server."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from hibt.indexer.build import build_index
from hibt.server import optouts as optouts_module
from hibt.server.app import open_app
from hibt.server.optouts import EXPORT_FIELDS, registry_path
from hibt.server.registry import PENDING_DOMAIN_TTL
from scripts.serving import free_port
from tests.conftest import serving, tiny_settings
from tests.datagen import drawing, save


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A web site on loopback whose owner can publish a verification file."""
    root = tmp_path_factory.mktemp("site")
    (root / ".well-known").mkdir()
    port = free_port()
    server = ThreadingHTTPServer(
        ("127.0.0.1", port), partial(SimpleHTTPRequestHandler, directory=str(root))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, port
    server.shutdown()


@pytest.fixture(scope="module")
def web_index(tmp_path_factory, site, embedder):
    """Items whose URLs live on the loopback site, on a subdomain of it, and elsewhere."""
    _, port = site
    root = tmp_path_factory.mktemp("web-dataset")
    hosts = [f"localhost:{port}", f"art.localhost:{port}", f"127.0.0.1:{port}", "example.com"]
    rows = []
    for i in range(8):
        save(drawing(100 + i), root / f"w{i}.png")
        rows.append(
            {
                "file_name": f"w{i}.png",
                "caption": f"web drawing {i}",
                "url": f"http://{hosts[i % 4]}/art/w{i}.png",
            }
        )
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path_factory.mktemp("web-indexes") / "index"
    build_index(root, out, embedder, tiny_settings())
    return root, out


def make_client(index_dir: Path, embedder, **settings) -> TestClient:
    config = tiny_settings(**{"verify_allow_private": True, "writes_per_minute": 1000, **settings})
    return TestClient(open_app(index_dir, config, embedder))


@pytest.fixture
def client(built, embedder, tmp_path):
    registry = tmp_path / "registry.sqlite"
    yield make_client(built.index_dir, embedder, registry=str(registry))


def ids_for(client: TestClient, query: str, n: int) -> list[str]:
    body = client.get("/api/search", params={"q": query, "k": n}).json()
    return [r["id"] for r in body["results"][:n]]


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_register_view_withdraw(client) -> None:
    ids = ids_for(client, "Jan Kowalski", 3)
    receipt = client.post("/api/optouts", json={"item_ids": ids, "name": "Jan", "note": "mine"})
    assert receipt.status_code == 201
    body = receipt.json()
    assert body["added"] == ids and body["status"] == "unverified"
    assert body["manage_url"].endswith(f"receipt={body['receipt']}&token={body['token']}")

    marked = client.get("/api/search", params={"q": "Jan Kowalski", "k": 10}).json()["results"]
    assert [r["opt_out"] for r in marked if r["id"] in ids] == ["unverified"] * 3
    assert all(r["opt_out"] is None for r in marked if r["id"] not in ids)

    view = client.get(f"/api/optouts/{body['receipt']}", headers=auth(body["token"])).json()
    assert [i["item_id"] for i in view["items"]] == ids and view["note"] == "mine"

    gone = client.post(
        f"/api/optouts/{body['receipt']}/withdraw",
        json={"item_ids": ids[:1]},
        headers=auth(body["token"]),
    ).json()
    assert gone["items"] == ids[:1]
    after = client.get("/api/search", params={"q": "Jan Kowalski", "k": 10}).json()["results"]
    assert {r["id"] for r in after if r["opt_out"]} == set(ids[1:])


def test_wrong_or_missing_token_is_refused(client) -> None:
    body = client.post("/api/optouts", json={"item_ids": ids_for(client, "owl", 1)}).json()
    for headers, status in ((auth("not-the-token"), 403), ({}, 401), (auth(""), 401)):
        assert client.get(f"/api/optouts/{body['receipt']}", headers=headers).status_code == status
        withdraw = client.post(f"/api/optouts/{body['receipt']}/withdraw", json={}, headers=headers)
        assert withdraw.status_code == status
    assert client.get("/api/optouts/nope", headers=auth(body["token"])).status_code == 403


def test_only_token_hashes_are_stored(client, tmp_path) -> None:
    body = client.post("/api/optouts", json={"item_ids": ids_for(client, "owl", 1)}).json()
    raw = (tmp_path / "registry.sqlite").read_bytes()
    assert body["token"].encode() not in raw


def test_idempotent(client) -> None:
    ids = ids_for(client, "violin", 2)
    first = client.post("/api/optouts", json={"item_ids": ids}).json()
    second = client.post("/api/optouts", json={"item_ids": ids + ids}).json()
    assert first["added"] == ids and second["added"] == [] and second["already"] == ids
    export = client.get("/api/optouts/export").text.splitlines()
    assert sorted(json.loads(line)["item_id"] for line in export) == sorted(ids)


def test_bad_requests(client) -> None:
    assert client.post("/api/optouts", json={"item_ids": []}).status_code == 422
    assert client.post("/api/optouts", json={"item_ids": ["nope"]}).status_code == 404
    assert client.post("/api/optouts", json={"item_ids": ["x"] * 1001}).status_code in (404, 422)
    assert (
        client.post("/api/optouts", json={"item_ids": ["a"], "note": "x" * 3000}).status_code == 422
    )


def test_export_round_trip_and_batch_check(client, built) -> None:
    ids = ids_for(client, "Mira Tanaka", 4)
    client.post("/api/optouts", json={"item_ids": ids})
    lines = [
        json.loads(x) for x in client.get("/api/optouts/export?format=jsonl").text.splitlines()
    ]
    assert {r["item_id"] for r in lines} == set(ids)
    assert all(
        len(r["sha256"]) == 64 and len(r["phash"]) == 64 and r["status"] == "unverified"
        for r in lines
    )
    table = list(csv.DictReader(io.StringIO(client.get("/api/optouts/export?format=csv").text)))
    assert [r["item_id"] for r in table] == [r["item_id"] for r in lines]

    conn = sqlite3.connect(built.index_dir / "metadata.sqlite")
    digest = conn.execute("SELECT sha256 FROM items WHERE id = ?", (ids[0],)).fetchone()[0]
    check = client.post(
        "/api/optouts/check",
        json={
            "ids": [ids[1], "unknown"],
            "sha256": [digest, "0" * 64],
            "urls": ["https://nowhere.example/x"],
        },
    ).json()
    assert {(h["query"], h["by"]) for h in check["opted_out"]} == {
        (ids[1], "id"),
        (digest, "sha256"),
    }


def test_rate_limit_on_writes(built, embedder, tmp_path) -> None:
    config = tiny_settings(writes_per_minute=3, registry=str(tmp_path / "r.sqlite"))
    app = TestClient(open_app(built.index_dir, config, embedder))
    ids = ids_for(app, "owl", 1)
    statuses = [app.post("/api/optouts", json={"item_ids": ids}).status_code for _ in range(4)]
    assert statuses == [201, 201, 201, 429]


def test_hiding_takes_effect_at_once(built, embedder, tmp_path) -> None:
    client = make_client(
        built.index_dir, embedder, registry=str(tmp_path / "r.sqlite"), hide_opted_out=True
    )
    ids = ids_for(client, "Zoë O'Brien", 2)
    client.post("/api/optouts", json={"item_ids": ids})
    shown = {
        r["id"]
        for r in client.get("/api/search", params={"q": "Zoë O'Brien", "k": 60}).json()["results"]
    }
    assert not shown & set(ids)


def test_audit_is_append_only(client, tmp_path) -> None:
    client.post("/api/optouts", json={"item_ids": ids_for(client, "owl", 1)})
    conn = sqlite3.connect(tmp_path / "registry.sqlite")
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 1
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM audit")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE audit SET action = 'x'")


def test_domain_opt_out_with_proof(site, web_index, embedder, tmp_path) -> None:
    root, port = site
    client = make_client(web_index[1], embedder, registry=str(tmp_path / "r.sqlite"))
    claim = client.post("/api/domains", json={"domain": f"http://LOCALHOST:{port}/any/path"}).json()
    domain = f"localhost:{port}"
    assert claim["domain"] == domain and claim["status"] == "pending"
    # A pending claim locks nobody out: a squatter's claim cannot stop the owner's.
    rival = client.post("/api/domains", json={"domain": domain})
    assert rival.status_code == 201 and rival.json()["receipt"] != claim["receipt"]

    results = client.get("/api/search", params={"q": "web drawing", "k": 20}).json()["results"]
    pending = {r["url"] for r in results if r["opt_out"] == "pending"}
    assert pending and all(f"localhost:{port}" in u for u in pending)

    verify = partial(
        client.post,
        f"/api/domains/{domain}/verify",
        json={"receipt": claim["receipt"]},
        headers=auth(claim["token"]),
    )
    failed = verify()
    assert failed.status_code == 422 and "could not fetch" in failed.json()["detail"]
    (root / ".well-known" / "hibt-optout.txt").write_text(f"{claim['challenge']}\n")
    assert verify().json()["status"] == "verified"
    # The first claim verified wins: the rival's cannot be verified, and no new claim is taken.
    rival_verify = client.post(
        f"/api/domains/{domain}/verify",
        json={"receipt": rival.json()["receipt"]},
        headers=auth(rival.json()["token"]),
    )
    assert rival_verify.status_code == 409
    assert client.post("/api/domains", json={"domain": domain}).status_code == 409

    results = client.get("/api/search", params={"q": "web drawing", "k": 20}).json()["results"]
    covered = {r["url"] for r in results if r["opt_out"] == "verified"}
    expected = {
        r["url"]
        for r in results
        if f"//localhost:{port}/" in r["url"] or f"//art.localhost:{port}/" in r["url"]
    }
    assert covered == expected and len(expected) == 4  # the domain and its subdomain only
    check = client.post(
        "/api/optouts/check",
        json={
            "urls": [f"http://art.localhost:{port}/new.png", f"http://127.0.0.1:{port}/art/w2.png"]
        },
    ).json()
    assert [h["by"] for h in check["opted_out"]] == ["domain"]
    kinds = [json.loads(x)["kind"] for x in client.get("/api/optouts/export").text.splitlines()]
    assert kinds.count("domain") == 1 and kinds.count("domain_item") == 4


def test_domain_check_refuses_private_addresses_and_redirects(
    site, web_index, embedder, tmp_path
) -> None:
    _, port = site
    config = tiny_settings(registry=str(tmp_path / "a.sqlite"))  # private addresses refused
    strict = TestClient(open_app(web_index[1], config, embedder))
    claim = strict.post("/api/domains", json={"domain": f"localhost:{port}"}).json()
    refused = strict.post(
        f"/api/domains/localhost:{port}/verify",
        json={"receipt": claim["receipt"]},
        headers=auth(claim["token"]),
    )
    assert refused.status_code == 422 and "not public" in refused.json()["detail"]

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://evil.example/steal")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    redirect_port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", redirect_port), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = make_client(web_index[1], embedder, registry=str(tmp_path / "b.sqlite"))
    claim = client.post("/api/domains", json={"domain": f"localhost:{redirect_port}"}).json()
    answer = client.post(
        f"/api/domains/localhost:{redirect_port}/verify",
        json={"receipt": claim["receipt"]},
        headers=auth(claim["token"]),
    )
    server.shutdown()
    assert answer.status_code == 422 and "redirects to evil.example" in answer.json()["detail"]


def test_restart_and_rebuild_keep_opt_outs(dataset, embedder, tmp_path) -> None:
    index_dir = tmp_path / "index"
    build_index(dataset[0], index_dir, embedder, tiny_settings())
    with serving(index_dir) as base:
        ids = [
            r["id"]
            for r in httpx.get(f"{base}/api/search", params={"q": "owl", "k": 2}).json()["results"]
        ]
        receipt = httpx.post(f"{base}/api/optouts", json={"item_ids": ids}).json()
    assert registry_path(index_dir, tiny_settings()).exists()
    build_index(dataset[0], index_dir, embedder, tiny_settings())  # rebuilt from the same data
    with serving(index_dir) as base:
        view = httpx.get(
            f"{base}/api/optouts/{receipt['receipt']}", headers=auth(receipt["token"])
        ).json()
        assert [i["item_id"] for i in view["items"]] == ids
        results = httpx.get(f"{base}/api/search", params={"q": "owl", "k": 5}).json()["results"]
        assert {r["id"] for r in results if r["opt_out"] == "unverified"} == set(ids)


def test_fifty_parallel_opt_outs_through_the_real_server(built, dataset, tmp_path) -> None:
    registry = tmp_path / "parallel.sqlite"
    with serving(
        built.index_dir, HIBT_REGISTRY=str(registry), HIBT_WRITES_PER_MINUTE="1000"
    ) as base:
        ids = [
            r["id"]
            for r in httpx.get(
                f"{base}/api/search", params={"q": "x", "k": 50, "collapse": "false"}
            ).json()["results"]
        ]
        wanted = [ids[i % len(ids)] for i in range(50)]  # some items asked for twice

        def opt_out(item_id: str) -> dict:
            """As a polite client: told the server is busy (503), it retries when told to."""
            for _ in range(30):
                answer = httpx.post(f"{base}/api/optouts", json={"item_ids": [item_id]}, timeout=60)
                if answer.status_code != 503:
                    return answer.json()
                time.sleep(float(answer.headers["retry-after"]))
            raise AssertionError("still busy after 30 tries")

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(opt_out, wanted))
    added = [i for a in answers for i in a["added"]]
    assert sorted(added) == sorted(set(wanted))  # each item recorded exactly once
    conn = sqlite3.connect(registry)
    assert conn.execute("SELECT count(*) FROM optouts").fetchone()[0] == len(set(wanted))
    assert conn.execute("SELECT count(*) FROM claims").fetchone()[0] == 50
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 50


def test_every_claimant_keeps_their_opt_out(client) -> None:
    """Two artists opt out the same item: each claim is recorded, and the item stays opted
    out until the last of them is withdrawn."""
    ids = ids_for(client, "Mira Tanaka", 2)
    first = client.post("/api/optouts", json={"item_ids": ids[:1], "name": "A"}).json()
    second = client.post("/api/optouts", json={"item_ids": ids, "name": "B"}).json()
    assert second["added"] == ids[1:] and second["already"] == ids[:1]
    view = client.get(f"/api/optouts/{second['receipt']}", headers=auth(second["token"])).json()
    assert [i["item_id"] for i in view["items"]] == ids

    gone = client.post(
        f"/api/optouts/{first['receipt']}/withdraw", json={}, headers=auth(first["token"])
    ).json()
    assert gone["items"] == ids[:1]
    results = client.get("/api/search", params={"q": "Mira Tanaka", "k": 20}).json()["results"]
    assert {r["id"]: r["opt_out"] for r in results if r["id"] in ids} == dict.fromkeys(
        ids, "unverified"
    )
    check = client.post("/api/optouts/check", json={"ids": ids}).json()
    assert [h["query"] for h in check["opted_out"]] == ids
    view = client.get(f"/api/optouts/{second['receipt']}", headers=auth(second["token"])).json()
    assert [(i["item_id"], i["withdrawn_at"]) for i in view["items"]] == [(i, None) for i in ids]
    view = client.get(f"/api/optouts/{first['receipt']}", headers=auth(first["token"])).json()
    assert view["items"][0]["withdrawn_at"] is not None
    export = client.get("/api/optouts/export").text.splitlines()
    assert sorted(json.loads(line)["item_id"] for line in export) == sorted(ids)

    client.post(
        f"/api/optouts/{second['receipt']}/withdraw",
        json={"item_ids": ids[:1]},
        headers=auth(second["token"]),
    )
    check = client.post("/api/optouts/check", json={"ids": ids}).json()
    assert [h["query"] for h in check["opted_out"]] == ids[1:]
    again = client.post("/api/optouts", json={"item_ids": ids[:1], "name": "C"}).json()
    assert again["added"] == ids[:1]  # opted out afresh once no claim stood


def test_pending_claims_are_not_opt_outs_for_builders(site, web_index, embedder, tmp_path) -> None:
    _, port = site
    client = make_client(web_index[1], embedder, registry=str(tmp_path / "r.sqlite"))
    client.post("/api/domains", json={"domain": f"localhost:{port}"})
    urls = {"urls": [f"http://localhost:{port}/art/w0.png", f"http://art.localhost:{port}/x.png"]}
    assert client.post("/api/optouts/check", json=urls).json()["opted_out"] == []
    asked = client.post("/api/optouts/check", json={**urls, "include_pending": True}).json()
    assert [(h["by"], h["status"]) for h in asked["opted_out"]] == [("domain", "pending")] * 2
    assert client.get("/api/optouts/export").text == ""
    assert client.get("/api/optouts/export?format=csv").text.splitlines() == [
        ",".join(EXPORT_FIELDS)
    ]
    rows = [
        json.loads(line)
        for line in client.get("/api/optouts/export?include_pending=true").text.splitlines()
    ]
    assert [r["kind"] for r in rows] == ["domain"] + ["domain_item"] * 4
    assert {r["status"] for r in rows} == {"pending"}
    # Nor may one claim a whole top-level domain, marking all its items pending meanwhile.
    assert client.post("/api/domains", json={"domain": "com"}).status_code == 422


def test_pending_domain_claims_lapse(site, web_index, embedder, tmp_path) -> None:
    """A claim never verified lapses after PENDING_DOMAIN_TTL: it marks nothing any more,
    cannot be verified, and the domain is anyone's to claim."""
    root, port = site
    client = make_client(web_index[1], embedder, registry=str(tmp_path / "r.sqlite"))
    domain = f"localhost:{port}"
    squat = client.post("/api/domains", json={"domain": domain}).json()
    lapses = datetime.fromisoformat(squat["expires_at"]) - datetime.now(UTC)
    assert abs(lapses - PENDING_DOMAIN_TTL) < timedelta(minutes=1)

    def marks() -> set[str | None]:
        results = client.get("/api/search", params={"q": "web drawing", "k": 20}).json()
        return {r["opt_out"] for r in results["results"]}

    assert "pending" in marks()
    week_ago = (datetime.now(UTC) - PENDING_DOMAIN_TTL).isoformat(timespec="seconds")
    with sqlite3.connect(tmp_path / "r.sqlite") as conn:
        conn.execute("UPDATE domains SET created_at = ?", (week_ago,))
    conn.close()
    assert marks() == {None}
    check = {"urls": [f"http://localhost:{port}/art/w0.png"], "include_pending": True}
    assert client.post("/api/optouts/check", json=check).json()["opted_out"] == []
    assert client.get("/api/optouts/export?include_pending=true").text == ""
    (root / ".well-known" / "hibt-optout.txt").write_text(f"{squat['challenge']}\n")
    late = client.post(
        f"/api/domains/{domain}/verify",
        json={"receipt": squat["receipt"]},
        headers=auth(squat["token"]),
    )
    assert late.status_code == 410 and "lapsed" in late.json()["detail"]
    view = client.get(f"/api/optouts/{squat['receipt']}", headers=auth(squat["token"])).json()
    assert view["domains"][0]["expires_at"] <= datetime.now(UTC).isoformat()
    owner = client.post("/api/domains", json={"domain": domain}).json()
    (root / ".well-known" / "hibt-optout.txt").write_text(f"{owner['challenge']}\n")
    verified = client.post(
        f"/api/domains/{domain}/verify",
        json={"receipt": owner["receipt"]},
        headers=auth(owner["token"]),
    )
    assert verified.json()["status"] == "verified"
    assert marks() >= {"verified"}
    (root / ".well-known" / "hibt-optout.txt").unlink()


@pytest.mark.parametrize("per_claim_rows", [1, 1000], ids=["claim-by-claim", "one-pass"])
def test_export_lists_each_claimed_item_once(
    site, web_index, embedder, tmp_path, monkeypatch, per_claim_rows
) -> None:
    """A claim's items are found by its range of the site index, or in one pass over the
    index when claims are many; either way each item once, under the claim that decides it
    (the most specific one here: all are pending)."""
    monkeypatch.setattr(optouts_module, "PER_CLAIM_ROWS", per_claim_rows)
    _, port = site
    client = make_client(web_index[1], embedder, registry=str(tmp_path / "r.sqlite"))
    claims = [f"localhost:{port}", f"art.localhost:{port}", f"127.0.0.1:{port}"]
    for domain in claims:
        assert client.post("/api/domains", json={"domain": domain}).status_code == 201
    lines = client.get("/api/optouts/export?include_pending=true").text.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["domain"] for r in rows if r["kind"] == "domain"] == claims
    found = sorted((r["url"].rsplit("/", 1)[1], r["domain"]) for r in rows[3:])
    assert found == sorted((f"w{i}.png", claims[i % 4]) for i in range(8) if i % 4 < 3), found
