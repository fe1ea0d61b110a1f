"""Published embeddings (LAION's layout): ingest, URL-only items, site search, compressed
indexes with exact re-ranking."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from hibt.errors import BuildError, DatasetError
from hibt.indexer import index_format as fmt
from hibt.indexer import vector_index
from hibt.indexer.build import build_index
from hibt.indexer.datasets import open_dataset
from hibt.indexer.datasets.embeddings import EmbeddingsDataset
from hibt.indexer.vector_index import VectorIndex, VectorRows, write_index
from hibt.server.app import open_app
from hibt.server.engine import Engine
from tests.conftest import tiny_settings
from tests.datagen import drawing, save, write_published
from tests.loopback import static_site

PARTS, ROWS = 2, 12


@pytest.fixture(scope="module")
def website(tmp_path_factory):
    """A loopback web server holding some of the published images; the rest are dead."""
    root = tmp_path_factory.mktemp("www")
    with static_site(root) as port:
        yield root, f"http://127.0.0.1:{port}"


def url_for(i: int, live: str) -> str:
    if i % 3 == 0:
        return f"{live}/janedoe/art{i}.png"
    if i % 3 == 1:
        return f"https://www.artstation.com/janedoe/work{i}.jpg"
    return f"https://cdn.artstation.com/other/pic{i}.jpg"


def published_rows(live: str) -> list[list[dict]]:
    parts = []
    for p in range(PARTS):
        rows = []
        for r in range(ROWS):
            i = p * ROWS + r
            rows.append(
                {
                    "image": drawing(900 + i),
                    "caption": f"a drawing by Jane Doe, number {i}" if i % 2 else f"landscape {i}",
                    "url": url_for(i, live),
                    "similarity": 0.3,
                    "punsafe": 0.01 * i,
                    "NSFW": "UNLIKELY",
                    "md5": f"{i:032x}",
                    "width": 160,
                    "height": 120,
                }
            )
        parts.append(rows)
    return parts


@pytest.fixture(scope="module")
def published(tmp_path_factory, website, embedder):
    www, live = website
    (www / "janedoe").mkdir()
    root = tmp_path_factory.mktemp("laion")
    parts = published_rows(live)
    for rows in parts:
        for row in rows:
            if row["url"].startswith(live):
                save(row["image"], www / row["url"].removeprefix(live + "/"))
    write_published(root, parts, embedder)
    return root, [row for rows in parts for row in rows]


@pytest.fixture(scope="module")
def laion_index(published, embedder, tmp_path_factory):
    out = tmp_path_factory.mktemp("laion-index") / "index"
    build_index(published[0], out, embedder, tiny_settings())
    return out


@pytest.fixture(scope="module")
def laion_engine(laion_index, embedder):
    return Engine.open(laion_index, tiny_settings(), embedder)


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- the reader -------------------------------------------------------------------------
def test_rows_are_tied_by_part_and_position(published) -> None:
    root, rows = published
    dataset = open_dataset(root)
    assert isinstance(dataset, EmbeddingsDataset)
    assert dataset.estimated_size() == PARTS * ROWS and dataset.has_text
    second = [r for rows in dataset.item_rows(dataset.parts[1], ROWS, batch=3) for r in rows]
    assert [r["key"] for r in second[:2]] == ["1:0", "1:1"]
    assert [r["url"] for r in second] == [r["url"] for r in rows[ROWS:]]
    assert second[0]["idx"] == ROWS and '"punsafe"' in second[0]["extra"]


def broken_copy(published, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(published[0], root)
    return root


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "metadata" / "metadata_0001.parquet").unlink(), r"part\(s\) \[1\]"),
        (lambda r: (r / "text_emb" / "text_emb_0000.npy").unlink(), r"part\(s\) \[0\]"),
        (
            lambda r: np.save(
                r / "img_emb" / "img_emb_0001.npy", np.zeros((ROWS - 1, 64), np.float16)
            ),
            "part 1 is misaligned: 11 image vectors but 12 metadata rows",
        ),
        (
            lambda r: np.save(r / "img_emb" / "img_emb_0001.npy", np.zeros((ROWS, 64), np.int32)),
            "expected a float16 or float32",
        ),
        (
            lambda r: np.save(r / "img_emb" / "img_emb_0001.npy", np.zeros((ROWS, 32), np.float16)),
            "disagree on the embedding dimension",
        ),
        (
            lambda r: [
                (r / d / f"{d}_0001.{x}").rename(r / d / f"{d}_0002.{x}")
                for d, x in (("img_emb", "npy"), ("text_emb", "npy"), ("metadata", "parquet"))
            ],
            r"parts \[1\] are missing",
        ),
    ],
)
def test_a_missing_short_or_odd_part_stops_with_its_name(
    published, tmp_path, damage, message
) -> None:
    root = broken_copy(published, tmp_path)
    damage(root)
    with pytest.raises(DatasetError, match=message):
        open_dataset(root)


def test_vectors_of_another_model_are_refused(published, tmp_path) -> None:
    settings = tiny_settings(model="ViT-B-32", pretrained="openai")  # 512-d, not 64-d
    with pytest.raises(BuildError, match="holds 64-d vectors, but ViT-B-32 makes 512-d"):
        build_index(published[0], tmp_path / "index", None, settings)


# --- the built index -----------------------------------------------------------------------
def test_ingest_keeps_the_published_vectors_and_metadata(laion_index, published) -> None:
    manifest = fmt.read_manifest(laion_index)
    assert manifest.kind == "embeddings" and manifest.captions
    assert manifest.counts.items == PARTS * ROWS and manifest.model.name == "tiny-test"
    stored = np.load(laion_index / fmt.IMAGE_VECTORS)
    parts = [np.load(p) for p in sorted((published[0] / "img_emb").iterdir())]
    expected = np.concatenate(parts).astype(np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(stored, expected, atol=1e-3)
    assert not (laion_index / fmt.DESCRIPTORS).exists()


def test_an_uploaded_image_finds_its_url_only_item_as_a_likely_copy(
    laion_engine, published
) -> None:
    rows = published[1]
    response = laion_engine.search_image(png(rows[5]["image"]), k=5)
    first = response.results[0]
    assert (first.match, first.url, first.url_only) == ("likely_copy", rows[5]["url"], True)
    assert first.thumbnail_url == first.image_url == rows[5]["url"]
    assert first.copy_similarity >= 0.95 and response.counts.likely_copy >= 1
    assert first.extra["NSFW"] == "UNLIKELY" and first.extra["punsafe"] == pytest.approx(0.05)
    assert "likely copies" in response.copy_verdict and "not calibrated" in response.copy_verdict


def test_likely_copy_is_exactly_the_embedding_threshold(laion_index, embedder) -> None:
    """What holds for any model: an item is a likely copy if and only if its image
    embedding is at least the threshold alike; with the threshold at identity, an
    unrelated picture finds none and the verdict says so."""
    engine = Engine.open(laion_index, tiny_settings(), embedder)
    need = engine.settings.likely_copy_min_similarity
    for upload in (drawing(424242), drawing(905)):
        for r in engine.search_image(png(upload), k=30).results:
            assert (r.match == "likely_copy") == (r.score >= need - 1e-4)
    strict = Engine.open(laion_index, tiny_settings(likely_copy_min_similarity=0.9999), embedder)
    response = strict.search_image(png(drawing(424242)), k=5)
    assert response.counts.likely_copy == 0 and response.copy_verdict.startswith("no likely copy")


def test_names_and_sites_of_url_only_items(laion_engine) -> None:
    response = laion_engine.search_text("Jane Doe", k=30)
    names = [r for r in response.results if r.match == "name_match"]
    assert len(names) == response.counts.name_match == PARTS * ROWS // 2
    hosts = {s.site: s.count for s in response.sites}
    assert sum(hosts.values()) == len(names) and "www.artstation.com" in hosts


def test_name_matches_are_counted_up_to_the_cap_and_sites_among_those(
    laion_index, embedder
) -> None:
    """Every text query evaluates the phrase once, over at most ``max_name_count`` matches:
    beyond it the count is "at least" and the sites are those of the counted matches."""
    capped = Engine.open(laion_index, tiny_settings(max_name_count=7), embedder)
    response = capped.search_text("Jane Doe", k=3)
    assert response.counts.name_match == 7 and response.counts.name_match_capped
    assert sum(s.count for s in response.sites) == 7
    assert [r.match for r in response.results] == ["name_match"] * 3


def test_search_by_site_covers_subdomains_and_folders(laion_engine, published) -> None:
    rows = published[1]
    everything = laion_engine.search_site("artstation.com", k=100)
    assert {r.url for r in everything.results} == {
        r["url"] for r in rows if "artstation.com" in r["url"]
    }
    folder = laion_engine.search_site("https://artstation.com/janedoe/", k=100)
    assert {r.url for r in folder.results} == {
        r["url"] for r in rows if "/janedoe/work" in r["url"]
    }
    assert folder.counts.site_match == len(folder.results) and not folder.counts.site_match_capped
    assert all(r.match == "site_match" and r.score is None for r in folder.results)
    assert laion_engine.search_site("artstation.co", k=10).results == []
    page = laion_engine.search_site("artstation.com", k=3, offset=3)
    assert [r.url for r in page.results] == [r.url for r in everything.results[3:6]]
    assert page.next_offset == 6


def test_site_search_refuses_what_is_not_a_site(laion_engine) -> None:
    from hibt.errors import QueryError

    with pytest.raises(QueryError, match="give a site"):
        laion_engine.search_site("janedoe", k=10)


def test_opted_out_url_only_items_are_hidden_at_query_time(laion_index, embedder, tmp_path):
    from fastapi.testclient import TestClient

    config = tiny_settings(hide_opted_out=True, registry=str(tmp_path / "r.sqlite"))
    client = TestClient(open_app(laion_index, config, embedder))
    before = client.get("/api/search", params={"q": "Jane Doe", "k": 5}).json()["results"]
    gone = before[0]["id"]
    assert client.post("/api/optouts", json={"item_ids": [gone]}).status_code == 201
    after = client.get("/api/search", params={"q": "Jane Doe", "k": 5}).json()["results"]
    assert gone not in {r["id"] for r in after} and len(after) == 5
    site = client.get("/api/search/site", params={"site": "artstation.com", "k": 100}).json()
    assert gone not in {r["id"] for r in site["results"]}


# --- compressed indexes ---------------------------------------------------------------------
def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    data = centres[rng.integers(0, 40, n)] + 0.6 * rng.normal(size=(n, dim))
    return (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float16)


def test_compressed_on_disk_index_reranked_matches_exact_search(tmp_path, monkeypatch) -> None:
    """IVF-PQ written in parts and merged on disk, memory-mapped, re-ranked exactly: the same
    top results as brute force, with the exact cosines."""
    monkeypatch.setattr(vector_index, "PART_ROWS", 1500)  # three parts to merge
    vectors = clustered(4000, 64)
    np.save(tmp_path / "v.npy", vectors)
    mapped = np.load(tmp_path / "v.npy", mmap_mode="r")
    write_index(mapped, "IVF32,PQ8x4np", tmp_path / "image.faiss")
    assert (tmp_path / "image.faiss.ivfdata").is_file()
    kept = sorted(f.name for f in (tmp_path / "image.faiss.parts").iterdir())
    assert kept[-1] == "trained.index" and len(kept) == 4  # for --add: three row ranges
    rows = VectorRows(tmp_path / "v.npy")
    picked = [3999, 0, 17, 17, 2500]
    assert np.array_equal(rows[picked], vectors[picked]) and np.array_equal(rows[5], vectors[5])
    index = VectorIndex(tmp_path / "image.faiss", rows, nprobe=8, rerank=200)
    assert not index.exact and index.ntotal == 4000
    rng = np.random.default_rng(1)
    exact = vectors.astype(np.float32)
    hits = 0
    for row in rng.choice(4000, 50, replace=False):
        query = exact[row] + 0.05 * rng.normal(size=64).astype(np.float32)
        query /= np.linalg.norm(query)
        truth = np.argsort(-(exact @ query))[:10]
        ids, scores = index.search(query, 10)
        assert ids[0] == truth[0]
        assert np.allclose(scores, exact[ids] @ query, atol=1e-5)
        hits += len(set(ids) & set(truth))
    assert hits / 500 >= 0.95


def test_the_default_nprobe_scans_about_the_same_number_of_codes(tmp_path) -> None:
    """A fixed nprobe would scan a smaller share of a larger index and lose recall; a fixed
    share would scan ever more codes. The index applies the default from its own sizes."""
    vectors = clustered(4000, 64)
    np.save(tmp_path / "v.npy", vectors)
    rows = VectorRows(tmp_path / "v.npy")
    for nlist in (16, 256):
        write_index(np.load(tmp_path / "v.npy"), f"IVF{nlist},PQ8x4np", tmp_path / f"{nlist}.faiss")
        index = VectorIndex(tmp_path / f"{nlist}.faiss", rows, nprobe=None, rerank=50)
        assert faiss.extract_index_ivf(index.index).nprobe == nlist  # a small index: all
    nprobe = vector_index.default_nprobe
    assert nprobe(16_384, 10_000_000) == 262 and nprobe(4_096, 1_000_000) == 656
    assert nprobe(131_072, 10**9) == vector_index.MIN_NPROBE
    assert nprobe(1 << 20, 10**7) == vector_index.MAX_NPROBE


def test_an_interrupted_ingest_resumes_at_the_next_part(
    published, embedder, laion_index, tmp_path, monkeypatch
) -> None:
    from hibt.indexer.ingest import EmbeddingBuilder

    out, done = tmp_path / "index", []
    original = EmbeddingBuilder.ingest

    def killed_in_part_1(self, part, base, arrays):
        if part.number == 1:
            raise KeyboardInterrupt  # killed after part 0 was committed
        return original(self, part, base, arrays)

    def recording(self, part, base, arrays):
        done.append(part.number)
        return original(self, part, base, arrays)

    monkeypatch.setattr(EmbeddingBuilder, "ingest", killed_in_part_1)
    with pytest.raises(KeyboardInterrupt):
        build_index(published[0], out, embedder, tiny_settings())
    assert not (out / fmt.MANIFEST).exists()
    monkeypatch.setattr(EmbeddingBuilder, "ingest", recording)
    build_index(published[0], out, embedder, tiny_settings())
    assert done == [1]
    for name in (fmt.IMAGE_VECTORS, fmt.CAPTION_VECTORS):
        assert np.array_equal(np.load(out / name), np.load(laion_index / name))
    first = Engine.open(out, tiny_settings(), embedder)
    second = Engine.open(laion_index, tiny_settings(), embedder)
    ids = [r.id for r in first.search_text("Jane Doe", k=24).results]
    assert ids == [r.id for r in second.search_text("Jane Doe", k=24).results]


def test_items_on_a_removal_list_are_hidden_without_a_rebuild(
    laion_index, published, embedder, tmp_path
) -> None:
    """Re-LAION style: a list of URLs and hashes taken out after the index was built."""
    from fastapi.testclient import TestClient

    rows = published[1]
    removed = tmp_path / "removed.txt"
    removed.write_text(f"# removed since\n{rows[1]['url']}\n{rows[3]['md5']}\n\n")
    config = tiny_settings(removed=str(removed), registry=str(tmp_path / "r.sqlite"))
    client = TestClient(open_app(laion_index, config, embedder))
    answer = client.get("/api/search", params={"q": "Jane Doe", "k": 100}).json()
    urls = {r["url"] for r in answer["results"]}
    assert rows[1]["url"] not in urls and rows[3]["url"] not in urls and rows[5]["url"] in urls
    site = client.get("/api/search/site", params={"site": "artstation.com", "k": 100}).json()
    assert rows[1]["url"] not in {r["url"] for r in site["results"]}


# --- the page --------------------------------------------------------------------------------
@pytest.mark.browser
def test_the_page_shows_url_only_items_from_their_source_and_a_site(laion_index, published):
    """Live links load from the source site; dead ones show the placeholder; a site typed in
    the search box lists what the dataset holds from it."""
    from tests.conftest import serving
    from tests.test_page import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

    sync_api = pytest.importorskip("playwright.sync_api")
    with serving(laion_index) as base, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/?q=Jane+Doe")
        page.wait_for_selector("#grid li")
        live = published[1][3]["url"]  # served by the loopback site
        image = page.locator(f'#grid li img[src="{live}"]')  # no eval: the page's CSP forbids it
        sync_api.expect(image).to_have_js_property("naturalWidth", 160)
        page.wait_for_selector("#grid li .placeholder")  # the dead links
        assert "Most come from" in page.inner_text("#counts")
        assert "published CLIP embeddings" in page.inner_text("#how-copies")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "url-only-results.png"), full_page=True)
        page.fill("#q", "artstation.com/janedoe")
        page.press("#q", "Enter")
        page.wait_for_selector("#counts:has-text('came from artstation.com/janedoe')")
        badges = page.locator("#grid li .badge").all_inner_texts()
        expected = sum("/janedoe/work" in r["url"] for r in published[1])
        assert badges == ["From this site"] * expected
        browser.close()


# --- adding parts ----------------------------------------------------------------------------
def first_part_only(published, tmp_path: Path) -> Path:
    root = broken_copy(published, tmp_path)
    for folder, suffix in (("img_emb", "npy"), ("text_emb", "npy"), ("metadata", "parquet")):
        (root / folder / f"{folder}_0001.{suffix}").rename(tmp_path / f"{folder}_0001.{suffix}")
    return root


def restore_second_part(root: Path, tmp_path: Path) -> None:
    for folder, suffix in (("img_emb", "npy"), ("text_emb", "npy"), ("metadata", "parquet")):
        (tmp_path / f"{folder}_0001.{suffix}").rename(root / folder / f"{folder}_0001.{suffix}")


def test_add_appends_new_parts_without_redoing_the_old(
    published, embedder, laion_index, tmp_path, monkeypatch
) -> None:
    """The index of part 0, plus part 1 with --add, is the index of both parts; part 0 is
    neither ingested nor added to the vector index again, and nothing is trained again."""
    from hibt.indexer.ingest import EmbeddingBuilder

    monkeypatch.setattr(vector_index, "PART_ROWS", 8)  # vector index parts of 8 rows
    settings = tiny_settings(faiss_factory="IVF4,Flat")
    root, out = first_part_only(published, tmp_path), tmp_path / "index"
    build_index(root, out, embedder, settings)
    assert fmt.read_manifest(out).counts.items == ROWS
    restore_second_part(root, tmp_path)
    ingested, added, trained = [], [], []
    for module, name, log in (
        (EmbeddingBuilder, "ingest", ingested),
        (vector_index, "add_blocks", added),
        (vector_index, "trained", trained),
    ):
        original = getattr(module, name)

        def spy(*args, original=original, log=log):
            log.append(args)
            return original(*args)

        monkeypatch.setattr(module, name, spy)
    build_index(root, out, embedder, settings, add=True)
    assert [args[1].number for args in ingested] == [1]
    assert not trained and sorted((a[2], a[3]) for a in added) == [
        (8, 16),
        (8, 16),
        (16, 24),
        (16, 24),
    ]
    assert fmt.read_manifest(out).counts.items == PARTS * ROWS
    for name in (fmt.IMAGE_VECTORS, fmt.CAPTION_VECTORS):
        assert np.array_equal(np.load(out / name), np.load(laion_index / name))
    grown = Engine.open(out, settings, embedder)
    whole = Engine.open(laion_index, tiny_settings(), embedder)
    names = [grown.search_text("Jane Doe", k=24), whole.search_text("Jane Doe", k=24)]
    urls = [[r.url for r in n.results if r.match == "name_match"] for n in names]
    assert urls[0] == urls[1] and len(urls[0]) == PARTS * ROWS // 2
    image = png(published[1][ROWS + 2]["image"])  # an item of the added part
    assert grown.search_image(image, k=1).results[0].url == published[1][ROWS + 2]["url"]
    again = build_index(root, out, embedder, settings, add=True)
    assert again.reused  # nothing new to add


def test_add_refuses_a_changed_part_and_image_indexes(published, embedder, built, tmp_path):
    root, out = first_part_only(published, tmp_path), tmp_path / "index"
    build_index(root, out, embedder, tiny_settings())
    restore_second_part(root, tmp_path)
    np.save(root / "img_emb" / "img_emb_0000.npy", np.zeros((ROWS, 64), np.float16) + 0.1)
    with pytest.raises(BuildError, match=r"part 0 of .* changed since it was indexed"):
        build_index(root, out, embedder, tiny_settings(), add=True)
    with pytest.raises(BuildError, match="--add appends parts of published embeddings"):
        build_index(
            built.source if hasattr(built, "source") else built.manifest.source,
            tmp_path / "img",
            embedder,
            tiny_settings(),
            add=True,
        )


def test_a_part_changed_during_an_interrupted_ingest_starts_it_afresh(
    published, embedder, tmp_path, monkeypatch
) -> None:
    from hibt.indexer.ingest import EmbeddingBuilder

    root, out = broken_copy(published, tmp_path), tmp_path / "index"
    original = EmbeddingBuilder.ingest

    def killed_in_part_1(self, part, base, arrays):
        if part.number == 1:
            raise KeyboardInterrupt
        return original(self, part, base, arrays)

    monkeypatch.setattr(EmbeddingBuilder, "ingest", killed_in_part_1)
    with pytest.raises(KeyboardInterrupt):
        build_index(root, out, embedder, tiny_settings())
    monkeypatch.setattr(EmbeddingBuilder, "ingest", original)
    first = np.load(root / "img_emb" / "img_emb_0000.npy")
    np.save(root / "img_emb" / "img_emb_0000.npy", first[::-1])  # re-published differently
    build_index(root, out, embedder, tiny_settings())
    stored = np.load(out / fmt.IMAGE_VECTORS)[:ROWS].astype(np.float32)
    expected = first[::-1].astype(np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(stored, expected, atol=1e-3)


def test_a_part_published_after_an_interrupted_ingest_is_ingested(
    published, embedder, laion_index, tmp_path, monkeypatch
) -> None:
    """A part that appears between the kill and the re-run is ingested, not refused with a
    traceback nor left out."""
    from hibt.indexer.ingest import EmbeddingBuilder

    root, out = first_part_only(published, tmp_path), tmp_path / "index"

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(EmbeddingBuilder, "finalize", killed)
    with pytest.raises(KeyboardInterrupt):
        build_index(root, out, embedder, tiny_settings())
    monkeypatch.undo()
    restore_second_part(root, tmp_path)
    result = build_index(root, out, embedder, tiny_settings())
    assert result.manifest.counts.items == PARTS * ROWS
    for name in (fmt.IMAGE_VECTORS, fmt.CAPTION_VECTORS):
        assert np.array_equal(np.load(out / name), np.load(laion_index / name))
