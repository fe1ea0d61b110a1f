"""No request can freeze, exhaust or fool the server (issue 24, the server's side).

Bodies and queues are driven through the ASGI app itself, with a receive() that counts
what the app asked for: a test client would read the whole body first and hide the defect.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from hibt.config import TINY_MODEL
from hibt.indexer.build import build_index
from hibt.indexer.decode import DecodeOptions, decode_one
from hibt.indexer.images import decode
from hibt.indexer.model import Embedder, ModelSpec
from hibt.server import limits
from hibt.server.app import create_app, open_app
from hibt.server.engine import Engine
from hibt.server.ratelimit import RateLimiter
from scripts.machine import PeakMemory
from scripts.serving import free_port
from tests.conftest import python_lines, tiny_settings
from tests.datagen import drawing, save

WEB = Path(__file__).resolve().parent.parent / "web"


def rss() -> int:
    """This process's resident memory in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def big_png(side: int, seed: int) -> bytes:
    """A valid side x side RGB PNG of a few hundred KB, written row by row (never held as
    an image here, so the test's own memory stays flat)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (8, 3), dtype=np.uint8)
    packer = zlib.compressobj(6)
    out = [packer.compress(b"")]
    for y in range(side):
        band = colours[(y * 8) // side]
        row = np.empty((side, 3), np.uint8)
        row[:] = band
        row[: side // 3] = colours[(y // 500 + 3) % 8]
        out.append(packer.compress(b"\0" + row.tobytes()))
    idat = b"".join(out) + packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


async def drive(app, method: str, path: str, headers: dict, chunks) -> tuple[int, dict, int]:
    """One request straight into the ASGI app, its body sent chunk by chunk with no
    Content-Length; (status, headers, number of chunks the app asked for)."""
    pulled = 0
    body_iter = iter(chunks)
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        chunk = next(body_iter, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    names = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], names, pulled


# --- 3. bodies without a length ----------------------------------------------------------
def test_a_body_without_length_is_cut_off_at_its_limit(engine) -> None:
    app = create_app(engine, tiny_settings(max_upload_bytes=300_000, max_json_bytes=100_000))
    block = b"1.0, " * 13_000  # 64 KB of a JSON vector
    json_chunks = [b'{"vector": ['] + [block] * 300  # 20 MB, never all read
    status, _, pulled = asyncio.run(
        drive(app, "POST", "/api/search/vector", {"content-type": "application/json"}, json_chunks)
    )
    assert status == 413 and pulled <= 3, (status, pulled)

    boundary = "hibtboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    form = [head] + [b"\0" * 65536] * 160  # 10 MB of upload, none of it spooled past the limit
    kind = {"content-type": f"multipart/form-data; boundary={boundary}"}
    status, _, pulled = asyncio.run(drive(app, "POST", "/api/search/image", kind, form))
    assert status == 413 and pulled <= (300_000 + 65536) // 65536 + 2, (status, pulled)


# --- 4. overload -------------------------------------------------------------------------
def test_overload_is_shed_with_503_and_retry_after(engine, dataset) -> None:
    settings = tiny_settings(
        max_concurrent_queries=1, max_queued_queries=2, queue_wait_s=30, queue_target_s=30
    )
    app = create_app(engine, settings)
    upload = dataset[1][3].path.read_bytes()

    async def burst() -> tuple[list[httpx.Response], float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            files = {"image": ("a.png", upload, "image/png")}
            searches = [client.post("/api/search/image", files=files) for _ in range(10)]
            tasks = [asyncio.ensure_future(s) for s in searches]
            await asyncio.sleep(0.05)
            started = time.perf_counter()
            health = await client.get("/api/health")  # never queued
            waited = time.perf_counter() - started
            assert health.status_code == 200
            return list(await asyncio.gather(*tasks)), waited

    answers, health_wait = asyncio.run(burst())
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(200) >= 3 and statuses.count(503) >= 1, statuses
    assert set(statuses) == {200, 503}
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]
    assert health_wait < 2.0


def test_by_default_queries_run_two_per_cpu_and_wait_a_bounded_time(engine, monkeypatch) -> None:
    """With default settings on a 2-CPU machine, 24 searches of 0.3 s at once: 4 run at a
    time, and only as many wait as can be answered within queue_target_s (1 s: 4 running,
    about 12 waiting); the rest are told 503 at once, instead of all 24 sharing the cores
    (each answer then slower) or queueing for 1.8 s."""
    monkeypatch.setattr(limits, "usable_cpus", lambda: 2)
    running, most = 0, 0
    lock = threading.Lock()
    # Answered once beforehand: each search then holds its place 0.3 s exactly, however
    # busy the machine's cores are with other tests (the gate is timed here, not the model).
    answer = engine.search_text("owl", 10)

    def slow_search(*args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.3)
            return answer
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(engine, "search_text", slow_search)
    app = create_app(engine, tiny_settings())

    async def timed(client: httpx.AsyncClient, n: int) -> tuple[int, float]:
        started = time.perf_counter()
        answer = await client.get("/api/search", params={"q": f"owl {n}"})
        return answer.status_code, time.perf_counter() - started

    async def burst() -> list[tuple[int, float]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for n in range(3):  # the gate learns how long a query holds its place
                assert (await timed(client, n))[0] == 200
            return list(await asyncio.gather(*(timed(client, n) for n in range(24))))

    answers = asyncio.run(burst())
    answered = [seconds for status, seconds in answers if status == 200]
    assert {status for status, _ in answers} == {200, 503}
    assert 4 + 4 <= len(answered) <= 4 + 16, answers  # about 12 wait; never all 20
    assert most == 4
    assert max(answered) < 1.0 + 0.3 + 0.5, answers  # the target, a query, and slack


def test_a_trickling_upload_holds_no_query_slot(engine, dataset) -> None:
    """The queue is entered once the body has arrived: with one slot, a search answers
    while an upload is still dribbling in."""
    app = create_app(engine, tiny_settings(max_concurrent_queries=1, max_queued_queries=0))
    upload = dataset[1][3].path.read_bytes()
    head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'

    async def trickle():
        yield head
        for i in range(0, len(upload), len(upload) // 8 + 1):
            await asyncio.sleep(0.15)
            yield upload[i : i + len(upload) // 8 + 1]
        yield b"\r\n--b--\r\n"

    async def both() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            kind = {"content-type": "multipart/form-data; boundary=b"}
            slow = asyncio.ensure_future(
                client.post("/api/search/image", content=trickle(), headers=kind)
            )
            await asyncio.sleep(0.3)
            search = await client.get("/api/search", params={"q": "owl"})
            return search.status_code, (await slow).status_code

    assert asyncio.run(both()) == (200, 200)


# --- 2. small uploads that decode big ----------------------------------------------------
def decode_burst(index_dir: str) -> dict[str, object]:
    """Eight PNGs of a few KB that decode to 3500x3500, posted at once to a server with a
    100 MB decode budget: (status codes, RSS rise at the peak, RSS kept after), in MB."""
    settings = tiny_settings(max_concurrent_queries=8, decode_memory_bytes=100_000_000)
    engine = Engine.open(Path(index_dir), settings, Embedder(ModelSpec(TINY_MODEL)))
    client = TestClient(create_app(engine, settings))
    pngs = [big_png(3500, seed) for seed in range(8)]
    assert max(len(p) for p in pngs) < 200_000
    with client, ThreadPoolExecutor(8) as pool:

        def burst(images: list[bytes]) -> list[int]:
            files = [{"image": ("a.png", image)} for image in images]
            posts = [pool.submit(client.post, "/api/search/image", files=f) for f in files]
            return [post.result().status_code for post in posts]

        # What a server keeps once it has served eight uploads at once (their threads, the
        # allocator's arenas, the image encoder's session and its buffers) is not the decodes'.
        assert burst([big_png(256, 90 + seed) for seed in range(8)]) == [200] * 8
        before = rss()
        with PeakMemory() as peak:
            codes = burst(pngs)
        after = rss()
    mb = 1 << 20
    return {"codes": codes, "rose": (peak.peak - before) / mb, "kept": (after - before) / mb}


def test_uploads_that_decode_big_keep_memory_bounded(built) -> None:
    """The issue's 7000x7000 case at a quarter of the pixels and time (decode_burst;
    scripts/bench_hardening.py runs it whole: RSS rise <= 500 MB, back within 100 MB). In a
    process of its own: late in a full run this one's heap, fragmented by hundreds of other
    tests, held 108-286 MB of the same burst that a fresh server gives back."""
    script = "import json, sys; from tests.test_hardening import decode_burst; "
    script += "print(json.dumps(decode_burst(sys.argv[1])))"
    got = json.loads(python_lines(script, str(built.index_dir))[-1])
    assert got["codes"] == [200] * 8
    # Without the budget this burst rose 338 MB (2.7 GB at 7000x7000 before decodes were
    # reduced); with it 87-125 MB: the budget plus the threads' own working memory.
    assert got["rose"] <= 250, f"rose {got['rose']:.0f} MB"
    # The bound: back within 100 MB (before memory was given back, about 1 GB stayed).
    assert got["kept"] <= 100, f"kept {got['kept']:.0f} MB"


# --- 1. and 5. domain checks -------------------------------------------------------------
class Drip(BaseHTTPRequestHandler):
    """A site that answers the well-known file one byte at a time, forever (20 s here)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "4096")
        self.end_headers()
        for _ in range(80):
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.25)

    def log_message(self, *args) -> None:
        pass


