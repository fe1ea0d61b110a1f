"""Indexing and query-encoding speed: hibt's pipeline against the plain open_clip loop.

Both sides index the same N images with captions using the ViT-B-32 architecture (random
weights: the cost is that of the real model), each in its own process so peak memory is
measured separately. The baseline is the fp32 loop a tutorial would write: open, convert,
preprocess, encode images and captions batch by batch, save. hibt's side is the real
`build_index` (it also computes hashes, thumbnails, SQLite and FAISS). Then the query side:
text-query and image-query encode latency, p50 and p99, and the fast paths' agreement with
fp32 (cosine similarity and nearest neighbours). The build runs twice, with and without the
safety classifier (open_nsfw, indexer/nsfw.py), and the classifier's own throughput on one
thread is timed on the same images.

    python scripts/bench_indexing.py --images 512
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import PeakMemory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "ViT-B-32"


def make_images(folder: Path, n: int) -> None:
    """Photo-sized JPEGs (LAION is mostly JPEG) with caption sidecars."""
    from PIL import Image, ImageDraw, ImageFilter

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = int(rng.integers(640, 1600)), int(rng.integers(480, 1200))
        image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            r = int(rng.integers(20, 300))
            draw.ellipse(
                (x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3))
            )
        image = image.filter(ImageFilter.GaussianBlur(2))
        image.save(folder / f"{i:05d}.jpg", quality=90)
        (folder / f"{i:05d}.txt").write_text(f"a photograph of subject number {i} in warm light")


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the decoder workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_baseline(source: Path, batch: int) -> dict:
    """The tutorial loop, deliberately plain."""
    import open_clip
    import torch
    from PIL import Image

    # From the model's creation, as for hibt's side.
    with PeakMemory(children=True, every=0.02) as memory:
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms(MODEL)
        model.eval()
        tokenizer = open_clip.get_tokenizer(MODEL)
        paths = sorted(source.glob("*.jpg"))
        started, cpu = time.perf_counter(), cpu_seconds()
        image_features, text_features = [], []
        for start in range(0, len(paths), batch):
            chunk = paths[start : start + batch]
            images = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in chunk])
            captions = [p.with_suffix(".txt").read_text() for p in chunk]
            with torch.no_grad():
                f = model.encode_image(images)
                t = model.encode_text(tokenizer(captions))
            image_features.append((f / f.norm(dim=-1, keepdim=True)).numpy())
            text_features.append((t / t.norm(dim=-1, keepdim=True)).numpy())
        out = Path(tempfile.mkdtemp())
        np.save(out / "image.npy", np.concatenate(image_features))
        np.save(out / "text.npy", np.concatenate(text_features))
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    shutil.rmtree(out)
    return {"images": len(paths), "seconds": seconds, "cpu": cpu, "peak_mb": memory.mb}


def run_hibt(source: Path, precision: str, cache: Path, scoring: bool = True) -> dict:
    from hibt.config import RANDOM_WEIGHTS, Settings
    from hibt.indexer.build import build_index
    from hibt.indexer.model import Embedder, ModelSpec

    settings = Settings(
        model=MODEL, pretrained=RANDOM_WEIGHTS, precision=precision, nsfw_scoring=scoring
    )
    with PeakMemory(children=True, every=0.02) as memory:
        embedder = Embedder(ModelSpec(MODEL, RANDOM_WEIGHTS), precision, settings.runtime, cache)
        out = Path(tempfile.mkdtemp()) / "index"
        started, cpu = time.perf_counter(), cpu_seconds()
        result = build_index(source, out, embedder, settings)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    shutil.rmtree(out.parent)
    return {
        "images": result.manifest.counts.items,
        "seconds": seconds,
        "cpu": cpu,
        "peak_mb": memory.mb,
        "precision": embedder.describe(),
        "scored": result.manifest.safety.scored if result.manifest.safety else 0,
    }


def stage_profile(source: Path, precision: str, runtime: str, batch: int, cache: Path) -> dict:
    """CPU milliseconds per image in each stage of a build, one image at a time through the
    same functions the decoder workers and the encoder call (indexer/decode.py), so a change
    is measured where it acts. CPU time, not wall: fair on a shared machine."""
    import hashlib

    from hibt.config import RANDOM_WEIGHTS, Settings
    from hibt.indexer import nsfw
    from hibt.indexer.copies.fingerprint import index_fingerprints
    from hibt.indexer.images import decode, least_side, read_bytes, thumbnail_bytes
    from hibt.indexer.model import Embedder, ModelSpec
    from hibt.indexer.model_input import resize_center_crop

    settings = Settings()
    embedder = Embedder(ModelSpec(MODEL, RANDOM_WEIGHTS), precision, runtime, cache)
    paths = sorted(source.glob("*.jpg"))[: max(batch, 32)]
    least = least_side(embedder.image_size, settings.thumbnail_size)  # as decode_one decodes
    spent: dict[str, float] = {}

    def clocked(stage: str, call, *args):
        started = time.process_time()
        out = call(*args)
        spent[stage] = spent.get(stage, 0.0) + time.process_time() - started
        return out

    pixels, captions = [], []
    for path in paths:
        data = clocked("read", read_bytes, path, 10**9)
        clocked("sha256", lambda d=data: hashlib.sha256(d).hexdigest())
        loaded = clocked("decode", decode, data, 10**9, settings.working_size, None, least)
        clocked("fingerprints", index_fingerprints, loaded.image)
        clocked("thumbnail", thumbnail_bytes, loaded.image, settings.thumbnail_size)
        pixels.append(clocked("model input", resize_center_crop, loaded.image, embedder.image_size))
        clocked("safety score", nsfw.classifier().score, loaded.image)
        captions.append(path.with_suffix(".txt").read_text())
    embedder.encode_pixels(np.stack(pixels[:2]))  # warm-up
    for start in range(0, len(paths), batch):
        clocked("encode images", embedder.encode_pixels, np.stack(pixels[start : start + batch]))
        clocked("encode captions", embedder.encode_texts, captions[start : start + batch])
    return {
        "encoder": embedder.describe(),
        "images": len(paths),
        "ms_per_image": {k: 1000 * v / len(paths) for k, v in spent.items()},
    }


def run_encoder(precision: str, runtime: str, batch: int, cache: Path) -> dict:
    """The image encoder alone on model inputs already made, ``batch`` at a time, with the
    build's threads: the rate a build could reach if nothing but encoding cost anything."""
    from hibt.config import RANDOM_WEIGHTS
    from hibt.indexer.model import Embedder, ModelSpec

    embedder = Embedder(ModelSpec(MODEL, RANDOM_WEIGHTS), precision, runtime, cache)
    size = embedder.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    embedder.encode_pixels(pixels[:2])  # first-call set-up is not throughput
    batches = 3
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        embedder.encode_pixels(pixels)
    return {
        "encoder": embedder.describe(),
        "images": batches * batch,
        "seconds": time.perf_counter() - started,
        "cpu": time.process_time() - cpu,
    }


