"""Proving control of a web domain, the way search consoles do.

The claimant publishes the challenge either in a file at
``http(s)://DOMAIN/.well-known/hibt-optout.txt`` or in a DNS TXT record on
``_hibt-optout.DOMAIN``. The server fetches with a timeout and a size cap, only over http or
https, never following a redirect, and (unless the operator allows it) only from a
public address, resolved once and connected to exactly (with the domain's Host header and
TLS name), so the check cannot be turned against the server's own network. DNS and the
fetch share one deadline, and every fetch failure reads the same.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
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
    try:
        parts = urlsplit(text)
        port = parts.port  # ValueError when out of range: "example.com:99999"
    except ValueError:
        raise ProofError(f"{raw!r} is not a valid domain (a port is 1 to 65535)") from None
    host = (parts.hostname or "").rstrip(".")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ProofError(f"{raw!r} is not a valid domain name") from None
    if not HOST.match(host) and not _is_ip(host):
        raise ProofError(f"{raw!r} is not a valid domain name")
    return f"{host}:{port}" if port else host


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


# Never fetched from, whatever ``is_global`` says of them in this Python: shared address
# space (carrier-grade NAT, and cloud metadata services such as 100.100.100.200), link-local
# (169.254.169.254), benchmarking, "this network", multicast, reserved, and the IPv6 forms
# that embed an IPv4 address (checked again as that address).
DENIED = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "192.0.0.0/24",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "2002::/16",
        "fd00:ec2::/32",
    )
]
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hibt-resolve")


def split_port(domain: str) -> tuple[str, int | None]:
    host, _, port = domain.rpartition(":") if domain.count(":") == 1 else (domain, "", "")
    return host, int(port) if port else None


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return is_public(address.ipv4_mapped)
    return address.is_global and not any(address in net for net in DENIED)


def resolve(host: str, allow_private: bool, deadline: float) -> str:
    """The one address the proof is fetched from: resolved once here (an HTTP client that
    resolved again could be answered differently: DNS rebinding), and refused unless every
    address the name has is public."""
    if _is_ip(host):
        addresses = [host]
    else:
        future = _resolver.submit(socket.getaddrinfo, host, None, type=socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except (OSError, FutureTimeout):
            raise ProofError(f"cannot resolve {host}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise ProofError(f"cannot resolve {host}")
    if not allow_private and not all(is_public(ipaddress.ip_address(a)) for a in addresses):
        raise ProofError(f"{host} resolves to an address that is not public; refusing to fetch")
    return addresses[0]


def fetch_well_known(domain: str, allow_private: bool, deadline: float) -> str:
    """The first MAX_BYTES of the well-known file, over https, then http, from the one
    checked address, by ``deadline`` (time.monotonic) however slowly the server answers.
    Every failure reads the same, so the check cannot tell a closed port from an open one."""
    host, port = split_port(domain)
    address = resolve(host, allow_private, deadline)
    netloc = f"[{address}]" if ":" in address else address
    for scheme in ("https", "http"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        url = f"{scheme}://{netloc}{f':{port}' if port else ''}{WELL_KNOWN}"
        try:
            body = fetch_one(url, domain, host, deadline)
        except httpx.HTTPError:
            continue
        if body is not None:
            return body
    raise ProofError(
        f"could not fetch the verification file from {domain}{WELL_KNOWN} over https or http"
    )


def fetch_one(url: str, domain: str, host: str, deadline: float) -> str | None:
    """The file's text from ``url`` (an address), asked for as ``domain`` (Host header and
    TLS name), or None when the answer is not a 200."""
    remaining = deadline - time.monotonic()
    client = httpx.Client(
        timeout=httpx.Timeout(min(TIMEOUT, remaining)), follow_redirects=False, trust_env=False
    )
    request = client.build_request(
        "GET", url, headers={"Host": domain}, extensions={"sni_hostname": host}
    )
    with client:
        response = client.send(request, stream=True)
        try:
            return read_proof(response, domain, deadline)
        finally:
            response.close()


def read_proof(response: httpx.Response, domain: str, deadline: float) -> str | None:
    """The first MAX_BYTES of a 200's body, read by the deadline; None for another status."""
    if response.is_redirect:
        nxt = response.headers.get("location", "")
        target = host_of(nxt) if "://" in nxt else ""
        raise ProofError(
            f"{WELL_KNOWN} on {domain} redirects to {target or 'elsewhere'}; "
            "publish the file at this exact address"
        )
    if response.status_code != 200:
        return None
    body = b""
    for block in response.iter_bytes():
        body += block
        if len(body) > MAX_BYTES:
            break
        if time.monotonic() > deadline:  # a server dripping bytes gets no more time
            raise httpx.ReadTimeout("deadline", request=response.request)
    return body[:MAX_BYTES].decode("utf-8", errors="replace")


def dns_txt(domain: str, deadline: float) -> list[str]:
    try:
        import dns.resolver
    except ImportError:  # pragma: no cover - dnspython is a dependency
        return []
    try:
        answers = dns.resolver.resolve(
            f"{DNS_LABEL}.{split_port(domain)[0]}",
            "TXT",
            lifetime=max(0.1, min(TIMEOUT, (deadline - time.monotonic()) / 2)),
        )
    except Exception:
        return []
    return [b"".join(r.strings).decode("utf-8", errors="replace") for r in answers]


def verify(domain: str, challenge: str, allow_private: bool, seconds: float = 10.0) -> str:
    """How the challenge was found ("file" or "dns"), or ProofError saying what failed;
    DNS and the file together take at most ``seconds``."""
    deadline = time.monotonic() + seconds
    if any(challenge in txt for txt in dns_txt(domain, deadline)):
        return "dns"
    if challenge in fetch_well_known(domain, allow_private, deadline):
        return "file"
    raise ProofError(f"the file at {WELL_KNOWN} on {domain} does not contain the challenge")