def loopback(handler) -> tuple[ThreadingHTTPServer, int]:
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


class Challenge(BaseHTTPRequestHandler):
    served: ClassVar[list[str]] = []
    challenge = ""

    def do_GET(self) -> None:
        Challenge.served.append(self.headers.get("Host", ""))
        body = Challenge.challenge.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def claim(client: TestClient, domain: str) -> tuple[dict, dict]:
    """A pending claim on ``domain``: the verify call's body and headers."""
    made = client.post("/api/domains", json={"domain": domain})
    assert made.status_code == 201, made.text
    body = made.json()
    Challenge.challenge = body["challenge"]
    return {"receipt": body["receipt"]}, {"Authorization": f"Bearer {body['token']}"}


@pytest.fixture
def registry_client(built, embedder, tmp_path):
    def make(**settings) -> TestClient:
        config = tiny_settings(
            **{"registry": str(tmp_path / "r.sqlite"), "writes_per_minute": 1000, **settings}
        )
        return TestClient(open_app(built.index_dir, config, embedder))

    return make


def test_slow_domain_checks_keep_a_deadline_and_never_hold_up_queries(registry_client) -> None:
    server, port = loopback(Drip)
    client = registry_client(verify_allow_private=True, verify_deadline_s=2.0)
    domain = f"localhost:{port}"
    claims = [claim(client, domain) for _ in range(44)]

    def verify(c) -> tuple[int, float]:
        started = time.perf_counter()
        answer = client.post(f"/api/domains/{domain}/verify", json=c[0], headers=c[1])
        return answer.status_code, time.perf_counter() - started

    try:
        with client, ThreadPoolExecutor(44) as pool:
            checks = [pool.submit(verify, c) for c in claims]
            time.sleep(0.5)
            for path in ("/api/health", "/api/search?q=owl"):
                started = time.perf_counter()
                assert client.get(path).status_code == 200
                assert time.perf_counter() - started < 1.5, path
            results = [f.result() for f in checks]
    finally:
        server.shutdown()
    assert {code for code, _ in results} <= {422, 503}
    assert any(code == 503 for code, _ in results)  # the checks' own few slots were full
    # A 2 s deadline, never the drip's 20 s: the slack is for a machine busy with other work.
    assert max(seconds for _, seconds in results) < 10.0


