"""The copy benchmark's split: by file identity only, so it cannot be shaped by the engine."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from hibt.indexer.records import Record

ROOT = Path(__file__).resolve().parent.parent


def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_copy_detection", ROOT / "scripts" / "bench_copy_detection.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_identical_bytes_stay_together_and_nothing_else_decides() -> None:
    """Every file is stored twice under two keys: both keys fall on the same side and in the
    same half. Two seeds give two different held-out sets, each cut into a calibration
    half and a report half."""
    b = bench()
    records = []
    for i in range(400):
        data = b"picture %d" % i
        records += [Record("d", f"a/{i}", "", data=data), Record("d", f"b/{i}", "", data=data)]
    held = b.split(records, 0.2, seed=0)
    for i in range(400):
        assert (f"a/{i}" in held) == (f"b/{i}" in held)
        assert held.get(f"a/{i}") == held.get(f"b/{i}")
    pictures = {k.split("/")[1] for k in held}
    assert 40 < len(pictures) < 120 and set(held.values()) == {"calibrate", "report"}
    assert {k.split("/")[1] for k in b.split(records, 0.2, seed=1)} != pictures
