"""Label pairs of files by the pixel rule of the honest copy benchmark: a rule of pixels
alone, so that no label is chosen by the engine under test (docs/copy-detection.md, "The
honest benchmark").

A pair's pixel distance: both pictures laid on white and trimmed of their flat borders, the
first under the flip or turn that brings it closest, both at the smaller one's size and
blurred by a pixel, the largest of the three channels' mean absolute difference (0-255).
Under 1.5, with no one place further apart than 20 (the mean over a window a sixteenth of
the picture wide: a tear on a smiley, numbers on a clock face), the two are one picture (a
copy); anything further is for the eye. A label the eye gave against these figures is
marked ``eye`` in a sixth column.

A copier's global tone edit (brightness, contrast, saturation, greyscale by a common tool) is
tried too where the two files paint the same places: fitted on the pixels both paint, applied
to the one file's colours before it is laid on white, and measured by the same two figures.
So is a brightness alone that clips (every channel times one factor, held at white), which a
least-squares fit does not find: a cream ground brightened to white. And the first picture is
moved by quarter pixels (up to one) where that registers the two better: one drawing
rendered twice a fraction of a pixel apart differs in antialiasing alone.

    # the pairs a benchmark run claimed as copies (or met: unlabelled_pairs.tsv)
    python scripts/label_copy_pairs.py DATASET WORK/false_copies.tsv
    # the committed list: every label the pixels contradict (not those marked eye)
    python scripts/label_copy_pairs.py DATASET docs/copy-pairs.tsv --check
    # and the printed pairs drawn for the eye (docs/copy-detection.md, "The eye review")
    python scripts/label_copy_pairs.py DATASET PAIRS --sheets FOLDER
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage
from tqdm import tqdm

COPY_MAX = 1.5  # mean grey levels: star pairs at 1.17 looked identical, at 1.9 did not
# Levels one place may differ by (a window of WINDOW of the shorter side): star pairs under
# 18 looked alike; a smiley with a tear measured 155, stars with another centre 22-67.
LOCAL_MAX = 20.0
WINDOW = 1 / 16
INK = 8  # levels from the border's colour that count as the picture, not its margin
ASPECT = 0.02  # shapes further apart than this (and a pixel) are not one picture
TURNS = [None, *Image.Transpose]  # as it is, and its 7 flips and turns
SHEET_SIDE, SHEET_ROWS = 200, 8  # a contact sheet's pictures (px, longer side) and pairs
# A tone edit: every channel times a boost, plus a grey of the picture times a shade, plus an
# offset. The grey ways of common tools: 601 luma (PIL, GIMP), 709 luma (scikit-image), the
# channels' mean, and HSL lightness, (max + min) / 2 (Photoshop's Desaturate; GIMP's Lightness).
LUMAS = [(0.299, 0.587, 0.114), (0.2126, 0.7152, 0.0722), (1 / 3, 1 / 3, 1 / 3)]


def lightness(colours: np.ndarray) -> np.ndarray:
    """HSL lightness of colours (..., 3)."""
    return (colours.max(axis=-1) + colours.min(axis=-1)) / 2


GREY_WAYS = [*(lambda c, w=np.array(w): c @ w for w in LUMAS), lightness]
# How far the edit may stretch the tones (boost + shade): fading (an "away" icon at 0.4) keeps
# every distinction, while a stretch past 2 clips half the range, a threshold, not an edit.
GAIN = (0.25, 2.0)
BOOST_MIN = -0.05  # an exact grey fits with a boost of -0.001; colours turned inside out need -1
BRIGHTNESS = np.arange(GAIN[0], GAIN[1] + 0.01, 0.05)  # factors tried for a clipped brightness
FINER = np.arange(-0.05, 0.051, 0.005)  # and then about the best of them
# Fractions of a pixel one picture is moved by to register it (registered), for pairs whose
# mean is under SHIFT_REACH: a tab icon mirrored a quarter pixel off measured 2.87, then 0.57.
SHIFTS = np.arange(-1.0, 1.01, 0.25)
SHIFT_REACH = 6.0
HUE_TURN, CHROMA = 10.0, 32  # a clip may turn a colour's hue this much, or any on a pale one
TURNED_MAX = 0.01  # of the picture: a few antialiased pixels, not a fill


def distance(first: Path, second: Path) -> tuple[float, float]:
    """:func:`pixel_distance` of the two files trimmed; where they are one size, also of both
    cut to one box (:func:`common_box`), which needs no resampling: an edit in place keeps
    the size, while the trims of a cream ground and of the same ground brightened to white,
    or of an icon and its mirror image, can fall a pixel apart."""
    return images_distance(opened(first), opened(second))


def images_distance(*wholes: Image.Image) -> tuple[float, float]:
    """:func:`distance` of two pictures already opened (RGBA)."""
    best = pixel_distance(*(trimmed(whole) for whole in wholes))
    boxes = [box_of(whole) for whole in wholes]
    if wholes[0].size != wholes[1].size or None in boxes:
        return best
    box = common_box(boxes, wholes[0].size)
    return min(best, pixel_distance(*(whole.crop(box) for whole in wholes)))


def common_box(boxes: list[tuple[int, int, int, int]], size: tuple[int, int]) -> tuple[int, ...]:
    """The smallest box that holds both pictures under every flip of their canvas (and turn,
    on a square one), so that a file cut to it and turned is the turned file cut to it; not
    the whole canvas, whose empty margin would dilute the mean difference."""
    w, h = size
    xs = [v for x0, _, x1, _ in boxes for v in (x0, x1, w - x1, w - x0)]
    ys = [v for _, y0, _, y1 in boxes for v in (y0, y1, h - y1, h - y0)]
    if w == h:
        xs = ys = xs + ys
    return min(xs), min(ys), max(xs), max(ys)


def opened(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGBA")


def picture(path: Path) -> Image.Image:
    """The file (RGBA) trimmed of the margin of its border's colour on white. Not the
    engine's own trim (framing.py): the labels must not come from the code they judge."""
    return trimmed(opened(path))


