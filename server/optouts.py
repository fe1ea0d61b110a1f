"""Opt-outs as the search engine sees them: registering index items, status on results,
hiding, batch checks and the export dataset builders filter with."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from indexer.config import Settings
from indexer.records import host_of
from server import domain_proof, schemas
from server.registry import Registry, RegistryError

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
    def __init__(self, engine, registry: Registry, settings: Settings) -> None:
        self.engine, self.registry, self.settings = engine, registry, settings

    # --- writes --------------------------------------------------------------------------
    def register(self, request: schemas.OptOutRequest) -> schemas.OptOutReceipt:
        ids = list(dict.fromkeys(request.item_ids))
        if len(ids) > self.settings.max_optout_items:
            raise RegistryError(422, f"at most {self.settings.max_optout_items} items per request")
        rows = self.rows_by_id(ids)
        missing = [i for i in ids if i not in rows]
        if missing:
            raise RegistryError(404, f"no items with ids {', '.join(missing[:10])}")
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

    def verify_domain(self, domain: str, receipt: str, token: str) -> dict:
        domain = domain_proof.normalise_domain(domain)
        claim = self.registry.domain_claim(receipt, token, domain)
        if claim["status"] == "verified":
            return {"domain": domain, "status": "verified"}
        how = domain_proof.verify(domain, claim["challenge"], self.settings.verify_allow_private)
        self.registry.mark_verified(receipt, domain, how)
        return {"domain": domain, "status": "verified", "how": how}

    # --- reads ---------------------------------------------------------------------------
    def rows_by_id(self, ids: list[str]) -> dict[str, sqlite3.Row]:
        rows = (
            self.engine.db()
            .execute(
                "SELECT idx, id, source, url, host, sha256 FROM items "
                "WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
            .fetchall()
        )
        return {r["id"]: r for r in rows}

    def describe(self, row: sqlite3.Row) -> dict:
        return {
            "id": row["id"],
            "dataset": self.engine.manifest.dataset,
            "source": row["source"],
            "url": row["url"],
            "sha256": row["sha256"],
            "phash": self.engine.copies_hash_hex(row["idx"]),
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

    def hidden(self) -> set[int]:
        """Index rows to leave out of answers when the operator hides opt-outs."""
        if not self.settings.hide_opted_out:
            return set()
        items = self.registry.active_items()
        db = self.engine.db()
        rows = db.execute(
            "SELECT idx FROM items WHERE id IN (SELECT value FROM json_each(?)) "
            "OR sha256 IN (SELECT value FROM json_each(?))",
            (json.dumps([r["item_id"] for r in items]), json.dumps([r["sha256"] for r in items])),
        ).fetchall()
        hidden = {r[0] for r in rows}
        for domain, status in self.registry.active_domains().items():
            if status == "verified":
                hidden |= {r[0] for r in self.domain_rows(domain)}
        return hidden

    def domain_rows(self, domain: str) -> list[sqlite3.Row]:
        return (
            self.engine.db()
            .execute(
                "SELECT idx, id, source, url, sha256 FROM items WHERE host = ? OR host LIKE ?",
                (domain, f"%.{domain}"),
            )
            .fetchall()
        )

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
        claims = self.registry.conn().execute(
            "SELECT domain, status, created_at FROM domains WHERE withdrawn_at IS NULL ORDER BY seq"
        )
        for claim in claims.fetchall():
            yield export_row("domain", **dict(claim))
            for row in self.domain_rows(claim["domain"]):
                yield export_row(
                    "domain_item",
                    **dict(claim),
                    dataset=self.engine.manifest.dataset,
                    item_id=row["id"],
                    source=row["source"],
                    url=row["url"],
                    sha256=row["sha256"],
                    phash=self.engine.copies_hash_hex(row["idx"]),
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


def open_optouts(engine, index_dir: Path, settings: Settings) -> OptOuts:
    return OptOuts(engine, Registry(registry_path(index_dir, settings)), settings)