def run_nsfw(source: Path) -> dict:
    """The safety classifier alone, one thread, on images decoded as the build decodes them."""
    from hibt.indexer import nsfw
    from hibt.indexer.images import load_image

    images = [load_image(p, 10**9, 10**9, 1024).image for p in sorted(source.glob("*.jpg"))]
    classifier = nsfw.classifier()
    classifier.score(images[0])  # first-call set-up is not throughput
    started = time.perf_counter()
    scores = [classifier.score(image) for image in images]
    seconds = time.perf_counter() - started
    return {"images": len(images), "seconds": seconds, "max_score": max(scores)}


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 99))


# What runs a query's encoder: (label, precision, runtime), compared in the same process.
ENCODERS = (
    ("torch fp32", "fp32", "torch"),
    ("torch bf16", "bf16", "torch"),
    ("torch int8", "int8", "torch"),
    ("onnx fp32", "fp32", "onnx"),
    ("onnx int8", "int8", "onnx"),
)


def timed(call, inputs: list) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of ``call`` on each input, after one warm-up call (CPU time
    is what a busy machine still measures fairly)."""
    call(inputs[0])
    wall, cpu = [], []
    for given in inputs:
        w, c = time.perf_counter(), time.process_time()
        call(given)
        wall.append(1000 * (time.perf_counter() - w))
        cpu.append(1000 * (time.process_time() - c))
    return wall, cpu


def query_side(source: Path, reps: int, cache: Path) -> dict:
    """Encode latency of single queries (an upload decoded as the server decodes it, then
    resized, cropped, normalised and encoded), and agreement of each encoder with fp32."""
    from hibt.config import RANDOM_WEIGHTS, Settings
    from hibt.indexer.images import least_side, load_image
    from hibt.indexer.model import Embedder, ModelSpec

    spec = ModelSpec(MODEL, RANDOM_WEIGHTS)
    s = Settings()
    least = least_side(224, s.thumbnail_size)  # ViT-B-32's input: as Engine.search_image
    paths = sorted(source.glob("*.jpg"))[:32]
    images = [load_image(p, 10**9, 10**9, s.working_size, least).image for p in paths]
    texts = [f"a painting of a {w} by Jane Doe" for w in ("fox", "lighthouse", "teapot", "owl")] * 8
    reference = Embedder(spec, "fp32")
    ref_images, ref_texts = reference.encode_images(images), reference.encode_texts(texts)
    rows = {}
    for label, precision, runtime in ENCODERS:
        embedder = Embedder(spec, precision, runtime, cache)
        got_images, got_texts = embedder.encode_images(images), embedder.encode_texts(texts)
        text_ms = timed(embedder.encode_texts, [[texts[i % 32]] for i in range(reps)])
        image_ms = timed(
            embedder.encode_images, [[images[i % 32]] for i in range(max(10, reps // 4))]
        )
        rows[label] = {
            "text_p50_p99": percentiles(text_ms[0]),
            "text_cpu_p50": percentiles(text_ms[1])[0],
            "image_p50_p99": percentiles(image_ms[0]),
            "image_cpu_p50": percentiles(image_ms[1])[0],
            "min_cosine_images": float(np.min(np.sum(ref_images * got_images, axis=1))),
            "min_cosine_texts": float(np.min(np.sum(ref_texts * got_texts, axis=1))),
            "same_neighbours": float(
                np.mean(np.argmax(got_images @ ref_images.T, 1) == np.arange(len(images)))
            ),
        }
    return rows


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads) if args.threads else None
    if args.child == "baseline":
        print(json.dumps(run_baseline(args.source, args.batch)))
    elif args.child == "stages":
        print(
            json.dumps(stage_profile(args.source, args.precision, "auto", args.batch, args.cache))
        )
    elif args.child == "hibt":
        print(json.dumps(run_hibt(args.source, args.precision, args.cache, not args.no_scoring)))
    elif args.child == "encoder":
        print(json.dumps(run_encoder(args.precision, args.runtime, args.batch, args.cache)))
    elif args.child == "nsfw":
        print(json.dumps(run_nsfw(args.source)))
    else:
        print(json.dumps(query_side(args.source, args.reps, args.cache)))


def spawn(kind: str, args: argparse.Namespace, *extra: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--source",
        str(args.source),
        "--batch",
        str(args.batch),
        "--reps",
        str(args.reps),
        "--cache",
        str(args.cache),
        "--threads",
        str(args.threads),
        *extra,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--source", type=Path, default=None, help="a folder of .jpg + .txt")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--runtime", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--query-only", action="store_true", help="skip the indexing runs")
    parser.add_argument("--no-scoring", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--cache", type=Path, default=None, help="ONNX exports (default: a fresh folder)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.cache is None:
        args.cache = Path(tempfile.mkdtemp()) / "onnx"
    if args.source is None:
        args.source = Path(tempfile.mkdtemp()) / "images"
        make_images(args.source, args.images)
    from hibt.indexer.precision import cpu_flags

    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx2")))
    print(f"CPU flags: {' '.join(flags) or 'none of avx2/avx512/amx'}")
    indexing = None
    if not args.query_only:
        base = spawn("baseline", args)
        ours = spawn("hibt", args, "--precision", args.precision)
        unscored = spawn("hibt", args, "--precision", args.precision, "--no-scoring")
        print_indexing(base, ours, unscored)
        encoders = [spawn("encoder", args, "--precision", args.precision)]
        if {"avx512_bf16", "amx_bf16"} & set(flags):  # native bf16: the yardstick
            encoders.append(spawn("encoder", args, "--precision", "bf16", "--runtime", "torch"))
        print_encoders(encoders, ours)
        print_scoring(spawn("nsfw", args), ours, unscored)
        indexing = ours
    print_stages(spawn("stages", args, "--precision", args.precision), indexing)
    print_query(spawn("query", args))


def print_indexing(base: dict, ours: dict, unscored: dict) -> None:
    print(f"\nindexing {base['images']} JPEGs with {MODEL} (random weights), images + captions")
    print(f"{'pipeline':<34} {'img/s':>8} {'seconds':>8} {'CPU s':>8} {'peak MB':>8}")
    for name, r in (
        ("open_clip fp32 loop (baseline)", base),
        (f"hibt build ({ours['precision']})", ours),
        (f"hibt build ({ours['precision']}), no scoring", unscored),
    ):
        print(
            f"{name:<34} {r['images'] / r['seconds']:8.1f} {r['seconds']:8.1f} {r['cpu']:8.1f} "
            f"{r['peak_mb']:8.0f}"
        )
    per_image = ours["images"] / base["images"]
    print(
        f"speed-up: {base['seconds'] / ours['seconds'] * per_image:.2f}x wall, "
        f"{base['cpu'] / ours['cpu'] * per_image:.2f}x CPU time "
        "(hibt also hashes, thumbnails and writes SQLite + FAISS); "
        f"peak memory {ours['peak_mb'] / base['peak_mb']:.2f}x"
    )


def print_encoders(encoders: list[dict], build: dict) -> None:
    """Each image encoder's own rate beside the whole build's, wall and per CPU second."""
    print("\nimage encoder alone, batches of model inputs, the build's threads")
    rate, per_cpu = build["images"] / build["seconds"], build["images"] / build["cpu"]
    for e in encoders:
        alone, alone_cpu = e["images"] / e["seconds"], e["images"] / e["cpu"]
        print(
            f"  {e['encoder']:<18} {alone:6.1f} img/s, {alone_cpu:6.1f} img per CPU s; "
            f"the build reaches {rate / alone:.2f}x its rate ({per_cpu / alone_cpu:.2f}x "
            "per CPU s)"
        )


def print_scoring(alone: dict, ours: dict, unscored: dict) -> None:
    print(
        f"\nsafety classifier (open_nsfw, onnxruntime, 1 thread): "
        f"{alone['images'] / alone['seconds']:.1f} img/s alone (highest score on these "
        f"generated images: {alone['max_score']:.3f}); build with scoring takes "
        f"{ours['seconds'] / unscored['seconds']:.2f}x the build without "
        f"({ours['scored']} images scored)"
    )


def print_stages(stages: dict, build: dict | None) -> None:
    """Per image CPU ms per stage; with a build measured, each stage's share of the CPU
    time the build spent per image (its own and its decoder workers')."""
    spent = 1000 * build["cpu"] / build["images"] if build else None
    print(f"\nstage profile, CPU ms per image ({stages['images']} images, {stages['encoder']})")
    for stage, ms in stages["ms_per_image"].items():
        share = f"  {100 * ms / spent:5.1f}% of the build's CPU time" if spent else ""
        print(f"  {stage:<16} {ms:7.1f} ms{share}")
    if spent:
        total = sum(stages["ms_per_image"].values())
        print(
            f"  {'sum':<16} {total:7.1f} ms of the {spent:.1f} ms the build spent per image "
            "(the rest: writing, SQLite, FAISS, hand-over between processes)"
        )


def print_query(query: dict) -> None:
    print("\nsingle-query encode latency (wall p50/p99; CPU p50: this process's own time)")
    print(
        f"{'encoder':<11} {'text p50':>9} {'p99':>7} {'cpu':>7} {'image p50':>10} {'p99':>7} "
        f"{'cpu':>7} {'min cos img':>12} {'min cos txt':>12} {'same NN':>8}"
    )
    for label, r in query.items():
        print(
            f"{label:<11} {r['text_p50_p99'][0]:7.1f}ms {r['text_p50_p99'][1]:5.1f}ms "
            f"{r['text_cpu_p50']:5.1f}ms {r['image_p50_p99'][0]:8.1f}ms "
            f"{r['image_p50_p99'][1]:5.1f}ms {r['image_cpu_p50']:5.1f}ms "
            f"{r['min_cosine_images']:12.4f} {r['min_cosine_texts']:12.4f} "
            f"{r['same_neighbours']:8.2f}"
        )


if __name__ == "__main__":
    main()
