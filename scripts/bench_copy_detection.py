"""Copy-detection benchmark: recall of transformed copies and false positives of the label.

Splits a dataset by file identity (a hash of the seed and each file's sha256; identical bytes
stay together, nothing else), holds out a share of the files in two halves (one to choose
thresholds, one to report), builds an index over the rest (cached in --work), then queries
with transformed versions of indexed images and of held-out images. Prints, per
transformation, recall@1 and recall@10 of the original's group (as the engine ranks: copies,
then fingerprint look-alikes, then CLIP neighbours), recall@1 of its picture (the group, or a
file labelled a copy of the original: its twin mirrored in another file), copy@1 and edit@1,
the held-out pictures called a copy of anything but a labelled copy of them
(docs/copy-pairs.tsv), over all and over those with a close sibling, and the same recalls
for CLIP-only matching; then the fingerprint similarities seen and the pairs the false
copies came from. Every claimed copy is kept in WORK/claimed_copies.tsv, so that a finished
run can be judged again after the labels change (--recount). Method and figures:
docs/copy-detection.md.

    python scripts/bench_copy_detection.py data/openclipart/usr/share/openclipart --samples 300
    python scripts/bench_copy_detection.py DATASET --work WORK --recount
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from hibt.config import TINY_MODEL, Settings  # noqa: E402
from hibt.indexer.build import Builder  # noqa: E402
from hibt.indexer.copies.fingerprint import (  # noqa: E402
    query_fingerprints,
)
from hibt.indexer.datasets import open_dataset  # noqa: E402
from hibt.indexer.images import BadImage, load_image  # noqa: E402
from hibt.indexer.model import Embedder, ModelSpec  # noqa: E402
from hibt.indexer.records import Record  # noqa: E402
from hibt.indexer.store import Store  # noqa: E402
from hibt.server import verifiers  # noqa: E402
from hibt.server.engine import Engine  # noqa: E402

WHITE = (255, 255, 255)


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def scale(image: Image.Image, factor: float) -> Image.Image:
    w, h = image.size
    return image.resize((max(8, round(w * factor)), max(8, round(h * factor))), Image.LANCZOS)


def crop(image: Image.Image, fraction: float) -> Image.Image:
    w, h = image.size
    cw, ch = round(w * fraction), round(h * fraction)
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def jitter(image: Image.Image) -> Image.Image:
    image = ImageEnhance.Brightness(image).enhance(1.15)
    image = ImageEnhance.Contrast(image).enhance(0.8)
    return ImageEnhance.Color(image).enhance(1.4)


def overlay(image: Image.Image) -> Image.Image:
    out = image.copy()
    draw = ImageDraw.Draw(out, "RGBA")
    w, h = out.size
    draw.rectangle(
        (int(w * 0.62), int(h * 0.84), int(w * 0.98), int(h * 0.98)), fill=(20, 20, 160, 170)
    )
    draw.text((int(w * 0.05), int(h * 0.05)), "(c) reposted by somebody", fill=(200, 0, 0, 255))
    return out


def pad(image: Image.Image) -> Image.Image:
    w, h = image.size
    return ImageOps.expand(image, border=(w // 10, h // 10), fill=(40, 40, 40))


def screenshot(image: Image.Image) -> Image.Image:
    small = scale(image, 0.7)
    w, h = small.size
    canvas = Image.new("RGB", (w + 60, h + 110), (236, 236, 236))
    ImageDraw.Draw(canvas).rectangle((0, 0, w + 60, 50), fill=(52, 58, 64))
    canvas.paste(small, (30, 70))
    return canvas


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "identity": lambda im: im,
    "resize 50%": lambda im: scale(im, 0.5),
    "resize 25%": lambda im: scale(im, 0.25),
    "jpeg q30": lambda im: jpeg(im, 30),
    "crop 80%": lambda im: crop(im, 0.8),
    "crop 60%": lambda im: crop(im, 0.6),
    "crop 70% (extra)": lambda im: crop(im, 0.7),  # not an issue target: generalisation check
    "hflip": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "rotate 5": lambda im: im.rotate(5, Image.BICUBIC, expand=True, fillcolor=WHITE),
    "rotate 90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "grayscale": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "colour jitter": jitter,
    "text/logo overlay": overlay,
    "border padding": pad,
    "screenshot": screenshot,
}
COPY = ("exact_copy", "near_copy", "edited_copy")
PAIRS = ROOT / "docs" / "copy-pairs.tsv"  # the labelled pairs: copy or sibling
RELAXED = {"rotate 90", "crop 60%"}  # the targets: 0.8 here, 0.95 elsewhere


def query_bytes(name: str, image: Image.Image) -> bytes:
    """What the searcher uploads: a JPEG file for the JPEG case, else a lossless PNG."""
    if name == "jpeg q30":
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=30)
        return buf.getvalue()
    return png_bytes(TRANSFORMS[name](image))


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class Subset:
    """The dataset minus the held-out records, for building the benchmark index."""

    def __init__(self, dataset, keep: set[str]) -> None:
        self.dataset, self.keep, self.name = dataset, keep, dataset.name

    def __iter__(self) -> Iterator[Record]:
        return (r for r in self.dataset if r.key in self.keep)

    def estimated_size(self) -> int:
        return len(self.keep)


def file_digest(record: Record) -> str:
    ref = record.image_ref()
    return hashlib.sha256(ref.read_bytes() if isinstance(ref, Path) else ref).hexdigest()


def split(records: list[Record], holdout: float, seed: int) -> dict[str, str]:
    """Held-out key -> its half ("calibrate" or "report"), chosen by a hash of the file's
    bytes and the seed: identical files stay together, and nothing else does.

    The split knows nothing of the engine, so pairs the engine confuses (a sibling drawing,
    the same picture saved twice) straddle it as often as any other pair: what the held-out
    side measures is the engine, not a sample shaped by it. The held-out files are cut in two
    halves by another byte of the hash: thresholds are chosen on one, figures reported on the
    other.
    """
    held = {}
    for record in records:
        digest = hashlib.sha1(f"{seed}:{file_digest(record)}".encode()).digest()
        if digest[0] / 256 < holdout:
            held[record.key] = "calibrate" if digest[1] % 2 == 0 else "report"
    return held


def build(
    source: Path, work: Path, settings: Settings, embedder: Embedder, holdout: float, seed: int
) -> tuple[Path, dict[str, str], list[Record]]:
    """The benchmark index, the held-out keys with their halves, and the held-out records;
    the split and the index are cached in ``work``."""
    index_dir = work / "index"
    held_file = work / "held_out.txt"
    dataset = open_dataset(source)
    if not held_file.exists():
        records = list(dataset)
        print(f"splitting {len(records)} records by file (seed {seed}) ...", file=sys.stderr)
        held = split(records, holdout, seed)
        work.mkdir(parents=True, exist_ok=True)
        held_file.write_text("".join(f"{k}\t{h}\n" for k, h in sorted(held.items())))
    held = dict(line.split("\t") for line in held_file.read_text().splitlines())
    kept = {r.key for r in dataset} - set(held)
    # Reused while its build key holds; rebuilt after a change to fingerprints or decoding.
    Builder(Subset(dataset, kept), str(source), index_dir, embedder, settings, rebuild=False).run()
    return index_dir, held, [r for r in dataset if r.key in held]


def distinct(records: list[Record]) -> list[Record]:
    """The first record of each distinct file (by its bytes' sha256)."""
    seen, out = set(), []
    for record in records:
        digest = file_digest(record)
        if digest not in seen:
            seen.add(digest)
            out.append(record)
    return out


def query_image(record: Record, settings: Settings) -> Image.Image | None:
    try:
        return load_image(
            record.image_ref(),
            settings.max_image_pixels,
            settings.max_image_bytes,
            settings.working_size,
        ).image
    except BadImage:
        return None


class Negative(NamedTuple):
    """A held-out picture: its image, its file's sha256, the sha256s of the indexed files
    labelled copies of it (docs/copy-pairs.tsv), whether an indexed picture other than
    those meets it at the near-copy similarity as it is (a close sibling), and the sha256s of
    all that meet it so (for :func:`recount`, under labels given later)."""

    image: Image.Image
    path: Path
    sha256: str
    copies: frozenset[str]
    sibling: bool
    met: frozenset[str] = frozenset()


def labelled_copies(pairs: dict[frozenset[str], str]) -> dict[str, frozenset[str]]:
    """{sha256: the sha256s labelled copies of it}, both ways. A claim of any of them is
    no false copy, whether or not the held-out picture, untransformed, meets it at the
    near-copy similarity (a copy turned a quarter need not): the table then counts as
    :func:`recount` does, by the labels alone."""
    copies: dict[str, set[str]] = {}
    for pair, label in pairs.items():
        if label == "copy" and len(pair) == 2:
            a, b = pair
            copies.setdefault(a, set()).add(b)
            copies.setdefault(b, set()).add(a)
    return {sha: frozenset(others) for sha, others in copies.items()}


def labelled_pairs(path: Path = PAIRS) -> dict[frozenset[str], str]:
    """{sha256 pair: "copy" or "sibling"} from the committed list."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            a, b, label = line.split("\t")[:3]
            pairs[frozenset((a, b))] = label
    return pairs


def negatives_of(
    engine: Engine, held: list[tuple[Record, Image.Image]], work: Path
) -> list[Negative]:
    """The held-out pictures with their labelled copies in the index and close siblings.
    Pairs the engine would call copies by descriptor alone and the list does not label yet
    are written to ``work/unlabelled_pairs.tsv``, to be looked at and added to
    docs/copy-pairs.tsv."""
    pairs = labelled_pairs()
    copies_of = labelled_copies(pairs)
    near = engine.thresholds.near
    store = engine.index.store()
    out, unlabelled = [], []
    for record, image in held:
        sha = file_digest(record)
        copies = frozenset(c for c in copies_of.get(sha, ()) if store.idxs_by_sha256(c))
        sibling, met = False, set()
        for idx, similarity in best_matches(engine, png_bytes(image)).items():
            if similarity < near:
                continue
            row = store.items([idx])[idx]
            met.add(row["sha256"])
            label = pairs.get(frozenset((sha, row["sha256"])))
            if label == "copy":
                continue
            sibling = True
            if label is None:
                unlabelled.append(
                    f"{sha}\t{row['sha256']}\t{similarity:.4f}\t{record.path}\t{row['path']}"
                )
        out.append(Negative(image, record.path, sha, copies, sibling, frozenset(met)))
    (work / "unlabelled_pairs.tsv").write_text("".join(f"{u}\n" for u in unlabelled))
    return out


def evaluate(
    engine: Engine,
    originals: list[tuple[int, Image.Image]],
    negatives: list[Negative],
    transforms: list[str],
    work: Path,
) -> list[dict]:
    """The table's rows; every false copy (a held-out picture's claimed copy that is not a
    labelled copy of it) is also written to ``work/false_copies.tsv``, to be looked at, and
    every claimed copy to ``work/claimed_copies.tsv`` (:func:`recount`)."""
    rows, false_copies, claims = [], [], []
    store = engine.index.store()
    copies_of = labelled_copies(labelled_pairs())
    for name in transforms:
        hit1 = picture1 = hit10 = labelled1 = edited1 = clip1 = clip10 = 0
        similarities, seconds = [], []
        for idx, image in originals:
            data = query_bytes(name, image)
            response = timed(seconds, engine.search_image, data, k=10, collapse=True)
            group = engine.groups[idx]
            ids = [engine.groups[row_of(engine, r.id)] for r in response.results]
            hit1 += bool(ids) and ids[0] == group
            picture1 += bool(ids) and (
                ids[0] == group or first_is_copy(store, response.results[0].id, idx, copies_of)
            )
            labelled1 += bool(ids) and ids[0] == group and response.results[0].match in COPY
            edited1 += bool(ids) and ids[0] == group and response.results[0].match == "edited_copy"
            hit10 += group in ids
            best = best_matches(engine, data)
            similarities.append(
                max((s for i, s in best.items() if engine.groups[i] == group), default=0)
            )
            vector = engine.embedder.encode_images([load_upload(data, engine)])[0]
            neigh = [engine.groups[i] for i, _ in engine.knn(vector, "images", 40)]
            neigh = list(dict.fromkeys(neigh))[:10]
            clip1 += bool(neigh) and neigh[0] == group
            clip10 += group in neigh
        false_pos = false_sib = 0
        neg_similarities = []
        for negative in negatives:
            data = query_bytes(name, negative.image)
            response = timed(seconds, engine.search_image, data, k=20, collapse=False)
            claimed = [(store.by_id(r.id), r) for r in response.results if r.match in COPY]
            lines = [
                (
                    row["sha256"] not in negative.copies,
                    f"{name}\t{negative.sha256}\t{row['sha256']}\t{r.match}\t"
                    f"{r.copy_similarity}\t{negative.path}\t{row['path']}\n",
                )
                for row, r in claimed
            ]
            claims += [text for _, text in lines]
            false_copies += [text for false_copy, text in lines if false_copy]
            wrong = any(false_copy for false_copy, _ in lines)
            false_pos += wrong
            false_sib += wrong and negative.sibling
            found = best_matches(engine, data)
            neg_similarities.append(
                max(
                    (
                        s
                        for i, s in found.items()
                        if store.items([i])[i]["sha256"] not in negative.copies
                    ),
                    default=0,
                )
            )
        n, m = len(originals), max(1, len(negatives))
        siblings = sum(x.sibling for x in negatives)
        rows.append(
            {
                "transform": name,
                "r1": hit1 / n,
                "r1_picture": picture1 / n,
                "r10": hit10 / n,
                "copy_r1": labelled1 / n,
                "edited_r1": edited1 / n,
                "fp": false_pos / m,
                "fp_count": f"{false_pos}/{len(negatives)}",
                "fp_sibling": false_sib / max(1, siblings),
                "fp_sibling_count": f"{false_sib}/{siblings}",
                "clip_r1": clip1 / n,
                "clip_r10": clip10 / n,
                "similarities": similarities,
                "neg_similarities": neg_similarities,
                "ms": 1000 * float(np.mean(seconds)),
                "seconds": seconds,
            }
        )
        print(f"  {name}: R@1 {hit1 / n:.3f} FP {false_pos}/{len(negatives)}", file=sys.stderr)
    (work / "false_copies.tsv").write_text("".join(false_copies))
    (work / "claimed_copies.tsv").write_text("".join(claims))
    queried = [f"{n.sha256}\t{n.path}\t{','.join(sorted(n.met))}\n" for n in negatives]
    (work / "queried.tsv").write_text(f"# {'|'.join(transforms)}\n" + "".join(queried))
    return rows


Judge = Callable[[str, Path, Path], bool]  # (transformation, held-out file, claimed file)


def recount(work: Path, pairs: dict[frozenset[str], str], shows: Judge | None = None) -> None:
    """A finished run's false copies judged under ``pairs`` (the labels now): one per
    held-out picture and transformation, as the table counts them, and the pairs they come
    from, most rows first. With ``shows`` (:func:`shows_claimed`), also the rows left when a
    claim is judged on the upload itself: a claimed picture the upload equally shows is not
    held against the engine."""
    rows: dict[str, set[str]] = {}
    left: dict[str, set[str]] = {}
    # A pair's rows, not its claims: a picture kept as several identical files is claimed
    # once per file.
    by_pair: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for line in (work / "claimed_copies.tsv").read_text().splitlines():
        name, held, stored, *_, held_path, stored_path = line.split("\t")
        if pairs.get(frozenset((held, stored))) != "copy":
            rows.setdefault(name, set()).add(held)
            by_pair.setdefault((Path(held_path).name, Path(stored_path).name), set()).add(
                (name, held)
            )
            # A row already left needs no more judging: the label rule is slow.
            settled = held in left.get(name, ()) or shows is None
            if settled or not shows(name, Path(held_path), Path(stored_path)):
                left.setdefault(name, set()).add(held)
    total = sum(len(v) for v in rows.values())
    each = ", ".join(f"{name}: {len(held)}" for name, held in rows.items())
    print(f"false copies under the present labels: {total} rows ({each})")
    if (work / "queried.tsv").exists():
        print(out_of(work / "queried.tsv", rows, pairs))
    if shows is not None:
        kept = sum(len(v) for v in left.values())
        print(f"judged on the uploads: {total - kept} rows show the claimed picture as well")
        if (work / "queried.tsv").exists():
            print(out_of(work / "queried.tsv", left, pairs))
    for (held, stored), pair_rows in sorted(by_pair.items(), key=lambda p: -len(p[1])):
        print(f"  {len(pair_rows):3d}  {held}  claimed as  {stored}")


# What a transformation does to the picture itself: a screenshot's window and a border's frame
# are not the picture, and would dilute the label rule's mean difference.
PICTURE_OF = {"screenshot": lambda im: scale(im, 0.7), "border padding": lambda im: im}


def shows_claimed(name: str, held: Path, claimed: Path) -> bool:
    """Whether the held-out picture under transformation ``name`` is, by the label rule
    (scripts/label_copy_pairs.py), also the claimed picture under it: a centre crop that
    leaves out where two drawings differ, two stars at a quarter of their size. The pixels
    of such an upload cannot say which of the two it was made from."""
    from label_copy_pairs import images_distance, one_picture

    return one_picture(*images_distance(pictured(name, held), pictured(name, claimed)))


def pictured(name: str, path: Path) -> Image.Image:
    """The picture in ``path`` as the upload of transformation ``name`` shows it (RGBA)."""
    image = query_image(Record("", "", "", path=path), Settings(model=TINY_MODEL, pretrained=None))
    if name in PICTURE_OF:
        return PICTURE_OF[name](image).convert("RGBA")
    return Image.open(io.BytesIO(query_bytes(name, image))).convert("RGBA")


def out_of(queried: Path, rows: dict[str, set[str]], pairs: dict[frozenset[str], str]) -> str:
    """The false copies as shares of the run's (picture, transformation) cases, overall and
    among the pictures with a close sibling under the labels now (:class:`Negative`)."""
    header, *lines = queried.read_text().splitlines()
    cases = len(header.removeprefix("# ").split("|"))
    met = {}
    for line in lines:
        sha, _, others = line.split("\t")
        met[sha] = set(filter(None, others.split(",")))
    close = {
        sha
        for sha, others in met.items()
        if any(pairs.get(frozenset((sha, m))) != "copy" for m in others)
    }
    false = sum(len(held) for held in rows.values())
    among = sum(len(held & close) for held in rows.values())
    n, s = len(met) * cases, len(close) * cases
    return (
        f"  {false} of {n} ({100 * false / max(1, n):.1f}%); {among} of {s} "
        f"({100 * among / max(1, s):.1f}%) among the {len(close)} pictures with a close sibling"
    )


def at_once(engine: Engine, uploads: list[bytes], clients: int) -> None:
    """Image searches ``clients`` at a time (threads, as `hibt serve` runs them) against one
    at a time, each with every candidate verified in the query's thread and with the
    verifier processes: answers a second and each answer's wall time."""
    default = engine.verifiers
    ways = (("in the query's thread", verifiers.of(0)), (f"{default.processes} processes", default))
    print(f"\n{len(uploads)} image searches, verified ...")
    for way, verifying in ways:
        engine.verifiers = verifying
        for n in (1, clients):
            seconds: list[float] = []
            started = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                for data in uploads:
                    pool.submit(timed, seconds, engine.search_image, data, k=20, collapse=False)
            rate = len(uploads) / (time.perf_counter() - started)
            ms = 1000 * np.array(seconds)
            print(
                f"  {way}, {n} at once: {rate:.1f} answers/s; an answer's wall time mean "
                f"{ms.mean():.1f} ms, p99 {np.percentile(ms, 99):.1f} ms"
            )
    engine.verifiers = default


