"""Every endpoint of the OpenAPI document carries examples a reader can copy."""

from __future__ import annotations

from fastapi.testclient import TestClient

from hibt.server.app import open_app
from tests.conftest import tiny_settings


def test_every_endpoint_has_examples(built, embedder, tmp_path) -> None:
    settings = tiny_settings(registry=str(tmp_path / "r.sqlite"))
    document = TestClient(open_app(built.index_dir, settings, embedder)).get("/openapi.json").json()
    missing = []
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            where = f"{method.upper()} {path}"
            missing += [
                f"{where} parameter {p['name']}"
                for p in op.get("parameters", [])
                if "example" not in p
            ]
            for kind, content in op.get("requestBody", {}).get("content", {}).items():
                if kind != "multipart/form-data" and "example" not in content:
                    missing.append(f"{where} request {kind}")
            ok = op["responses"].get("200") or op["responses"].get("201")
            for kind, content in ok["content"].items():
                binary = content.get("schema", {}).get("format") == "binary"
                if not binary and "example" not in content:
                    missing.append(f"{where} answer {kind}")
    assert not missing, missing
    thumbnail = document["paths"]["/api/items/{item_id}/thumbnail"]["get"]["responses"]["200"]
    assert list(thumbnail["content"]) == ["image/webp", "image/jpeg"]
