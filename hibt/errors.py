"""The one error type: every refusal carries the HTTP status that fits and a message a
person can act on. The server answers ``{"detail": message}`` with ``status``; the command
line prints the message and exits with ``exit_code``."""

from __future__ import annotations

from typing import ClassVar, Literal


class HibtError(Exception):
    status: ClassVar[int] = 400
    exit_code: ClassVar[int] = 2

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class QueryError(HibtError):
    """A query the engine refuses (empty, absurd, unknown id)."""

    status = 422


class RegistryError(HibtError):
    """A registry request refused: unknown receipt, wrong token, a claim already made."""

    status = 422


class ProofError(HibtError):
    """A domain's proof of control is malformed or cannot be found."""

    status = 422


BadImageKind = Literal["not_image", "too_large", "corrupt"]
BAD_IMAGE_STATUS: dict[str, int] = {"not_image": 415, "too_large": 413, "corrupt": 400}


class BadImage(HibtError):
    """A file that cannot be used as an image; ``kind`` says which way it fails."""

    def __init__(self, kind: BadImageKind, reason: str) -> None:
        super().__init__(reason, BAD_IMAGE_STATUS[kind])
        self.kind = kind
        self.reason = reason


class IndexUnreadable(HibtError):
    """An index directory that cannot be opened; the message says why and what to do."""

    status = 503


class IndexDamaged(IndexUnreadable):
    """An index whose files disagree with its manifest: truncated, changed or swapped."""


class BuildError(HibtError):
    """A build that cannot start or finish."""


class DatasetError(BuildError):
    """A source that is not a dataset hibt can read."""


class ModelUnavailable(HibtError):
    """The requested weights cannot be loaded; the message says how to get them."""

    status = 503
    exit_code = 3  # scripts/demo.sh tests for it
