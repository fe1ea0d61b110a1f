"""Opt-outs as the search engine sees them: registering index items, status on results,
hiding, batch checks and the export dataset builders filter with."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterable, Iterator
from functools import lru_cache
from itertools import islice
from pathlib import Path

from hibt.config import Settings
from hibt.errors import RegistryError
from hibt.indexer.records import host_of, site_range
from hibt.server import domain_proof, schemas
from hibt.server.index import OpenIndex
from hibt.server.ratelimit import RateLimiter
from hibt.server.registry import Registry

EXPORT_FIELDS = (
    "kind",
    "dataset",
    "item_id",
    "source",
    "url",
    "domain",
    "sha256",
    "phash",
    "status",
    "created_at",
)


EXPORT_BATCH = 1000  # rows per block of a streamed export, and index rows per look-up
HOSTS_REMEMBERED = 200_000  # hosts whose covering claim an export keeps while it runs
# An export finds a claim's items in the index by the claim's range of site keys while
# there are fewer than one claim per PER_CLAIM_ROWS index items, else in one pass.
PER_CLAIM_ROWS = 20


def batched(rows: Iterable, size: int) -> Iterator[list]:
    it = iter(rows)
    while block := list(islice(it, size)):
        yield block


_encode = json.JSONEncoder(ensure_ascii=False).encode


def to_json(row: dict) -> str:
    return _encode(row) + "\n"


@lru_cache(maxsize=1 << 16)
def _host_of_origin(origin: str) -> str:
    return host_of(origin)


def url_host(url: str) -> str:
    """host_of(url), parsed once per ``scheme://host`` (an export names a few thousand hosts
    a hundred million times)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return host_of(url)
    return _host_of_origin(scheme + sep + rest.split("/", 1)[0])


def registry_path(index_dir: Path, settings: Settings) -> Path:
    """Beside the index directory, not in it: rebuilding the index never touches it."""
    if settings.registry:
        return Path(settings.registry)
    index_dir = Path(index_dir).resolve()
    return index_dir.parent / f"{index_dir.name}.optouts.sqlite"


