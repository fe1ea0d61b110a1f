"""A small captioned dataset, generated, with every kind of broken file a crawl produces."""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HOSTILE_MARKUP = '<img src=x onerror="window.__xss=1">'
ARTISTS = ["Zoë O'Brien", "Jan Kowalski", "Mira Tanaka", "@pixelwitch"]
SUBJECTS = [
    "lighthouse",
    "red fox",
    "teapot",
    "mountain lake",
    "bicycle",
    "owl",
    "harbour",
    "sunflower",
    "violin",
]


@dataclass
class Item:
    path: Path
    caption: str
    artist: str


def drawing(seed: int, size: tuple[int, int] = (160, 120), alpha: bool = False) -> Image.Image:
    """A distinct picture per seed: random shapes on a random background."""
    rng = np.random.default_rng(seed)
    mode = "RGBA" if alpha else "RGB"
    background = tuple(int(v) for v in rng.integers(0, 256, 3)) + ((0,) if alpha else ())
    image = Image.new(mode, size, background)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.integers(0, size[0] - 20), rng.integers(0, size[1] - 20)
        x1, y1 = x0 + rng.integers(15, size[0] // 2), y0 + rng.integers(15, size[1] // 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3)) + ((255,) if alpha else ())
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((int(x0), int(y0), int(x1), int(y1)), fill=colour)
    return image


def save(image: Image.Image, path: Path) -> None:
    fmt = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[path.suffix]
    if fmt == "JPEG":
        image = image.convert("RGB")
    image.save(path, format=fmt, quality=92)


def png_with_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose header claims a huge size: a decompression bomb's signature."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


BROKEN = {
    "broken/empty.png": b"",
    "broken/not-an-image.jpg": b"this is a text file with a .jpg name\n",
    "broken/bomb.png": png_with_size(60_000, 60_000),
}


def make_dataset(root: Path, n: int = 36) -> list[Item]:
    """``n`` good images with captions from .txt, .json and metadata.jsonl, plus broken files."""
    root.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []
    table = []
    for i in range(n):
        artist = ARTISTS[i % len(ARTISTS)]
        subject = SUBJECTS[i % len(SUBJECTS)]
        caption = f"A {subject} painted by {artist}" if i % 3 else f"{subject} study number {i}"
        if i == n - 1:  # captions come from the open web: this one attacks the page
            caption += " " + HOSTILE_MARKUP

        suffix = (".jpg", ".png", ".webp")[i % 3]
        path = root / f"img_{i:03d}{suffix}"
        save(drawing(i, alpha=suffix == ".png" and i % 2 == 0), path)
        if i % 3 == 0:
            path.with_suffix(".json").write_text(json.dumps({"caption": caption, "artist": artist}))
        elif i % 3 == 1:
            path.with_suffix(".txt").write_text(caption)
            table.append({"file_name": path.name, "artist": artist, "license": "CC-BY 4.0"})
        else:
            table.append(
                {
                    "file_name": path.name,
                    "caption": caption,
                    "artist": artist,
                    "license": "CC0",
                    "url": f"https://example.org/art/{i}",
                }
            )
        items.append(Item(path, caption, artist))
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in table) + "\n")
    for rel, data in BROKEN.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    whole = items[1].path.read_bytes()
    (root / "broken" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    return items


def write_published(root: Path, parts: list[list[dict]], embedder, text: bool = True) -> None:
    """LAION's published layout for ``parts`` of rows ({image, caption, url, ...extra}):
    img_emb/img_emb_N.npy (float16), text_emb/text_emb_N.npy, metadata/metadata_N.parquet,
    the vectors made by ``embedder`` as a dataset's publisher made them with theirs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for folder in ("img_emb", "text_emb", "metadata") if text else ("img_emb", "metadata"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for number, rows in enumerate(parts):
        images = embedder.encode_images([r["image"] for r in rows])
        np.save(root / "img_emb" / f"img_emb_{number:04d}.npy", images.astype(np.float16))
        if text:
            texts = embedder.encode_texts([r["caption"] for r in rows])
            np.save(root / "text_emb" / f"text_emb_{number:04d}.npy", texts.astype(np.float16))
        table = [{k: v for k, v in r.items() if k != "image"} for r in rows]
        pq.write_table(
            pa.Table.from_pylist(table), root / "metadata" / f"metadata_{number:04d}.parquet"
        )
