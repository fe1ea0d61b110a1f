"""The real `hibt serve` command on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(built):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", str(built.index_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "server died")
    yield base
    proc.terminate()
    proc.wait(timeout=10)


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
        [sys.executable, "-m", "server.cli", "serve", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "not an index directory" in done.stderr
