"""Is an index directory what its build wrote? The build records every file's size and
checksums in the manifest (:func:`describe`); opening an index checks, cheaply, every
file's size and the digest of its two ends, the arrays' shapes against the manifest's
counts and the metadata's rows (:func:`check`: a truncated, emptied, swapped or
half-copied file, or edited counts, are refused with what to do instead of a traceback or
wrong answers); `hibt verify` reads every byte against the full checksums
(:func:`verify`)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hibt.errors import IndexDamaged
from hibt.indexer import index_format as fmt
from hibt.indexer.copies.fingerprint import COLOUR_BYTES, DESCRIPTOR_DIM, HASH_BYTES
from hibt.indexer.copies.views import INDEX_VARIANTS
from hibt.indexer.vector_index import npy_header

SAMPLE = 1 << 16  # bytes read at each end of a file at start
BLOCK = 1 << 22


def sample_digest(path: Path) -> str:
    """sha256 of the size and both ends: a truncated, emptied or swapped file shows,
    reading 128 KiB whatever its size."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(SAMPLE))
        f.seek(max(0, size - SAMPLE))
        digest.update(f.read(SAMPLE))
    return digest.hexdigest()


def full_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def files_of(directory: Path) -> list[str]:
    """Every file of the index but the manifest, as paths relative to it."""
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and not p.name.startswith(fmt.MANIFEST)
    )


def workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def describe_one(path: Path) -> fmt.FileInfo:
    # hashlib lets other threads run while it hashes: files are hashed a few at a time
    size, sample, sha256 = path.stat().st_size, sample_digest(path), full_digest(path)
    info = fmt.FileInfo(size=size, sample=sample, sha256=sha256)
    if path.suffix == ".npy":
        shape, dtype, _ = npy_header(path)
        info.shape, info.dtype = list(shape), dtype.name
    return info


def describe(directory: Path) -> dict[str, fmt.FileInfo]:
    """What the manifest records of each file, hashed a few files at a time."""
    names = files_of(directory)
    with ThreadPoolExecutor(workers()) as pool:
        infos = pool.map(describe_one, (directory / name for name in names))
        return dict(zip(names, infos, strict=True))


def expected_shapes(manifest: fmt.Manifest) -> dict[str, tuple[tuple[int, ...], str]]:
    """The shape and dtype each array must have, from the manifest's counts and model."""
    n, dim = manifest.counts.items, manifest.model.dim
    shapes = {fmt.IMAGE_VECTORS: ((n, dim), "float16"), fmt.GROUPS: ((n,), "int64")}
    if manifest.captions:
        shapes[fmt.CAPTION_VECTORS] = ((n, dim), "float16")
    if manifest.kind == "images":
        shapes[fmt.DESCRIPTORS] = ((n, INDEX_VARIANTS, DESCRIPTOR_DIM), "float16")
        shapes[fmt.FINGERPRINTS] = ((n, INDEX_VARIANTS, HASH_BYTES), "uint8")
        shapes[fmt.COLOURS] = ((n, COLOUR_BYTES), "uint8")
    return shapes


def recorded_problems(directory: Path, files: dict[str, fmt.FileInfo]) -> list[str]:
    """Files missing, or with another size or other ends than the build wrote."""
    problems = []
    written = {info.sample: name for name, info in files.items()}
    for name, info in files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif (size := path.stat().st_size) != info.size:
            problems.append(f"{name} is {size} bytes, {info.size} when written")
        elif (sample := sample_digest(path)) != info.sample:
            was = f" (it holds what {written[sample]} held)" if sample in written else ""
            problems.append(f"{name} has changed since it was written{was}")
    return problems


