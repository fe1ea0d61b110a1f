"""Proving control of a web domain, the way search consoles do.

The claimant publishes the challenge either in a file at
``http(s)://DOMAIN/.well-known/hibt-optout.txt`` or in a DNS TXT record on
``_hibt-optout.DOMAIN``. The server fetches with a timeout and a size cap, only over http or
https, never following a redirect to another host, and (unless the operator allows it)
never to a private or loopback address, so the check cannot be turned against the
server's own network.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

import httpx

from hibt.errors import ProofError
from hibt.indexer.records import host_of

WELL_KNOWN = "/.well-known/hibt-optout.txt"
DNS_LABEL = "_hibt-optout"
MAX_BYTES = 4096
TIMEOUT = 5.0
HOST = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
)


def normalise_domain(raw: str) -> str:
    """``https://www.Example.org/x`` -> ``www.example.org``; a port is kept (self-hosting)."""
    text = raw.strip().lower()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    host = (parts.hostname or "").rstrip(".")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ProofError(f"{raw!r} is not a valid domain name") from None
    if not HOST.match(host) and not _is_ip(host):
        raise ProofError(f"{raw!r} is not a valid domain name")
    return f"{host}:{parts.port}" if parts.port else host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def suffixes(host: str) -> list[str]:
    """The names whose claims cover ``host``, most specific first: ``a.b.example.com`` is
    covered by claims on itself, ``b.example.com``, ``example.com`` and ``com``. A port stays
    on each (``art.localhost:8000`` -> ``localhost:8000``); an IP address has no parents."""
    if not host:
        return []
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    if (":" in name or name.replace(".", "").isdigit()) and _is_ip(name):
        return [host]
    labels = name.split(".")
    tail = f":{port}" if port else ""
    return [".".join(labels[i:]) + tail for i in range(len(labels)) if labels[i]]


def covers(domain: str, host: str) -> bool:
    """A domain opt-out covers the domain itself and every subdomain."""
    return domain in suffixes(host)


def check_address(host: str, allow_private: bool) -> None:
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as exc:
        raise ProofError(f"cannot resolve {host}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or address.is_reserved
        ):
            raise ProofError(f"{host} resolves to a private address; refusing to fetch from it")


def fetch_well_known(domain: str, allow_private: bool) -> str:
    """The first MAX_BYTES of the well-known file, over https, then http."""
    host = domain.split(":")[0]
    check_address(host, allow_private)
    errors = []
    for scheme in ("https", "http"):
        url = f"{scheme}://{domain}{WELL_KNOWN}"
        try:
            client = httpx.Client(timeout=TIMEOUT, follow_redirects=False, trust_env=False)
            with client, client.stream("GET", url) as response:
                if response.is_redirect:
                    nxt = response.next_request
                    target = host_of(str(nxt.url)) if nxt else ""
                    raise ProofError(
                        f"{url} redirects to {target or 'elsewhere'}; "
                        "publish the file at this exact address"
                    )
                if response.status_code != 200:
                    errors.append(f"{url}: HTTP {response.status_code}")
                    continue
                body = b""
                for block in response.iter_bytes():
                    body += block
                    if len(body) > MAX_BYTES:
                        break
                return body[:MAX_BYTES].decode("utf-8", errors="replace")
        except httpx.HTTPError as exc:
            errors.append(f"{url}: {type(exc).__name__}")
    raise ProofError("could not fetch the verification file (" + "; ".join(errors) + ")")


def dns_txt(domain: str) -> list[str]:
    try:
        import dns.resolver
    except ImportError:  # pragma: no cover - dnspython is a dependency
        return []
    try:
        answers = dns.resolver.resolve(
            f"{DNS_LABEL}.{domain.split(':')[0]}", "TXT", lifetime=TIMEOUT
        )
    except Exception:
        return []
    return [b"".join(r.strings).decode("utf-8", errors="replace") for r in answers]


def verify(domain: str, challenge: str, allow_private: bool) -> str:
    """How the challenge was found ("file" or "dns"), or ProofError saying what failed."""
    if any(challenge in txt for txt in dns_txt(domain)):
        return "dns"
    if challenge in fetch_well_known(domain, allow_private):
        return "file"
    raise ProofError(f"the file at {WELL_KNOWN} on {domain} does not contain the challenge")
