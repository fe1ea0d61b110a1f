"""Named points of a build where a test can make it fail as a machine would: killed
outright, or out of disk space. ``HIBT_FAULT_AT=PHASE`` (``Settings.fault_at``) kills the
process with SIGKILL the first time the build reaches PHASE; ``PHASE:enospc`` raises the
error a full disk gives there. Nothing happens when it is unset, as in every real run.

The phases, in the order a build meets them, are what a kill can leave behind; each must
resume or restart cleanly (tests/test_build_faults.py kills the real command at each)."""

from __future__ import annotations

import errno
import os
import signal

from hibt.config import Settings
from hibt.errors import BuildError

PHASES = {
    "chunk_saved": "a chunk's vectors and thumbnails written, its metadata not committed",
    "arrays_written": "the final arrays concatenated from the chunks, not yet recorded",
    "chunks_removed": "the final arrays recorded and the chunk files removed",
    "indexes_written": "FAISS indexes, duplicate groups and the name index written",
    "manifest_written": "the staging directory complete, not yet published",
    "old_set_aside": "the old index moved aside, the new one not yet in its place",
}
HOW = ("kill", "enospc")


def parse(spec: str | None) -> tuple[str, str] | None:
    """(phase, how) from the setting; a phase or way that does not exist is refused, as it
    would make a fault test pass without any fault."""
    if not spec:
        return None
    phase, _, how = spec.partition(":")
    how = how or "kill"
    if phase not in PHASES or how not in HOW:
        raise BuildError(
            f"HIBT_FAULT_AT={spec} names no phase of a build: use one of "
            f"{', '.join(PHASES)}, optionally followed by :enospc"
        )
    return phase, how


def fault_point(settings: Settings, phase: str) -> None:
    """The build has reached ``phase``: fail here if the setting says so."""
    assert phase in PHASES, phase
    wanted = parse(settings.fault_at)
    if wanted is None or wanted[0] != phase:
        return
    if wanted[1] == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"(fault injected at {phase})")
    os.kill(os.getpid(), signal.SIGKILL)
