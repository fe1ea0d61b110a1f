"""The API's reference page at /docs, served entirely from this server.

FastAPI's own page loads Swagger UI from a CDN (blank offline, no integrity check) and
starts it with an inline script (which the Content-Security-Policy forbids). Here the
Swagger UI 5 files come from the ``fastapi-offline`` package (its ``static`` folder; its
own page has the inline script, so only the files are used) and the page and its start
script are static files of ``hibt.web`` (docs.html, docs.js).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"


def add_docs(app: FastAPI, web_dir: Path) -> None:
    """/docs (the page; its start script is the static /docs.js) and /docs/assets/*
    (Swagger UI's files)."""
    app.mount("/docs/assets", StaticFiles(directory=ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(web_dir / "docs.html")
