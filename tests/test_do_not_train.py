"""The Do-Not-Train query API, driven by datadiligence's own SpawningAPI rule over loopback."""

from __future__ import annotations

import pytest
from datadiligence.exceptions import SpawningAIAPIError
from datadiligence.rules import SpawningAPI
from fastapi.testclient import TestClient

from hibt.server.app import open_app
from hibt.server.do_not_train import MAX_URLS, PATH
from tests.conftest import tiny_settings
from tests.loopback import alive, running, static_site


def make_app(index_dir, embedder, tmp_path, **settings):
    config = tiny_settings(
        registry=str(tmp_path / "registry.sqlite"),
        verify_allow_private=True,
        writes_per_minute=1000,
        **settings,
    )
    return open_app(index_dir, config, embedder)


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def registry_state(built, embedder, tmp_path):
    """An app whose registry holds item opt-outs, a verified domain (proved through a
    loopback site) and a pending one; yields (app, opted-out URLs, domain, pending domain)."""
    app = make_app(built.index_dir, embedder, tmp_path)
    client = TestClient(app)
    found = client.get("/api/search", params={"q": "drawing", "k": 20}).json()["results"]
    items = [r for r in found if r["url"]][:3]
    client.post("/api/optouts", json={"item_ids": [r["id"] for r in items]})
    site = tmp_path / "site"
    (site / ".well-known").mkdir(parents=True)
    with static_site(site) as port:
        domain = f"localhost:{port}"
        claim = client.post("/api/domains", json={"domain": domain}).json()
        (site / ".well-known" / "hibt-optout.txt").write_text(claim["challenge"])
        verified = client.post(
            f"/api/domains/{domain}/verify",
            json={"receipt": claim["receipt"]},
            headers=auth(claim["token"]),
        )
        assert verified.json()["status"] == "verified"
    assert client.post("/api/domains", json={"domain": "pending.example"}).status_code == 201
    return app, [r["url"] for r in items], domain


def test_spawning_rule_filters_against_the_registry(registry_state, monkeypatch) -> None:
    app, item_urls, domain = registry_state
    under_domain = [f"http://{domain}/art/new.png", f"https://shop.{domain}/x.jpg"]
    pending = ["https://pending.example/a.png", "https://www.pending.example/b.png"]
    unrelated = ["https://example.org/art/999", f"http://other{domain}/x.png", "", "not a url"]
    urls = [pending[0], item_urls[0], unrelated[0], under_domain[0], unrelated[1]]
    urls += [item_urls[1], pending[1], under_domain[1], unrelated[3], item_urls[2]]
    opted = set(item_urls) | set(under_domain)
    monkeypatch.setenv("SPAWNING_OPTS_KEY", "")
    with running(app) as base:
        rule = SpawningAPI()
        rule.SPAWNING_AI_API_URL = base + PATH
        assert rule.is_allowed(urls=urls) == [u not in opted for u in urls]
        assert rule.filter_allowed(urls=urls) == [u for u in urls if u not in opted]
        # 10,000 URLs in one call, answered in order.
        many = [f"https://example.net/{i}.png" for i in range(MAX_URLS - len(urls))] + urls
        rule.chunk_size = MAX_URLS
        answers = rule.is_allowed(urls=many)
        assert len(answers) == MAX_URLS
        assert [u for u, ok in zip(many, answers, strict=True) if not ok] == [
            u for u in many if u in opted
        ]


def test_operator_key(built, embedder, tmp_path, monkeypatch) -> None:
    app = make_app(built.index_dir, embedder, tmp_path, do_not_train_key="s3cret")
    with running(app) as base:
        monkeypatch.setenv("SPAWNING_OPTS_KEY", "s3cret")
        rule = SpawningAPI()
        rule.SPAWNING_AI_API_URL = base + PATH
        assert rule.is_allowed(urls=["https://example.net/a.png"]) == [True]
        monkeypatch.setenv("SPAWNING_OPTS_KEY", "wrong")
        wrong = SpawningAPI()
        wrong.SPAWNING_AI_API_URL = base + PATH
        with pytest.raises(SpawningAIAPIError, match="401"):
            wrong.is_allowed(urls=["https://example.net/a.png"])


def test_hostile_bodies_get_clear_refusals(built, embedder, tmp_path) -> None:
    app = make_app(built.index_dir, embedder, tmp_path)
    client = TestClient(app)
    text = {"Content-Type": "text/plain"}
    cases = [
        ("\n".join(f"https://e.net/{i}" for i in range(MAX_URLS + 1)), text, 413, "at most"),
        (b"https://e.net/\xff\xfe.png", text, 400, "UTF-8"),
        ("", text, 400, "empty"),
        ("https://e.net/" + "a" * 9000, text, 400, "longer than"),
        ('{"urls": ["https://e.net/a"]}', {"Content-Type": "application/json"}, 415, "text/plain"),
    ]
    for body, headers, status, words in cases:
        answer = client.post(PATH, content=body, headers=headers)
        assert answer.status_code == status, (status, answer.text)
        assert words in answer.json()["detail"]
    # Windows line ends and a final newline are the same list.
    answer = client.post(PATH, content="https://e.net/a\r\nhttps://e.net/b\r\n", headers=text)
    assert [u["url"] for u in answer.json()["urls"]] == ["https://e.net/a", "https://e.net/b"]
    with running(app) as base:
        assert alive(base)
