"""What hostile requests cost the real server (issue 24), as figures to compare before and
after a change.

Starts `hibt serve` on loopback (a fresh process per phase, so memory is its own) over an
index of the tests' generated dataset built with the tiny test model (or --index), and
measures from outside, reading the server's resident memory from /proc:

  decode   8 concurrent uploads of a 7000x7000 PNG of a few hundred KB: the RSS rise at the
           peak and what stays 3 s after (target: <= 500 MB, returns within 100 MB)
  bodies   a chunked (no Content-Length) 100 MB JSON vector and a chunked 256 MB multipart
           upload: the answer, the bytes the server took before answering, the RSS rise
  overload text search from 8 and from 32 concurrent clients, alternating for --rounds
           rounds of --seconds: answers/s, p50/p99 latency, 503s, server CPU per answer
           (target: answers/s at 32 not below answers/s at 8)
  claims   check and search time with 0 vs --claims domain claims, by running
           scripts/bench_registry.py (which measures exactly that) at a small size

    OMP_NUM_THREADS=1 python scripts/bench_hardening.py                 # a few minutes
    python scripts/bench_hardening.py --phases decode,overload --rounds 5

To measure another version of the server, put its tree first on PYTHONPATH (the server
process inherits it); the index is built with this tree's code either way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from machine import PeakMemory, cpu_model
from serving import serving

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20
PROCESSES = 4  # client processes in the overload phase


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def big_png(side: int, seed: int) -> bytes:
    """A valid RGB PNG of side x side pixels in a few hundred KB, written row by row."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (8, 3), dtype=np.uint8)
    packer = zlib.compressobj(6)
    out = []
    for y in range(side):
        row = np.empty((side, 3), np.uint8)
        row[:] = colours[(y * 8) // side]
        row[: side // 3] = colours[(y // 500 + 3) % 8]
        out.append(packer.compress(b"\0" + row.tobytes()))
    idat = b"".join(out) + packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    head = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@contextmanager
def server(index: Path, **env: str):
    """`hibt serve` on a free loopback port: (base URL, pid)."""
    with serving(index, {"HIBT_OFFLINE": "1", **env}) as served:
        yield served.base, served.proc.pid


# --- phases ------------------------------------------------------------------------------
def phase_decode(index: Path, args) -> None:
    pngs = [big_png(args.side, seed) for seed in range(8)]
    with server(index) as (base, pid):
        httpx.get(f"{base}/api/search", params={"q": "warm up"}, timeout=60)
        before = rss(pid)
        started = time.perf_counter()
        with PeakMemory(pid) as peak, ThreadPoolExecutor(8) as pool:

            def post(png: bytes) -> int:
                files = {"image": ("big.png", png, "image/png")}
                url = f"{base}/api/search/image"
                return httpx.post(url, files=files, timeout=300).status_code

            codes = list(pool.map(post, pngs))
        seconds = time.perf_counter() - started
        time.sleep(3)
        after = rss(pid)
    print(
        f"decode: 8 x {args.side}x{args.side} PNG ({len(pngs[0]) // 1024} KB each) -> "
        f"{sorted(set(codes))} in {seconds:.1f} s; RSS {before / MB:.0f} MB before, "
        f"peak rise {(peak.peak - before) / MB:.0f} MB, kept {(after - before) / MB:.0f} MB "
        "after 3 s"
    )


def chunked(total: int, head: bytes, fill: bytes, sent: list[int]):
    """``head`` then ``fill`` repeated to ``total`` bytes, counting what was taken."""
    sent[0] = len(head)
    yield head
    while sent[0] < total:
        sent[0] += len(fill)
        yield fill


def phase_bodies(index: Path, args) -> None:
    with server(index) as (base, pid):
        cases = [
            (
                "JSON vector",
                "/api/search/vector",
                "application/json",
                args.json_mb,
                b'{"vector": [',
                b"0.5, " * 13107,
            ),
            (
                "multipart upload",
                "/api/search/image",
                "multipart/form-data; boundary=b",
                args.upload_mb,
                b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
                b"Content-Type: image/png\r\n\r\n",
                b"\0" * 65536,
            ),
        ]
        for name, path, kind, size_mb, head, fill in cases:
            before, sent = rss(pid), [0]
            started = time.perf_counter()
            with PeakMemory(pid) as peak:
                try:
                    answer = httpx.post(
                        base + path,
                        content=chunked(size_mb * MB, head, fill, sent),
                        headers={"content-type": kind},
                        timeout=600,
                    )
                    status = str(answer.status_code)
                except httpx.HTTPError as exc:  # the server hung up mid-body: refused early
                    status = f"connection closed ({type(exc).__name__})"
            print(
                f"bodies: chunked {size_mb} MB {name} -> {status} after "
                f"{sent[0] / MB:.1f} MB sent, {time.perf_counter() - started:.1f} s; "
                f"RSS peak rise {(peak.peak - before) / MB:.0f} MB"
            )


async def load(base: str, clients: int, seconds: float) -> tuple[int, int, list[float]]:
    """Text searches from ``clients`` concurrent clients: (answered, refused, the answered
    ones' latencies). A refused client waits as Retry-After says, as a polite client would."""
    ok, refused, latencies = 0, 0, []
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:

        async def one(worker: int) -> None:
            nonlocal ok, refused
            n = 0
            while time.perf_counter() < stop:
                n += 1
                started = time.perf_counter()
                answer = await client.get("/api/search", params={"q": f"owl {worker} {n}"})
                if answer.status_code == 200:
                    ok += 1
                    latencies.append(time.perf_counter() - started)
                else:
                    refused += 1
                    await asyncio.sleep(float(answer.headers.get("retry-after", "1")))

        await asyncio.gather(*(one(w) for w in range(clients)))
    return ok, refused, latencies


def load_part(job: tuple[str, int, float]) -> tuple[int, int, list[float], float]:
    """One client process's share of the load, and the CPU it used."""
    cpu = time.process_time()
    ok, refused, latencies = asyncio.run(load(*job))
    return ok, refused, latencies, time.process_time() - cpu


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (from /proc), which other load does not inflate."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phase_overload(index: Path, args) -> None:
    """Clients spread over PROCESSES processes at both levels, so the client side is the
    same size for 8 and 32 and no one Python loop's overhead is what gets measured. The
    levels alternate for --rounds rounds (other load on the machine falls on both alike);
    medians are given: answers/s, the answered requests' latency, the share refused with
    503, the server's CPU time per answer (503s included in its CPU) and the clients' (which
    share the machine with it here, so their work is CPU the server does not get); then the
    ratio of the two levels' rates, round by round (its median is the least disturbed by load
    that comes and goes)."""
    runs: dict[int, list[tuple[float, ...]]] = {8: [], 32: []}
    with server(index) as (base, pid), ProcessPoolExecutor(PROCESSES) as pool:
        asyncio.run(load(base, 8, 2))  # warm up
        for _ in range(args.rounds):
            for clients in (8, 32):
                job = (base, clients // PROCESSES, args.seconds)
                cpu = cpu_seconds(pid)
                parts = list(pool.map(load_part, [job] * PROCESSES))
                cpu = cpu_seconds(pid) - cpu
                ok, refused = sum(p[0] for p in parts), sum(p[1] for p in parts)
                lat = sorted(x for p in parts for x in p[2])
                p99 = lat[int(len(lat) * 0.99) - 1]
                rate, share = ok / args.seconds, refused / (ok + refused)
                mine = sum(p[3] for p in parts) / ok
                runs[clients].append((rate, statistics.median(lat), p99, share, cpu / ok, mine))
    for clients, rows in runs.items():
        columns = (statistics.median(col) for col in zip(*rows, strict=True))
        rate, p50, p99, share, per, mine = columns
        rates = ", ".join(f"{r[0]:.0f}" for r in rows)
        print(
            f"overload: {clients:2d} clients: {rate:.1f} answers/s (rounds: {rates}), "
            f"answered in p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; "
            f"{share:.0%} of requests refused (503); CPU an answer: server "
            f"{per * 1000:.1f} ms, clients {mine * 1000:.1f} ms"
        )
    ratio = statistics.median(r[0] for r in runs[32]) / statistics.median(r[0] for r in runs[8])
    paired = statistics.median(b[0] / a[0] for a, b in zip(runs[8], runs[32], strict=True))
    print(f"overload: throughput at 32 / at 8 = {ratio:.2f} (round by round: {paired:.2f})")


def phase_claims(_: Path, args) -> None:
    work = Path(args.work) / "registry"
    command = [
        sys.executable,
        str(ROOT / "scripts" / "bench_registry.py"),
        "--rows",
        "20000",
        "--index-items",
        "10000",
        "--claims",
        str(args.claims),
        "--repeats",
        "5",
        "--export-runs",
        "1",
        "--work",
        str(work),
    ]
    print("claims: " + " ".join(command[1:]).replace(str(ROOT) + "/", ""), flush=True)
    subprocess.run(command, check=True)


def build(work: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from hibt.config import TINY_MODEL, Settings
    from hibt.indexer.build import build_index
    from hibt.indexer.model import Embedder, ModelSpec
    from tests.datagen import make_dataset

    index = work / "index"
    if not (index / "manifest.json").exists():
        make_dataset(work / "data")
        settings = Settings(model=TINY_MODEL, pretrained=None, chunk_size=64, decode_workers=-1)
        build_index(work / "data", index, Embedder(ModelSpec(TINY_MODEL)), settings)
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", default="decode,bodies,overload,claims")
    parser.add_argument("--index", help="an index to serve (default: a generated one)")
    parser.add_argument("--work", default=None, help="where the generated index is kept")
    parser.add_argument("--side", type=int, default=7000, help="pixels a side, decode phase")
    parser.add_argument("--json-mb", type=int, default=100)
    parser.add_argument("--upload-mb", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=5.0, help="per level and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--claims", type=int, default=100_000)
    args = parser.parse_args()
    args.work = args.work or tempfile.mkdtemp(prefix="hibt-bench-hardening-")
    index = Path(args.index) if args.index else build(Path(args.work))
    import hibt

    print(
        f"CPU: {cpu_model()} ({os.cpu_count()} cores); Python {platform.python_version()}; "
        f"server code: {os.environ.get('PYTHONPATH') or Path(hibt.__file__).parent.parent}",
        flush=True,
    )
    phases = {
        "decode": phase_decode,
        "bodies": phase_bodies,
        "overload": phase_overload,
        "claims": phase_claims,
    }
    for name in args.phases.split(","):
        phases[name](index, args)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