def trimmed(rgba: Image.Image) -> Image.Image:
    """``rgba`` without the margin of its border's colour on white (:func:`picture`)."""
    box = box_of(rgba)
    return rgba if box is None else rgba.crop(box)


def box_of(rgba: Image.Image) -> tuple[int, int, int, int] | None:
    """The box of what differs from the border's colour on white; None when nothing does."""
    pixels = on_white(np.asarray(rgba, np.float32))
    edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    ys, xs = np.nonzero(np.abs(pixels - np.median(edge, axis=0)).max(axis=-1) > INK)
    if not len(ys):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def on_white(rgba: np.ndarray, colours: np.ndarray | None = None) -> np.ndarray:
    """The picture (or other ``colours`` painted with its alpha) laid on white, whole levels."""
    alpha = rgba[..., 3:] / 255
    rgb = rgba[..., :3] if colours is None else colours
    return np.round(rgb * alpha + 255 * (1 - alpha))


def pixel_distance(first: Image.Image, second: Image.Image) -> tuple[float, float]:
    """The pair's distance under the turn (and tone edit) that brings them closest, and how
    far apart they are in one place there; inf when no turn gives them one shape."""
    best = (float("inf"), float("inf"))
    for a, b in common_turns(first, second):
        best = min(best, registered(on_white(a), on_white(b)))
        if np.abs(a[..., 3] - b[..., 3]).mean() < COPY_MAX:  # the two paint the same places
            edits = [(edited(a, b), on_white(b)), (on_white(a), edited(b, a))]
            edits += [(brightened(a, b), on_white(b)), (on_white(a), brightened(b, a))]
            best = min(best, *(apart(*pair) for pair in edits))
    return best


def common_turns(first: Image.Image, second: Image.Image) -> Iterator[tuple[np.ndarray, ...]]:
    """Each flip or turn of ``first`` that gives it ``second``'s shape, with ``second``, both
    RGBA arrays at the smaller one's size."""
    for turn in TURNS:
        turned = first if turn is None else first.transpose(turn)
        ratio, wanted = turned.width / turned.height, second.width / second.height
        if abs(ratio - wanted) > ASPECT * wanted + 1 / min(*second.size, *turned.size):
            continue
        size = min(turned.size, second.size, key=lambda s: s[0] * s[1])
        yield tuple(
            np.asarray(v.resize(size, Image.Resampling.LANCZOS), np.float32)
            for v in (turned, second)
        )