def test_a_claim_is_checked_only_so_often(registry_client) -> None:
    client = registry_client(verify_allow_private=True, verify_attempts_per_hour=2)
    domain = f"localhost:{free_port()}"  # nothing listens: each check fails fast
    body, auth = claim(client, domain)
    codes = [
        client.post(f"/api/domains/{domain}/verify", json=body, headers=auth).status_code
        for _ in range(3)
    ]
    assert codes == [422, 422, 429]


def test_dns_rebinding_cannot_reach_loopback(registry_client, monkeypatch) -> None:
    """The name answers a public address to the check and loopback to whoever asks again:
    the fetch must go to the checked address, never to loopback."""
    server, port = loopback(Challenge)
    client = registry_client(verify_deadline_s=1.5)
    domain = f"rebind.example:{port}"
    body, auth = claim(client, domain)
    real, asked = socket.getaddrinfo, []

    def rebinding(host, *args, **kwargs):
        if host != "rebind.example":
            return real(host, *args, **kwargs)
        asked.append(host)
        address = "93.184.215.14" if len(asked) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    Challenge.served.clear()
    try:
        answer = client.post(f"/api/domains/{domain}/verify", json=body, headers=auth)
    finally:
        server.shutdown()
    assert answer.status_code == 422 and Challenge.served == []
    assert asked == ["rebind.example"]  # resolved once


