"""The scale benchmark at CI size: the published layout written, built with the real
`hibt index` into a compressed index, served by the real `hibt serve`, measured over HTTP.
The figures themselves are for the full sizes (docs/scale.md); here the script must run end
to end and its recall must be that of an exact re-rank over every list."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = (
    "held-out k=60",
    "near-duplicate k=60",
    "vector k=1000",
    "text k=60",
    "name match",
    "site",
    "image upload",
)


def test_bench_scale_runs_end_to_end_at_ci_size(tmp_path) -> None:
    command = [
        sys.executable,
        str(ROOT / "scripts" / "bench_scale.py"),
        *("--n", "3000", "--queries", "10", "--model", "tiny-test"),
        *("--faiss-factory", "IVF16,PQ8x8np", "--work", str(tmp_path)),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "index: IVF16,PQ8x8np" in run.stdout
    for kind in KINDS:
        assert re.search(rf"^{re.escape(kind)}\s+[\d.]+\s+[\d.]+\s+[\d.]+$", run.stdout, re.M), kind
    recall = dict(re.findall(r"recall@10 (\S+) queries vs brute force: ([\d.]+)", run.stdout))
    assert set(recall) == {"held-out", "near-duplicate"}
    assert all(float(v) >= 0.95 for v in recall.values()), recall
