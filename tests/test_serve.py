"""The real `hibt serve` command on a loopback port."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.conftest import serving


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
