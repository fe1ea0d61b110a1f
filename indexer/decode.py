"""Per-image work done in decoder processes: everything but the neural network.

Kept free of torch imports so spawned workers start fast and stay small.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hibt.indexer import nsfw
from hibt.indexer.copies.fingerprint import index_fingerprints
from hibt.indexer.images import BadImage, decode, least_side, read_bytes, thumbnail_bytes
from hibt.indexer.model_input import resize_center_crop


@dataclass(frozen=True)
class DecodeOptions:
    max_pixels: int
    max_bytes: int
    working_size: int
    thumbnail_size: int
    model_image_size: int
    score_nsfw: bool = False  # run the safety classifier (indexer/nsfw.py) on each image


@dataclass
class Decoded:
    pixels: np.ndarray | None  # uint8 (S, S, 3) model input; None once encoded
    hashes: np.ndarray  # uint8 (INDEX_VARIANTS, HASH_BYTES)
    descriptors: np.ndarray  # float32 (INDEX_VARIANTS, DESCRIPTOR_DIM)
    colour: np.ndarray  # uint8 (COLOUR_BYTES,)
    thumbnail: bytes
    width: int
    height: int
    sha256: str
    nsfw: float | None = None  # open_nsfw's P(explicit); None when not scored
    cpu: float = 0.0  # CPU seconds decode_one spent on it (the build balances on it)


def decode_one(args: tuple[Path | bytes, DecodeOptions]) -> Decoded | str:
    """Decoded item, or the reason the file was skipped (never raises for bad input)."""
    ref, opts = args
    started = time.process_time()
    try:
        data = read_bytes(ref, opts.max_bytes)  # read once: decoded and hashed from memory
        least = least_side(opts.model_image_size, opts.thumbnail_size)
        loaded = decode(data, opts.max_pixels, opts.working_size, least=least)
        prints = index_fingerprints(loaded.image)
        return Decoded(
            pixels=resize_center_crop(loaded.image, opts.model_image_size),
            hashes=prints.hashes,
            descriptors=prints.descriptors,
            colour=prints.colour,
            thumbnail=thumbnail_bytes(loaded.image, opts.thumbnail_size),
            width=loaded.width,
            height=loaded.height,
            sha256=hashlib.sha256(data).hexdigest(),
            nsfw=nsfw.classifier().score(loaded.image) if opts.score_nsfw else None,
            cpu=time.process_time() - started,
        )
    except BadImage as exc:
        return exc.reason
    except MemoryError:
        return "out of memory while decoding"
    except Exception as exc:  # a decoder bug on one hostile file must not end the build
        return f"unreadable image ({type(exc).__name__}: {exc})"
