"""Scale benchmark: published embeddings at N items, built and served by the real commands.

Writes N clustered synthetic CLIP-like vectors (real embeddings cluster; uniform noise is a
pathological case for IVF) in LAION's published layout, with parquet metadata (captions
from a word list, artist names, URLs on a few thousand domains), builds the index with
`hibt index`, serves it with `hibt serve`, and prints: build time, disk bytes per item,
start time, server RSS at start and after the queries (and its peak), p50/p99 over HTTP per
query kind, and recall@10 of vector queries against brute force on the same float16
vectors. The model is ViT-B-32 with random weights (no weights can be downloaded here): the
vectors are synthetic anyway, and text and image queries pay a real ViT-B-32 encoder.

    python scripts/bench_scale.py --n 1000000 --work data/bench-scale
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from machine import cpu_model
from PIL import Image
from serving import Served, serving

ROOT = Path(__file__).resolve().parent.parent
PART_ROWS = 1_000_000
CENTRES = 20_000


def words(text: str) -> list[str]:
    return text.split()


WORDS = words(
    "cat dog tree river mountain portrait city night sky flower ocean forest street car "
    "bird horse castle dragon robot girl boy woman man painting watercolor sketch oil "
    "digital fantasy landscape abstract cyberpunk anime photo studio light shadow gold"
)
FIRST = words("jane john maria li ahmed sofia ivan yuki omar emma lucas aiko pablo nina")
LAST = words("doe smith garcia chen khan rossi petrov tanaka haddad brown silva sato lopez")
# The model whose query encoder the server runs, and its embedding width. ViT-B-32 (random
# weights: none can be downloaded here) pays a real encode; tiny-test is for CI-sized runs.
MODELS = {"ViT-B-32": (["--pretrained", "random-init"], 512), "tiny-test": ([], 64)}


class Clusters:
    """The synthetic data's model: Zipf-sized clusters around random unit centres, with
    anisotropic noise (per-dimension spread falling as j^-0.5, permuted per cluster: a low
    intrinsic dimension, as real embeddings have; isotropic noise in 512 dimensions makes
    neighbour ranking meaningless) scaled so a vector's cosine to its centre is 0.70-0.85."""

    def __init__(self, rng: np.random.Generator, dim: int) -> None:
        self.centres = normalised(rng.standard_normal((CENTRES, dim), dtype=np.float32))
        weights = np.arange(1, CENTRES + 1, dtype=np.float64) ** -0.8
        self.weights = weights / weights.sum()
        cosine = rng.uniform(0.70, 0.85, CENTRES)
        spectrum = np.arange(1, dim + 1, dtype=np.float64) ** -0.5
        scale = np.sqrt(1.0 / cosine**2 - 1.0) / np.sqrt((spectrum**2).sum())
        spread = rng.permuted(np.tile(spectrum, (CENTRES, 1)), axis=1) * scale[:, None]
        self.spread = spread.astype(np.float32)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        which = rng.choice(CENTRES, n, p=self.weights)
        noise = rng.standard_normal(self.centres[which].shape, dtype=np.float32)
        noise *= self.spread[which]
        return normalised(self.centres[which] + noise)