def timed(seconds: list[float], search, *args, **kwargs):
    """``search(*args, **kwargs)``, its wall time appended to ``seconds``: only the engine's
    own answer is timed, not the benchmark's re-encoding, calibration or CLIP-only lookups."""
    started = time.perf_counter()
    result = search(*args, **kwargs)
    seconds.append(time.perf_counter() - started)
    return result


def best_matches(engine: Engine, data: bytes) -> dict[int, float]:
    """Item row -> best fingerprint similarity, down to well below the copy thresholds."""
    image = load_upload(data, engine)
    uncut = engine.thresholds.uncut  # as the engine counts an uncut upload's view
    found = engine.index.copies.match(query_fingerprints(image), CALIBRATION_FLOOR, 0, uncut)
    return {i: m.similarity for i, m in found.items() if not m.blank}  # never a copy


CALIBRATION_FLOOR = 0.85
_rows: dict[str, int] = {}


def row_of(engine: Engine, item_id: str) -> int:
    if item_id not in _rows:
        _rows[item_id] = engine.index.store().by_id(item_id)["idx"]
    return _rows[item_id]


def load_upload(data: bytes, engine: Engine) -> Image.Image:
    """An upload decoded as Engine.search_image decodes it."""
    s = engine.settings
    least = engine.upload_least_side()
    return load_image(data, s.max_upload_pixels, len(data) + 1, s.working_size, least).image


