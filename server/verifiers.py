"""Verifiers: processes that verify an upload's copy candidates beside the query's thread.

Verification (indexer/copies/verify.py) is many small NumPy calls that hold the GIL: in
threads a query's candidates were verified slower than in one (docs/copy-detection.md, run
BA), so each query verified on one core, and a server's queries shared one core's worth of
it. Here a query's candidates are dealt out in turn, one share to the query's own thread and
one to each spawned process, which is sent the upload's fingerprints once and the stored
thumbnails' files. A verdict is the same wherever it is made. A pool that breaks (a worker
killed) is replaced, and what it held is verified in the query's thread.
"""

from __future__ import annotations

import copyreg
import dataclasses
import functools
import io
import multiprocessing
import multiprocessing.process
import os
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import NamedTuple

from PIL import Image

from hibt.config import Settings
from hibt.indexer.copies.fingerprint import Fingerprints
from hibt.indexer.copies.matching import CopyMatch
from hibt.indexer.copies.verify import Verdict, verify_match
from hibt.indexer.copies.views import INDEX_VIEWS, QUERY_VIEWS, View
from hibt.server.limits import usable_cpus

# Fewer candidates than this are all verified in the query's thread: too few to gain from
# sharing them reliably (docs/copy-detection.md, run BF).
SPREAD_FROM = 4
MOST_PROCESSES = 3  # by default one fewer than the usable CPUs, at most this many


def view_place(view: View) -> tuple[Callable[[bool, int], View], tuple[bool, int]]:
    """A view crosses to a verifier process as its place in its catalogue: the function that
    makes it is a lambda, which pickle cannot carry. (Kept here, not as View.__reduce__:
    views.py is part of an index's build key, and this changes no stored view.)"""
    for query, catalogue in ((True, QUERY_VIEWS), (False, INDEX_VIEWS)):
        at = next((i for i, known in enumerate(catalogue) if known is view), None)
        if at is not None:
            return catalogued, (query, at)
    raise TypeError(f"view {view.name!r} is in no catalogue, so it cannot be pickled")


def catalogued(query: bool, at: int) -> View:
    """The view at ``at`` in the query or the index catalogue (:func:`view_place`)."""
    return (QUERY_VIEWS if query else INDEX_VIEWS)[at]


copyreg.pickle(View, view_place)


class Thumbnail(NamedTuple):
    image: Image.Image  # RGB
    lossless: bool  # WebP, a drawing's (docs/index-format.md), not a photo's JPEG

    @classmethod
    def of(cls, data: bytes) -> Thumbnail:
        opened = Image.open(io.BytesIO(data))
        return cls(opened.convert("RGB"), opened.format == "WEBP")


@dataclass(frozen=True)
class Task:
    """A candidate to verify: the match, its stored file's size (grid.Grid.meets), and, to
    go to a verifier process, its stored thumbnail's file."""

    match: CopyMatch
    size: tuple[int, int]
    thumbnail: bytes | None = None


def verdict(prints: Fingerprints, task: Task, stored: Thumbnail | None) -> Verdict:
    """The task's match verified against its stored thumbnail; the same bytes need nothing.
    A lossless thumbnail may lie on the upload's pixel grid, or hold the upload's pixels
    inside its own (a crop of the file)."""
    if task.match.same_bytes:
        return Verdict("same", distance=0.0)
    if stored is None:
        return Verdict("different", "no thumbnail")
    on_grid = stored.lossless and prints.grid is not None
    meets = on_grid and prints.grid.meets(stored.image.size, task.size)
    inside = on_grid and prints.grid.inside(stored.image.size, task.size)
    return verify_match(prints, task.match, stored.image, meets, inside)


def sent_verdicts(prints: Fingerprints, tasks: list[Task]) -> list[Verdict]:
    """In a verifier process: each task's verdict, its thumbnail decoded here."""
    return [verdict(prints, t, opened(t.thumbnail)) for t in tasks]


def opened(data: bytes | None) -> Thumbnail | None:
    return None if data is None else Thumbnail.of(data)


