"""Copy search at scale: the candidate index against exhaustive search, on N items.

Builds an N-item set of stored fingerprints without images: the real fingerprints of the
Openclipart PNGs (or, where those are absent, of generated drawings, as CI runs it), tiled
up to N with distractors made from them (each a real item's descriptors plus a share of
another's and a little noise shaped like the real spread, re-normalised: clustered like real
data). Then uploads: transformed copies of some real originals (the copy benchmark's
transformations, scripts/bench_copy_detection.py, plus a 16 px thumbnail that is searched in
its band) and held-out pictures. Prints the CPU, the candidate index's build time and size,
memory after opening and at peak, per-upload match latency with and without the candidate
index, and whether both give the same matches at the calibration floor (every item at 0.85
or more, with its similarity); then the duplicate-grouping time.

    python scripts/bench_copy_scale.py --n 1000000
    python scripts/bench_copy_scale.py --n 3000 --synthetic   # CI: seconds

Arrays and the base fingerprints are cached under --work; the candidate index is rebuilt
(and timed) on every run unless --reuse-index.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402  (scripts/ is on the path of a script)
from PIL import Image  # noqa: E402

from hibt.config import Settings  # noqa: E402
from hibt.indexer import index_format as fmt  # noqa: E402
from hibt.indexer.copies import search  # noqa: E402
from hibt.indexer.copies.fingerprint import (  # noqa: E402
    index_fingerprints,
    plain,
    query_fingerprints,
)
from hibt.indexer.copies.groups import duplicate_groups  # noqa: E402
from hibt.indexer.copies.matching import CopyMatcher, CopyThresholds  # noqa: E402
from hibt.indexer.images import BadImage, load_image  # noqa: E402

SETTINGS = Settings(pretrained=None)
OPENCLIPART = ROOT / "data" / "openclipart" / "usr" / "share" / "openclipart" / "png"
CALIBRATION_FLOOR = 0.85  # as scripts/bench_copy_detection.py's best_matches
HOLDOUT = 0.05
BLOCK = 20_000  # items generated at a time
QUERY_TRANSFORMS = (
    "identity",
    "resize 50%",
    "resize 25%",
    "jpeg q30",
    "crop 80%",
    "crop 60%",
    "hflip",
    "rotate 5",
    "rotate 90",
    "grayscale",
    "border padding",
    "screenshot",
)


def thumbnail(image: Image.Image, side: int = 16) -> Image.Image:
    small = image.copy()
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    return small


def load(path: Path) -> Image.Image | None:
    try:
        return load_image(
            path, SETTINGS.max_image_pixels, SETTINGS.max_image_bytes, SETTINGS.working_size
        ).image
    except BadImage:
        return None


def held_out(name: str) -> bool:
    return hashlib.sha1(name.encode()).digest()[0] / 256 < HOLDOUT


def stored_prints(path: Path):
    image = load(path)
    if image is None:
        return None
    found = index_fingerprints(image)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return found.descriptors.astype(np.float16), found.hashes, found.colour, digest


def base_from_images(folder: Path, cache: Path) -> dict[str, np.ndarray]:
    """Stored fingerprints of the PNGs under ``folder`` minus a held-out share (cached)."""
    if cache.exists():
        with np.load(cache, allow_pickle=False) as saved:
            base = {k: saved[k] for k in saved.files}
        if "digests" not in base:  # a cache from before digests were kept
            base["digests"] = np.array(
                [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in base["paths"]]
            )
            np.savez(cache, **base)
        return base
    paths = sorted(p for p in folder.rglob("*.png") if p.is_file())
    kept = [p for p in paths if not held_out(p.relative_to(folder).as_posix())]
    held = [p for p in paths if held_out(p.relative_to(folder).as_posix())]
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(min(2, os.cpu_count() or 1)) as pool:
        found = list(pool.imap(stored_prints, kept, 16))
    ok = [(p, f) for p, f in zip(kept, found, strict=True) if f is not None]
    print(f"fingerprinted {len(ok)} images in {time.perf_counter() - started:.0f} s")
    base = {
        "descriptors": np.stack([f[0] for _, f in ok]),
        "hashes": np.stack([f[1] for _, f in ok]),
        "colours": np.stack([f[2] for _, f in ok]),
        "digests": np.array([f[3] for _, f in ok]),
        "paths": np.array([str(p) for p, _ in ok]),
        "held": np.array([str(p) for p in held]),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **base)
    return base


def synthetic_base(count: int) -> tuple[dict[str, np.ndarray], list[Image.Image]]:
    """Generated drawings (tests/datagen.py), for a run without the Openclipart data."""
    from tests.datagen import drawing

    images = [drawing(seed, (60 + 7 * (seed % 40), 50 + 5 * (seed % 30))) for seed in range(count)]
    prints = [index_fingerprints(image) for image in images]
    base = {
        "descriptors": np.stack([f.descriptors.astype(np.float16) for f in prints]),
        "hashes": np.stack([f.hashes for f in prints]),
        "colours": np.stack([f.colour for f in prints]),
        "digests": np.array([f"drawing {i}" for i in range(count)]),
    }
    held = [drawing(10_000 + seed, (120, 90)) for seed in range(max(5, count // 10))]
    return base, images + held


def tile(base: dict[str, np.ndarray], n: int, folder: Path, seed: int = 0) -> None:
    """Write N items into ``folder`` (descriptors.npy, fingerprints.npy, colours.npy and
    digests.npy), a block at a time: the real ones first, then distractors."""
    real = base["descriptors"]
    b, views, dim = real.shape
    spread = real.astype(np.float32).std(axis=0)  # (views, dim): the real spread per entry
    folder.mkdir(parents=True, exist_ok=True)
    out = {
        "descriptors": np.lib.format.open_memmap(
            folder / fmt.DESCRIPTORS, "w+", np.float16, (n, views, dim)
        ),
        "hashes": np.lib.format.open_memmap(
            folder / fmt.FINGERPRINTS, "w+", np.uint8, (n, *base["hashes"].shape[1:])
        ),
        "colours": np.lib.format.open_memmap(
            folder / fmt.COLOURS, "w+", np.uint8, (n, base["colours"].shape[1])
        ),
    }
    rng = np.random.default_rng(seed)
    cosines = []
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        rows = np.arange(start, stop)
        a = np.where(rows < b, rows, rng.integers(0, b, len(rows)))
        fake = rows >= b
        vectors = real[a].astype(np.float32)
        if fake.any():
            other = real[rng.integers(0, b, fake.sum())].astype(np.float32)
            share = rng.uniform(0.0, 1.0, (fake.sum(), 1, 1))
            noise = rng.uniform(0.05, 1.2, (fake.sum(), 1, 1)) * spread
            moved = vectors[fake] + share * other + noise * rng.standard_normal(other.shape)
            moved *= informative_mask(vectors[fake])
            norms = np.linalg.norm(moved, axis=-1, keepdims=True)
            moved = np.where(norms > 0, moved / np.maximum(norms, 1e-12), 0)
            cosines.append((moved[:, 0] * vectors[fake][:, 0]).sum(axis=-1))
            vectors[fake] = moved
        out["descriptors"][start:stop] = vectors.astype(np.float16)
        out["hashes"][start:stop] = base["hashes"][a]
        jitter = rng.integers(-3, 4, (len(rows), out["colours"].shape[1])) * fake[:, None]
        out["colours"][start:stop] = np.clip(base["colours"][a].astype(int) + jitter, 0, 255)
    for array in out.values():
        array.flush()
    digests = np.array(
        [str(d) for d in base["digests"][: min(b, n)]] + [f"distractor {i}" for i in range(b, n)]
    )
    np.save(folder / "digests.npy", digests)
    if cosines:
        c = np.concatenate(cosines)
        print(
            "distractors' whole-view cosine with the item they were made from: "
            f"p10 {np.quantile(c, 0.1):.3f}, median {np.median(c):.3f}, p90 "
            f"{np.quantile(c, 0.9):.3f}; {np.mean(c >= CALIBRATION_FLOOR):.1%} at 0.85 or more"
        )


def informative_mask(vectors: np.ndarray) -> np.ndarray:
    return np.any(vectors != 0, axis=-1, keepdims=True).astype(np.float32)


def memory() -> str:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return (
        f"RSS {fields.get('VmRSS', 0):.0f} MB (own {fields.get('RssAnon', 0):.0f}, file pages "
        f"{fields.get('RssFile', 0):.0f}), peak {fields.get('VmHWM', 0):.0f} MB"
    )


def size_on_disk(folder: Path, names: tuple[str, ...]) -> int:
    return sum((folder / name).stat().st_size for name in names if (folder / name).exists())


def queries(
    base: dict[str, np.ndarray],
    images: list[Image.Image] | None,
    originals: int,
    held: int,
    seed: int = 0,
):
    """(name, fingerprints) of the uploads: transformed originals and held-out pictures."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_copy_detection import TRANSFORMS

    transforms = {name: TRANSFORMS[name] for name in QUERY_TRANSFORMS}
    transforms["thumbnail 16 px"] = thumbnail
    rng = random.Random(seed)
    b = len(base["descriptors"])
    if images is None:
        picked = [load(Path(p)) for p in rng.sample(list(base["paths"]), min(originals, b))]
        outside = [
            load(Path(p)) for p in rng.sample(list(base["held"]), min(held, len(base["held"])))
        ]
    else:
        picked = rng.sample(images[:b], min(originals, b))
        outside = images[b : b + held]
    found = []
    for image in (i for i in picked if i is not None):
        for name, transform in transforms.items():
            found.append((name, query_fingerprints(transform(image).convert("RGB"))))
    for image in (i for i in outside if i is not None):
        for name in ("identity", "jpeg q30", "resize 25%"):
            found.append((f"held out, {name}", query_fingerprints(transforms[name](image))))
    return found