def test_fetches_go_to_the_checked_address_with_the_domains_host(registry_client) -> None:
    server, port = loopback(Challenge)
    client = registry_client(verify_allow_private=True, verify_deadline_s=3.0)
    domain = f"localhost:{port}"
    body, auth = claim(client, domain)
    Challenge.served.clear()
    try:
        answer = client.post(f"/api/domains/{domain}/verify", json=body, headers=auth)
    finally:
        server.shutdown()
    assert answer.status_code == 200 and answer.json()["how"] == "file"
    assert Challenge.served[-1] == domain


@pytest.mark.parametrize("address", ["100.100.100.200", "100.64.0.1", "::ffff:127.0.0.1"])
def test_addresses_that_are_not_public_are_refused(registry_client, monkeypatch, address) -> None:
    client = registry_client(verify_deadline_s=1.0)
    body, auth = claim(client, "metadata.example")
    real = socket.getaddrinfo

    def resolved(host, *args, **kwargs):
        if host != "metadata.example":
            return real(host, *args, **kwargs)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, 80))]

    monkeypatch.setattr(socket, "getaddrinfo", resolved)
    answer = client.post("/api/domains/metadata.example/verify", json=body, headers=auth)
    assert answer.status_code == 422 and "not public" in answer.json()["detail"]


def test_fetch_failures_all_read_the_same(registry_client) -> None:
    """A closed port, a port that hangs up, and one that answers 404 look alike: the
    check cannot be used to scan ports."""

    class HangUp(BaseHTTPRequestHandler):
        def handle(self) -> None:
            self.connection.close()

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args) -> None:
            pass

    servers = [loopback(HangUp), loopback(NotFound)]
    ports = [free_port()] + [port for _, port in servers]
    client = registry_client(verify_allow_private=True, verify_deadline_s=3.0)
    details = []
    try:
        for port in ports:
            body, auth = claim(client, f"localhost:{port}")
            answer = client.post(f"/api/domains/localhost:{port}/verify", json=body, headers=auth)
            assert answer.status_code == 422
            details.append(answer.json()["detail"].replace(str(port), "PORT"))
    finally:
        for server, _ in servers:
            server.shutdown()
    assert len(set(details)) == 1, details


def test_a_port_out_of_range_is_a_clear_422(registry_client) -> None:
    answer = registry_client().post("/api/domains", json={"domain": "example.com:99999"})
    assert answer.status_code == 422 and "port" in answer.json()["detail"]


