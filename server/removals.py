"""Items removed from a published dataset after the fact: Re-LAION's removal lists and the
like name items by id, URL or hash. They are hidden at query time, without a rebuild."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from hibt.errors import IndexUnreadable
from hibt.server.engine import Visibility
from hibt.server.index import OpenIndex


def read_keys(path: Path) -> frozenset[str]:
    """One key per line (an item id, a URL, a sha256 or an md5); blank lines and # comments
    are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexUnreadable(f"cannot read the removal list {path}: {exc}") from None
    return frozenset(k for line in lines if (k := line.strip()) and not k.startswith("#"))


class Removals:
    """A :class:`~hibt.server.engine.Visibility` that hides listed items, then defers to the
    opt-out registry for the rest."""

    def __init__(self, keys: frozenset[str], index: OpenIndex, inner: Visibility) -> None:
        self.keys, self.index, self.inner = keys, index, inner

    def removed(self, row: sqlite3.Row) -> bool:
        extra = json.loads(row["extra"]) if row["extra"] else {}
        names = (row["id"], row["url"], row["sha256"], extra.get("md5"), extra.get("hash"))
        return any(name and str(name) in self.keys for name in names)

    def hidden_among(self, idxs: list[int]) -> set[int]:
        rows = self.index.items(idxs).values()
        return {r["idx"] for r in rows if self.removed(r)} | self.inner.hidden_among(idxs)

    def statuses(self, rows: list[sqlite3.Row]) -> dict[str, str]:
        return self.inner.statuses(rows)
