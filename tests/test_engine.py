"""Queries against the built index; assertions hold for any deterministic model."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from hibt.errors import QueryError
from hibt.indexer import index_format as fmt
from hibt.server import index as index_module
from hibt.server import schemas
from hibt.server.index import ROWS_PER_READ


def test_every_indexed_image_finds_itself_first(engine, dataset) -> None:
    for item in dataset[1]:
        response = engine.search_image(item.path.read_bytes(), k=5)
        top = response.results[0]
        assert top.caption == item.caption
        assert top.match == "exact_copy" and top.hash_distance == 0
        assert top.score == pytest.approx(1.0, abs=5e-3)


def test_same_embedding_through_every_code_path(engine, built, dataset) -> None:
    """Build (decoder process, uint8 hand-over) and query (upload bytes) agree."""
    stored = np.load(built.index_dir / fmt.IMAGE_VECTORS).astype(np.float32)
    conn = sqlite3.connect(built.index_dir / fmt.METADATA)
    for item in dataset[1][:6]:
        idx = conn.execute("SELECT idx FROM items WHERE key = ?", (item.path.name,)).fetchone()[0]
        from hibt.indexer.images import load_image

        loaded = load_image(item.path, 10**8, 10**8, engine.settings.working_size)
        query = engine.embedder.encode_images([loaded.image])[0]
        assert float(stored[idx] @ query) > 0.999


def test_artist_name_surfaces_their_items_first(engine, dataset) -> None:
    expected = {i.caption for i in dataset[1] if i.artist == "Zoë O'Brien"}
    for spelling in ("Zoë O'Brien", "zoe o'brien", "ZOE O BRIEN"):
        response = engine.search_text(spelling, k=60)
        assert response.counts.name_match == len(expected)
        names = response.results[: len(expected)]
        assert all(r.match == "name_match" and "artist" in r.matched_fields for r in names)
        assert {r.caption for r in names} == expected
        assert all(r.match != "name_match" for r in response.results[len(expected) :])


def test_handle_search(engine, dataset) -> None:
    response = engine.search_text("@pixelwitch", k=10)
    assert response.counts.name_match == sum(i.artist == "@pixelwitch" for i in dataset[1])


def test_words_in_captions_are_name_matches_too(engine, dataset) -> None:
    response = engine.search_text("red fox", k=60)
    expected = sum("red fox" in i.caption for i in dataset[1])
    assert response.counts.name_match == expected
    assert all("caption" in r.matched_fields for r in response.results[:expected])


def test_pagination_is_deterministic_and_disjoint(engine, dataset) -> None:
    full = engine.search_text("lighthouse", k=30, collapse=False)
    again = engine.search_text("lighthouse", k=30, collapse=False)
    assert [r.id for r in full.results] == [r.id for r in again.results]
    pages = [engine.search_text("lighthouse", k=10, offset=o, collapse=False) for o in (0, 10, 20)]
    assert [r.id for p in pages for r in p.results] == [r.id for r in full.results]
    assert pages[0].next_offset == 10


def test_k_can_cover_the_whole_index(engine, dataset) -> None:
    response = engine.search_text("anything", k=1000, collapse=False)
    assert len(response.results) == len(dataset[1])
    assert len({r.id for r in response.results}) == len(dataset[1])
    assert response.next_offset is None


def test_many_rows_read_in_parts_are_the_rows_read_at_once(engine) -> None:
    """Long metadata reads are split over several connections (OpenIndex.items): every row
    comes back, once, whatever the order asked for and however often."""
    rng = np.random.default_rng(0)
    idxs = [int(i) for _ in range(5) for i in rng.permutation(engine.n)]
    whole = engine.index.store().items(idxs)
    parted = engine.index.items(idxs)
    assert len(idxs) > 2 * ROWS_PER_READ  # several parts
    assert sorted(parted) == sorted(whole) == list(range(engine.n))
    assert all(tuple(parted[i]) == tuple(whole[i]) for i in idxs)


def test_a_big_index_looks_names_up_beside_the_encoder(engine, dataset, monkeypatch) -> None:
    """From OVERLAP_FROM items the name phrase runs on a reader thread while the text is
    embedded: the answer is the one the request's own thread gives."""
    artist = dataset[1][0].artist
    inline = engine.search_text(artist, k=10).model_dump(exclude={"took_ms"})
    monkeypatch.setattr(index_module, "OVERLAP_FROM", 0)
    beside = engine.search_text(artist, k=10).model_dump(exclude={"took_ms"})
    assert beside == inline
    assert inline["counts"]["name_match"] > 0