class Verifiers:
    """A pool of ``processes`` verifier processes (none: every candidate in the query's
    thread), started on first use and shared by every engine of this process (:func:`of`)."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self.pool: ProcessPoolExecutor | None = None
        self.lock = threading.Lock()

    def verdicts(
        self,
        prints: Fingerprints,
        tasks: list[Task],
        thumbnail: Callable[[int], Thumbnail | None],
        thumbnail_file: Callable[[int], bytes | None],
    ) -> list[Verdict]:
        """Each task's verdict, in order. ``thumbnail`` decodes a stored thumbnail here,
        ``thumbnail_file`` reads one's file to send."""
        here = functools.partial(self.here, prints, thumbnail)
        shares = self.processes + 1 if self.processes and len(tasks) >= SPREAD_FROM else 1
        sent = {
            j: self.send(prints, [self.filled(t, thumbnail_file) for t in tasks[j::shares]])
            for j in range(1, shares)
        }
        out: list[Verdict | None] = [None] * len(tasks)
        out[::shares] = [here(t) for t in tasks[::shares]]
        for j, share in sent.items():
            out[j::shares] = self.received(share, tasks[j::shares], here)
        return out  # type: ignore[return-value]

    @staticmethod
    def here(
        prints: Fingerprints, thumbnail: Callable[[int], Thumbnail | None], task: Task
    ) -> Verdict:
        return verdict(prints, task, None if task.match.same_bytes else thumbnail(task.match.idx))

    @staticmethod
    def filled(task: Task, thumbnail_file: Callable[[int], bytes | None]) -> Task:
        if task.match.same_bytes:
            return task
        return dataclasses.replace(task, thumbnail=thumbnail_file(task.match.idx))

    def send(self, prints: Fingerprints, tasks: list[Task]) -> Sent | None:
        """The tasks sent to a verifier process; None when the pool cannot take them."""
        pool = self.started()
        try:
            return Sent(pool, pool.submit(sent_verdicts, prints, tasks))
        except (BrokenProcessPool, RuntimeError):  # broken, or shut down at exit
            self.replace(pool)
            return None

    def received(
        self, sent: Sent | None, tasks: list[Task], here: Callable[[Task], Verdict]
    ) -> list[Verdict]:
        """A process's verdicts; those of a process that died, verified here."""
        if sent is not None:
            try:
                return sent.future.result()
            except (BrokenProcessPool, CancelledError):
                self.replace(sent.pool)
        return [here(t) for t in tasks]

    def started(self) -> ProcessPoolExecutor:
        with self.lock:
            if self.pool is None:
                context = multiprocessing.get_context("spawn")  # no torch, no threads copied
                self.pool = ProcessPoolExecutor(
                    self.processes, mp_context=context, initializer=end_with_parent
                )
            return self.pool

    def start(self) -> None:
        """Starts the processes now (each imports NumPy and SciPy: about a second), so that
        the first query that spreads does not wait for them."""
        if self.processes and self.pool is None:
            pool = self.started()
            for _ in range(self.processes):
                pool.submit(int)

    def replace(self, pool: ProcessPoolExecutor) -> None:
        """Drops a broken ``pool``, unless another query has already replaced it."""
        with self.lock:
            if self.pool is not pool:
                return
            self.pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self.pool is not None:
            self.replace(self.pool)


class Sent(NamedTuple):
    pool: ProcessPoolExecutor
    future: Future


def end_with_parent() -> None:
    """In each verifier process: end when the process that started it does, however that
    ended. `hibt serve` stopped by a signal runs no exit handlers (uvicorn raises the signal
    again once it has shut down) and so never stops its pool, and an idle worker would wait
    for ever, since it holds its own queue's writing end and never reads an end there."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=exit_after, args=(parent,), daemon=True).start()


def exit_after(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # a spawned child's parent is joined on its pipe, which closes as it ends
    os._exit(0)


def processes(settings: Settings) -> int:
    """Verifier processes: ``copy_verify_processes``, by default one fewer than the usable
    CPUs (the query's own thread takes a share), at most :data:`MOST_PROCESSES`."""
    if settings.copy_verify_processes is not None:
        return max(0, settings.copy_verify_processes)
    return max(0, min(MOST_PROCESSES, usable_cpus() - 1))


@functools.cache
def of(count: int) -> Verifiers:
    """The verifiers of this process with ``count`` processes, shared by its engines."""
    return Verifiers(count)
