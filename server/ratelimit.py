"""Per-client write limits for the registry's endpoints.

A sliding window per key (a client address, or a claim's receipt for domain checks), in
memory, for at most ``max_keys`` keys: the least recently seen key is forgotten first, so
a flood of addresses costs a bounded table, never memory for ever. Written by hand: it is
a few lines, the server is one process, and a library (slowapi, limits) would add two
dependencies for the same counter.

The key of a client is the address uvicorn reports: the peer's, or the one a trusted
proxy (``HIBT_TRUSTED_PROXIES``, uvicorn's ``forwarded_allow_ips``) put in
``X-Forwarded-For``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque


class RateLimiter:
    def __init__(self, per_window: int, window: float = 60.0, max_keys: int = 10_000) -> None:
        self.per_window, self.window, self.max_keys = per_window, window, max_keys
        self.hits: OrderedDict[str, deque[float]] = OrderedDict()
        self.lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self.lock:
            hits = self.hits.pop(key, None) or deque()
            while hits and now - hits[0] > self.window:
                hits.popleft()
            self.hits[key] = hits  # now the most recently seen
            while len(self.hits) > self.max_keys:
                self.hits.popitem(last=False)
            if len(hits) >= self.per_window:
                return False
            hits.append(now)
            return True
