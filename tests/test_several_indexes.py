"""Several training sets behind one server: two indexes built with different models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hibt.config import RANDOM_WEIGHTS
from hibt.indexer.build import build_index
from hibt.indexer.model import Embedder, ModelSpec
from hibt.server.app import open_app
from hibt.server.catalogue import parse_target
from tests import test_page
from tests.conftest import serving, tiny_settings
from tests.datagen import drawing, save

browser = test_page.browser  # the page tests' headless Chromium, as a fixture here too
OTHER_MODEL = "ViT-S-32"  # untrained: a second architecture, another embedding dimension


@pytest.fixture(scope="module")
def other_index(tmp_path_factory) -> Path:
    """Six drawings none of which is in the shared test dataset, two credited to an artist
    that dataset also credits, indexed with a random-weight ViT-S-32."""
    root = tmp_path_factory.mktemp("sketches")
    rows = []
    for i in range(6):
        save(drawing(300 + i), root / f"s{i}.png")
        artist = "Mira Tanaka" if i < 2 else "Ola Berg"
        rows.append({"file_name": f"s{i}.png", "caption": f"sketch {i}", "artist": artist})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path_factory.mktemp("other-indexes") / "sketches"
    embedder = Embedder(ModelSpec(OTHER_MODEL, RANDOM_WEIGHTS))
    build_index(root, out, embedder, tiny_settings(model=OTHER_MODEL, pretrained=RANDOM_WEIGHTS))
    return out


@pytest.fixture(scope="module")
def client(built, other_index, embedder, tmp_path_factory):
    registry = tmp_path_factory.mktemp("several") / "registry.sqlite"
    settings = tiny_settings(registry=str(registry), precision="fp32")
    targets = [built.index_dir, f"sketches={other_index}", f"again={built.index_dir}"]
    return TestClient(open_app(targets, settings, embedder))


def test_indices_are_listed_with_their_models(client, dataset) -> None:
    listed = client.get("/api/indices").json()["indices"]
    assert [i["name"] for i in listed] == ["dataset0", "sketches", "again"]
    assert [i["model"]["name"] for i in listed] == ["tiny-test", OTHER_MODEL, "tiny-test"]
    assert [i["items"] for i in listed] == [len(dataset[1]), 6, len(dataset[1])]
    assert [i["default"] for i in listed] == [True, False, False]
    assert client.get("/indices-list").json() == ["dataset0", "sketches", "again"]


def test_an_upload_is_found_in_one_index_and_not_the_other(client, dataset) -> None:
    item = dataset[1][3]
    files = {"image": (item.path.name, item.path.read_bytes())}
    body = client.post("/api/search/image/all?k=3", files=files).json()
    found = {a["index"]: a["found_copy"] for a in body["answers"]}
    assert found == {"dataset0": True, "sketches": False, "again": True}
    assert body["found_in"] == ["dataset0", "again"]
    assert body["summary"] == "exact copy in 2 of 3 datasets: dataset0, again"
    sketches = next(a["response"] for a in body["answers"] if a["index"] == "sketches")
    assert sketches["copy_verdict"].startswith("no copy of this image found among 6 images")
    assert sketches["model"]["name"] == OTHER_MODEL

    narrowed = client.post("/api/search/image/all?indices=sketches", files=files).json()
    assert narrowed["summary"] == "no copy of this image in any of the 1 datasets"
    one = client.post("/api/search/image?index=sketches", files=files).json()
    assert one["counts"]["exact_copy"] == 0 and one["total_items"] == 6


def test_text_is_embedded_once_per_model(client, monkeypatch) -> None:
    calls = []
    for served in client.app.state.catalogue:
        embedder = served.engine.embedder
        original = embedder.encode_texts
        if getattr(original, "counted", False):
            continue

        def counted(texts, original=original, name=served.name):
            calls.append(name)
            return original(texts)

        counted.counted = True
        monkeypatch.setattr(embedder, "encode_texts", counted)
    body = client.get("/api/search/all", params={"q": "Mira Tanaka", "k": 4}).json()
    assert sorted(calls) == ["dataset0", "sketches"]  # "again" shares dataset0's model
    named = {a["index"]: a["response"]["counts"]["name_match"] for a in body["answers"]}
    assert named == {"dataset0": 9, "sketches": 2, "again": 9}
    assert body["summary"].startswith("'Mira Tanaka' is named in 3 of 3 datasets")


def test_index_parameter_everywhere(client) -> None:
    body = client.get("/api/search", params={"q": "sketch", "index": "sketches"}).json()
    assert body["total_items"] == 6 and body["model"]["name"] == OTHER_MODEL
    first = body["results"][0]
    # The server's own links name the index, so thumbnails come from the right one.
    assert first["thumbnail_url"].endswith("/thumbnail?index=sketches")
    assert client.get(first["thumbnail_url"]).headers["content-type"].startswith("image/")
    assert client.get(f"/api/items/{first['id']}", params={"index": "sketches"}).status_code == 200
    assert client.get(f"/api/items/{first['id']}").status_code == 404
    stats = client.get("/api/stats", params={"index": "sketches"}).json()
    assert stats["items"] == 6
    missing = client.get("/api/search", params={"q": "x", "index": "laion5B"})
    assert missing.status_code == 404 and "dataset0, sketches, again" in missing.json()["detail"]
    knn = client.post(
        "/knn-service", json={"embedding_input": [1.0] * 384, "indice_name": "sketches"}
    ).json()
    assert len(knn) == 6 and knn[0]["thumbnail_url"].endswith("?index=sketches")
    receipt = client.post("/api/optouts", json={"item_ids": [first["id"]], "index": "sketches"})
    assert receipt.status_code == 201
    again = client.get("/api/search", params={"q": "sketch", "index": "sketches"}).json()
    assert {r["id"]: r["opt_out"] for r in again["results"]}[first["id"]] == "unverified"


def test_bad_requests_over_several_indexes(client) -> None:
    for params, status in [
        ({"q": "fox", "indices": "nope"}, 404),
        ({"q": "fox", "indices": " , "}, 422),
        ({"q": "fox", "k": 10**6}, 422),
        ({"q": "   "}, 422),
    ]:
        answer = client.get("/api/search/all", params=params)
        assert answer.status_code == status, (params, answer.text)
        assert answer.json()["detail"]
    empty = client.post("/api/search/image/all", files={"image": ("x.png", b"")})
    assert empty.status_code == 400 and client.get("/api/health").status_code == 200


def test_serve_targets() -> None:
    assert parse_target("laion=/data/laion") == ("laion", Path("/data/laion"))
    assert parse_target("/data/a=b") == (None, Path("/data/a=b"))
    assert parse_target("indexes/demo") == (None, Path("indexes/demo"))


@pytest.mark.browser
def test_page_searches_every_dataset(browser, built, other_index, dataset) -> None:
    """The artist's page over two datasets: the upload is an exact copy in one, not in the
    other; both answers are shown, and the selector narrows the search to one."""
    targets = [str(built.index_dir), f"sketches={other_index}"]
    with serving(targets, HIBT_PRECISION="fp32") as base:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(base)
        page.wait_for_selector("#dataset-line:has-text('in 2 datasets')")
        assert page.is_visible("#index-picker")
        page.set_input_files("#file", str(dataset[1][3].path))
        page.wait_for_selector("#datasets section.dataset >> nth=1")
        assert page.inner_text("#verdict") == "Exact copy in 1 of 2 datasets: dataset0."
        first = page.locator("section[data-index=dataset0]")
        assert "found" in first.locator("h2").inner_text()
        assert first.locator("li .badge").first.inner_text() == "Exact copy"
        other = page.locator("section[data-index=sketches]")
        assert (
            other.locator(".dataset-verdict")
            .inner_text()
            .startswith("No copy of this image found among 6 images")
        )
        assert other.locator("li").count() == 6  # its nearest images, none a copy
        assert "Exact copy" not in other.locator("li .badge").all_inner_texts()
        test_page.ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(test_page.ARTIFACTS / "several-datasets.png"), full_page=True)

        page.select_option("#index-select", "sketches")
        page.wait_for_selector("#grid li")
        assert page.locator("#datasets section").count() == 0
        assert page.inner_text("#verdict").startswith("No copy of this image found among 6 images")
        thumbs = page.locator("#grid li img").first.get_attribute("src")
        assert thumbs.endswith("?index=sketches")
        context.close()
        assert not errors, errors
