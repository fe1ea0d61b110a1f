"""Opt-outs as the search engine sees them: registering index items, status on results,
hiding, batch checks and the export dataset builders filter with."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from hibt.indexer.records import host_of
from hibt.server import domain_proof, schemas
from hibt.server.index import OpenIndex
from hibt.server.registry import Registry

from hibt.config import Settings
from hibt.errors import RegistryError

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


def domain_status(domains: dict[str, str], host: str) -> str | None:
    """Status of the active domain claim that covers ``host``, if any."""
    return next((s for d, s in domains.items() if domain_proof.covers(d, host)), None)


def export_row(kind: str, **fields: str) -> dict:
    return {"kind": kind, **dict.fromkeys(EXPORT_FIELDS[1:], ""), **fields}


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
        done = self.registry.claim_domain(domain, request.name, request.contact)
        instructions = (
            f"Publish a file at https://{domain}{domain_proof.WELL_KNOWN} (or http://) whose "
            f"text contains the challenge, or a DNS TXT record on {domain_proof.DNS_LABEL}."
            f"{domain.split(':')[0]} with it, then call POST /api/domains/{domain}/verify with "
            "your receipt and token. Until then the claim is pending."
        )
        return schemas.DomainClaim(**done, instructions=instructions)

    def verify_domain(self, domain: str, receipt: str, token: str) -> schemas.DomainVerified:
        domain = domain_proof.normalise_domain(domain)
        claim = self.registry.domain_claim(receipt, token, domain)
        if claim["status"] == "verified":
            return schemas.DomainVerified(domain=domain)
        how = domain_proof.verify(domain, claim["challenge"], self.settings.verify_allow_private)
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

    def statuses(self, rows: list[sqlite3.Row]) -> dict[str, str]:
        """Opt-out status per item id for a page of results (one registry query)."""
        found = self.registry.status_of([r["id"] for r in rows], [r["sha256"] for r in rows])
        domains = self.registry.active_domains()
        out = {}
        for r in rows:
            status = found.get(r["id"]) or found.get(f"sha256:{r['sha256']}")
            by_domain = domain_status(domains, r["host"])
            if by_domain == "verified" or (by_domain and not status):
                status = by_domain
            if status:
                out[r["id"]] = status
        return out

    def hidden_among(self, idxs: list[int]) -> set[int]:
        """Which of these rows to leave out of an answer when the operator hides opt-outs."""
        if not self.settings.hide_opted_out or not idxs:
            return set()
        rows = list(self.index.store().items(idxs).values())
        opted = self.statuses(rows)
        return {r["idx"] for r in rows if opted.get(r["id"]) in ("unverified", "verified")}

    def check(self, request: schemas.CheckRequest) -> schemas.CheckResponse:
        items = self.registry.active_items()
        by_id = {r["item_id"]: r["status"] for r in items}
        by_url = {r["url"]: r["status"] for r in items if r["url"]}
        by_sha = {r["sha256"]: r["status"] for r in items if r["sha256"]}
        domains = self.registry.active_domains()
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
                continue
            status = domain_status(domains, host_of(url))
            if status:
                hits.append(schemas.CheckHit(query=url, by="domain", status=status))
        return schemas.CheckResponse(opted_out=hits)

    def export_rows(self) -> Iterator[dict]:
        for r in self.registry.active_items():
            yield export_row("item", **dict(r), domain=host_of(r["url"]))
        for claim in self.registry.domain_claims():
            yield export_row("domain", **claim)
            for row in self.index.store().by_host(claim["domain"]):
                yield export_row(
                    "domain_item",
                    **claim,
                    dataset=self.index.dataset,
                    item_id=row["id"],
                    source=row["source"],
                    url=row["url"],
                    sha256=row["sha256"],
                    phash=self.index.phash_hex(row["idx"]),
                )

    def export(self, kind: str) -> str:
        rows = list(self.export_rows())
        if kind == "jsonl":
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()


def open_optouts(index: OpenIndex, settings: Settings) -> OptOuts:
    return OptOuts(index, Registry(registry_path(index.directory, settings)), settings)
