"""The indexes one server answers over, by name: `hibt serve INDEX_A INDEX_B ...`.

Each index keeps its own engine and model; indexes built with the same model share one
loaded model, so a text searched over all of them is embedded once per distinct model
(:meth:`Catalogue.text_vectors`). Names come from each index's manifest (its dataset's name)
unless the operator gives them (``NAME=PATH``); the first index is the default wherever a
request names none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from hibt.errors import QueryError
from hibt.indexer.model import Embedder
from hibt.server.engine import Engine
from hibt.server.optouts import OptOuts

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Served:
    """One index as the server answers over it."""

    name: str
    engine: Engine
    optouts: OptOuts | None = None


def model_key(embedder: Embedder) -> tuple:
    """Two indexes whose models have the same identity embed a text the same way."""
    return tuple(sorted(embedder.identity().items()))


def parse_target(arg: str) -> tuple[str | None, Path]:
    """``NAME=PATH`` or ``PATH`` (named by its manifest), as `hibt serve` takes them."""
    name, sep, path = arg.partition("=")
    if sep and NAME.match(name) and not Path(arg).exists():
        return name, Path(path)
    return None, Path(arg)


def unique_name(wanted: str, taken: set[str]) -> str:
    """A manifest's dataset name made URL-safe, with -2, -3... when two indexes share it."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", wanted).strip("-.")[:60] or "index"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


class Catalogue:
    def __init__(self, served: list[Served]) -> None:
        if not served:
            raise QueryError("no index to serve")
        self.by_name = {s.name: s for s in served}
        if len(self.by_name) != len(served):
            raise QueryError("two indexes have the same name; name them NAME=PATH")
        for s in served[1:]:
            s.engine.link_query = f"?index={quote(s.name)}"

    @property
    def default(self) -> Served:
        return next(iter(self.by_name.values()))

    @property
    def names(self) -> list[str]:
        return list(self.by_name)

    def __iter__(self):
        return iter(self.by_name.values())

    def __len__(self) -> int:
        return len(self.by_name)

    def get(self, name: str | None) -> Served:
        """The index of that name; the default one when no name is given."""
        if not name:
            return self.default
        served = self.by_name.get(name)
        if served is None:
            raise QueryError(
                f"no index named {name!r} on this server; it has: {', '.join(self.names)}", 404
            )
        return served

    def engine(self, name: str | None) -> Engine:
        return self.get(name).engine

    def text_vectors(self, text: str, among: list[Served]) -> dict[str, np.ndarray]:
        """The text's embedding for each of these indexes, each distinct model run once."""
        by_model: dict[tuple, np.ndarray] = {}
        out = {}
        for served in among:
            key = model_key(served.engine.embedder)
            if key not in by_model:
                by_model[key] = served.engine.embedder.encode_texts([text])[0]
            out[served.name] = by_model[key]
        return out