def normalised(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def perturbed(rng: np.random.Generator, x: np.ndarray, cosine: float) -> np.ndarray:
    """``x`` moved to about ``cosine`` from where it was."""
    s = np.sqrt(1.0 / cosine**2 - 1.0) / np.sqrt(x.shape[1])
    return normalised(x + rng.standard_normal(x.shape, dtype=np.float32) * s)


def metadata(rng: np.random.Generator, start: int, n: int) -> pa.Table:
    domains = [f"site{d}.example" for d in range(3000)]
    domain_weights = 1.0 / np.arange(1, 3001)
    domain = rng.choice(3000, n, p=domain_weights / domain_weights.sum())
    first, last = rng.integers(0, len(FIRST), n), rng.integers(0, len(LAST), n)
    words = rng.integers(0, len(WORDS), (n, 3))
    credited = rng.random(n) < 0.3
    captions, urls = [], []
    for i in range(n):
        artist = f"{FIRST[first[i]]} {LAST[last[i]]}"
        text = " ".join(WORDS[w] for w in words[i])
        captions.append(f"{text} by {artist}" if credited[i] else text)
        urls.append(f"https://{domains[domain[i]]}/{artist.replace(' ', '')}/{start + i}.jpg")
    return pa.table(
        {
            "url": urls,
            "caption": captions,
            "punsafe": rng.random(n).astype(np.float32),
            "width": np.full(n, 512, np.int32),
            "height": np.full(n, 512, np.int32),
        }
    )


def write_dataset(source: Path, n: int, dim: int) -> None:
    if (source / "done").is_file():
        return
    rng = np.random.default_rng(0)
    clusters = Clusters(rng, dim)
    for folder in ("img_emb", "metadata"):
        (source / folder).mkdir(parents=True, exist_ok=True)
    for number, start in enumerate(range(0, n, PART_ROWS)):
        rows = min(PART_ROWS, n - start)
        path = source / "img_emb" / f"img_emb_{number:04d}.npy"
        vectors = np.lib.format.open_memmap(path, "w+", np.float16, (rows, dim))
        for at in range(0, rows, 100_000):
            vectors[at : at + 100_000] = clusters.sample(rng, min(100_000, rows - at))
        vectors.flush()
        del vectors
        table = source / "metadata" / f"metadata_{number:04d}.parquet"
        pq.write_table(metadata(rng, start, rows), table)
        print(f"  wrote part {number} ({start + rows:,}/{n:,})", file=sys.stderr)
    # Held-out queries: new vectors of the same clusters, never indexed, moved to cos 0.95.
    np.save(source / "held_out.npy", perturbed(rng, clusters.sample(rng, 1000), 0.95))
    (source / "done").write_text("ok")


def rss(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in GB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return (int(fields["VmRSS"].split()[0]) / 1e6, int(fields["VmHWM"].split()[0]) / 1e6)


def cpu_seconds(pid: int) -> float:
    """CPU time the process has used (all threads, user + system): on a machine shared with
    other work, the engine's own cost per query."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


SERVER: dict[str, int] = {}  # the server's pid, once started
CPU: dict[int, float] = {}  # id(times) -> the server's CPU seconds spent on those queries


def timed(client: httpx.Client, times: list[float], method: str, url: str, **kw) -> dict:
    cpu = cpu_seconds(SERVER["pid"]) if SERVER else 0.0
    started = time.perf_counter()
    response = client.request(method, url, **kw)
    times.append(time.perf_counter() - started)
    if SERVER:
        CPU[id(times)] = CPU.get(id(times), 0.0) + cpu_seconds(SERVER["pid"]) - cpu
    response.raise_for_status()
    return response.json()


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by inner product over the float16 vectors, in blocks."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for at in range(0, len(vectors), 500_000):
        block = np.asarray(vectors[at : at + 500_000], np.float32)
        scores = queries @ block.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], axis=1)
        i = np.concatenate([best_i, top + at], axis=1)
        order = np.argsort(-s, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
    return best_i


def ids_to_rows(index_dir: Path) -> dict[str, int]:
    import sqlite3

    conn = sqlite3.connect(index_dir / "metadata.sqlite")
    return dict(conn.execute("SELECT id, idx FROM items"))


def queries(source: Path, vectors: np.ndarray, rng: np.random.Generator, count: int):
    """Held-out queries (vectors of the same clusters, never indexed) and near-duplicate
    lookups (stored vectors moved to cos 0.98), the case a compressed index alone ranks
    badly."""
    rows = np.sort(rng.choice(len(vectors), count, replace=False))
    near = perturbed(rng, np.asarray(vectors[rows], np.float32), 0.98)
    return {"held-out": np.load(source / "held_out.npy")[:count], "near-duplicate": near}


def png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def percentiles(times: list[float]) -> str:
    ms = np.array(times) * 1000
    return f"{np.percentile(ms, 50):7.1f} {np.percentile(ms, 99):7.1f}"


def words_query(i: int) -> str:
    return f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]}"


def name_query(i: int) -> str:
    return f"{FIRST[i % len(FIRST)]} {LAST[(i * 5) % len(LAST)]}"


def serve_and_measure(source: Path, index_dir: Path, vectors: np.ndarray, count: int) -> dict:
    with serving(index_dir, {"HIBT_WRITES_PER_MINUTE": "100000"}) as served:
        return measure(served, source, index_dir, vectors, count)


def measure(served: Served, source: Path, index_dir: Path, vectors: np.ndarray, count: int) -> dict:
    proc = served.proc
    client = httpx.Client(base_url=served.base, timeout=120)
    try:
        start_s = served.start_s
        rss_start = rss(proc.pid)
        SERVER["pid"] = proc.pid
        rng = np.random.default_rng(1)
        qs = queries(source, vectors, rng, count)
        truth = {name: brute_force(vectors, q, 10) for name, q in qs.items()}
        rows = ids_to_rows(index_dir) if len(vectors) <= 2_000_000 else None
        results: dict[str, list[float]] = {}
        recall: dict[str, float] = {}
        for name, q in qs.items():
            times, hits = results.setdefault(f"{name} k=60", []), 0
            for i, vec in enumerate(q):
                body = {"vector": vec.tolist(), "k": 60}
                answer = timed(client, times, "POST", "/api/search/vector", json=body)
                got = [r["id"] for r in answer["results"][:10]]
                if rows is None:  # large index: map ids through the item endpoint
                    got_rows = [idx_of(client, g) for g in got]
                else:
                    got_rows = [rows[g] for g in got]
                hits += len(set(got_rows) & set(truth[name][i].tolist()))
            recall[name] = hits / (10 * len(q))
        times = results.setdefault("vector k=1000", [])
        for vec in qs["held-out"][:20]:
            timed(
                client,
                times,
                "POST",
                "/api/search/vector",
                json={"vector": vec.tolist(), "k": 1000},
            )
        for name, make in (
            (
                "text k=60",
                lambda i: {"q": f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]}"},
            ),
            ("name match", lambda i: {"q": f"{FIRST[i % len(FIRST)]} {LAST[(i * 5) % len(LAST)]}"}),
        ):
            times = results.setdefault(name, [])
            for i in range(count):
                timed(client, times, "GET", "/api/search", params={**make(i), "k": 60})
        times = results.setdefault("site", [])
        for i in range(count):
            site = f"site{i % 50}.example" if i % 2 else f"site{i % 50}.example/{FIRST[i % 14]}doe"
            timed(client, times, "GET", "/api/search/site", params={"site": site, "k": 60})
        times = results.setdefault("image upload", [])
        for i in range(min(count, 50)):
            files = {"image": ("q.png", png(i), "image/png")}
            timed(client, times, "POST", "/api/search/image", files=files, params={"k": 60})
        return {
            "start_s": start_s,
            "rss_start": rss_start,
            "rss_after": rss(proc.pid),
            "latency": results,
            "recall": recall,
        }
    finally:
        client.close()


_ids: dict[str, int] = {}


def idx_of(client: httpx.Client, item_id: str) -> int:
    if item_id not in _ids:
        key = client.get(f"/api/items/{item_id}").json()["key"]  # "part:row"
        part, row = (int(x) for x in key.split(":"))
        _ids[item_id] = part * PART_ROWS + row
    return _ids[item_id]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "bench-scale")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clean", action="store_true", help="delete the index afterwards")
    parser.add_argument("--model", choices=sorted(MODELS), default="ViT-B-32")
    parser.add_argument("--faiss-factory", help="instead of the size's default (e.g. for CI)")
    args = parser.parse_args()
    work = args.work / f"n{args.n}"
    source, index_dir = work / "source", work / "index"
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); N = {args.n:,}", flush=True)
    flags, dim = MODELS[args.model]
    write_dataset(source, args.n, dim)
    started = time.perf_counter()
    if not (index_dir / "manifest.json").is_file():
        cmd = [
            sys.executable,
            "-m",
            "hibt",
            "index",
            str(source),
            "--out",
            str(index_dir),
            "--model",
            args.model,
            *flags,
        ]
        if args.faiss_factory:
            cmd += ["--faiss-factory", args.faiss_factory]
        subprocess.run(cmd, check=True)
    build_s = time.perf_counter() - started
    manifest = json.loads((index_dir / "manifest.json").read_text())
    vectors = np.load(index_dir / "image_vectors.npy", mmap_mode="r")
    figures = serve_and_measure(source, index_dir, vectors, args.queries)
    size = disk_bytes(index_dir)
    print(
        f"\nindex: {manifest['faiss_factory']}; build {build_s:.0f} s (this run; 0 if reused); "
        f"disk {size / 1e9:.2f} GB = {size / args.n:.0f} bytes/item"
    )
    rs, ra = figures["rss_start"], figures["rss_after"]
    print(
        f"start {figures['start_s']:.1f} s; server RSS at start {rs[0]:.2f} GB, after "
        f"queries {ra[0]:.2f} GB, peak {ra[1]:.2f} GB"
    )
    print("\nquery kind            p50 ms  p99 ms  server CPU ms/query  (over HTTP, one client)")
    for name, times in figures["latency"].items():
        cpu = 1000 * CPU.get(id(times), 0.0) / max(1, len(times))
        print(f"{name:20s} {percentiles(times)}  {cpu:7.1f}")
    for name, value in figures["recall"].items():
        print(f"recall@10 {name} queries vs brute force: {value:.3f}")
    if args.clean:
        shutil.rmtree(index_dir)


if __name__ == "__main__":
    main()
