"""The installed distribution: one `hibt` namespace that shadows no one else's package."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, python_lines

PROBE = """
import importlib.resources as res, server, indexer, hibt.server.app, hibt.indexer.model as m
print(server.WHOSE, indexer.WHOSE)
print(hibt.server.app.__file__)
print(sorted(p.name for p in res.files("hibt.web").iterdir() if p.suffix in (".html", ".js")))
print((m.CONFIG_DIR / "tiny-test.json").is_file())
"""


def test_wheel_installs_under_hibt_and_leaves_other_server_packages_alone(tmp_path) -> None:
    """A user's own `server` and `indexer` packages still import as theirs beside hibt."""
    target, theirs = tmp_path / "site", tmp_path / "theirs"
    for name in ("server", "indexer"):
        (theirs / name).mkdir(parents=True)
        (theirs / name / "__init__.py").write_text(f"WHOSE = 'their {name}'\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": f"{theirs}{os.pathsep}{target}"}
    whose, app_file, pages, config = python_lines(PROBE, env=env, cwd=tmp_path)
    assert whose == "their server their indexer"
    assert Path(app_file).is_relative_to(target / "hibt" / "server")
    assert {"index.html", "optout.html", "app.js"} <= set(ast.literal_eval(pages))
    assert config == "True"
