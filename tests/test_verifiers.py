"""Verifier processes (server/verifiers.py): a query's copy candidates verified beside its
thread give the verdicts the thread alone gives, and a verifier that dies loses none."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import subprocess
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest
from PIL import Image

from hibt.indexer.copies.views import INDEX_VIEWS, QUERY_VIEWS
from hibt.server.engine import Engine
from hibt.server.verifiers import SPREAD_FROM, Verifiers
from tests.datagen import save
from tests.test_copies import encode, engine_over, thin_star


@pytest.fixture(scope="module")
def stars(tmp_path_factory, embedder) -> Engine:
    """Generated stars that meet each other as copies by descriptor: every upload of one
    has five candidates or more to verify. One is 533 px: its file halved leaves a column
    over, so a flip of it is decoded again from the upload's bytes (grid.Grid)."""
    root = tmp_path_factory.mktemp("verified-stars")
    for points in (88, 90, 92, 94, 96):
        save(thin_star(points, 100), root / f"star_{points}.png")
    save(large_star(), root / "star_large.png")
    return engine_over(root, tmp_path_factory, embedder)


def large_star() -> Image.Image:
    return thin_star(92, 100).resize((533, 533), Image.LANCZOS)


def uploads() -> list[bytes]:
    """A star lossless, at JPEG 30, halved (undecided among its family), one not indexed,
    and the large star mirrored."""
    star = thin_star(92, 100)
    return [
        encode(star),
        encode(star, "JPEG", quality=30),
        encode(star.resize((50, 50), Image.LANCZOS)),
        encode(thin_star(93, 100)),
        encode(large_star().transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
    ]


def answered(engine: Engine, verifiers: Verifiers, monkeypatch) -> tuple[list, list[str]]:
    """Each upload's verdicts (as the engine checked them) and its whole answer."""
    checked = []

    def keep(*args):
        checked.append(Engine.checked(engine, *args))
        return checked[-1]

    monkeypatch.setattr(engine, "verifiers", verifiers)
    monkeypatch.setattr(engine, "checked", keep)
    answers = [repr(engine.search_image(data, k=5, collapse=False)) for data in uploads()]
    return checked, [re.sub(r"took_ms=[0-9.]+", "", a) for a in answers]


def test_every_view_crosses_to_another_process_as_itself() -> None:
    """By its place in its catalogue, which verifiers.py registers with pickle."""
    for view in (*INDEX_VIEWS, *QUERY_VIEWS):
        assert pickle.loads(pickle.dumps(view)) is view
    with pytest.raises(TypeError, match="no catalogue"):
        pickle.dumps(dataclasses.replace(QUERY_VIEWS[0], name="made elsewhere"))


def test_an_upload_decoded_again_under_a_flip_crosses_to_another_process(stars: Engine) -> None:
    """A lossless upload's flips are decoded again from its bytes where its reduction left
    a remainder; a verifier process decodes them as the query's thread does."""
    data = uploads()[-1]
    grid = stars.upload_grid(stars.decode_upload(data), data)
    carried = pickle.loads(pickle.dumps(grid))
    flip = Image.Transpose.FLIP_LEFT_RIGHT
    assert carried.under(flip).tobytes() == grid.under(flip).tobytes()
    assert grid.under(flip).tobytes() != grid.image.transpose(flip).tobytes()


def test_candidates_verified_in_a_process_get_the_verdicts_of_the_query_s_thread(
    stars: Engine, monkeypatch
) -> None:
    alone, alone_answers = answered(stars, Verifiers(0), monkeypatch)
    spread = Verifiers(1)
    sent = []
    send = spread.send
    monkeypatch.setattr(
        spread, "send", lambda prints, tasks: sent.append(tasks) or send(prints, tasks)
    )
    try:
        beside, beside_answers = answered(stars, spread, monkeypatch)
        assert all(len(c) >= SPREAD_FROM for c in alone)
        assert len(sent) == len(uploads()) and all(sent)  # each upload sent some away
        assert beside == alone and beside_answers == alone_answers
        assert {c.verdict.kind for checked in alone for c in checked} >= {"same", "different"}
        # What it was sent (the large star's Redecode among it) made it import no model:
        # torch and open_clip would hold some 700 MB in every verifier.
        worker_has = "[m for m in ('torch', 'open_clip') if m in __import__('sys').modules]"
        assert spread.started().submit(eval, worker_has).result() == []
    finally:
        spread.close()


def test_a_verifier_that_died_loses_no_verdict(stars: Engine, monkeypatch) -> None:
    """Killed before a query (the pool is broken when the query sends) or while it verifies
    (its share never comes back): the share is verified in the query's thread, and the next
    query has a new pool."""
    _, alone = answered(stars, Verifiers(0), monkeypatch)
    verifiers = Verifiers(1)
    broken = verifiers.started()
    with pytest.raises(BrokenProcessPool):
        broken.submit(os._exit, 1).result()
    send = verifiers.send

    def dying(prints, tasks):
        verifiers.started().submit(os._exit, 1)
        return send(prints, tasks)

    try:
        assert answered(stars, verifiers, monkeypatch)[1] == alone
        assert verifiers.pool is not broken
        monkeypatch.setattr(verifiers, "send", dying)
        assert answered(stars, verifiers, monkeypatch)[1] == alone
    finally:
        verifiers.close()


def test_a_pool_another_query_replaced_is_not_dropped_again() -> None:
    """Two queries find one pool broken: the second to notice leaves the first's new pool,
    and what it is verifying, alone."""
    verifiers = Verifiers(1)
    broken = verifiers.started()
    verifiers.replace(broken)
    new = verifiers.started()
    verifiers.replace(broken)
    try:
        assert verifiers.pool is new and new.submit(int, "7").result() == 7
    finally:
        verifiers.close()


ENDED_BY_KILL = """
import os, signal
from hibt.server.verifiers import Verifiers
print(Verifiers(1).started().submit(os.getpid).result(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # as uvicorn ends `hibt serve`: no exit handlers run
"""


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_verifier_process_ends_with_the_process_that_started_it() -> None:
    """An idle worker holds its own queue's writing end, so it never reads an end there:
    were it not watching its parent, every `hibt serve` stopped would leave one behind."""
    done = subprocess.run(
        [sys.executable, "-c", ENDED_BY_KILL], capture_output=True, text=True, timeout=120
    )
    worker = int(done.stdout.split()[0])
    deadline = time.monotonic() + 20
    while running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(worker)
