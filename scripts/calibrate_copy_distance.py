"""Calibrate rivals' bars on copies the benchmark does not report: how far a copy lies.

Opens (or builds) the copy benchmark's index for a seed, draws ``--originals`` indexed
files at random, none of them among the benchmark's own ``--samples`` originals, makes the
benchmark's 15 transformations of each, and verifies each upload as the engine does
(Engine.verified_matches). For every upload whose own file passed verification, the
distance it passed at (Verdict.distance: grey levels over the ink, once laid over and
fitted) and, where it passed as the same picture, the mean in its one place furthest apart
(Verdict.local): their quantiles, per transformation and over all, and the shares within
COPY_MEAN_MAX and COPY_LOCAL_MAX. The held-out halves and the benchmark's originals are not
touched, so the figures the benchmark reports stay blind to the choice
(docs/copy-detection.md, runs BO and BP).

    python scripts/calibrate_copy_distance.py DATASET --work .bench/s48full --seed 48
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hibt.config import Settings  # noqa: E402
from hibt.indexer.copies.fingerprint import query_fingerprints  # noqa: E402
from hibt.indexer.copies.rivals import COPY_LOCAL_MAX, COPY_MEAN_MAX, PASSED  # noqa: E402
from hibt.indexer.copies.verify import Verdict  # noqa: E402
from hibt.indexer.records import Record  # noqa: E402
from hibt.server.engine import Engine  # noqa: E402
from scripts import bench_copy_detection as bench  # noqa: E402

QUANTILES = (0.5, 0.9, 0.99, 0.995, 0.999, 1.0)


def drawn(engine: Engine, samples: int, originals: int, seed: int) -> list[dict]:
    """``originals`` indexed files at random (``seed``), none of the benchmark's ``samples``."""
    rows = engine.index.store().distinct_files()
    bench_rows = {r["idx"] for r in bench.drawn_originals(rows, samples)[0]}
    others = [r for r in rows if r["idx"] not in bench_rows]
    return random.Random(seed).sample(others, min(originals, len(others)))


def own_verdict(engine: Engine, data: bytes, own: set[int]) -> Verdict | None:
    """The closest verdict at which the upload passed verification against its own file."""
    loaded = engine.decode_upload(data)
    prints = query_fingerprints(loaded.image, engine.upload_grid(loaded, data))
    _, verdicts, _ = engine.verified_matches(data, prints)
    passed = [v for i, v in verdicts.items() if i in own and v.kind in PASSED]
    return min(passed, key=lambda v: v.distance, default=None)


def distances(engine: Engine, rows: list[dict], settings: Settings) -> Found:
    """Per transformation, the distances its copies passed at, and the one-place means of
    those that passed as the same picture."""
    store = engine.index.store()
    found = Found({name: [] for name in bench.TRANSFORMS}, {name: [] for name in bench.TRANSFORMS})
    for n, row in enumerate(rows):
        record = Record("", "", "", path=Path(row["path"]))
        image = bench.query_image(record, settings)
        if image is None:
            continue
        own = set(store.idxs_by_sha256(bench.file_digest(record)))
        for name in bench.TRANSFORMS:
            verdict = own_verdict(engine, bench.query_bytes(name, image), own)
            if verdict is not None:
                found.mean[name].append(verdict.distance)
                if verdict.kind == "same":
                    found.local[name].append(verdict.local)
        print(f"  {n + 1}/{len(rows)} originals", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    return found


class Found(NamedTuple):
    mean: dict[str, list[float]]  # Verdict.distance, per transformation
    local: dict[str, list[float]]  # Verdict.local of the same picture, per transformation


def report(found: Found) -> None:
    for title, values, bar, name in (
        ("distance", found.mean, COPY_MEAN_MAX, "COPY_MEAN_MAX"),
        ("one place", found.local, COPY_LOCAL_MAX, "COPY_LOCAL_MAX"),
    ):
        table(title, values)
        every = np.array([d for v in values.values() for d in v])
        if every.size:
            within = (every <= bar).mean()
            print(f"within {name} ({bar}): {within:.4f} of {every.size} copies\n")


def table(title: str, found: dict[str, list[float]]) -> None:
    print(f"{title:<18} {'passed':>6}  " + " ".join(f"{q:>6}" for q in QUANTILES))
    for name, values in [*found.items(), ("all", [d for v in found.values() for d in v])]:
        if values:
            cuts = np.quantile(values, QUANTILES)
            print(f"{name:<18} {len(values):>6}  " + " ".join(f"{c:6.2f}" for c in cuts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="dataset folder (as for the benchmark)")
    parser.add_argument("--work", type=Path, default=Path(".bench/copy"))
    parser.add_argument("--seed", type=int, default=0, help="the benchmark's split seed")
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--samples", type=int, default=300, help="the benchmark's originals")
    parser.add_argument("--originals", type=int, default=300, help="files to copy here")
    parser.add_argument("--draw", type=int, default=1, help="seeds the draw of the files")
    args = parser.parse_args()
    settings = Settings(model=bench.TINY_MODEL, pretrained=None)
    embedder = bench.Embedder(bench.ModelSpec(bench.TINY_MODEL))
    index_dir, _, _ = bench.build(
        args.source, args.work, settings, embedder, args.holdout, args.seed
    )
    engine = Engine.open(index_dir, settings, embedder)
    engine.verifiers.start()
    rows = drawn(engine, args.samples, args.originals, args.draw)
    report(distances(engine, rows, settings))


if __name__ == "__main__":
    main()
