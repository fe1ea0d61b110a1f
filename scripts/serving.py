"""The real `hibt serve`, started as a user starts it, for the benchmarks and the tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    base: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen
    start_s: float  # from the command to the first healthy answer


@contextmanager
def serving(
    targets: Path | str | list[str], env: dict[str, str] | None = None, wait_s: float = 300
) -> Iterator[Served]:
    """`hibt serve` over one index directory (or several ``NAME=PATH`` targets) on a free
    loopback port, once /api/health answers; stopped afterwards. ``wait_s`` is generous: a
    busy 2-core machine imports torch slowly."""
    port = free_port()
    args = [str(targets)] if isinstance(targets, Path | str) else [str(t) for t in targets]
    started = time.perf_counter()
    # Its log goes to a file, not a pipe: a pipe nobody reads stalls a server that logs
    # thousands of requests.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hibt", "serve", *args, "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(base, proc, log, started + wait_s)
            yield Served(base, proc, time.perf_counter() - started)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def wait_until_healthy(base: str, proc: subprocess.Popen, log, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            log.seek(0)
            said = log.read().decode(errors="replace")
            raise RuntimeError(f"the server exited before it answered:\n{said}")
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.1)
