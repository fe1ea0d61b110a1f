"""Name matching as the FTS5 index tokenises: the same folding, so the fields a result
names the query in can be told without asking the database again."""

from __future__ import annotations

import re
import unicodedata

TOKEN = re.compile(r"[^\W_]+")


def normalise_tokens(text: str) -> list[str]:
    """The same folding as FTS5's unicode61 tokenizer with remove_diacritics."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return TOKEN.findall(stripped)


def contains_phrase(text: str, phrase: list[str]) -> bool:
    tokens = normalise_tokens(text)
    n = len(phrase)
    return any(tokens[i : i + n] == phrase for i in range(len(tokens) - n + 1))