def array_problems(directory: Path, manifest: fmt.Manifest) -> list[str]:
    """Arrays whose header disagrees with the counts, or whose data is cut short."""
    problems = []
    for name, (shape, dtype) in expected_shapes(manifest).items():
        path = directory / name
        try:
            found, found_dtype, offset = npy_header(path)
        except (OSError, ValueError, EOFError) as exc:
            problems.append(f"{name} is not a readable array ({exc or 'empty'})")
            continue
        if found[0] != shape[0]:
            problems.append(f"{name} holds {found[0]} rows, the manifest counts {shape[0]} items")
        elif found != shape or found_dtype.name != dtype:
            problems.append(f"{name} is {found_dtype.name} {found}, expected {dtype} {shape}")
        elif (size := path.stat().st_size) != offset + found_dtype.itemsize * int(np.prod(found)):
            problems.append(f"{name} is {size} bytes, too short for its {found} array")
    return problems


def metadata_problems(directory: Path, manifest: fmt.Manifest) -> list[str]:
    """The items table must hold rows 0..N-1 (its last row is found in the rowid index)."""
    try:
        conn = sqlite3.connect(f"file:{directory / fmt.METADATA}?mode=ro", uri=True)
        try:
            low, high = conn.execute("SELECT min(idx), max(idx) FROM items").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return [f"{fmt.METADATA} is not a readable index database ({exc})"]
    rows = 0 if high is None else high + 1
    if low not in (0, None) or rows != manifest.counts.items:
        return [f"{fmt.METADATA} holds {rows} rows, the manifest counts {manifest.counts.items}"]
    return []


def problems_of(directory: Path, manifest: fmt.Manifest) -> list[str]:
    """Everything the cheap checks find, one problem per file."""
    problems = recorded_problems(directory, manifest.files or {})
    for problem in array_problems(directory, manifest) + metadata_problems(directory, manifest):
        if problem.split(" ")[0] not in named(problems):
            problems.append(problem)
    return problems


def named(problems: list[str]) -> set[str]:
    """The files these problems are about (each problem starts with its file's name)."""
    return {problem.split(" ")[0] for problem in problems}


def damaged(directory: Path, problems: list[str], read_all: bool = False) -> IndexDamaged:
    more = "" if read_all else "; `hibt verify` checks every byte"
    return IndexDamaged(
        f"{directory} is damaged: {'; '.join(problems)}. Rebuild it (hibt index --rebuild) "
        f"or restore a copy{more}"
    )


def unchecked_note(directory: Path, manifest: fmt.Manifest) -> str | None:
    if manifest.files is not None:
        return None
    return (
        f"{directory} is index format {manifest.format_version}, which records no checksums: "
        "only its shapes and counts are checked; rebuild it with `hibt index` to have them"
    )


def check(directory: Path, manifest: fmt.Manifest) -> None:
    """The cheap check made whenever an index is opened: raises IndexDamaged naming every
    problem found. Prints a warning for an index of a format without checksums."""
    problems = problems_of(directory, manifest)
    if problems:
        raise damaged(directory, problems)
    if note := unchecked_note(directory, manifest):
        print(f"warning: {note}", file=sys.stderr)


@dataclass
class Verified:
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def verify(directory: Path) -> Verified:
    """Every byte of every recorded file against its sha256, after the cheap checks; raises
    IndexDamaged naming each file that differs."""
    started = time.perf_counter()
    directory = Path(directory)
    manifest = fmt.read_manifest(directory)
    files = manifest.files or {}
    problems = problems_of(directory, manifest)
    intact = [name for name in files if name not in named(problems)]
    with ThreadPoolExecutor(workers()) as pool:
        digests = zip(intact, pool.map(full_digest, (directory / n for n in intact)), strict=True)
        digests = dict(digests)
    for name, digest in digests.items():
        if digest != files[name].sha256:
            problems.append(
                f"{name} does not match its checksum (sha256 {digest[:12]}…, "
                f"{files[name].sha256[:12]}… when written)"
            )
    if problems:
        raise damaged(directory, problems, read_all=True)
    notes = [note] if (note := unchecked_note(directory, manifest)) else []
    size = sum(files[name].size for name in intact)
    return Verified(len(intact), size, time.perf_counter() - started, notes)
