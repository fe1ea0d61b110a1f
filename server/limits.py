"""What one request may cost the server: bytes of body, a place among running queries, a
slot for a domain check, one thread of arithmetic.

Pure ASGI middleware, so a limit holds whatever the route is and before it reads the
body: a body is counted as it arrives (a chunked body has no Content-Length to trust), and
queries wait in one bounded queue instead of piling up threads until every answer is late.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from hibt.config import Settings
from hibt.errors import HibtError

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FORM_OVERHEAD = 65536  # a multipart body's own bytes around the file: boundaries, fields
BUSY = "the server is busy; retry in a moment"


def one_thread_per_query() -> None:
    """Run each query's arithmetic (FAISS, BLAS, the encoders) on one thread: the cores are
    shared among concurrent queries instead. A team of threads for one query's small
    matrix product gained little and its idle threads spun, taking the core that another
    query, or this query's own metadata reads, needed (docs/scale.md). OpenMP and OpenBLAS
    read these once, when they load, and OpenMP's own setter is per thread: so this must run
    before numpy, FAISS or torch are imported. An operator's own values are kept."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, "1")


class Busy(HibtError):
    """Too much is running to take this request now; ``retry_after`` says when to retry."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BodyTooLarge(Exception):
    """Raised to whoever reads past the limit, so reading stops at once."""


async def answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None):
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


# JSON endpoints that carry an image as base64 (clip-retrieval's ClipClient sends uploads so)
BASE64_IMAGE_PATHS = frozenset({"/knn-service"})


class BodyLimit:
    """Refuse a body past its limit with 413, counting the bytes actually received: an
    image upload (multipart) may be ``upload_bytes`` plus the form's own bytes, any other
    body (JSON) ``json_bytes``. A declared length over the limit is refused before reading;
    an undeclared one is cut off where it crosses it, so nothing is spooled past it."""

    def __init__(self, app: ASGIApp, upload_bytes: int, json_bytes: int) -> None:
        self.app, self.upload_bytes, self.json_bytes = app, upload_bytes, json_bytes

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        if scope.get("path") in BASE64_IMAGE_PATHS:  # an upload, inside JSON as base64
            limit = self.upload_bytes * 4 // 3 + FORM_OVERHEAD
            return limit, f"an image is larger than the limit of {self.upload_bytes} bytes"
        if header(scope, b"content-type").lower().startswith("multipart/"):
            limit, what = self.upload_bytes, "upload"
            return limit + FORM_OVERHEAD, f"{what} is larger than the limit of {limit} bytes"
        limit, what = self.json_bytes, "request body"
        return limit, f"{what} is larger than the limit of {limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, refusal = self.limit_for(scope)
        declared = header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            return await answer(send, 413, refusal, {"connection": "close"})
        received, over, started = 0, False, False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge
            return message

        async def unless_over(message: Message) -> None:
            nonlocal started
            if over:  # whatever the route made of a body cut short, the answer is 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, unless_over)
        except BodyTooLarge:
            pass
        except Exception:
            if not over:
                raise
        if over and not started:
            await answer(send, 413, refusal, {"connection": "close"})


class QueueFull(Exception):
    """Raised to a route reading its body when no place in the queue is left."""


class QueryGate:
    """At most ``running`` queries at once under /api; more wait, each at most ``wait_s``,
    while the queue holds fewer than ``queued`` and its expected wait (the places ahead
    times how long a query has lately held its place, over ``running``) is within
    ``target_s``; the rest are told 503 with Retry-After at once. Throughput stays what the
    machine gives at ``running`` however many clients come (more threads only fight over
    the cores and the GIL), and an answered request waits about ``target_s`` at most.
    Bounding the wait rather than the count queues as many cheap queries as can be answered
    in time (each refusal and retry costs CPU too, on both sides) and few dear ones.

    A request takes its place once its body has arrived (when the route reads the last of
    it) and gives it up as its answer starts, so a client that trickles an upload or reads
    an answer slowly never holds one. Paths ``not_queued`` pass untouched."""

    def __init__(
        self, app: ASGIApp, running: int, queued: int, wait_s: float, target_s: float
    ) -> None:
        self.app, self.limit, self.queued, self.wait_s = app, max(1, running), queued, wait_s
        self.target_s = target_s
        self.running = 0
        self.waiting: deque[anyio.Event] = deque()
        self.hold_s = 0.0  # how long a query holds its place: a moving average

    def expected_wait(self) -> float:
        """What one more request in the queue would wait for a place, as things go."""
        return (len(self.waiting) + 1) * self.hold_s / self.limit

    def held(self, seconds: float) -> None:
        self.hold_s = seconds if not self.hold_s else self.hold_s + 0.2 * (seconds - self.hold_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/api/") or not_queued(path):
            return await self.app(scope, receive, send)
        state = {"asked": False, "held": False, "refused": False, "started": False}
        since = 0.0

        async def take() -> bool:
            nonlocal since
            state["asked"] = True
            state["held"] = await self.enter()
            since = time.monotonic()
            return state["held"]

        def give_back() -> None:
            if state["held"]:
                state["held"] = False
                self.held(time.monotonic() - since)
                self.leave()

        async def body_then_place() -> Message:
            message = await receive()
            last = message["type"] == "http.request" and not message.get("more_body", False)
            if last and not state["asked"] and not await take():
                state["refused"] = True
                raise QueueFull
            return message

        async def answer_frees_place(message: Message) -> None:
            if state["refused"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
                give_back()
            await send(message)

        bodiless = not header(scope, b"content-length").strip("0") and not header(
            scope, b"transfer-encoding"
        )
        if bodiless and not await take():
            return await answer(send, 503, BUSY, {"retry-after": "1"})
        try:
            await self.app(scope, body_then_place, answer_frees_place)
        except Exception:
            if not state["refused"]:
                raise
        finally:
            give_back()
        if state["refused"] and not state["started"]:
            await answer(send, 503, BUSY, {"retry-after": "1"})

    async def enter(self) -> bool:
        if self.running < self.limit and not self.waiting:
            self.running += 1
            return True
        if len(self.waiting) >= self.queued or self.expected_wait() > self.target_s:
            return False
        turn = anyio.Event()
        self.waiting.append(turn)
        try:
            with anyio.move_on_after(self.wait_s):
                await turn.wait()
        except BaseException:  # the client went away while waiting
            self.give_up(turn)
            raise
        if turn.is_set():
            return True  # the slot was handed over by leave()
        self.give_up(turn)
        return False

    def give_up(self, turn: anyio.Event) -> None:
        if turn.is_set():
            self.leave()  # handed a slot just as we stopped waiting: pass it on
        else:
            self.waiting.remove(turn)

    def leave(self) -> None:
        """Hand the slot to the longest waiting request, or free it."""
        if self.waiting:
            self.waiting.popleft().set()
        else:
            self.running -= 1


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, as a container or taskset sets it),
    not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def query_places(settings: Settings) -> tuple[int, int]:
    """(queries run at once, most places to wait): by default two running queries per usable
    CPU. Many more only share the same cores and the GIL, each answer slower; but one per
    CPU measured no less CPU an answer and a few per cent less throughput with 32 clients
    than with 8 (docs/hardening.md): a query also waits on SQLite, the GIL and memory."""
    return settings.max_concurrent_queries or 2 * usable_cpus(), settings.max_queued_queries


def not_queued(path: str) -> bool:
    """Paths that skip the query queue: health answers at once, domain checks have
    their own slots."""
    return path == "/api/health" or (path.startswith("/api/domains/") and path.endswith("/verify"))


class Slots:
    """A few threads of its own for slow outside work (fetching a domain's proof), so it
    never takes the threads queries run on; when all are busy the caller is told 503."""

    def __init__(self, size: int, what: str) -> None:
        self.limiter = anyio.CapacityLimiter(max(1, size))
        self.what = what

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.limiter.available_tokens < 1:
            raise Busy(f"too many {self.what} are running; retry in a few seconds", 5)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)
