"""The HTTP API through FastAPI's test client: shapes and every error status."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from hibt.server.app import create_app
from tests.conftest import tiny_settings
from tests.datagen import BROKEN, drawing


@pytest.fixture(scope="module")
def client(engine) -> TestClient:
    return TestClient(create_app(engine, tiny_settings(max_upload_bytes=300_000)))


def png_bytes(seed: int, size=(160, 120)) -> bytes:
    buf = io.BytesIO()
    drawing(seed, size).save(buf, format="PNG")
    return buf.getvalue()


def test_health_and_stats(client, dataset) -> None:
    assert client.get("/api/health").json() == {"status": "ok", "items": len(dataset[1])}
    stats = client.get("/api/stats").json()
    assert stats["items"] == len(dataset[1]) and stats["model"]["semantic"] is False
    assert "largest_duplicate_groups" in stats


def test_text_search(client) -> None:
    body = client.get("/api/search", params={"q": "Jan Kowalski", "k": 5}).json()
    assert body["model"] == {"name": "tiny-test", "pretrained": None, "dim": 64, "semantic": False}
    assert body["counts"]["name_match"] == 9
    first = body["results"][0]
    assert first["match"] == "name_match" and first["artist"] == "Jan Kowalski"
    assert first["thumbnail_url"].startswith("/api/items/")
    thumb = client.get(first["thumbnail_url"])
    kind = Image.open(io.BytesIO(thumb.content)).get_format_mimetype()
    assert thumb.status_code == 200 and thumb.headers["content-type"] == kind
    assert kind in ("image/webp", "image/jpeg")
    detail = client.get(f"/api/items/{first['id']}").json()
    assert detail["id"] == first["id"] and len(detail["sha256"]) == 64
    original = client.get(first["image_url"])
    assert original.status_code == 200 and len(original.content) > 100


def test_image_search_finds_the_exact_copy(client, dataset) -> None:
    item = dataset[1][10]
    files = {"image": (item.path.name, item.path.read_bytes(), "application/octet-stream")}
    body = client.post("/api/search/image", files=files, params={"k": 3}).json()
    assert body["results"][0]["caption"] == item.caption
    assert body["results"][0]["match"] == "exact_copy"
    assert body["counts"]["exact_copy"] >= 1
    assert "found among" in body["copy_verdict"]


def test_image_not_in_dataset_says_so(client) -> None:
    files = {"image": ("new.png", png_bytes(9999), "image/png")}
    body = client.post("/api/search/image", files=files).json()
    assert body["counts"]["exact_copy"] == 0
    assert body["copy_verdict"].startswith("no copy of this image found among")


def test_batch_and_vector_queries(client) -> None:
    batch = client.post("/api/search/batch", json={"queries": ["owl", "violin"], "k": 2}).json()
    assert [len(r["results"]) for r in batch["responses"]] == [2, 2]
    vec = client.get("/api/search", params={"q": "owl", "k": 1}).json()
    item = vec["results"][0]["id"]
    detail = client.get(f"/api/items/{item}").json()
    assert detail["id"] == item
    body = client.post("/api/search/vector", json={"vector": [0.1] * 64, "k": 4}).json()
    assert len(body["results"]) == 4


@pytest.mark.parametrize(
    ("request_args", "status"),
    [
        ({"method": "GET", "url": "/api/search", "params": {"q": ""}}, 422),
        ({"method": "GET", "url": "/api/search", "params": {"q": "   "}}, 422),
        ({"method": "GET", "url": "/api/search"}, 422),
        ({"method": "GET", "url": "/api/search", "params": {"q": "owl", "k": 5000}}, 422),
        ({"method": "GET", "url": "/api/search", "params": {"q": "owl", "k": -1}}, 422),
        ({"method": "GET", "url": "/api/items/does-not-exist"}, 404),
        ({"method": "GET", "url": "/api/items/does-not-exist/thumbnail"}, 404),
        ({"method": "POST", "url": "/api/search/vector", "json": {"vector": [1, 2]}}, 422),
    ],
)
def test_error_statuses(client, request_args, status) -> None:
    response = client.request(**request_args)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str | list)


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (BROKEN["broken/not-an-image.jpg"], 415, "not a recognised image"),
        (png_bytes(1, (400, 300))[:500], 400, "corrupt or truncated"),
        (BROKEN["broken/bomb.png"], 413, "over the limit"),
        (b"", 400, "empty"),
    ],
)
def test_bad_uploads(client, payload: bytes, status: int, message: str) -> None:
    response = client.post("/api/search/image", files={"image": ("x.png", payload, "image/png")})
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_oversized_upload_is_413(client) -> None:
    big = b"\x89PNG" + b"\0" * 400_000
    response = client.post("/api/search/image", files={"image": ("big.png", big, "image/png")})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_path_traversal_is_not_possible(client) -> None:
    for evil in ("../../etc/passwd", "..%2F..%2Fetc%2Fpasswd"):
        response = client.get(f"/api/items/{evil}/image")
        assert response.status_code == 404


def test_openapi_documents_the_api(client) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/api/search",
        "/api/search/image",
        "/api/search/vector",
        "/api/items/{item_id}",
        "/api/stats",
        "/api/health",
    ):
        assert path in spec["paths"]
    assert client.get("/docs").status_code == 200