class OptOuts:
    """The engine's :class:`~hibt.server.engine.Visibility`, and the registry's endpoints."""

    def __init__(self, index: OpenIndex, registry: Registry, settings: Settings) -> None:
        self.index, self.registry, self.settings = index, registry, settings
        # Checks per claim: each costs a fetch from someone's site (and an address's write
        # limit alone would let many addresses hammer one site through one claim).
        self.checks = RateLimiter(settings.verify_attempts_per_hour, 3600.0, 100_000)

    # --- writes --------------------------------------------------------------------------
    def register(self, request: schemas.OptOutRequest) -> schemas.OptOutReceipt:
        ids = list(dict.fromkeys(request.item_ids))
        if len(ids) > self.settings.max_optout_items:
            raise RegistryError(f"at most {self.settings.max_optout_items} items per request", 422)
        rows = self.index.store().by_ids(ids)
        missing = [i for i in ids if i not in rows]
        if missing:
            raise RegistryError(f"no items with ids {', '.join(missing[:10])}", 404)
        items = [self.describe(rows[i]) for i in ids]
        done = self.registry.register(items, request.name, request.contact, request.note)
        return schemas.OptOutReceipt(
            **done, manage_url=f"/optout.html#receipt={done['receipt']}&token={done['token']}"
        )

    def claim_domain(self, request: schemas.DomainClaimRequest) -> schemas.DomainClaim:
        domain = domain_proof.normalise_domain(request.domain)
        if "." not in domain and ":" not in domain:
            # A claim on "com" would mark every .com item pending until it lapsed.
            raise RegistryError(f"{domain} is not a site's domain; claim one like example.com", 422)
        done = self.registry.claim_domain(domain, request.name, request.contact)
        instructions = (
            f"Publish a file at https://{domain}{domain_proof.WELL_KNOWN} (or http://) whose "
            f"text contains the challenge, or a DNS TXT record on {domain_proof.DNS_LABEL}."
            f"{domain.split(':')[0]} with it, then call POST /api/domains/{domain}/verify with "
            "your receipt and token. Until then the claim is pending (shown on this site's "
            "search, but not to dataset builders unless they ask for pending claims), and "
            f"unless verified by {done['expires_at']} it lapses."
        )
        return schemas.DomainClaim(**done, instructions=instructions)

    def verify_domain(self, domain: str, receipt: str, token: str) -> schemas.DomainVerified:
        domain = domain_proof.normalise_domain(domain)
        claim = self.registry.domain_claim(receipt, token, domain)
        if claim["status"] == "verified":
            return schemas.DomainVerified(domain=domain)
        if not self.checks.allow(receipt):
            raise RegistryError(
                f"this claim was checked {self.settings.verify_attempts_per_hour} times in the "
                "last hour; publish the challenge, then try again later",
                429,
            )
        how = domain_proof.verify(
            domain,
            claim["challenge"],
            self.settings.verify_allow_private,
            self.settings.verify_deadline_s,
        )
        self.registry.mark_verified(receipt, domain, how)
        return schemas.DomainVerified(domain=domain, how=how)

    # --- reads ---------------------------------------------------------------------------
    def describe(self, row: sqlite3.Row) -> dict:
        return {
            "id": row["id"],
            "dataset": self.index.dataset,
            "source": row["source"],
            "url": row["url"],
            "sha256": row["sha256"],
            "phash": self.index.phash_hex(row["idx"]),
        }

    def covering_claims(
        self, hosts: Iterable[str], pending: bool, conn: sqlite3.Connection | None = None
    ) -> dict[str, tuple[str, str, str]]:
        """For each host, (domain, status, created_at) of the claim that covers it: a verified
        claim on it or a parent domain if there is one, else the most specific pending one
        (when asked). Each host's own name and its parents are looked up by name, so the cost
        follows the number of hosts, never the number of claims."""
        names = {host: domain_proof.suffixes(host) for host in set(hosts) if host}
        wanted = (n for ns in names.values() for n in ns)
        claimed = self.registry.claimed_domains(wanted, pending, conn)
        out = {}
        for host, candidates in names.items():
            found = [(d, *claimed[d]) for d in candidates if d in claimed]
            if found:
                out[host] = next((f for f in found if f[1] == "verified"), found[0])
        return out

    def statuses(self, rows: list[sqlite3.Row]) -> dict[str, str]:
        """Opt-out status per item id for a page of results (two indexed registry queries).
        The artist's page shows pending domain claims too; they hide nothing."""
        if not rows:
            return {}
        found = self.registry.status_of([r["id"] for r in rows], [r["sha256"] for r in rows])
        domains = self.covering_claims((r["host"] for r in rows), pending=True)
        out = {}
        for r in rows:
            status = found.get(r["id"]) or found.get(f"sha256:{r['sha256']}")
            by_domain = domains[r["host"]][1] if r["host"] in domains else None
            if by_domain == "verified" or (by_domain and not status):
                status = by_domain
            if status:
                out[r["id"]] = status
        return out

    def hidden_among(self, idxs: list[int]) -> set[int]:
        """Which of these rows to leave out of an answer when the operator hides opt-outs."""
        if not self.settings.hide_opted_out or not idxs:
            return set()
        rows = list(self.index.items(idxs).values())
        opted = self.statuses(rows)
        return {r["idx"] for r in rows if opted.get(r["id"]) in ("unverified", "verified")}

    def check(self, request: schemas.CheckRequest) -> schemas.CheckResponse:
        """Which of these ids, hashes and URLs are opted out: indexed lookups, so the answer
        takes as long for a registry of a hundred million opt-outs as for a small one. A URL
        only a pending domain claim covers is reported when the request asks for those."""
        by_id = self.registry.opted_out_by("item_id", request.ids)
        by_sha = self.registry.opted_out_by("sha256", [s.lower() for s in request.sha256])
        by_url = self.registry.opted_out_by("url", request.urls)
        hosts = {url: url_host(url) for url in request.urls if url not in by_url}
        domains = self.covering_claims(hosts.values(), request.include_pending)
        hits = [
            schemas.CheckHit(query=i, by="id", status=by_id[i]) for i in request.ids if i in by_id
        ]
        hits += [
            schemas.CheckHit(query=s, by="sha256", status=by_sha[s.lower()])
            for s in request.sha256
            if s.lower() in by_sha
        ]
        for url in request.urls:
            if url in by_url:
                hits.append(schemas.CheckHit(query=url, by="url", status=by_url[url]))
            elif hosts[url] in domains:
                status = domains[hosts[url]][1]
                hits.append(schemas.CheckHit(query=url, by="domain", status=status))
        return schemas.CheckResponse(opted_out=hits)

    def export_rows(self, pending: bool = False) -> Iterator[tuple[str, ...]]:
        """The export, row by row (values in EXPORT_FIELDS order) from one snapshot of the
        registry: item opt-outs oldest first, then each claimed domain, then the items of
        this index its claims cover. Pending domain claims only when asked."""
        with self.registry.snapshot() as conn:
            for row in self.registry.export_items(conn):
                item_id, dataset, source, url, *hashes, status, created = row
                domain = url_host(url)
                yield ("item", dataset, item_id, source, url, domain, *hashes, status, created)
            claims = 0
            for domain, status, created in self.registry.export_domains(conn, pending):
                yield ("domain", "", "", "", "", domain, "", "", status, created)
                claims += 1
            if claims:
                yield from self.domain_items(claims, pending, conn)

    def domain_items(
        self, claims: int, pending: bool, conn: sqlite3.Connection
    ) -> Iterator[tuple[str, ...]]:
        """The index's items that the claims cover, each once under the claim that decides
        it (as covering_claims says). Few claims over a large index: each claim's range of
        the index's site key (records.site_range; a port or a www. prefix widens it, and
        the hosts are then sifted). Many: one pass over the whole index. Either way each
        batch's hosts are looked up by name, so the cost never grows as claims times items."""
        dataset = self.index.dataset
        known: dict[str, tuple[str, str, str] | None] = {}  # host -> its claim, this export
        for claimed, rows in self.claimed_rows(claims, pending, conn):
            new = {r["host"] for r in rows} - known.keys()
            if len(known) + len(new) > HOSTS_REMEMBERED:
                known.clear()
            found = self.covering_claims(new, pending, conn)
            known.update((host, found.get(host)) for host in new)
            for row in rows:
                claim = known[row["host"]]
                if claim and claimed in (None, claim[0]):
                    domain, status, created = claim
                    phash = self.index.phash_hex(row["idx"])
                    yield (
                        "domain_item",
                        *(dataset, row["id"], row["source"], row["url"], domain),
                        *(row["sha256"], phash, status, created),
                    )

    def claimed_rows(
        self, claims: int, pending: bool, conn: sqlite3.Connection
    ) -> Iterator[tuple[str | None, list]]:
        """(the claimed domain, or None for any, and a batch of index rows) to sift for
        domain items. Each batch is read from the store of whichever thread runs that step
        of a streamed answer; nothing is held between steps."""
        n = self.index.n
        if claims * PER_CLAIM_ROWS >= n:
            for start in range(0, n, EXPORT_BATCH):
                rows = self.index.store().items(range(start, min(start + EXPORT_BATCH, n)))
                yield None, [rows[idx] for idx in sorted(rows)]
            return
        for domain, *_ in self.registry.export_domains(conn, pending):
            low, high = site_range(domain)
            key, skip = low, 0  # rows at site key `key` already given, which come first
            while True:
                page = self.index.store().in_site(key, high, EXPORT_BATCH + skip)
                rows = page[skip:]
                if rows:
                    yield domain, rows
                if len(page) < EXPORT_BATCH + skip:
                    break
                last = rows[-1]["site"]
                same = next(
                    (i for i, r in enumerate(reversed(rows)) if r["site"] != last), len(rows)
                )
                skip = same + (skip if last == key else 0)
                key = last

    def export(self, kind: str, pending: bool = False) -> Iterator[str]:
        """The export as text in blocks of EXPORT_BATCH rows, for a streamed response."""
        rows = self.export_rows(pending)
        if kind == "jsonl":
            for block in batched(rows, EXPORT_BATCH):
                yield "".join(to_json(dict(zip(EXPORT_FIELDS, r, strict=True))) for r in block)
            return
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(EXPORT_FIELDS)
        for block in batched(rows, EXPORT_BATCH):
            writer.writerows(block)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        if buffer.tell():
            yield buffer.getvalue()
