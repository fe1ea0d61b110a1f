"""clip-retrieval's protocol, driven by clip-retrieval's own ClipClient over loopback.

The clip-retrieval package is installed without its dependencies (scripts/setup.sh); its
``__init__`` imports the Flask back end, so the client module is loaded from its file, as
the package ships it.
"""

from __future__ import annotations

import base64
import importlib.util
from importlib.metadata import distribution

import numpy as np
import pytest
import requests
from fastapi.testclient import TestClient

from hibt.server import clip_compat
from hibt.server.answers import Candidate
from hibt.server.app import open_app
from tests.conftest import tiny_settings
from tests.datagen import drawing, save
from tests.loopback import alive, running, static_site


def load_clip_client():
    path = distribution("clip-retrieval").locate_file("clip_retrieval/clip_client.py")
    spec = importlib.util.spec_from_file_location("clip_client", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def app(built, embedder, tmp_path_factory):
    registry = tmp_path_factory.mktemp("clip") / "registry.sqlite"
    return open_app(built.index_dir, tiny_settings(registry=str(registry)), embedder)


@pytest.fixture(scope="module")
def base(app):
    with running(app) as url:
        yield url


@pytest.fixture(scope="module")
def name(app) -> str:
    return app.state.catalogue.default.name


def expected(app, vector: np.ndarray, target: str, n: int) -> list[int]:
    """The engine's own nearest neighbours, one per duplicate group."""
    engine = app.state.engine
    pairs = engine.knn(vector, target, engine.n)
    kept = engine.dedupe([Candidate(i, "similar") for i, _ in pairs], True, set())
    return [c.idx for c in kept[:n]]


def test_clip_client_by_text_image_and_embedding(app, base, name, dataset, embedder) -> None:
    client_module = load_clip_client()
    client = client_module.ClipClient(url=f"{base}/knn-service", indice_name=name, num_images=5)
    engine = app.state.engine

    text = "A fox painted by Mira Tanaka"
    results = client.query(text=text)
    vector = embedder.encode_texts([text])[0]
    assert [r["id"] for r in results] == expected(app, vector, "images", 5)
    for r in results:
        cosine = float(engine.index.image_vectors[r["id"]] @ vector)
        assert r["similarity"] == pytest.approx(cosine, abs=1e-5)

    item = dataset[1][5]  # its caption and URL are in metadata.jsonl
    results = client.query(image=str(item.path))
    assert results[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert results[0]["caption"] == item.caption
    assert results[0]["url"] == "https://example.org/art/5"
    assert results[0]["artist"] == item.artist
    found = results[0]["id"]

    row = np.asarray(engine.index.image_vectors[found], np.float32)
    by_embedding = client.query(embedding_input=row.tolist())
    assert by_embedding[0]["id"] == found and len(by_embedding) == 5

    captions = client_module.ClipClient(
        url=f"{base}/knn-service",
        indice_name=name,
        modality=client_module.Modality.TEXT,
        num_images=3,
    )
    vector = embedder.encode_texts([item.caption])[0]
    assert [r["id"] for r in captions.query(embedding_input=vector.tolist())] == expected(
        app, vector, "captions", 3
    )


def test_front_end_requests_indices_and_metadata(app, base, name) -> None:
    """What clip-retrieval's front-end sends: strings for the aesthetic fields, 3,000 result
    ids with metadata for the first few, then /metadata for more."""
    assert requests.get(f"{base}/indices-list", timeout=10).json() == [name]
    body = {
        "text": "study number",
        "image": None,
        "image_url": None,
        "embedding_input": None,
        "modality": "image",
        "num_images": 4,
        "indice_name": name,
        "num_result_ids": 3000,
        "use_mclip": False,
        "deduplicate": False,
        "use_safety_model": True,
        "use_violence_detector": True,
        "aesthetic_score": "",
        "aesthetic_weight": "0.5",
    }
    results = requests.post(f"{base}/knn-service", json=body, timeout=30).json()
    assert len(results) == app.state.engine.n  # every item, without deduplication
    assert all("caption" in r for r in results[:4]) and "caption" not in results[4]
    ids = [r["id"] for r in results[4:8]]
    metas = requests.post(
        f"{base}/metadata", json={"ids": ids, "indice_name": name}, timeout=10
    ).json()
    assert [m["id"] for m in metas] == ids
    rows = app.state.engine.index.store().items(ids)
    assert [m["metadata"]["caption"] for m in metas] == [rows[i]["caption"] for i in ids]


def test_hostile_requests_get_clear_refusals(app, base, name, dataset, monkeypatch) -> None:
    knn = f"{base}/knn-service"
    png = base64.b64encode(dataset[1][1].path.read_bytes()).decode()
    cases = [
        ({"data": b"{not json"}, 400),
        ({"data": b'{"text": "fox", "num_images": "\xff\xfe"}'}, 400),
        ({"json": {"text": "fox", "num_images": "lots"}}, 422),
        ({"json": {"text": ["fox"], "num_images": 4}}, 422),
        ({"json": {"text": "fox", "num_images": 10**12}}, 422),
        ({"json": {"text": "fox", "num_images": 5, "num_result_ids": 10**6}}, 422),
        ({"json": {"image": "not base64 at all!", "num_images": 4}}, 400),
        ({"json": {"image": base64.b64encode(b"GIF89a not really").decode()}}, 415),
        ({"json": {"image_url": f"{base}/api/health"}}, 400),  # fetching is off
        ({"json": {"embedding_input": [1.0, 2.0]}}, 422),
        ({"json": {"embedding_input": [0.0] * 64}}, 422),
        ({"json": {"num_images": 4}}, 422),
        ({"json": {"text": "fox", "indice_name": "laion5B"}}, 404),
        ({"json": {"text": "fox", "modality": "audio"}}, 422),
    ]
    for kwargs, status in cases:
        answer = requests.post(knn, timeout=30, **kwargs)
        assert answer.status_code == status, (kwargs, answer.text)
        assert answer.json()["detail"]
    bad_ids = [{"ids": ["x"]}, {"ids": [10**9], "indice_name": name}, {"ids": list(range(10_001))}]
    for body in bad_ids:
        assert 400 <= requests.post(f"{base}/metadata", json=body, timeout=10).status_code < 500
    assert requests.post(knn, json={"image": png, "num_images": 2}, timeout=30).status_code == 200
    assert alive(base)


def test_image_url_fetching_is_guarded(built, embedder, dataset, tmp_path, monkeypatch) -> None:
    site = tmp_path / "site"
    site.mkdir()
    save(drawing(4), site / "four.png")
    strict = tiny_settings(registry=str(tmp_path / "r.sqlite"), clip_fetch_image_urls=True)
    with static_site(site) as port:
        client = TestClient(open_app(built.index_dir, strict, embedder))
        for url in (
            f"http://127.0.0.1:{port}/four.png",
            f"http://localhost:{port}/four.png",
            "http://10.0.0.7/x.png",
            "http://[::1]/x.png",
            "file:///etc/passwd",
        ):
            answer = client.post("/knn-service", json={"image_url": url})
            assert answer.status_code == 400, (url, answer.text)
        assert (
            "not public"
            in client.post(
                "/knn-service", json={"image_url": f"http://127.0.0.1:{port}/four.png"}
            ).json()["detail"]
        )

        # Each redirect hop is checked: a site allowed here redirecting to one that is not.
        allowed = {"127.0.0.1"}

        def guard(host: str, allow_private: bool, deadline: float) -> str:
            if host not in allowed:
                raise clip_compat.ProofError(f"{host} resolves to a private address")
            return "127.0.0.1"

        monkeypatch.setattr(clip_compat.domain_proof, "resolve", guard)
        fetched = client.post(
            "/knn-service", json={"image_url": f"http://127.0.0.1:{port}/four.png"}
        )
        assert fetched.status_code == 200 and fetched.json()[0]["similarity"] > 0.99
        (site / "jump").mkdir()
        (site / "jump" / "index.html").write_text("")  # SimpleHTTPRequestHandler redirects
        monkeypatch.setattr(
            clip_compat, "urljoin", lambda base, loc: f"http://localhost:{port}/four.png"
        )
        refused = client.post("/knn-service", json={"image_url": f"http://127.0.0.1:{port}/jump"})
        assert refused.status_code == 400 and "localhost" in refused.json()["detail"]

    small = tiny_settings(
        registry=str(tmp_path / "r2.sqlite"),
        clip_fetch_image_urls=True,
        clip_fetch_private=True,
        max_upload_bytes=200,
    )
    with static_site(site) as port:
        client = TestClient(open_app(built.index_dir, small, embedder))
        big = client.post("/knn-service", json={"image_url": f"http://127.0.0.1:{port}/four.png"})
        assert big.status_code == 413


def test_an_image_larger_than_the_json_limit_is_taken_as_an_upload(app, base, name) -> None:
    """ClipClient sends an image as base64 inside JSON: such a body is an upload, and a
    photo of a few megabytes must not meet the small limit of other JSON bodies."""
    import base64
    import io

    import httpx
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    body = {"image": base64.b64encode(buffer.getvalue()).decode(), "indice_name": name}
    assert len(body["image"]) > tiny_settings().max_json_bytes
    answer = httpx.post(f"{base}/knn-service", json=body, timeout=120)
    assert answer.status_code == 200 and len(answer.json()) > 0


def test_an_image_query_decodes_within_the_engine_s_memory_budget(app, base, name, monkeypatch):
    """A burst of small files that decode big must wait for the decode budget whichever
    door they come in by: ClipClient's base64 image as much as an upload."""
    import base64
    import io

    import httpx
    from PIL import Image

    engine, held = app.state.engine, []
    hold = engine.decodes.hold
    monkeypatch.setattr(engine.decodes, "hold", lambda cost: held.append(cost) or hold(cost))
    buffer = io.BytesIO()
    Image.new("L", (1500, 1000), 200).save(buffer, format="PNG")
    body = {"image": base64.b64encode(buffer.getvalue()).decode(), "indice_name": name}
    answer = httpx.post(f"{base}/knn-service", json=body, timeout=120)
    assert answer.status_code == 200
    assert held == [1500 * 1000 * 4 * 3]  # decode_cost: an L image is converted through RGB
