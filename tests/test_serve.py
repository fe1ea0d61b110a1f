"""The real `hibt serve` command on a loopback port."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from tests.conftest import python_lines, serving


@pytest.fixture(scope="module")
def served(built):
    with serving(built.index_dir) as base:
        yield base


def test_real_server_answers(served, dataset) -> None:
    assert httpx.get(f"{served}/api/health").json()["items"] == len(dataset[1])
    body = httpx.get(f"{served}/api/search", params={"q": "Mira Tanaka", "k": 3}).json()
    assert body["results"][0]["artist"] == "Mira Tanaka"
    item = dataset[1][0]
    files = {"image": (item.path.name, item.path.read_bytes())}
    body = httpx.post(f"{served}/api/search/image", files=files).json()
    assert body["results"][0]["match"] == "exact_copy"


def test_serve_refuses_a_missing_index(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hibt", "serve", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "not an index directory" in done.stderr


SHOW_THREADS = """
import sys, uvicorn
from hibt import cli
# Stand in for the HTTP loop: print how many threads each query's arithmetic would get.
def report(*args, **kwargs):
    import faiss, torch
    print(faiss.omp_get_max_threads(), torch.get_num_threads())
uvicorn.run = report
cli.app(["serve", sys.argv[1]], standalone_mode=False)
"""


@pytest.mark.parametrize(("preset", "expected"), [(None, "1 1"), ("2", "2 2")])
def test_serve_runs_each_query_on_one_thread(built, preset, expected) -> None:
    """`hibt serve` limits OpenMP and BLAS to one thread before they load (a team per query
    spun on the shared cores); an operator's own OMP_NUM_THREADS is kept."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }
    if preset:
        env["OMP_NUM_THREADS"] = preset
    assert python_lines(SHOW_THREADS, str(built.index_dir), env=env)[-1] == expected
