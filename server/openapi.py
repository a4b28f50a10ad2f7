"""OpenAPI 3 document of the admin API, generated from the route table and the schemas.

Every API view is declared through :func:`server.views.admin_api.api` which appends a
:class:`Route` to :data:`ROUTES`; the document is built from that list, so a route cannot exist
without being documented (a test compares the Flask URL map with the document).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, fields, validate

ROUTES: list[Route] = []


@dataclass(slots=True)
class Param:
    """A path or query parameter."""

    name: str
    where: str  # "path" | "query"
    type: str = "string"  # JSON-schema type
    description: str = ""
    enum: list[str] | None = None
    required: bool = False


@dataclass(slots=True)
class Route:
    """One documented operation."""

    method: str
    path: str  # Flask syntax, e.g. /projects/<int:project_id>
    summary: str
    role: str | None  # None: no authentication
    body: type[Schema] | None = None
    body_kind: str = "json"  # json | multipart
    response: type[Schema] | None = None
    response_list: bool = False
    status: int = 200
    content_type: str = "application/json"
    query: list[Param] = field(default_factory=list)
    tag: str = "admin"


def openapi_path(path: str) -> tuple[str, list[Param]]:
    """``/projects/<int:project_id>`` → ``/projects/{project_id}`` and its path parameters."""
    import re

    params: list[Param] = []

    def repl(m: re.Match[str]) -> str:
        conv, name = (m.group(1) or "string"), m.group(2)
        params.append(Param(name, "path", "integer" if conv == "int" else "string", required=True))
        return "{" + name + "}"

    return re.sub(r"<(?:(\w+):)?(\w+)>", repl, path), params


_FIELD_TYPES: list[tuple[type, dict[str, Any]]] = [
    (fields.Email, {"type": "string", "format": "email"}),
    (fields.DateTime, {"type": "string", "format": "date-time"}),
    (fields.Date, {"type": "string", "format": "date"}),
    (fields.Integer, {"type": "integer"}),
    (fields.Float, {"type": "number"}),
    (fields.Boolean, {"type": "boolean"}),
    (fields.String, {"type": "string"}),
]


def field_schema(f: fields.Field, components: dict[str, Any]) -> dict[str, Any]:
    """JSON schema of one marshmallow field."""
    out: dict[str, Any]
    if isinstance(f, fields.Nested):
        nested = f.nested if isinstance(f.nested, type) else type(f.nested)
        ref = {"$ref": f"#/components/schemas/{schema_ref(nested, components)}"}  # type: ignore[arg-type]
        out = ref if not f.allow_none else {"anyOf": [ref, {"type": "null"}]}
        return out
    if isinstance(f, fields.List):
        out = {"type": "array", "items": field_schema(f.inner, components)}
    elif isinstance(f, fields.Dict):
        out = {"type": "object"}
        if f.value_field is not None:
            out["additionalProperties"] = field_schema(f.value_field, components)
    else:
        out = {}
        for cls, schema in _FIELD_TYPES:
            if isinstance(f, cls):
                out = dict(schema)
                break
    for v in getattr(f, "validators", []) or []:
        if isinstance(v, validate.OneOf):
            out["enum"] = list(v.choices)
        elif isinstance(v, validate.Length):
            if v.min is not None:
                out["minLength"] = v.min
            if v.max is not None:
                out["maxLength"] = v.max
    if f.metadata.get("description"):
        out["description"] = f.metadata["description"]
    if f.allow_none and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def schema_ref(cls: type[Schema], components: dict[str, Any]) -> str:
    """Add ``cls`` to ``components`` (once) and return its name."""
    name = cls.__name__.removesuffix("Schema") or cls.__name__
    if name in components:
        return name
    components[name] = {}  # placeholder against recursion
    inst = cls()
    props: dict[str, Any] = {}
    required: list[str] = []
    for attr, f in inst.fields.items():
        key = f.data_key or attr
        props[key] = field_schema(f, components)
        if f.required:
            required.append(key)
    body: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        body["required"] = required
    meta = getattr(cls, "Meta", None)
    body["additionalProperties"] = getattr(meta, "unknown", None) == "include"
    if cls.__doc__:
        body["description"] = cls.__doc__.strip().splitlines()[0]
    components[name] = body
    return name


def _load_schema(cls: type[Schema], components: dict[str, Any]) -> dict[str, Any]:
    """Request-body schema: only loadable fields (``dump_only`` left out)."""
    inst = cls()
    props: dict[str, Any] = {}
    required: list[str] = []
    for attr, f in inst.fields.items():
        if f.dump_only:
            continue
        key = f.data_key or attr
        props[key] = field_schema(f, components)
        if f.required:
            required.append(key)
    body: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        body["required"] = required
    return body


def build_document(server_url: str = "/api/v1") -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route in :data:`ROUTES`."""
    from server.schemas import ErrorSchema

    components: dict[str, Any] = {}
    error_ref = {"$ref": f"#/components/schemas/{schema_ref(ErrorSchema, components)}"}
    paths: dict[str, Any] = {}
    for r in ROUTES:
        path, path_params = openapi_path(r.path)
        params = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required or p.where == "path",
                "schema": {"type": p.type, **({"enum": p.enum} if p.enum else {})},
                **({"description": p.description} if p.description else {}),
            }
            for p in [*path_params, *r.query]
        ]
        op: dict[str, Any] = {
            "operationId": f"{r.method.lower()}_{path.strip('/').replace('/', '_')}".replace(
                "{", ""
            )
            .replace("}", "")
            .replace("-", "_")
            .replace(".", "_"),
            "summary": r.summary,
            "tags": [r.tag],
            "responses": {},
        }
        if r.role is None:
            op["security"] = []
        elif "<int:project_id>" in r.path:
            op["description"] = (
                f"Needs the **{r.role}** role in this project (admins: every project; "
                "admin > manager > viewer)."
            )
        else:
            op["description"] = f"Needs the **{r.role}** role (admin > manager > viewer)."
        if params:
            op["parameters"] = params
        if r.body is not None:
            if r.body_kind == "multipart":
                op["requestBody"] = {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "xform": {"type": "string", "format": "binary"},
                                    "report": {"type": "string", "format": "binary"},
                                },
                                "required": ["xform"],
                            }
                        },
                        "application/json": {"schema": _load_schema(r.body, components)},
                    },
                }
            else:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": _load_schema(r.body, components)}},
                }
        ok: dict[str, Any] = {"description": "OK"}
        if r.response is not None:
            ref: dict[str, Any] = {
                "$ref": f"#/components/schemas/{schema_ref(r.response, components)}"
            }
            ok["content"] = {
                r.content_type: {
                    "schema": {"type": "array", "items": ref} if r.response_list else ref
                }
            }
        elif r.content_type != "application/json":
            ok["content"] = {r.content_type: {"schema": {"type": "string", "format": "binary"}}}
        if r.status == 204:
            ok = {"description": "Done"}
        op["responses"][str(r.status)] = ok
        errors = {"400": "Invalid request", "404": "Not found"}
        if r.role is not None:
            errors |= {
                "401": "Not signed in",
                "403": "Role too low (in this project), or CSRF token missing",
                "429": "Too many failed sign-ins from this client",
            }
        if r.tag in {"cases", "custody"}:
            errors["503"] = "Case services not installed on this server"
            errors["409"] = "The project key is locked (an admin must unlock it first)"
        if r.body_kind == "multipart":
            errors["413"] = "Upload larger than the server accepts"
        for code, text in errors.items():
            op["responses"][code] = {
                "description": text,
                "content": {"application/json": {"schema": error_ref}},
            }
        paths.setdefault(path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kintsugi admin API",
            "version": "1",
            "description": (
                "Authenticate with HTTP Basic (username/password of a web user, https only) or "
                "with the admin pages' session cookie plus the X-CSRF-Token header (from "
                "GET /me) on POST/PATCH/DELETE. Errors are {error, message, code}."
            ),
        },
        "servers": [{"url": server_url}],
        "components": {
            "schemas": components,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "session": {"type": "apiKey", "in": "cookie", "name": "kintsugi_session"},
            },
        },
        "security": [{"basic": []}, {"session": []}],
        "paths": paths,
    }
