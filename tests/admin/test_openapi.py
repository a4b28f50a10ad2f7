"""The OpenAPI document matches the routes the app really serves."""

from __future__ import annotations

import re
from typing import Any

from server.openapi import openapi_path


def test_openapi__every_api_route_documented_and_nothing_more(client: Any, app: Any) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = {(m.upper(), path) for path, ops in doc["paths"].items() for m in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path, _ = openapi_path(rule.rule.removeprefix("/api/v1"))
        for m in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((m, path))
    assert documented == served


def test_openapi__refs_resolve_and_bodies_are_objects(client: Any) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    text = str(doc)
    for ref in re.findall(r"#/components/schemas/(\w+)", text):
        assert ref in schemas, ref
    body = doc["paths"]["/projects"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["name"]
    assert "passphrase" in body["schema"]["properties"]
    err = schemas["Error"]
    assert set(err["required"]) == {"error", "message", "code"}
    unlock = doc["paths"]["/projects/{project_id}/key/unlock"]["post"]
    assert "admin" in unlock["description"]
    assert unlock["parameters"][0] == {
        "name": "project_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer"},
    }


def test_openapi__path_params_and_operation_ids__consistent(client: Any) -> None:
    """Structural rules of OpenAPI: declared path parameters, unique operation ids."""
    doc = client.get("/api/v1/openapi.json").get_json()
    for path, ops in doc["paths"].items():
        params = set(re.findall(r"{(\w+)}", path))
        for op in ops.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == params, path
            assert op["responses"], path
            assert op["operationId"]
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
