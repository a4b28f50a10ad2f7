"""The admin JSON API under ``/api/v1`` (documented at ``/api/v1/openapi.json``).

Thin views: authenticate (:mod:`server.web_auth`), check the role (in the URL's project for
``/projects/<id>/...``: :mod:`server.services.access`), validate with :mod:`server.schemas`,
call a service, dump with a schema. Every lookup of a project's resource filters by the project
id in the URL, so another project's ids answer 404 like missing ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import Schema, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server import openapi
from server.db import begin_snapshot
from server.errors import NotFoundError, ServerError
from server.models import (
    AppUser,
    Form,
    FormState,
    Project,
    Role,
    Submission,
    SubmissionStatus,
    WebUser,
)
from server.openapi import Param, Route
from server.schemas import (
    AppUserCreatedSchema,
    AppUserCreateSchema,
    AppUserSchema,
    CasePageSchema,
    FormPublishContextSchema,
    FormPublishResultSchema,
    FormSchema,
    FormStateSchema,
    FreeFormSchema,
    KeyStatusSchema,
    MembershipSchema,
    MeSchema,
    NotesSchema,
    PassphraseSchema,
    ProjectCreateSchema,
    ProjectRoleSchema,
    ProjectSchema,
    ReviewResolveSchema,
    RotatedKeySchema,
    SubmissionPageSchema,
    WebUserCreatedSchema,
    WebUserCreateSchema,
    WebUserSchema,
)
from server.services import access
from server.services.submission_list import list_submissions
from server.web_auth import api_route, csrf_token, refuse_other_sites

bp = Blueprint("admin_api", __name__, url_prefix="/api/v1")

ADMIN, MANAGER, VIEWER = Role.ADMIN.value, Role.MANAGER.value, Role.VIEWER.value


class ServiceUnavailableError(ServerError):
    """A part of the server (case services) is not installed in this build."""

    code = "UNAVAILABLE"
    http_status = 503


# ---------------------------------------------------------------- plumbing


def api(
    method: str, path: str, summary: str, role: str | None, **doc: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a view on the blueprint *and* in the OpenAPI route table."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        openapi.ROUTES.append(Route(method, path, summary, role, **doc))
        view = api_route(role)(fn) if role is not None else fn
        bp.add_url_rule(path, endpoint=fn.__name__, view_func=view, methods=[method])
        return view

    return deco


def error_response(error: str, message: str, status: int, **extra: Any) -> Response:
    """``{"error", "message", "code"}`` with ``status``."""
    resp = jsonify({"error": error, "message": message, "code": status, **extra})
    resp.status_code = status
    return resp


@bp.errorhandler(ServerError)
def _server_error(err: ServerError) -> Response:
    resp = error_response(err.code, err.message, err.http_status)
    if err.http_status == 401:
        resp.headers["WWW-Authenticate"] = 'Basic realm="kintsugi-admin"'
    return resp


@bp.errorhandler(ValidationError)
def _validation_error(err: ValidationError) -> Response:
    messages = err.messages if isinstance(err.messages, dict) else {"_schema": err.messages}
    names = ", ".join(sorted(str(k) for k in messages))
    return error_response(
        "VALIDATION", f"Some fields are not valid: {names}.", 400, fields=messages
    )


@bp.after_request
def _no_store(resp: Response) -> Response:
    resp.headers.setdefault("Cache-Control", "no-store")
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


_SURROGATES = re.compile(r"[\ud800-\udfff]")


def _text_problem(value: Any) -> str | None:
    """Why a JSON value holds text that no name, code or note can (None: it is fine): a NUL
    (PostgreSQL cannot store it) or an unpaired surrogate escape such as ``\\ud800`` (no
    character: it has no UTF-8 form). Walked with a stack, not recursion: a body nested a few
    hundred levels deep must not exhaust the interpreter's stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "Contains a NUL character."
            if _SURROGATES.search(item):
                return "Contains an unpaired surrogate escape (such as \\ud800), which is no character."
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def body(schema: type[Schema]) -> dict[str, Any]:
    """The JSON body validated by ``schema`` (unknown fields refused)."""
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # the parser recurses per level: a 400, not a 500
        raise ValidationError({"_body": ["The JSON is nested too deeply."]}) from None
    if not isinstance(data, dict):
        raise ValidationError({"_body": ["Send a JSON object (Content-Type: application/json)."]})
    problems = {k: _text_problem(k) or _text_problem(v) for k, v in data.items()}
    if any(problems.values()):  # PostgreSQL and UTF-8 cannot store such text
        raise ValidationError({k: [why] for k, why in sorted(problems.items()) if why})
    return schema().load(data)


