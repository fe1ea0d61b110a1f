"""What the benchmarks print about the machine they ran on, and the memory they took."""

from __future__ import annotations

import contextlib
import platform
import statistics
import threading
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    """The CPU's model name, for the header every benchmark prints beside its figures."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def reference_ms(rounds: int = 5) -> float:
    """How long this machine takes now, in ms, for a fixed workload of small
    NumPy calls (FFTs, reductions, least squares) on a 100 x 100 picture, the kind copy
    verification makes: the median of ``rounds``. A shared machine's speed moves within a
    day by more than a code change does (docs/copy-detection.md, run AZ), so latencies read
    beside it compare across runs."""
    rng = np.random.default_rng(0)
    grey = (rng.random((100, 100)) * 255).astype(np.float32)
    rows = rng.random((3, 10_000))
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(100):
            back = np.fft.irfft2(np.fft.rfft2(grey), s=grey.shape)
            float(np.abs(back - grey).mean())
            np.maximum(grey[1:], grey[:-1])
            np.median(rows, axis=1)
            np.linalg.lstsq(rows.T, rows[0], rcond=None)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


class PeakMemory:
    """The highest resident memory of a process (this one unless ``pid``), with all its
    descendants when ``children`` (a build's decoder processes live beside its encoder;
    ru_maxrss of a spawned child also counts its parent's pages before exec), sampled every
    ``every`` seconds while the block runs."""

    def __init__(self, pid: int | None = None, children: bool = False, every: float = 0.01):
        import psutil

        self.process, self.children, self.every = psutil.Process(pid), children, every
        self.peak, self.done = self.now(), threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def now(self) -> int:
        import psutil

        procs = [self.process, *(self.process.children(recursive=True) if self.children else [])]
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):  # ended between listing and reading
                total += proc.memory_info().rss
        return total

    def sample(self) -> None:
        while not self.done.wait(self.every):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    @property
    def mb(self) -> float:
        return self.peak / 2**20