# --- 13. security headers and an offline /docs -------------------------------------------
def test_every_answer_carries_security_headers(engine) -> None:
    client = TestClient(create_app(engine, tiny_settings()))
    for path in ("/", "/api/health", "/docs", "/api/items/nope", "/optout.html"):
        headers = client.get(path).headers
        policy = headers["content-security-policy"]
        assert "script-src 'self'" in policy and "style-src 'self'" in policy, path
        assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"


def test_docs_load_nothing_from_elsewhere(engine) -> None:
    client = TestClient(create_app(engine, tiny_settings()))
    page = client.get("/docs").text
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/") and not s.startswith("//") for s in sources)
    for source in sources:
        assert client.get(source).status_code == 200, source


def test_pages_have_no_inline_scripts_or_styles() -> None:
    for page in WEB.glob("*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page.name
        assert "<style" not in html and " style=" not in html, page.name
        assert not re.search(r"\son[a-z]+=", html), page.name


# --- 14. the original file ---------------------------------------------------------------
def test_original_is_served_only_while_it_is_the_indexed_file(embedder, tmp_path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for i in range(3):
        save(drawing(500 + i), root / f"d{i}.png")
    out = tmp_path / "index"
    build_index(root, out, embedder, tiny_settings())
    client = TestClient(open_app(out, tiny_settings(registry=str(tmp_path / "r")), embedder))
    items = {
        Path(r["source"]).name: r["id"]
        for r in client.get("/api/search", params={"q": "x", "k": 3}).json()["results"]
    }

    def original(name: str) -> httpx.Response:
        return client.get(f"/api/items/{items[name]}/image")

    served = original("d0.png")
    assert served.status_code == 200 and served.content == (root / "d0.png").read_bytes()
    assert served.headers["content-type"] == "image/png"

    secret = tmp_path / "secret.png"  # outside the dataset, same size as the indexed file
    secret.write_bytes((root / "d1.png").read_bytes()[:-1] + b"!")
    (root / "d1.png").unlink()
    os.symlink(secret, root / "d1.png")
    assert original("d1.png").status_code == 404

    changed = bytearray((root / "d2.png").read_bytes())
    changed[-20] ^= 0xFF  # same size, other bytes
    (root / "d2.png").write_bytes(bytes(changed))
    assert original("d2.png").status_code == 404


# --- 15. EXIF orientation ----------------------------------------------------------------
def turned_jpeg(image: Image.Image, orientation: int, turn) -> bytes:
    """The picture stored turned by ``turn``, with the EXIF tag that turns it back."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.transpose(turn).save(out, format="JPEG", quality=95, exif=exif)
    return out.getvalue()


def test_exif_orientation_is_applied_to_uploads_and_dataset_files(tmp_path) -> None:
    picture = drawing(77, (200, 120))
    upright = io.BytesIO()
    picture.save(upright, format="JPEG", quality=95)
    # Orientation 6: stored turned 90 degrees counter-clockwise, shown turned back.
    stored = turned_jpeg(picture, 6, Image.Transpose.ROTATE_90)
    a = np.asarray(decode(upright.getvalue(), 10**8, 1024).image, dtype=np.float32)
    b = np.asarray(decode(stored, 10**8, 1024).image, dtype=np.float32)
    assert a.shape == b.shape and np.abs(a - b).mean() < 3.0

    (tmp_path / "up.jpg").write_bytes(upright.getvalue())
    (tmp_path / "turned.jpg").write_bytes(stored)
    opts = DecodeOptions(10**8, 10**8, 1024, 64, 32)
    first, second = (decode_one((tmp_path / n, opts)) for n in ("up.jpg", "turned.jpg"))
    cosine = float(first.descriptors[0] @ second.descriptors[0])
    assert cosine > 0.99, cosine


# --- 16. the rate limiter's table --------------------------------------------------------
def test_rate_limit_table_is_bounded() -> None:
    limiter = RateLimiter(3, max_keys=100)
    for i in range(5000):
        assert limiter.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter.hits) == 100
    for _ in range(3):
        assert limiter.allow("198.51.100.7")
    assert not limiter.allow("198.51.100.7")  # the busiest address is still counted
