"""One dataset item as every reader yields it and the index stores it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


def stable_id(dataset: str, key: str) -> str:
    """A short id that is the same for the same item in every rebuild of the index."""
    return hashlib.sha1(f"{dataset}\0{key}".encode()).hexdigest()[:16]


def host_of(url: str) -> str:
    """The host (and port, if any) of an http(s) URL, lower-cased; empty otherwise."""
    try:
        parts = urlsplit(url.strip().lower())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return ""
        return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    except ValueError:
        return ""


def site_of(url: str) -> str:
    """The URL as a site key: host reversed by label, without ``www.``, then the path, so
    that one index range holds a domain with its subdomains (``com.example`` to
    ``com.example0``) or a folder of a site (``com.artstation/janedoe``)."""
    host = host_of(url)
    if not host:
        return ""
    name = host.split(":")[0].removeprefix("www.")
    path = urlsplit(url.strip()).path or "/"
    return ".".join(reversed(name.split("."))) + path


def site_range(site: str) -> tuple[str, str]:
    """[low, high) of the site keys under ``site``: ``example.com`` covers the domain and its
    subdomains, ``example.com/jane`` what is in the folder /jane/ of example.com (or
    www.example.com). ``.`` < ``/`` < ``0``, so each is one range of one index."""
    text = site.strip().lower().removeprefix("https://").removeprefix("http://")
    host, _, path = text.partition("/")
    key = ".".join(reversed(host.split(":")[0].removeprefix("www.").split(".")))
    path = path.strip("/")
    if path:
        return f"{key}/{path}/", f"{key}/{path}0"
    return key + ".", key + "0"


@dataclass
class Record:
    dataset: str
    key: str  # unique within the dataset: relative path or shard key
    source: str  # where the image came from: a path inside the dataset or a URL
    caption: str = ""
    title: str = ""
    artist: str = ""
    license: str = ""
    url: str = ""
    keywords: str = ""
    path: Path | None = None  # image on disk ...
    data: bytes | None = field(default=None, repr=False)  # ... or its bytes (tar shards)
    shard: str = ""  # the file it was read from when a dataset is split into shards (tars)

    @property
    def host(self) -> str:
        return host_of(self.url) or host_of(self.source)

    @property
    def site(self) -> str:
        return site_of(self.url or self.source)

    @property
    def id(self) -> str:
        return stable_id(self.dataset, self.key)

    def image_ref(self) -> Path | bytes:
        if self.data is not None:
            return self.data
        if self.path is None:
            raise ValueError(f"record {self.key} has neither a path nor bytes")
        return self.path
