"""Name matching as the FTS5 index tokenises: the same folding, so the fields a result
names the query in can be told without asking the database again."""

from __future__ import annotations

import re
import unicodedata

TOKEN = re.compile(r"[^\W_]+")


def normalise_tokens(text: str) -> list[str]:
    """The same folding as FTS5's unicode61 tokenizer with remove_diacritics."""
    folded = text.casefold()
    if folded.isascii():  # nothing to decompose: most captions, and 60 results x 6 fields
        return TOKEN.findall(folded)
    decomposed = unicodedata.normalize("NFKD", folded)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return TOKEN.findall(stripped)


def contains_phrase(text: str, phrase: list[str]) -> bool:
    tokens = normalise_tokens(text)
    n = len(phrase)
    return any(tokens[i : i + n] == phrase for i in range(len(tokens) - n + 1))