def narrow(prints) -> bool:
    return bool((prints.bands < 16).any())


def percentiles(seconds: list[float]) -> str:
    ms = 1000 * np.array(seconds)
    return (
        f"p50 {np.median(ms):7.1f} ms, p99 {np.quantile(ms, 0.99):7.1f} ms, max {ms.max():7.1f} ms"
    )


TOLERANCE = 1e-5  # both paths sum the same float16 terms, in another order


def compare(left: list[dict], right: list[dict], uploads) -> tuple[int, int, float, list[str]]:
    """(items on the left, items alike on the right, largest similarity difference among
    items on both, differences described). Alike: the same pair kind, colour and hash
    distance, and the similarity within TOLERANCE."""
    total = same = 0
    largest = 0.0
    notes = []
    for (name, _), a, b in zip(uploads, left, right, strict=True):
        total += len(a)
        both = set(a) & set(b)
        gaps = [abs(a[k].similarity - b[k].similarity) for k in both]
        largest = max([largest, *gaps])
        moved = [
            k
            for k in both
            if abs(a[k].similarity - b[k].similarity) > TOLERANCE
            or (a[k].whole, a[k].blank, a[k].colour, a[k].hash_distance)
            != (b[k].whole, b[k].blank, b[k].colour, b[k].hash_distance)
        ]
        same += len(both) - len(moved)
        lost, extra = set(a) - set(b), set(b) - set(a)
        if lost or extra or moved:
            best = max((a[k].similarity for k in lost), default=0)
            notes.append(
                f"  {name}: {len(lost)} missing (best {best:.4f}), {len(extra)} extra, "
                f"{len(moved)} different"
            )
    return total, same, largest, notes


