"""Query latency with safety scores: safe mode, safe=false and hide mode, against the same
index as an index built before scores were kept (their columns dropped) in the same run.

Builds N generated JPEGs with the tiny test model (so that the query's own cost, not the
text encoder's, is what is timed) with scoring off and on (the build's slowdown where the
decoders, not the encoder, are the bottleneck), flags one item in ten by writing a
score into its row (no explicit image is used), then times `Engine.search_text` for each
configuration in turn, round after round, so that other load on the machine falls on all
alike. Also prints the build's own scoring figures from its manifest.

    OMP_NUM_THREADS=1 python scripts/bench_safety.py --images 300
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench_indexing import make_images  # noqa: E402
from machine import cpu_model  # noqa: E402  (scripts/ is on the path of a script)


def as_built_before(index_dir: Path, out: Path) -> Path:
    """A copy of the index as an index built before safety scores: no columns, no manifest
    entry."""
    shutil.copytree(index_dir, out)
    conn = sqlite3.connect(out / "metadata.sqlite")
    conn.executescript(
        "DROP INDEX items_nsfw; ALTER TABLE items DROP COLUMN nsfw; "
        "ALTER TABLE items DROP COLUMN nsfw_source;"
    )
    conn.close()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest.pop("safety", None)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def flag_every_tenth(index_dir: Path) -> int:
    from hibt.indexer.store import Store

    store = Store.open(index_dir / "metadata.sqlite")
    n = store.conn.execute("SELECT count(*) FROM items").fetchone()[0]
    store.set_safety((idx, 0.9, "open_nsfw") for idx in range(0, n, 10))
    store.commit()
    store.close()
    return len(range(0, n, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--k", type=int, default=60)
    args = parser.parse_args()

    from hibt.config import TINY_MODEL, Settings
    from hibt.indexer.build import build_index
    from hibt.indexer.model import Embedder, ModelSpec
    from hibt.server.engine import Engine

    work = Path(tempfile.mkdtemp())
    make_images(work / "images", args.images)
    embedder = Embedder(ModelSpec(TINY_MODEL))
    base = {"model": TINY_MODEL, "pretrained": None}
    started = time.perf_counter()
    unscored = Settings(**base, nsfw_scoring=False)
    build_index(work / "images", work / "unscored", embedder, unscored)
    seconds_unscored = time.perf_counter() - started
    started = time.perf_counter()
    result = build_index(work / "images", work / "index", embedder, Settings(**base))
    seconds = time.perf_counter() - started
    before = as_built_before(work / "index", work / "before")
    flagged = flag_every_tenth(work / "index")

    engines = {
        "built before scores": (Engine.open(before, Settings(**base), embedder), True),
        "safe mode (default)": (Engine.open(work / "index", Settings(**base), embedder), True),
        "safe=false": (Engine.open(work / "index", Settings(**base), embedder), False),
        "HIBT_HIDE_UNSAFE": (
            Engine.open(work / "index", Settings(**base, hide_unsafe=True), embedder),
            True,
        ),
    }
    queries = [f"a photograph of subject number {i}" for i in range(0, args.images, 7)]
    times: dict[str, list[float]] = {name: [] for name in engines}
    for r in range(args.rounds):
        query = queries[r % len(queries)]
        for name, (engine, safe) in engines.items():
            t = time.perf_counter()
            engine.search_text(query, args.k, safe=safe)
            times[name].append(1000 * (time.perf_counter() - t))

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"CPU: {cpu_model()}; {args.images} images, tiny model; peak RSS {peak:.0f} MB")
    safety = result.manifest.safety
    print(
        f"build with scoring: {seconds:.1f} s, {safety.scored} images scored by {safety.model}; "
        f"without: {seconds_unscored:.1f} s ({seconds / seconds_unscored:.2f}x with a model too "
        "small to hide the decoders' extra work)"
    )
    print(f"{flagged} items flagged by an injected score; text queries, k={args.k}\n")
    reference = float(np.percentile(times["built before scores"], 50))
    print(f"{'configuration':<22} {'p50 ms':>8} {'p99 ms':>8} {'p50 ratio':>10}")
    for name, samples in times.items():
        p50, p99 = np.percentile(samples, 50), np.percentile(samples, 99)
        print(f"{name:<22} {p50:8.2f} {p99:8.2f} {p50 / reference:9.2f}x")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