def test_vector_query_returns_vectors(engine, built) -> None:
    stored = np.load(built.index_dir / fmt.IMAGE_VECTORS).astype(np.float32)
    query = schemas.VectorQuery(vector=stored[7].tolist(), k=3, return_vectors=True)
    response = engine.search_vector(query)
    top = response.results[0]
    assert top.score == pytest.approx(1.0, abs=2e-3)
    assert np.allclose(top.vector, stored[7], atol=1e-3)


def test_caption_target(engine, dataset) -> None:
    caption = dataset[1][4].caption
    response = engine.search_text(caption, k=3, target="captions")
    assert response.results[0].caption == caption


@pytest.mark.parametrize(
    ("query", "message"), [("", "empty"), ("   \n\t ", "empty"), ("x" * 501, "longer than")]
)
def test_bad_text_queries(engine, query: str, message: str) -> None:
    with pytest.raises(QueryError, match=message) as exc:
        engine.search_text(query, k=5)
    assert exc.value.status == 422


def test_bad_vectors(engine) -> None:
    for vector in ([0.0] * 64, [1.0] * 3, [float("nan")] * 64):
        with pytest.raises(QueryError) as exc:
            engine.search_vector(schemas.VectorQuery(vector=vector))
        assert exc.value.status == 422


def test_punctuation_only_query_still_answers(engine) -> None:
    response = engine.search_text("!!! ???", k=5)
    assert response.counts.name_match == 0 and len(response.results) == 5


def test_names_fold_as_fts5_does_on_both_paths() -> None:
    """ASCII text skips the Unicode decomposition; both paths fold alike."""
    from hibt.server.names import contains_phrase, normalise_tokens

    assert (
        normalise_tokens("Zoë O'Brien") == normalise_tokens("ZOE o'brien") == ["zoe", "o", "brien"]
    )
    assert normalise_tokens("Straße_Ünïcode") == ["strasse", "unicode"]
    assert contains_phrase("a drawing by Zoë O\u2019Brien, 2021", ["zoe", "o", "brien"])


def test_duplicates_of_an_item_are_an_indexed_lookup(built) -> None:
    """An item's page lists its group's other files: with ten million items a scan of the
    table for it took seconds, so the group is indexed, and a lone item asks nothing."""
    import sqlite3

    from hibt.indexer import index_format as fmt
    from hibt.indexer.store import Store

    conn = sqlite3.connect(built.index_dir / fmt.METADATA)
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM items WHERE dup_group = ? AND idx != ? "
        "ORDER BY idx LIMIT ?",
        (1, 1, 100),
    ).fetchall()
    assert "items_dup_group" in str(plan)
    store = Store.open(built.index_dir / fmt.METADATA, readonly=True)
    alone = store.conn.execute("SELECT * FROM items WHERE dup_count = 1 LIMIT 1").fetchone()
    store.conn.close()  # a lone item needs no query: none can run on a closed connection
    assert store.duplicate_ids(alone) == []


def test_name_matches_fill_the_page_after_their_duplicates_fold(built, embedder) -> None:
    """The page asks for name matches with room for the duplicates a collapse folds: with
    an artist's files paired as duplicates, a page of as many groups is all name matches."""
    from hibt.server.engine import Engine
    from tests.conftest import tiny_settings

    engine = Engine.open(built.index_dir, tiny_settings(), embedder)
    everything = engine.search_text("Zoë O'Brien", k=60, collapse=False)
    named = [r.id for r in everything.results if r.match == "name_match"]
    idxs = [engine.index.store().by_id(i)["idx"] for i in named]
    groups = np.array(engine.index.groups)
    for a, b in zip(idxs[0::2], idxs[1::2], strict=False):
        groups[b] = groups[a]
    engine.index.groups = groups
    page = engine.search_text("Zoë O'Brien", k=len(idxs) // 2)
    assert len(idxs) >= 4
    assert [r.match for r in page.results] == ["name_match"] * (len(idxs) // 2)
