"""COPY_MEAN_MAX's calibration script: copies of files the benchmark does not sample, and the
distance at which each passed verification against its own file."""

from __future__ import annotations

import random

from hibt.indexer.copies import rivals
from hibt.server.engine import Engine
from scripts import calibrate_copy_distance as calibrate
from tests.conftest import tiny_settings


def test_copies_are_drawn_outside_the_benchmark_s_originals_and_measured(
    engine: Engine, capsys
) -> None:
    """The files drawn are none of the benchmark's own originals (drawn as it draws them);
    each one's unchanged upload passes against its own file, within a level, and the
    report gives the shares of all copies within COPY_MEAN_MAX and COPY_LOCAL_MAX."""
    rows = engine.index.store().distinct_files()
    samples = len(rows) // 2
    bench_rows = {r["idx"] for r in random.Random(0).sample(rows, samples)}
    drawn = calibrate.drawn(engine, samples, 4, seed=1)
    assert len(drawn) == 4 and not {r["idx"] for r in drawn} & bench_rows
    found = calibrate.distances(engine, drawn, tiny_settings())
    assert len(found.mean["identity"]) == 4 and max(found.mean["identity"]) < 1.0
    assert all(d >= 0 for values in found.mean.values() for d in values)
    assert 0 < len(found.mean["resize 50%"]) <= 4
    # Each copy that passed as the same picture has its one place measured too.
    assert 0 < len(found.local["identity"]) <= 4
    assert all(d >= 0 for values in found.local.values() for d in values)
    calibrate.report(found)
    out = capsys.readouterr().out
    assert "identity" in out and "within COPY_MEAN_MAX (8.0)" in out
    assert f"within COPY_LOCAL_MAX ({rivals.COPY_LOCAL_MAX})" in out