def first_is_copy(
    store: Store, first: str, original: int, copies_of: dict[str, frozenset[str]]
) -> bool:
    """Whether the first result is a labelled copy of the original (its mirrored twin kept
    in another file, say): the original's picture found first, in another group."""
    own = store.items([original])[original]["sha256"]
    return store.by_id(first)["sha256"] in copies_of.get(own, ())


def print_table(rows: list[dict], thresholds: tuple[float, float]) -> None:
    print(f"\nthresholds: exact >= {thresholds[0]}, near >= {thresholds[1]} fingerprint similarity")
    head = (
        f"{'transformation':<18} {'R@1':>6} {'R@1 p':>6} {'R@10':>6} {'copy@1':>6} {'edit@1':>6} "
        f"{'FP':>6} {'FP n':>7} {'FP sib':>7} | "
        f"{'CLIP R@1':>8} {'CLIP R@10':>9} | target"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        target = 0.8 if r["transform"] in RELAXED else 0.95
        ok = "ok" if r["r1_picture"] >= target and r["fp"] < 0.01 else "MISS"
        print(
            f"{r['transform']:<18} {r['r1']:6.3f} {r['r1_picture']:6.3f} {r['r10']:6.3f} "
            f"{r['copy_r1']:6.3f} "
            f"{r['edited_r1']:6.3f} {r['fp']:6.3f} {r['fp_count']:>7} "
            f"{r['fp_sibling_count']:>7} | "
            f"{r['clip_r1']:8.3f} {r['clip_r10']:9.3f} | R@1 p>={target} FP<0.01 {ok}"
        )


def print_calibration(rows: list[dict]) -> None:
    """Where positives and negatives fall, to set the thresholds from data."""
    pos = np.concatenate([r["similarities"] for r in rows])
    neg = np.concatenate([r["neg_similarities"] for r in rows])
    print("\nfingerprint similarity of the best match (all transformations pooled)")
    print(f"{'>= s':>6} {'copies found':>13} {'held-out labelled':>18}")
    steps = np.round(np.arange(0.90, 1.0001, 0.01), 2)
    for s in steps:
        print(f"{s:>6.2f} {np.mean(pos >= s):13.3f} {np.mean(neg >= s):18.4f}")
    fine = np.round(np.arange(CALIBRATION_FLOOR, 1.0001, 0.005), 3)
    ok = [s for s in fine if np.mean(neg >= s) < 0.005]
    print(f"lowest threshold with a pooled false-positive rate under 0.5%: {min(ok) if ok else 1}")


def drawn_originals(rows: list[dict], samples: int) -> tuple[list[dict], random.Random]:
    """The indexed files the benchmark copies, a draw fixed for every seed, and the generator
    that goes on to draw the held-out pictures (calibrate_copy_distance.py leaves the same
    files out)."""
    rng = random.Random(0)
    return rng.sample(rows, min(samples, len(rows))), rng


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path, help="dataset the benchmark index is built from")
    parser.add_argument("--work", type=Path, default=ROOT / "data" / "bench-copy")
    parser.add_argument("--samples", type=int, default=300, help="originals (and negatives)")
    parser.add_argument(
        "--negatives",
        type=int,
        help="held-out images to query (default: as many as --samples; at most all of them): "
        "a rate of 1%% is 2 images in 200, so more of them measure it more finely",
    )
    parser.add_argument(
        "--holdout", type=float, default=0.2, help="share of files held out (both halves)"
    )
    parser.add_argument("--seed", type=int, default=0, help="salts the split's hash")
    parser.add_argument(
        "--half",
        choices=("calibrate", "report"),
        default="report",
        help="which half of the held-out files to query: choose thresholds on one, "
        "report figures from the other",
    )
    parser.add_argument("--model", default=TINY_MODEL)
    parser.add_argument("--transforms", nargs="*", default=list(TRANSFORMS))
    parser.add_argument(
        "--clients",
        type=int,
        default=0,
        help="also time every fifth upload this many at once, and one at a time, with and "
        "without verifier processes",
    )
    parser.add_argument(
        "--recount",
        action="store_true",
        help="judge the run kept in --work again under the labels now, without querying",
    )
    parser.add_argument(
        "--on-uploads",
        action="store_true",
        help="with --recount, also judge each false copy on the upload itself: the label "
        "rule between the held-out and the claimed picture, both so transformed",
    )
    args = parser.parse_args()
    if args.recount:
        return recount(args.work, labelled_pairs(), shows_claimed if args.on_uploads else None)

    # scripts/ is on the path of a script (not of its tests); imported before the long run.
    from machine import cpu_model, reference_ms

    settings = Settings(model=args.model, pretrained=None)
    embedder = Embedder(ModelSpec(args.model))
    index_dir, halves, held = build(
        args.source, args.work, settings, embedder, args.holdout, args.seed
    )
    engine = Engine.open(index_dir, settings, embedder)
    engine.verifiers.start()  # as `hibt serve` does: no query waits for them to start
    # One file per picture: Openclipart links many paths to one PNG, and a picture sampled
    # twice would count twice.
    drawn, rng = drawn_originals(engine.index.store().distinct_files(), args.samples)
    held = distinct([r for r in held if halves[r.key] == args.half])
    originals = []
    for row in drawn:
        image = query_image(Record("", "", "", path=Path(row["path"])), settings)
        if image is not None:
            originals.append((row["idx"], image))
    held_images = [
        (r, im)
        for r in rng.sample(held, min(args.negatives or args.samples, len(held)))
        if (im := query_image(r, settings)) is not None
    ]
    negatives = negatives_of(engine, held_images, args.work)
    print(
        f"index: {engine.n} images; {len(originals)} originals, {len(negatives)} held-out "
        f"images ({sum(n.sibling for n in negatives)} with a close sibling in the index, "
        f"{sum(bool(n.copies) for n in negatives)} with a labelled copy); "
        f"model {args.model} (semantic: {engine.manifest.model.semantic})"
    )
    before = reference_ms()
    results = evaluate(engine, originals, negatives, args.transforms, args.work)
    after = reference_ms()
    print_table(results, (settings.exact_copy_min_similarity, settings.near_copy_min_similarity))
    print_calibration(results)
    print()
    recount(args.work, labelled_pairs())
    ms = 1000 * np.concatenate([r["seconds"] for r in results])
    p99 = np.percentile(ms, 99)
    print(
        f"\ntime per image query (engine.search_image: decode, copy + CLIP search), "
        f"{len(ms)} queries: mean {ms.mean():.1f} ms, p50 {np.percentile(ms, 50):.1f} ms, "
        f"p99 {p99:.1f} ms; CPU: {cpu_model()} x {os.cpu_count()}; candidates verified in "
        f"the query's thread and {engine.verifiers.processes} verifier processes\n"
        f"machine reference (scripts/machine.py, its speed now): {before:.1f} ms before the "
        f"queries, {after:.1f} ms after; p99 = {p99 / ((before + after) / 2):.2f} references"
    )
    if args.clients:
        images = [image for _, image in originals] + [n.image for n in negatives]
        uploads = [query_bytes(name, im) for name in args.transforms for im in images]
        at_once(engine, uploads[::5], args.clients)


if __name__ == "__main__":
    main()
