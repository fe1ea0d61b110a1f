"""Build throughput on Ray with one and two workers, beside the single-machine build.

The same webdataset shards are indexed four times, each run in its own process: the plain
build (`build_index`) with one and with two decoder processes, and the Ray build
(`build_index(..., ray=True)`) on a local Ray of one and of two workers. A Ray worker here
is one CPU slot for decode tasks; the one embedding actor holds no slot (it runs beside
them, as the plain build's encoder runs beside its decoders), so "1 worker" against the
plain build with one decoder is Ray's overhead, and "2 workers" against two decoders is the
same comparison at two. Peak memory is the largest sum of resident memory over the run's
whole process tree (decoders, or Ray's own daemons and workers), sampled every 0.2 s.

    OMP_NUM_THREADS=1 python scripts/bench_ray.py --images 300
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def jpeg(rng: np.random.Generator) -> bytes:
    """A photo-sized JPEG of blurred discs."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = int(rng.integers(480, 1024)), int(rng.integers(360, 768))
    image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(20, 200))
        draw.ellipse(
            (x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3))
        )
    buffer = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(2)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_shards(folder: Path, n: int, per_shard: int) -> None:
    """JPEGs with captions, ``per_shard`` to a .tar, as img2dataset writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for first in range(0, n, per_shard):
        with tarfile.open(folder / f"{first // per_shard:05d}.tar", "w") as tar:
            for i in range(first, min(n, first + per_shard)):
                caption = f"a photograph of subject number {i} in warm light".encode()
                for name, data in ((f"{i:07d}.jpg", jpeg(rng)), (f"{i:07d}.txt", caption)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and every process below it, from /proc."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [c for c, p in parents.items() if p == pid and c not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(rss.get(p, 0) for p in tree) / 2**20


class PeakMemory:
    def __init__(self) -> None:
        self.peak = 0.0
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, tree_rss_mb(os.getpid()))
            time.sleep(0.2)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return self.peak


def timed(cls: type, name: str, spent: dict[str, float]) -> None:
    """Wrap ``cls.name`` so the seconds spent in it add up in ``spent[name]``."""
    method = getattr(cls, name)

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

    setattr(cls, name, wrapper)


def run(args: argparse.Namespace) -> dict:
    """One build in this process: plain with ``workers`` decoders, or Ray with ``workers``."""
    from hibt.config import TINY_MODEL, Settings
    from hibt.indexer.build import Builder, build_index
    from hibt.indexer.distributed import RayBuilder

    spent: dict[str, float] = {}
    timed(Builder, "finalize", spent)  # the driver's finishing, the same in both builds
    timed(RayBuilder, "commit_part", spent)  # the driver committing parts, Ray only
    memory = PeakMemory()
    pretrained = None if args.model == TINY_MODEL else "random-init"
    settings = Settings(
        model=args.model,
        pretrained=pretrained,
        precision=args.precision,
        decode_workers=args.workers,
        ray_embedders=1,
        ray_embed_cpus=0,
    )
    out = Path(tempfile.mkdtemp()) / "index"
    started = time.perf_counter()
    startup = 0.0
    if args.child == "ray":
        import ray

        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - started
    result = build_index(args.source, out, None, settings, ray=args.child == "ray")
    seconds = time.perf_counter() - started - startup
    if args.child == "ray":
        import ray

        ray.shutdown()
    peak = memory.stop()
    shutil.rmtree(out.parent)
    return {
        "images": result.manifest.counts.items,
        "seconds": seconds,
        "startup": startup,
        "peak_mb": peak,
        "finishing": spent.get("finalize", 0.0),
        "committing": spent.get("commit_part", 0.0),
    }


def commit_rate(parts: int = 20, per_part: int = 512, dim: int = 512) -> dict:
    """The driver's serial step alone: parts of ``per_part`` synthetic items (``dim``-d
    vectors, 8 KB thumbnails, the seven views' descriptors) committed by
    RayBuilder.commit_part into a fresh staging store, as a build on a cluster does."""
    from tqdm import tqdm

    from hibt.indexer import index_format as fmt
    from hibt.indexer.decode import Decoded
    from hibt.indexer.distributed import Arrived, PartStore, RayBuilder, encode_part, part_name
    from hibt.indexer.records import Record
    from hibt.indexer.store import Store, Thumbnails

    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp())
    store = PartStore(str(root / "parts"))
    thumbnail = rng.integers(0, 256, 8192, dtype=np.uint8).tobytes()
    for unit in range(parts):
        ok = []
        for i in range(per_part):
            url = f"https://example.org/{unit}/{i}.jpg"
            record = Record("bench", f"{unit:05d}.tar/{i:07d}", url, caption=f"photo {i}", url=url)
            decoded = Decoded(
                pixels=np.zeros(0, np.uint8),
                hashes=rng.integers(0, 256, (7, 32), dtype=np.uint8),
                descriptors=rng.standard_normal((7, 255)).astype(np.float16),
                colour=rng.integers(0, 256, 48, dtype=np.uint8),
                thumbnail=thumbnail,
                width=640,
                height=480,
                sha256=f"{unit:032x}{i:032x}",
            )
            ok.append((record, decoded))
        vectors = rng.standard_normal((per_part, dim)).astype(np.float16)
        store.write(part_name(unit, 0, True), encode_part(ok, [], vectors, vectors))
    builder = RayBuilder.__new__(RayBuilder)  # only what commit_part touches
    builder.stage = root / "stage"
    builder.stage.mkdir()
    builder.store = Store.open(builder.stage / fmt.METADATA)
    builder.thumbnails = Thumbnails.open(builder.stage / fmt.THUMBNAILS)
    builder.parts, builder.bar = store, tqdm(disable=True)
    builder.arrived = {unit: Arrived({0: per_part}, 0) for unit in range(parts)}
    started = time.perf_counter()
    for unit in range(parts):
        builder.commit_part(unit, 0, True)
    seconds = time.perf_counter() - started
    shutil.rmtree(root)
    return {"items": parts * per_part, "per_part": per_part, "seconds": seconds}


def merge_memory(nlist: int, parts: int, per_part: int = 2000, dim: int = 64) -> dict:
    """Resident memory that faiss's merge_ondisk adds, over ``parts`` IVF-PQ parts of
    ``nlist`` lists: what it costs per list per part (the quantiser is set, not trained)."""
    import faiss
    from faiss.contrib.ondisk import merge_ondisk

    def rss_bytes() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    rng = np.random.default_rng(0)
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, 8, 8, faiss.METRIC_INNER_PRODUCT)
    index.quantizer.add(rng.standard_normal((nlist, dim)).astype(np.float32))
    index.pq.train(rng.standard_normal((10_000, dim)).astype(np.float32))
    index.is_trained = True
    root = Path(tempfile.mkdtemp())
    faiss.write_index(index, str(root / "trained.index"))
    names = []
    for part in range(parts):
        shard = faiss.read_index(str(root / "trained.index"))
        ids = np.arange(part * per_part, (part + 1) * per_part)
        shard.add_with_ids(rng.standard_normal((per_part, dim)).astype(np.float32), ids)
        names.append(str(root / f"part{part}.index"))
        faiss.write_index(shard, names[-1])
        del shard
    merged = faiss.read_index(str(root / "trained.index"))
    before, started = rss_bytes(), time.perf_counter()
    merge_ondisk(merged, names, str(root / "merged.ivfdata"))
    grew, seconds = rss_bytes() - before, time.perf_counter() - started
    shutil.rmtree(root)
    return {"nlist": nlist, "parts": parts, "grew_bytes": grew, "seconds": seconds}


def spawn(kind: str, workers: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--workers", str(workers)]
    cmd += ["--source", str(args.source), "--model", args.model, "--precision", args.precision]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{kind} {workers} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--per-shard", type=int, default=25, help="images per .tar shard")
    parser.add_argument("--model", default="tiny-test", help="tiny-test, or e.g. ViT-B-32")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--source", type=Path, default=None, help="a folder of .tar shards")
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "commit":
        print(json.dumps(commit_rate()))
        return
    if args.child == "merge":
        nlist, parts = divmod(args.workers, 10_000)
        print(json.dumps(merge_memory(nlist, parts)))
        return
    if args.child:
        print(json.dumps(run(args)))
        return
    if args.source is None:
        args.source = Path(tempfile.mkdtemp()) / "shards"
        make_shards(args.source, args.images, args.per_shard)
    import ray

    print(
        f"CPU: {cpu_model()}, {os.cpu_count()} cores; OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; Ray {ray.__version__}"
    )
    print(
        f"{args.images} JPEGs in {args.per_shard}-image shards, model {args.model} "
        f"({args.precision})"
    )
    rows = {
        ("plain", 1): spawn("plain", 1, args),
        ("plain", 2): spawn("plain", 2, args),
        ("ray", 1): spawn("ray", 1, args),
        ("ray", 2): spawn("ray", 2, args),
    }
    print(
        f"\n{'build':<28} {'img/s':>7} {'seconds':>8} {'start s':>8} {'finish s':>8} "
        f"{'commit s':>8} {'peak MB':>8}"
    )
    for (kind, workers), r in rows.items():
        name = f"{kind}, {workers} {'decoder' if kind == 'plain' else 'Ray worker'}"
        name += "s" if workers > 1 else ""
        rate = r["images"] / r["seconds"]
        print(
            f"{name:<28} {rate:7.1f} {r['seconds']:8.1f} {r['startup']:8.1f} "
            f"{r['finishing']:8.1f} {r['committing']:8.2f} {r['peak_mb']:8.0f}"
        )

    def rate(key: tuple[str, int]) -> float:
        return rows[key]["images"] / rows[key]["seconds"]

    print(
        f"\nRay on 1 worker / plain with 1 decoder: {rate(('ray', 1)) / rate(('plain', 1)):.2f}x"
        f"\nRay on 2 workers / plain with 2 decoders: {rate(('ray', 2)) / rate(('plain', 2)):.2f}x"
        f"\nRay 2 workers / Ray 1 worker: {rate(('ray', 2)) / rate(('ray', 1)):.2f}x"
        f"\nplain 2 decoders / plain 1 decoder: {rate(('plain', 2)) / rate(('plain', 1)):.2f}x"
        "\n(throughput excludes starting Ray, shown apart; it includes the driver's finishing)"
    )
    commit = spawn("commit", 0, args)
    print(
        f"driver alone: {commit['per_part']}-item parts committed at "
        f"{commit['items'] / commit['seconds']:,.0f} items/s ({commit['items']} items)"
    )
    for nlist, parts in ((4096, 20), (4096, 80), (16384, 80)):
        merge = spawn("merge", nlist * 10_000 + parts, args)
        per = merge["grew_bytes"] / (nlist * parts)
        print(
            f"merge_ondisk of {parts} parts at {nlist} lists: resident memory grew "
            f"{merge['grew_bytes'] / 2**20:.1f} MB ({per:.0f} bytes a list a part) in "
            f"{merge['seconds']:.2f} s ({merge['seconds'] / (nlist * parts) * 1e6:.2f} us "
            "a list a part)"
        )
    ray2 = rows[("ray", 2)]
    print(
        f"driver: {args.per_shard}-image parts committed at "
        f"{ray2['images'] / max(ray2['committing'], 1e-9):,.0f} items/s; finishing (vectors, "
        f"FAISS, groups, FTS) {ray2['finishing']:.1f} s for {ray2['images']} items"
    )


if __name__ == "__main__":
    main()