def dump(schema: type[Schema], obj: Any, status: int = 200, **kw: Any) -> Response:
    """``obj`` dumped with ``schema`` as JSON."""
    resp = jsonify(schema(**kw).dump(obj))
    resp.status_code = status
    return resp


def int_arg(name: str, default: int, *, lo: int = 0, hi: int = 1000) -> int:
    """An integer query parameter in [lo, hi]."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: ["Must be an integer."]}) from None
    if not lo <= value <= hi:
        raise ValidationError({name: [f"Must be between {lo} and {hi}."]})
    return value


def jsonable(obj: Any) -> Any:
    """Dataclasses, enums, dates... of the case services as plain JSON data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [jsonable(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return None  # never ship raw bytes (could be key material or ciphertext)
    if hasattr(obj, "_asdict"):
        return jsonable(obj._asdict())
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if hasattr(obj, "__dict__"):
        return {k: jsonable(v) for k, v in vars(obj).items() if not k.startswith("_")}
    return str(obj)


def service(name: str) -> Any:
    """Import ``server.services.<name>`` (the case services may not be in this build yet)."""
    import importlib

    try:
        return importlib.import_module(f"server.services.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"server.services.{name}":
            raise
        raise ServiceUnavailableError(
            "Case management is not installed on this server yet."
        ) from None


@contextlib.contextmanager
def commit_audit_on_failure(db: Session) -> Iterator[None]:
    """Keep the audit row of a refused key operation (wrong passphrase) before re-raising."""
    try:
        yield
    except ServerError as err:
        if err.code == "CUSTODY":  # refused before any change: only its audit row is pending
            db.commit()
        raise


def actor(user: WebUser) -> str:
    """The audit actor of a web user."""
    return f"web:{user.username}"


def get_project(db: Session, project_id: int) -> Project:
    """The project or 404."""
    project = db.get(Project, project_id)
    if project is None:
        raise NotFoundError(f"Project {project_id} does not exist.")
    return project


def get_form(db: Session, project_id: int, xml_form_id: str) -> Form:
    """A form of *this* project or 404 (another project's form is not found either)."""
    form = db.scalar(
        select(Form).where(Form.project_id == project_id, Form.xml_form_id == xml_form_id)
    )
    if form is None:
        raise NotFoundError(f"Form {xml_form_id!r} does not exist in this project.")
    return form


def project_out(p: Project) -> dict[str, Any]:
    key = p.active_key
    return {
        "id": p.id,
        "name": p.name,
        "encrypted": p.encrypted,
        "created_at": p.created_at,
        "key_fingerprint": key.fingerprint if key else None,
    }


def form_out(f: Form) -> dict[str, Any]:
    return {
        "id": f.id,
        "xml_form_id": f.xml_form_id,
        "title": f.title,
        "state": f.state,
        "current_version": f.current_version,
        "versions": list(f.versions),
    }


def submission_out(s: Submission) -> dict[str, Any]:
    return {
        "id": s.id,
        "xml_form_id": s.form.xml_form_id,
        "instance_id": s.instance_id,
        "instance_name": s.instance_name,
        "status": s.status,
        "encrypted": s.encrypted,
        "flags": list(s.flags or []),
        "flagged": bool(s.flags),
        "complete": s.complete,
        "received_at": s.received_at,
        "quarantine_reason": s.quarantine_reason,
    }


def quarantined_uploads(db: Session, project_id: int) -> int:
    """Unresolved uploads of the project the server could not read as a submission."""
    from server.models import QuarantinedUpload

    return int(
        db.scalar(
            select(func.count(QuarantinedUpload.id)).where(
                QuarantinedUpload.project_id == project_id,
                QuarantinedUpload.resolved_at.is_(None),
            )
        )
        or 0
    )


def key_status(db: Session, project: Project) -> dict[str, Any]:
    """Encryption, unlock state and backlog of a project."""
    pending = db.scalar(
        select(func.count(Submission.id))
        .join(Form)
        .where(
            Form.project_id == project.id,
            Submission.status == SubmissionStatus.PENDING_DECRYPTION.value,
        )
    )
    unlocked = False
    locked_at = None
    try:
        custody = service("custody")
        state = custody.honour_admin_lock(db, project.id, actor="web")
        if state.forgot:
            db.commit()  # keep the audit of forgetting the key
        locked_at = state.locked_at
        unlocked = bool(custody.is_unlocked(project.id))
        cases = service("cases")
        pending = cases.pending_backlog(db, project.id)
    except ServiceUnavailableError:
        pass
    key = project.active_key
    return {
        "encrypted": project.encrypted,
        "unlocked": unlocked,
        "pending_backlog": int(pending or 0),
        "key_fingerprint": key.fingerprint if key else None,
        "locked_by_admin_at": locked_at,
    }


# ---------------------------------------------------------------- meta


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The OpenAPI 3 document (public: it describes, it does not grant)."""
    return jsonify(openapi.build_document(request.script_root + "/api/v1"))


openapi.ROUTES.append(Route("GET", "/openapi.json", "This OpenAPI document", None, tag="meta"))


@api(
    "GET", "/me", "The signed-in web user and their projects", VIEWER, response=MeSchema,
    tag="meta",
)  # fmt: skip
def me(db: Session, user: WebUser) -> Response:
    return dump(MeSchema, {**_user_out(db, user), "csrf_token": csrf_token()})


# ---------------------------------------------------------------- projects


@api(
    "GET", "/projects", "List the projects the caller may open (all of them for admins)",
    VIEWER, response=ProjectSchema, response_list=True,
)  # fmt: skip
def projects_list(db: Session, user: WebUser) -> Response:
    rows = access.visible_projects(db, user)
    return dump(ProjectSchema, [project_out(p) for p in rows], many=True)


@api(
    "POST", "/projects", "Create a project", ADMIN,
    body=ProjectCreateSchema, response=ProjectSchema, status=201,
)  # fmt: skip
def projects_create(db: Session, user: WebUser) -> Response:
    from server.services.projects import create_project

    data = body(ProjectCreateSchema)
    passphrase = data.get("passphrase")
    project = create_project(
        db,
        data["name"],
        passphrase=passphrase.encode("utf-8") if passphrase else None,
        actor=actor(user),
    )
    db.commit()
    return dump(ProjectSchema, project_out(project), 201)


@api("GET", "/projects/<int:project_id>", "A project", VIEWER, response=ProjectSchema)
def project_get(db: Session, user: WebUser, project_id: int) -> Response:
    return dump(ProjectSchema, project_out(get_project(db, project_id)))


# ---------------------------------------------------------------- forms


@api(
    "GET", "/projects/<int:project_id>/forms", "List forms with their versions", MANAGER,
    response=FormSchema, response_list=True,
)  # fmt: skip
def forms_list(db: Session, user: WebUser, project_id: int) -> Response:
    get_project(db, project_id)
    rows = db.scalars(
        select(Form).where(Form.project_id == project_id).order_by(Form.xml_form_id)
    ).all()
    return dump(FormSchema, [form_out(f) for f in rows], many=True)


def publish_upload_or_context(
    db: Session,
    user: WebUser,
    project: Project,
    *,
    xml: bytes | None,
    context: str | None,
    report: Any = None,
) -> tuple[Form, bool]:
    """Publish an uploaded XForm (with the compiler's report when ``report`` holds an upload)
    or compile and publish an instrument context."""
    from server.blobs import make_blob_store
    from server.services.forms import load_report, publish_form
    from server.services.publishing import publish_context

    store = make_blob_store(current_app.config, db)
    if xml is not None:
        loaded = None
        if report is not None and report.filename:
            loaded = load_report(xml, report.read(), report.filename)
        version, created = publish_form(db, store, project, xml, report=loaded, actor=actor(user))
    else:
        from form_compiler.errors import CompilerError
        from server.errors import PublishError

        try:
            version, created = publish_context(
                db, store, project, current_app.config, context or "", actor=actor(user)
            )
        except CompilerError as err:
            # the designer-facing "file:line: message" is what an admin needs to fix it
            raise PublishError(f"The context does not compile: {err}") from err
    db.commit()
    return version.form, created


@api(
    "POST", "/projects/<int:project_id>/forms",
    "Publish a form: an XForm upload (multipart field 'xform', with 'report' the compiler's "
    "<form_id>.report.json for a compiled form) or an instrument context (JSON)",
    MANAGER, body=FormPublishContextSchema, body_kind="multipart",
    response=FormPublishResultSchema, status=201,
)  # fmt: skip
def forms_publish(db: Session, user: WebUser, project_id: int) -> Response:
    project = get_project(db, project_id)
    upload = request.files.get("xform")
    if upload is not None:
        form, created = publish_upload_or_context(
            db, user, project, xml=upload.read(), context=None, report=request.files.get("report")
        )
    elif request.mimetype == "multipart/form-data":
        raise ValidationError({"xform": ["Attach the XForm file as the 'xform' field."]})
    else:
        data = body(FormPublishContextSchema)
        form, created = publish_upload_or_context(
            db, user, project, xml=None, context=data["context"]
        )
    return dump(
        FormPublishResultSchema,
        {"form": form_out(form), "created": created},
        201 if created else 200,
    )


@api(
    "GET", "/projects/<int:project_id>/forms/<xml_form_id>", "A form and its versions",
    MANAGER, response=FormSchema,
)  # fmt: skip
def form_get(db: Session, user: WebUser, project_id: int, xml_form_id: str) -> Response:
    return dump(FormSchema, form_out(get_form(db, project_id, xml_form_id)))


@api(
    "PATCH", "/projects/<int:project_id>/forms/<xml_form_id>",
    "Open, close, or set a form to closing", MANAGER, body=FormStateSchema, response=FormSchema,
)  # fmt: skip
def form_state(db: Session, user: WebUser, project_id: int, xml_form_id: str) -> Response:
    from server.services.forms import set_form_state

    form = get_form(db, project_id, xml_form_id)
    data = body(FormStateSchema)
    set_form_state(db, form, FormState(data["state"]).value, actor=actor(user))
    db.commit()
    return dump(FormSchema, form_out(form))


# ---------------------------------------------------------------- app users


def _app_user(db: Session, project_id: int, user_id: int) -> AppUser:
    au = db.get(AppUser, user_id)
    if au is None or au.project_id != project_id:
        raise NotFoundError(f"App user {user_id} does not exist in this project.")
    return au


def _app_user_out(au: AppUser) -> dict[str, Any]:
    return {
        "id": au.id,
        "display_name": au.display_name,
        "form_scope": au.form_scope,
        "created_at": au.created_at,
        "revoked_at": au.revoked_at,
    }


def base_url() -> str:
    """The public URL of this server (config BASE_URL, else the request's host)."""
    return (current_app.config.get("BASE_URL") or request.host_url).rstrip("/")


def create_app_user_with_qr(
    db: Session, user: WebUser, project: Project, name: str, forms: list[str] | None
) -> dict[str, Any]:
    """Create an app user; its token, Collect URL and QR payload (shown once)."""
    from server.qr import settings_payload
    from server.services.users import app_user_url, create_app_user

    au, token = create_app_user(db, project, name, forms=forms or None, actor=actor(user))
    db.commit()
    url = app_user_url(base_url(), project.id, token)
    return {
        **_app_user_out(au),
        "token": token,
        "server_url": url,
        "qr_payload": settings_payload(url, project.name),
    }


@api(
    "GET", "/projects/<int:project_id>/app-users", "List app users (tokens are never shown)",
    MANAGER, response=AppUserSchema, response_list=True,
)  # fmt: skip
def app_users_list(db: Session, user: WebUser, project_id: int) -> Response:
    get_project(db, project_id)
    rows = db.scalars(
        select(AppUser).where(AppUser.project_id == project_id).order_by(AppUser.id)
    ).all()
    return dump(AppUserSchema, [_app_user_out(a) for a in rows], many=True)


@api(
    "POST", "/projects/<int:project_id>/app-users",
    "Create an app user: the token, Collect URL and QR payload are shown once", MANAGER,
    body=AppUserCreateSchema, response=AppUserCreatedSchema, status=201,
)  # fmt: skip
def app_users_create(db: Session, user: WebUser, project_id: int) -> Response:
    project = get_project(db, project_id)
    data = body(AppUserCreateSchema)
    out = create_app_user_with_qr(db, user, project, data["display_name"], data.get("forms"))
    return dump(AppUserCreatedSchema, out, 201)


@api(
    "DELETE", "/projects/<int:project_id>/app-users/<int:user_id>",
    "Revoke an app user (its URL stops working at once)", MANAGER, response=AppUserSchema,
)  # fmt: skip
def app_users_revoke(db: Session, user: WebUser, project_id: int, user_id: int) -> Response:
    from server.services.users import revoke_app_user

    au = _app_user(db, project_id, user_id)
    revoke_app_user(db, au.id, actor=actor(user))
    db.commit()
    return dump(AppUserSchema, _app_user_out(au))


# ---------------------------------------------------------------- submissions


@api(
    "GET", "/projects/<int:project_id>/submissions", "List submissions, newest first", MANAGER,
    response=SubmissionPageSchema,
    query=[
        Param("status", "query", enum=[s.value for s in SubmissionStatus]),
        Param("flagged", "query", "boolean", "only submissions with a flag"),
        Param("limit", "query", "integer"),
        Param("offset", "query", "integer"),
    ],
)  # fmt: skip
def submissions_list(db: Session, user: WebUser, project_id: int) -> Response:
    get_project(db, project_id)
    status = request.args.get("status") or None
    if status is not None and status not in {s.value for s in SubmissionStatus}:
        raise ValidationError({"status": [f"Unknown status {status!r}."]})
    limit, offset = int_arg("limit", 50, lo=1, hi=500), int_arg("offset", 0, hi=10**9)
    flagged = request.args.get("flagged", "").lower() in {"1", "true", "yes"}
    found = list_submissions(
        db, project_id, status=status, flagged=flagged, limit=limit, offset=offset
    )
    page = {
        "items": [submission_out(s) for s in found.items],
        "total": found.total,
        "quarantined_uploads": quarantined_uploads(db, project_id),
    }
    return dump(SubmissionPageSchema, {**page, "limit": limit, "offset": offset})


# ---------------------------------------------------------------- key custody (admin)


@api(
    "GET", "/projects/<int:project_id>/key", "Key custody state and pending backlog", MANAGER,
    response=KeyStatusSchema, tag="custody",
)  # fmt: skip
def key_get(db: Session, user: WebUser, project_id: int) -> Response:
    return dump(KeyStatusSchema, key_status(db, get_project(db, project_id)))


def _encrypted_project(db: Session, project_id: int) -> Project:
    project = get_project(db, project_id)
    if not project.encrypted:
        raise ValidationError({"project": ["This project is not encrypted: it has no key."]})
    return project


@api(
    "POST", "/projects/<int:project_id>/key/unlock",
    "Unlock the project key with its passphrase: opens it in this web process (on-demand notes) "
    "and lifts an admin lock, so the reconciliation worker decrypts again", ADMIN,
    body=PassphraseSchema, response=KeyStatusSchema, tag="custody",
)  # fmt: skip
def key_unlock(db: Session, user: WebUser, project_id: int) -> Response:
    project = _encrypted_project(db, project_id)
    data = body(PassphraseSchema)
    service("custody").refuse_guessing(
        db, project.id, limit=current_app.config["UNLOCK_FAIL_LIMIT"],
        window_s=current_app.config["UNLOCK_FAIL_WINDOW"],
    )  # fmt: skip
    with commit_audit_on_failure(db):
        service("custody").unlock_project(
            db, project.id, data["passphrase"].encode("utf-8"), actor=actor(user),
            idle_seconds=current_app.config["KEY_IDLE_SECONDS"],
        )  # fmt: skip
    db.commit()
    return dump(KeyStatusSchema, key_status(db, project))


@api(
    "POST", "/projects/<int:project_id>/key/lock",
    "Lock the key everywhere: every process forgets it (the worker before its next batch) and "
    "none unlocks on its own until an admin unlocks it again", ADMIN,
    response=KeyStatusSchema, tag="custody",
)  # fmt: skip
def key_lock(db: Session, user: WebUser, project_id: int) -> Response:
    project = _encrypted_project(db, project_id)
    service("custody").lock_project(db, project.id, actor=actor(user))
    db.commit()
    return dump(KeyStatusSchema, key_status(db, project))


@api(
    "POST", "/projects/<int:project_id>/key/rotate",
    "New key pair for new form versions (old keys kept for old submissions)", ADMIN,
    body=PassphraseSchema, response=RotatedKeySchema, tag="custody",
)  # fmt: skip
def key_rotate(db: Session, user: WebUser, project_id: int) -> Response:
    project = _encrypted_project(db, project_id)
    data = body(PassphraseSchema)
    with commit_audit_on_failure(db):
        fingerprint = service("custody").rotate_project_key(
            db, project.id, data["passphrase"].encode("utf-8"), actor=actor(user)
        )
    db.commit()
    return dump(RotatedKeySchema, {"key_fingerprint": fingerprint})


# ---------------------------------------------------------------- cases (issue 5)

CASE_FILTERS = ["office", "casework_type", "status", "due", "closure_ready", "q"]


def case_filters() -> dict[str, Any]:
    """Case-list filters from the query string (empty ones dropped)."""
    out: dict[str, Any] = {}
    for name in CASE_FILTERS:
        value = request.args.get(name, "").strip()
        if value:
            out[name] = value.lower() in {"1", "true", "yes"} if name == "closure_ready" else value
    return out


def case_of_project(db: Session, project_id: int, case_id: int) -> Any:
    """The case detail, 404 when it belongs to another project."""
    detail = service("cases").get_case(db, case_id)
    if detail is None or getattr(detail, "project_id", project_id) != project_id:
        raise NotFoundError(f"Case {case_id} does not exist in this project.")
    return detail


@api(
    "GET", "/projects/<int:project_id>/cases", "Caseload with filters", VIEWER,
    response=CasePageSchema, tag="cases",
    query=[
        Param("office", "query"), Param("casework_type", "query"), Param("status", "query"),
        Param("due", "query", enum=["due", "overdue"]),
        Param("closure_ready", "query", "boolean"), Param("q", "query"),
        Param("limit", "query", "integer"), Param("offset", "query", "integer"),
    ],
)  # fmt: skip
def cases_list(db: Session, user: WebUser, project_id: int) -> Response:
    get_project(db, project_id)
    limit, offset = int_arg("limit", 50, lo=1, hi=500), int_arg("offset", 0, hi=10**9)
    items, total = service("cases").list_cases(
        db, project_id, **case_filters(), limit=limit, offset=offset
    )
    return jsonify(
        {"items": jsonable(list(items)), "total": total, "limit": limit, "offset": offset}
    )


@api(
    "GET", "/projects/<int:project_id>/cases/<int:case_id>",
    "A case: assessments by date, per-domain series, flags", VIEWER,
    response=FreeFormSchema, tag="cases",
)  # fmt: skip
def case_get(db: Session, user: WebUser, project_id: int, case_id: int) -> Response:
    get_project(db, project_id)
    return jsonify(jsonable(case_of_project(db, project_id, case_id)))


@api(
    "GET", "/projects/<int:project_id>/review-queues",
    "Review queues: orphans, conflicts, entity conflicts, score mismatches, quarantined, plaintext-for-encrypted",
    MANAGER, response=FreeFormSchema, tag="cases",
)  # fmt: skip
def review_queues(db: Session, user: WebUser, project_id: int) -> Response:
    get_project(db, project_id)
    return jsonify(jsonable(service("cases").review_queues(db, project_id)))


def resolve_item(db: Session, user: WebUser, project_id: int, item_id: int, action: str,
                 case_id: int | None, case_code: str | None = None) -> None:  # fmt: skip
    """Resolve a review item of *this* project (another project's item answers 404)."""
    service("cases").resolve_review_item(
        db, item_id, action, actor=actor(user), case_id=case_id, project_id=project_id,
        case_code=case_code,
    )  # fmt: skip
    db.commit()


def assessment_in_project(db: Session, project_id: int, assessment_id: int) -> None:
    """404 unless the assessment belongs to ``project_id``."""
    from server.models_cases import Assessment

    row = db.get(Assessment, assessment_id)
    if row is None or row.project_id != project_id:
        raise NotFoundError(f"Assessment {assessment_id} does not exist in this project.")


@api(
    "POST", "/projects/<int:project_id>/review-items/<int:item_id>/resolve",
    "Resolve a review item: link | create_case (orphan), keep | discard (conflict), resolve (entity conflict), retry (quarantined: back to the worker's queue), dismiss",
    MANAGER, body=ReviewResolveSchema, status=204, tag="cases",
)  # fmt: skip
def review_resolve(db: Session, user: WebUser, project_id: int, item_id: int) -> Response:
    get_project(db, project_id)
    data = body(ReviewResolveSchema)
    resolve_item(
        db, user, project_id, item_id, data["action"], data.get("case_id"), data.get("case_code")
    )
    return Response(status=204)


@api(
    "GET", "/projects/<int:project_id>/aggregates",
    "Aggregates per casework type and office (cells with n<5 suppressed)", VIEWER,
    response=FreeFormSchema, tag="cases",
)  # fmt: skip
def aggregates(db: Session, user: WebUser, project_id: int) -> Response:
    get_project(db, project_id)
    return jsonify(jsonable(service("cases").aggregates(db, project_id)))


@api(
    "POST", "/projects/<int:project_id>/assessments/<int:assessment_id>/notes",
    "Decrypt an assessment's free-text notes (audited; not for viewers)", MANAGER,
    response=NotesSchema, tag="cases",
)  # fmt: skip
def assessment_notes(db: Session, user: WebUser, project_id: int, assessment_id: int) -> Response:
    get_project(db, project_id)
    cases = service("cases")
    assessment_in_project(db, project_id, assessment_id)
    notes = cases.decrypt_notes_on_demand(db, assessment_id, actor=actor(user))
    db.commit()
    return jsonify({"notes": jsonable(notes)})


EXPORT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _csv_stream(session: Session, project_id: int, wide: bool) -> Iterator[bytes]:
    """The CSV export read from ``session`` (its own, on one snapshot), closed after the last
    piece, or when the server closes the response: no request context needed meanwhile."""
    export = service("export")
    try:
        yield from export.iter_csv(session, project_id, wide=wide)
    finally:
        session.close()


def export_response(db: Session, user: WebUser, project: Project, fmt: str, wide: bool) -> Any:
    """Send the export as a download, streamed (audited before the first byte leaves).

    CSV is a generator response: rows go out as they are read from the database. XLSX is a zip
    whose directory comes last, so it is written to an anonymous temporary file (gone when
    closed, also on error) and that is streamed. ``X-Row-Count`` and the audited ``rows`` are
    the data rows: counted when the XLSX is written; for CSV counted first, on the same database
    snapshot the rows are then read from, so a reconciliation committing meanwhile changes
    neither.
    """
    import tempfile

    from flask import send_file

    from server.services import audit

    if fmt not in EXPORT_TYPES:
        raise ValidationError({"format": ["Use csv or xlsx."]})
    refuse_other_sites("this export")
    export = service("export")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    name = f"kintsugi-project{project.id}-cases-{'wide' if wide else 'long'}-{stamp}.{fmt}"
    if fmt == "xlsx":
        fh = tempfile.TemporaryFile(prefix="kintsugi-export-")
        try:
            rows = export.export_cases(db, project.id, fh, fmt=fmt, wide=wide)
            audit.record(
                db, actor(user), "export.download", f"project:{project.id}", fmt=fmt, rows=rows
            )
            db.commit()
            fh.seek(0)
            resp = send_file(fh, mimetype=EXPORT_TYPES[fmt], conditional=False, etag=False)
        except BaseException:
            fh.close()
            raise
    else:
        snapshot = current_app.extensions["kintsugi.db"].sessionmaker()
        try:
            begin_snapshot(snapshot)
            rows = export.count_rows(snapshot, project.id, wide=wide)
            audit.record(
                db, actor(user), "export.download", f"project:{project.id}", fmt=fmt, rows=rows
            )
            db.commit()
            resp = Response(_csv_stream(snapshot, project.id, wide), content_type=EXPORT_TYPES[fmt])
            resp.call_on_close(snapshot.close)  # also when no piece was ever asked for
        except BaseException:
            snapshot.close()
            raise
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    resp.headers["X-Row-Count"] = str(rows)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@api(
    "GET", "/projects/<int:project_id>/export", "Download the case export", MANAGER,
    content_type="text/csv", tag="cases",
    query=[
        Param("format", "query", enum=["csv", "xlsx"]),
        Param("wide", "query", "boolean",
              "one row per assessment, with a column per domain score and per subdomain "
              "rating, instead of one row per assessment and domain"),
    ],
)  # fmt: skip
def export_download(db: Session, user: WebUser, project_id: int) -> Response:
    project = get_project(db, project_id)
    fmt = request.args.get("format", "csv")
    wide = request.args.get("wide", "").lower() in {"1", "true", "yes"}
    return export_response(db, user, project, fmt, wide)


# ---------------------------------------------------------------- web users (admin)


def _user_out(db: Session, u: WebUser) -> dict[str, Any]:
    return {
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "role": u.role,
        "disabled": u.disabled_at is not None,
        "projects": access.user_memberships(db, u.id),
    }


@api("GET", "/users", "List web users", ADMIN, response=WebUserSchema, response_list=True)
def users_list(db: Session, user: WebUser) -> Response:
    rows = db.scalars(select(WebUser).order_by(WebUser.username)).all()
    return dump(WebUserSchema, [_user_out(db, u) for u in rows], many=True)


@api(
    "POST", "/users", "Create a web user (a generated password is shown once if none given)",
    ADMIN, body=WebUserCreateSchema, response=WebUserCreatedSchema, status=201,
)  # fmt: skip
def users_create(db: Session, user: WebUser) -> Response:
    from server.services.users import create_web_user, generate_password

    data = body(WebUserCreateSchema)
    password = data.get("password")
    generated = password is None
    if generated:
        password = generate_password()
    new = create_web_user(
        db,
        data["username"],
        password,
        role=data["role"],
        email=data.get("email"),
        realm=current_app.config["DIGEST_REALM"],
        method=current_app.config["PASSWORD_HASH_METHOD"],
        actor=actor(user),
    )
    db.commit()
    out = _user_out(db, new)
    if generated:
        out["password"] = password
    return dump(WebUserCreatedSchema, out, 201)


# ---------------------------------------------------------------- project roles (admin)


def _web_user(db: Session, user_id: int) -> WebUser:
    found = db.get(WebUser, user_id)
    if found is None:
        raise NotFoundError(f"Web user {user_id} does not exist.")
    return found


@api(
    "GET", "/projects/<int:project_id>/members",
    "Web users with a role in the project (admins see every project and are not listed)",
    ADMIN, response=MembershipSchema, response_list=True,
)  # fmt: skip
def members_list(db: Session, user: WebUser, project_id: int) -> Response:
    get_project(db, project_id)
    return dump(MembershipSchema, access.project_members(db, project_id), many=True)


@api(
    "PUT", "/projects/<int:project_id>/members/<int:user_id>",
    "Give a web user a role in the project (manager | viewer), replacing their previous one",
    ADMIN, body=ProjectRoleSchema, response=MembershipSchema,
)  # fmt: skip
def member_put(db: Session, user: WebUser, project_id: int, user_id: int) -> Response:
    project = get_project(db, project_id)
    target = _web_user(db, user_id)
    data = body(ProjectRoleSchema)
    row = access.grant_project_role(db, target, project, data["role"], actor=actor(user))
    db.commit()
    out = access.Membership(project.id, project.name, target.id, target.username, row.role)
    return dump(MembershipSchema, out)


@api(
    "DELETE", "/projects/<int:project_id>/members/<int:user_id>",
    "Take a web user's role in the project away (their access ends at once)", ADMIN,
    status=204,
)  # fmt: skip
def member_delete(db: Session, user: WebUser, project_id: int, user_id: int) -> Response:
    get_project(db, project_id)
    target = _web_user(db, user_id)
    if not access.revoke_project_role(db, target, project_id, actor=actor(user)):
        raise NotFoundError(f"{target.username} has no role in this project.")
    db.commit()
    return Response(status=204)