def at_least(found: list[dict], floor: float) -> list[dict]:
    """Matches from ``floor`` up: what match() at ``floor`` gives (each item's best pair is
    the same from any lower floor)."""
    return [{k: m for k, m in f.items() if m.blank or m.similarity >= floor} for f in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="items in the index")
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "bench-copy-scale")
    parser.add_argument("--images", type=Path, default=OPENCLIPART, help="PNG folder")
    parser.add_argument(
        "--synthetic",
        type=int,
        nargs="?",
        const=150,
        default=None,
        help="generated drawings instead of --images (CI); how many",
    )
    parser.add_argument("--originals", type=int, default=30, help="originals to transform")
    parser.add_argument("--held", type=int, default=40, help="held-out pictures to query")
    parser.add_argument(
        "--timed",
        type=int,
        default=None,
        help="uploads timed on exhaustive search (default all; slow at 1M)",
    )
    parser.add_argument("--reuse-index", action="store_true")
    parser.add_argument("--passes", type=int, default=1, help="timed passes over the uploads")
    parser.add_argument("--no-groups", action="store_true")
    parser.add_argument(
        "--no-reference", action="store_true", help="skip the exhaustive agreement check"
    )
    parser.add_argument(
        "--exhaustive-groups",
        action="store_true",
        help="also group exhaustively and compare (quadratic)",
    )
    parser.add_argument("--sweep", default="", help="nprobe values to try, e.g. 16,32,64")
    args = parser.parse_args()

    print(f"CPU: {cpu_model()} x {os.cpu_count()}; N = {args.n}")
    images = None
    if args.synthetic is None and args.images.is_dir():
        base = base_from_images(args.images, args.work / "base.npz")
        source = f"{len(base['descriptors'])} Openclipart images"
    else:
        base, images = synthetic_base(args.synthetic or 150)
        source = f"{len(base['descriptors'])} generated drawings"
    folder = args.work / (f"n{args.n}" + ("-synthetic" if images is not None else ""))
    if not (folder / "digests.npy").exists():
        started = time.perf_counter()
        tile(base, args.n, folder)
        print(f"wrote {args.n} items from {source} in {time.perf_counter() - started:.0f} s")
    descriptors = np.load(folder / fmt.DESCRIPTORS, mmap_mode="r")
    print(f"descriptors: {descriptors.nbytes / 2**30:.2f} GiB float16, memory-mapped")

    names = (fmt.COPY_INDEX, fmt.COPY_INDEX_DATA, fmt.COPY_BLANK, fmt.COPY_BAND_NORMS)
    if not (args.reuse_index and (folder / fmt.COPY_INDEX).exists()):
        started = time.perf_counter()
        search.write_copy_index(folder, descriptors, min_items=0)
        print(f"candidate index: built in {time.perf_counter() - started:.1f} s")
    print(f"candidate index: {size_on_disk(folder, names) / 2**20:.0f} MiB on disk")

    print(f"before opening: {memory()}")
    started = time.perf_counter()
    matcher = CopyMatcher.open(folder)
    index = matcher.search
    assert isinstance(index, search.CandidateIndex)
    print(
        f"opened in {1000 * (time.perf_counter() - started):.0f} ms "
        f"({index.ivf.nlist} lists over {index.ivf.ntotal} stored views): {memory()}"
    )
    exhaustive = CopyMatcher(
        descriptors,
        matcher.hashes,
        matcher.colours,
        search=search.Exhaustive(descriptors, in_memory=len(descriptors) < 200_000),
        blank=matcher.blank,
    )

    started = time.perf_counter()
    uploads = queries(base, images, args.originals, args.held)
    thin = sum(narrow(p) for _, p in uploads)
    print(
        f"{len(uploads)} uploads ({thin} with views searched in a narrow band), "
        f"fingerprinted in {time.perf_counter() - started:.0f} s"
    )

    t = CopyThresholds.from_settings(SETTINGS)
    engine_args = (t.lookalike, t.exact_colour, t.uncut)  # what Engine.search_image asks
    floor_args = (CALIBRATION_FLOOR, 0, t.uncut)  # what the copy benchmark's best_matches asks
    for _, prints in uploads[:3]:
        matcher.match(prints, *engine_args)  # warm up: the first reads bring the lists in
    for number in range(args.passes):  # the first reads lists from disk, later ones cached
        seconds, cpu = [], []
        for _, prints in uploads:
            started, cpu_started = time.perf_counter(), time.process_time()
            matcher.match(prints, *engine_args)
            seconds.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
        print(f"candidate index, pass {number + 1}:    {percentiles(seconds)}  ({memory()})")
        # CPU time tells the engine's cost apart from a machine shared with other work
        print(f"  CPU time (all threads):      {percentiles(cpu)}")
    full = [s for s, (_, p) in zip(seconds, uploads, strict=True) if not narrow(p) | plain(p)]
    print(f"  full band only (no blank):   {percentiles(full)}")
    thin_seconds = [s for s, (_, p) in zip(seconds, uploads, strict=True) if narrow(p)]
    if thin_seconds:
        print(f"  uploads with a narrow band:  {percentiles(thin_seconds)}")
    timed = uploads
    if args.timed is not None:  # spread over the uploads, none of them blank
        searched = [u for u in uploads if not plain(u[1])]
        timed = searched[:: max(1, len(searched) // max(1, args.timed))][: args.timed]
    seconds = []
    for _, prints in timed:
        started = time.perf_counter()
        exhaustive.match(prints, *engine_args)
        seconds.append(time.perf_counter() - started)
    if seconds:
        print(f"exhaustive, per upload:       {percentiles(seconds)}  ({len(timed)} uploads)")

    prints_only = [p for _, p in uploads]
    if not args.no_reference:
        cache = folder / f"reference-{args.originals}-{args.held}.pickle"
        if cache.exists():  # the same uploads over the same items: reused for sweeps
            reference = pickle.loads(cache.read_bytes())
            print(f"exhaustive reference at {CALIBRATION_FLOOR}: read from {cache.name}")
        else:
            started = time.perf_counter()
            reference = exhaustive.match_many(prints_only, *floor_args)
            took = time.perf_counter() - started
            print(f"exhaustive reference at {CALIBRATION_FLOOR}: {took:.0f} s")
            cache.write_bytes(pickle.dumps(reference))
        candidate = [matcher.match(p, *floor_args) for p in prints_only]
        for floor in (CALIBRATION_FLOOR, t.lookalike):  # the benchmark's floor, the engine's
            total, same, largest, notes = compare(
                at_least(reference, floor), at_least(candidate, floor), uploads
            )
            print(
                f"agreement at {floor}: {same}/{total} items found alike (similarity within "
                f"{TOLERANCE}; largest difference {largest:.1e}), "
                f"{len(uploads) - len(notes)}/{len(uploads)} uploads alike"
            )
            if notes:
                print("\n".join(notes[:12]))
        for label, pick in (("narrow-band", True), ("full-band", False)):
            ref = [r for r, (_, p) in zip(reference, uploads, strict=True) if narrow(p) == pick]
            print(f"  {label} uploads: {sum(map(len, ref))} items at {CALIBRATION_FLOOR} or more")

        for value in [int(v) for v in args.sweep.split(",") if v]:
            for attribute in ("nprobe", "nprobe_narrow"):
                saved = getattr(index, attribute)
                setattr(index, attribute, value)
                started = time.perf_counter()
                found = [matcher.match(p, *floor_args) for p in prints_only]
                took = (time.perf_counter() - started) / len(uploads)
                setattr(index, attribute, saved)
                total, same, _, notes = compare(reference, found, uploads)
                print(
                    f"sweep {attribute}={value}: {same}/{total} alike, "
                    f"{len(notes)} uploads differ, {1000 * took:.1f} ms per upload"
                )

    if args.no_groups:
        return
    colours = np.load(folder / fmt.COLOURS, mmap_mode="r")
    digests = list(np.load(folder / "digests.npy"))
    started = time.perf_counter()
    groups = duplicate_groups(
        descriptors[:, 0, :],
        colours,
        digests,
        SETTINGS.duplicate_group_min_similarity,
        SETTINGS.duplicate_group_max_colour,
        candidates=index,
    )
    print(
        f"duplicate groups through the candidate index: {len(np.unique(groups))} groups in "
        f"{time.perf_counter() - started:.0f} s ({memory()})"
    )
    if args.exhaustive_groups:
        started = time.perf_counter()
        reference = (
            duplicate_groups(
                np.asarray(descriptors[:, 0, :]),
                colours,
                digests,
                SETTINGS.duplicate_group_min_similarity,
                SETTINGS.duplicate_group_max_colour,
            )
            if len(descriptors) < search.CANDIDATE_MIN_ITEMS
            else None
        )
        if reference is not None:
            print(
                f"duplicate groups, exhaustive: {len(np.unique(reference))} groups in "
                f"{time.perf_counter() - started:.0f} s; identical: "
                f"{bool(np.array_equal(groups, reference))} "
                f"({int((groups != reference).sum())} items differ)"
            )


if __name__ == "__main__":
    main()