def apart(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two pictures on white, blurred by a pixel: the largest channel's mean difference, and
    the largest mean over a window of WINDOW of the shorter side."""
    return blurred_apart(blurred(a), blurred(b))


def blurred(picture: np.ndarray) -> np.ndarray:
    """A picture on white blurred by a pixel, in whole levels."""
    image = Image.fromarray(np.uint8(picture)).filter(ImageFilter.GaussianBlur(1))
    return np.asarray(image, np.float32)


def blurred_apart(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """:func:`apart` of two pictures already :func:`blurred`."""
    differs = np.abs(a - b)
    window = max(3, round(min(differs.shape[:2]) * WINDOW))
    local = float(ndimage.uniform_filter(differs.max(axis=-1), window).max())
    return float(differs.mean(axis=(0, 1)).max()), local


def one_picture(mean: float, local: float) -> bool:
    """The rule's verdict on a pair's two figures (:func:`apart`): a copy."""
    return mean < COPY_MAX and local < LOCAL_MAX


def registered(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """:func:`apart`, with ``a`` moved by a fraction of a pixel where that brings the two
    closer: one drawing rendered twice a fraction of a pixel apart (an icon mirrored about
    an axis a quarter pixel off its canvas's centre) differs only in antialiasing, which
    trimming to whole pixels cannot register. Searched one axis at a time, only for a pair
    within SHIFT_REACH (a shift moves edges, not what a picture holds)."""
    target = blurred(b)  # blurred once: only ``a`` moves
    best, dy, dx = blurred_apart(blurred(a), target), 0.0, 0.0
    if best[0] >= SHIFT_REACH or one_picture(*best):
        return best
    for _ in range(2):
        for along_y in (True, False):
            for step in SHIFTS:
                y, x = (step, dx) if along_y else (dy, step)
                moved = ndimage.shift(a, (y, x, 0), order=1, mode="nearest")
                got = blurred_apart(blurred(moved), target)
                if got < best:
                    best, dy, dx = got, y, x
    return best


def edited(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source`` on white under the tone edit that best gives ``target``'s colours where both
    paint, or as it is when no edit within GAIN fits."""
    both = (source[..., 3] == 255) & (target[..., 3] == 255)
    x, y = source[both][:, :3].astype(np.float64), target[both][:, :3].astype(np.float64)
    best, colours = np.inf, source[..., :3]
    for way in GREY_WAYS if len(x) >= 16 else ():
        terms = np.stack([x, np.repeat(way(x)[:, None], 3, 1), np.ones_like(x)], -1)
        (boost, shade, offset), *_ = np.linalg.lstsq(terms.reshape(-1, 3), y.ravel(), rcond=None)
        left = np.abs(terms @ (boost, shade, offset) - y).mean()
        if boost > BOOST_MIN and GAIN[0] <= boost + shade <= GAIN[1] and left < best:
            made = boost * source[..., :3] + shade * way(source[..., :3])[..., None] + offset
            best, colours = left, np.clip(made, 0, 255)
    return on_white(source, colours)


def brightened(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source`` on white brightened (every channel times one factor of BRIGHTNESS, clipped
    as an image tool clips) to come closest to ``target`` where both paint. Only a factor
    that turns no fill's hue as it clips: a tinted ground made white, or a red made brighter
    red, is a brightness; an orange whose red clips into yellow has been turned."""
    both = (source[..., 3] == 255) & (target[..., 3] == 255)
    x, y = source[both][:, :3], target[both][:, :3]
    factor, best = 1.0, np.inf
    for around in (None, FINER):  # the coarse factors, then finer ones about the best
        for f in BRIGHTNESS if around is None else factor + around:
            made = x * f
            left = np.abs(np.minimum(made, 255) - y).mean() if len(x) else np.inf
            if left < best and turned(made) <= TURNED_MAX:
                best, factor = left, float(f)
    return on_white(source, np.minimum(source[..., :3] * factor, 255))


def turned(made: np.ndarray) -> float:
    """The share of the colours ``made`` (n, 3) whose hue clipping turns (their opponent
    angle, by more than HUE_TURN degrees where chroma stays CHROMA or more)."""
    clipped = made.max(axis=-1) > 255
    if not clipped.any():
        return 0.0
    before, after = made[clipped], np.minimum(made[clipped], 255)
    angles = [
        np.degrees(np.arctan2(c[:, 0] - c[:, 1], (c[:, 0] + c[:, 1]) / 2 - c[:, 2]))
        for c in (before, after)
    ]
    turn = np.abs((angles[1] - angles[0] + 180) % 360 - 180)
    coloured = np.ptp(after, axis=-1) >= CHROMA
    return float((coloured & (turn > HUE_TURN)).sum() / len(made))


def pairs_in(path: Path, dataset: Path) -> list[tuple[str, str, str, Path, Path]]:
    """(sha_a, sha_b, label, path_a, path_b) from a labelled list (paths under ``dataset``;
    label "eye" where the eye overrode the pixels), or a benchmark's unlabelled_pairs.tsv or
    false_copies.tsv (label "?")."""
    out = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) == 7:  # false_copies.tsv: transformation first, label and score inside
            fields = [*fields[1:3], "?", *fields[5:]]
        a, b, third, first, second = fields[:5]
        label = third if third in ("copy", "sibling") else "?"
        label = "eye" if fields[5:6] == ["eye"] else label
        out.append((a, b, label, found(first, dataset), found(second, dataset)))
    return out


def found(path: str, dataset: Path) -> Path:
    """A path as the benchmark wrote it (from where it ran), or as the list keeps it."""
    return Path(path) if Path(path).exists() else dataset / path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path, help="folder the list's paths are relative to")
    parser.add_argument("pairs", type=Path, help="unlabelled_pairs.tsv, or the labelled list")
    parser.add_argument("--check", action="store_true", help="only labels the pixels contradict")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count(), help="processes measuring pairs at once"
    )
    parser.add_argument(
        "--sheets",
        type=Path,
        metavar="FOLDER",
        help="also draw each printed pair for the eye, side by side with their difference, "
        "into contact sheets in FOLDER",
    )
    args = parser.parse_args()
    todo = to_measure(pairs_in(args.pairs, args.dataset), args.check)
    # In the list's order, each line as soon as its pair and those before it are measured,
    # with a progress bar on a terminal's stderr: the whole list is thousands of pairs.
    sheets = Sheets(args.sheets) if args.sheets else None
    with Pool(args.jobs) as pool:
        measured = pool.imap(measure, todo, chunksize=4)
        for (label, first, second), (mean, local) in tqdm(
            zip(todo, measured, strict=True), total=len(todo), unit="pair", disable=None
        ):
            verdict = "copy" if one_picture(mean, local) else "look"
            # A copy labelled by the mean alone before LOCAL_MAX, that one place now refuses.
            contradicted = verdict == "copy" if label == "sibling" else mean < COPY_MAX
            if not args.check or (contradicted and verdict != label):
                line = f"{mean:.2f}\t{local:.1f}\t{verdict}\t{label}\t{first.name}\t{second.name}"
                tqdm.write(line)
                if sheets:
                    sheets.add(sheet_row(first, second, line.replace("\t", "  ")))
    if sheets:
        sheets.close()


def to_measure(
    pairs: list[tuple[str, str, str, Path, Path]], check: bool
) -> list[tuple[str, Path, Path]]:
    """(label, first, second) of each pair once; with ``check``, not the eye's labels."""
    seen: set[frozenset[str]] = set()
    todo = []
    for a, b, label, first, second in pairs:
        if frozenset((a, b)) in seen or (check and label == "eye"):
            continue
        seen.add(frozenset((a, b)))
        todo.append((label, first, second))
    return todo


def sheet_row(first: Path, second: Path, caption: str) -> Image.Image:
    """A pair as the eye is shown it: both trimmed on white, the first under the flip or turn
    whose mean difference is least, at one size; then their difference, white where alike
    (outlines alone are one drawing rendered twice a fraction of a pixel apart, of the whole
    or of a part; a filled area is a part drawn otherwise); the longer side SHEET_SIDE px,
    under ``caption``."""
    pictures = [picture(first), picture(second)]
    laid = list(common_turns(*pictures))
    if laid:
        a, b = (on_white(v) for v in min(laid, key=lambda p: np.abs(p[0] - p[1]).mean()))
        views = [a, b, 255 - np.abs(a - b)]
    else:  # no flip or turn gives them one shape: both as they are, and no difference
        views = [on_white(np.asarray(p, np.float32)) for p in pictures]
    scale = SHEET_SIDE / max(max(v.shape[:2]) for v in views)
    row = Image.new("RGB", (3 * (SHEET_SIDE + 8), SHEET_SIDE + 16), "white")
    ImageDraw.Draw(row).text((2, 2), caption, fill="black")
    for i, view in enumerate(views):
        image = Image.fromarray(np.uint8(view)).convert("RGB")
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
        row.paste(image.resize(size, resample), (i * (SHEET_SIDE + 8), 16))
    return row


class Sheets:
    """Contact sheets in ``folder``, SHEET_ROWS rows to a PNG in order (sheet_000.png,
    sheet_001.png, ...), each written as soon as it is full: a whole list drawn is thousands
    of rows."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.rows, self.written = folder, [], 0
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, row: Image.Image) -> None:
        self.rows.append(row)
        if len(self.rows) == SHEET_ROWS:
            self.close()

    def close(self) -> None:
        """Writes the rows not yet written, if any."""
        if not self.rows:
            return
        sheet = Image.new("RGB", (self.rows[0].width, sum(r.height + 8 for r in self.rows)), "grey")
        for i, row in enumerate(self.rows):
            sheet.paste(row, (0, i * (row.height + 8)))
        sheet.save(self.folder / f"sheet_{self.written:03d}.png")
        self.rows, self.written = [], self.written + 1


def measure(pair: tuple[str, Path, Path]) -> tuple[float, float]:
    """:func:`distance` of a pair to measure, in a worker process."""
    return distance(*pair[1:])


if __name__ == "__main__":
    main()
