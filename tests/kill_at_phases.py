"""Runs `hibt index` through its command-line entry point once per named phase, each time
in a forked child that the fault hook (indexer/faults.py) kills there with SIGKILL, then
once more to the end; prints how each child ended, as JSON.

    python -m tests.kill_at_phases PHASE,PHASE,... index SOURCE --out DIR ...

The children are forked from this one process, which has imported the indexer before any
model ran: each run costs its build, not a fresh interpreter importing torch (seconds on a
busy machine), and each is still a whole process killed outright."""

from __future__ import annotations

import json
import os
import sys

import hibt.indexer.build  # noqa: F401  (the heavy imports, once, before forking)
from hibt.cli import app
from hibt.config import get_settings


def run(args: list[str], fault: str | None) -> int:
    """The command's exit status, or minus the signal that ended it."""
    pid = os.fork()
    if pid == 0:
        os.environ.pop("HIBT_FAULT_AT", None)
        if fault:
            os.environ["HIBT_FAULT_AT"] = fault
        get_settings.cache_clear()
        try:
            app(args, prog_name="hibt")
        except SystemExit as exc:
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main() -> None:
    phases, args = sys.argv[1].split(","), sys.argv[2:]
    ended = {phase: run(args, phase) for phase in phases}
    ended["(none)"] = run(args, None)
    print(json.dumps(ended))


if __name__ == "__main__":
    main()
