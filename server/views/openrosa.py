"""OpenRosa endpoints for ODK Collect, in Central's URL layout (openrosa.md §2 to §8).

Each route exists twice: ``/v1/key/<token>/projects/<id>/...`` for app users (token in the URL,
403 when it is bad) and ``/v1/projects/<id>/...`` for web users (Digest, or Basic over https).
``?deviceID=`` is accepted everywhere. Views stay thin: authenticate, call a service, render with
:mod:`sync_protocol.openrosa`.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from urllib.parse import quote

from flask import Blueprint, Response, current_app, request

from server.auth import (
    Credentials,
    authenticate_web_user,
    basic_credentials,
    check_rate_limit,
    find_app_user,
    find_app_user_ref,
    record_failure,
)
from server.blobs import make_blob_store, read_all
from server.db import get_session, write_lock
from server.errors import (
    AuthError,
    BadSubmissionError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
)
from server.models import AppUser, FormVersion, Project, WebUser
from server.multipart import parse_multipart
from server.services import access
from server.services import entities as entity_service
from server.services import forms as form_service
from server.services.projects import get_project
from server.services.submissions import (
    Upload,
    check_part_name,
    ingest_on_autocommit,
    store_upload,
)
from sync_protocol.openrosa import (
    OPENROSA_HEADERS,
    XML_CONTENT_TYPE,
    FormListEntry,
    ManifestFile,
    render_form_list,
    render_integrity,
    render_manifest,
    render_openrosa_response,
)

bp = Blueprint("openrosa", __name__)

_PREFIXES = {
    "key": "/v1/key/<token>/projects/<int:project_id>",
    "user": "/v1/projects/<int:project_id>",
}


def _route(rule: str, **options):
    """Register a view under both URL prefixes."""

    def decorator(func):
        for suffix, prefix in _PREFIXES.items():
            bp.add_url_rule(
                prefix + rule, endpoint=f"{func.__name__}_{suffix}", view_func=func, **options
            )
        return func

    return decorator


@bp.after_request
def _openrosa_headers(resp: Response) -> Response:
    resp.headers.update(OPENROSA_HEADERS)
    resp.headers["X-OpenRosa-Accept-Content-Length"] = str(
        current_app.config["ACCEPT_CONTENT_LENGTH"]
    )
    return resp


@dataclass(slots=True)
class Caller:
    """Who is calling, for which project, and the base URL they used."""

    project: Project
    app_user: AppUser | None
    web_user: WebUser | None
    base: str


def _client_ip() -> str:
    return request.remote_addr or "unknown"


def _credentials() -> Credentials:
    basic = basic_credentials(request.headers.get("Authorization"))
    if basic is not None:  # Collect's ISO-8859-1 as well as UTF-8 (werkzeug reads only UTF-8)
        return Credentials(scheme="basic", username=basic[0], params={}, password=basic[1])
    auth = request.authorization
    if auth is None:
        return Credentials(scheme="", username=None, params={})
    params = {k: v for k, v in (auth.parameters or {}).items() if isinstance(v, str)}
    if auth.type == "digest":
        return Credentials(scheme="digest", username=params.get("username"), params=params)
    return Credentials(scheme=auth.type or "other", username=None, params={})


def _remember_failure(username: str | None) -> None:
    """Commit a failed attempt in its own transaction (the request's one is rolled back)."""
    maker = current_app.extensions["kintsugi.db"].sessionmaker
    with maker() as session:
        record_failure(session, _client_ip(), username)
        session.commit()


def _caller(project_id: int, token: str | None, *, submit: bool = False) -> Caller:
    session = get_session()
    cfg = current_app.config
    root = request.host_url.rstrip("/")
    if token is not None:
        try:
            app_user = find_app_user(session, token, project_id)
        except AuthError:
            _remember_failure(None)
            check_rate_limit(session, cfg, _client_ip())
            raise
        return Caller(
            app_user.project, app_user, None, f"{root}/v1/key/{token}/projects/{project_id}"
        )
    creds = _credentials()
    if creds.scheme:
        check_rate_limit(session, cfg, _client_ip(), creds.username)
    digest = creds.scheme == "digest"
    # A Digest login writes its nonce count: taken under the SQLite writer lock and committed
    # at once, so the count stays used whatever happens to the rest of the request.
    try:
        with write_lock(current_app) if digest else nullcontext():
            try:
                user = authenticate_web_user(
                    session,
                    cfg,
                    creds,
                    method=request.method,
                    path=request.path,
                    https=request.is_secure,
                )
            except AuthError:
                session.rollback()
                raise
            if digest:
                session.commit()
    except AuthError as err:
        if getattr(err, "failed_attempt", False):
            _remember_failure(creds.username)
        raise
    # a web user works in the projects they have a role in (any role lists and downloads
    # forms; sending needs manager); same 403 for a project that does not exist
    role = access.project_role(session, user, project_id)
    if role is None:
        raise ForbiddenError(
            "Your account has no access to this project. Ask an administrator to add you."
        )
    if submit and access.rank(role) < access.rank(access.MANAGER):
        raise ForbiddenError("Your account may not send submissions. Ask an administrator.")
    project = get_project(session, project_id)
    return Caller(project, None, user, f"{root}/v1/projects/{project_id}")


def _xml(body: bytes, status: int = 200) -> Response:
    resp = Response(body, status=status, content_type=XML_CONTENT_TYPE)
    # Collect keeps a 50 MiB HTTP cache: lists and manifests must always be revalidated.
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def _form_urls(caller: Caller, version: FormVersion) -> tuple[str, str]:
    fid = quote(version.form.xml_form_id, safe="")
    return (
        f"{caller.base}/forms/{fid}.xml?hash={version.md5}",
        f"{caller.base}/forms/{fid}/manifest?hash={version.md5}",
    )


@_route("/formList", methods=["GET"])
def form_list(project_id: int, token: str | None = None) -> Response:
    """OpenRosa Form List API (§2): open forms the caller may use, current version each."""
    caller = _caller(project_id, token)
    wanted = request.args.get("formID")
    entries = []
    for form in form_service.visible_forms(get_session(), caller.project, caller.app_user):
        if wanted and form.xml_form_id != wanted:
            continue
        version = form.current_version
        download_url, manifest_url = _form_urls(caller, version)
        entries.append(
            FormListEntry(
                form_id=form.xml_form_id,
                name=version.title or form.xml_form_id,
                version=version.version or None,
                hash="md5:" + version.md5,
                download_url=download_url,
                manifest_url=manifest_url if version.attachments else None,
            )
        )
    return _xml(render_form_list(entries))


def _version(caller: Caller, xml_form_id: str) -> FormVersion:
    form = form_service.get_form(get_session(), caller.project, xml_form_id, caller.app_user)
    return form_service.get_version(form, request.args.get("hash"))


@_route("/forms/<xml_form_id>.xml", methods=["GET"])
def form_xml(project_id: int, xml_form_id: str, token: str | None = None) -> Response:
    """The form definition: exactly the bytes whose md5 the form list announced (§3.2).

    Served as published, the same for every device: no ``<submission action>`` is added.
    Collect stores a form's action on each instance when it is first saved and posts there
    for ever; without one it posts to ``<its server URL>/submission``, which for an app user
    is already the token URL. An action naming a device's token would strand every draft and
    unsent instance as soon as that token is revoked and the device given a new QR code.
    """
    caller = _caller(project_id, token)
    version = _version(caller, xml_form_id)
    return Response(version.xml, content_type=XML_CONTENT_TYPE)


def _csv_cache() -> entity_service.CsvCache:
    cache = current_app.extensions.get("kintsugi.entity_csv")
    if cache is None:
        cache = current_app.extensions.setdefault("kintsugi.entity_csv", entity_service.CsvCache())
    return cache


@_route("/forms/<xml_form_id>/manifest", methods=["GET"])
def manifest(project_id: int, xml_form_id: str, token: str | None = None) -> Response:
    """Manifest of media files and entity lists (§4.1)."""
    caller = _caller(project_id, token)
    version = _version(caller, xml_form_id)
    fid = quote(xml_form_id, safe="")
    files = []
    for att in version.attachments:
        url = f"{caller.base}/forms/{fid}/attachments/{quote(att.name, safe='')}?hash={version.md5}"
        if att.kind == "entityList" and att.dataset:
            # the list's state hash: a few aggregates, not the CSV (openrosa.md §4.1)
            files.append(
                ManifestFile(
                    filename=att.name,
                    hash=entity_service.entity_list_state_hash(
                        get_session(),
                        caller.project,
                        att.dataset,
                        entity_service.dataset_properties(
                            get_session(), caller.project, att.dataset
                        ),
                    ),
                    download_url=url,
                    type="entityList",
                    integrity_url=f"{caller.base}/datasets/{quote(att.dataset, safe='')}/integrity",
                )
            )
        elif att.blob_key and att.md5:
            # Only files we actually have (as Central): a listed file without bytes would fail.
            files.append(ManifestFile(filename=att.name, hash="md5:" + att.md5, download_url=url))
    return _xml(render_manifest(files))


@_route("/forms/<xml_form_id>/attachments/<name>", methods=["GET"])
def attachment(project_id: int, xml_form_id: str, name: str, token: str | None = None) -> Response:
    """A media file or entity-list CSV of a form version."""
    caller = _caller(project_id, token)
    version = _version(caller, xml_form_id)
    att = next((a for a in version.attachments if a.name == name), None)
    if att is None:
        raise NotFoundError(f"The form has no file named {name!r}.")
    if att.kind == "entityList" and att.dataset:
        # ETag = the manifest's hash without "md5:" (as Central), so both change together
        session = get_session()
        columns = entity_service.dataset_properties(session, caller.project, att.dataset)
        digest, body = entity_service.entity_list(
            session, caller.project, att.dataset, columns, _csv_cache()
        )
        resp = Response(body, content_type="text/csv; charset=utf-8")
        resp.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name)}"
        resp.set_etag(digest[4:])
        return resp.make_conditional(request)
    if not att.blob_key:
        raise NotFoundError(f"The file {name!r} has not been uploaded to the server yet.")
    store = make_blob_store(current_app.config, get_session())
    resp = Response(read_all(store, att.blob_key), content_type=att.content_type)
    resp.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(att.name)}"
    return resp


@_route("/datasets/<dataset>/integrity", methods=["GET"])
def integrity(project_id: int, dataset: str, token: str | None = None) -> Response:
    """Which of the device's entities were deleted on the server (§4.4)."""
    caller = _caller(project_id, token)
    entity_service.require_list_access(get_session(), caller.project, dataset, caller.app_user)
    raw = request.args.get("id")
    ids = None if raw is None else raw.split(",")
    states = entity_service.integrity(get_session(), caller.project, dataset, ids)
    return _xml(render_integrity(states))


@_route("/submission", methods=["GET"])
def submission_probe(project_id: int, token: str | None = None) -> Response:
    """HEAD (and GET) probe before a POST: 204 with the accepted body size (§6.1)."""
    _caller(project_id, token, submit=True)
    return Response(status=204, content_type=XML_CONTENT_TYPE)


def _submitter(
    project_id: int, token: str | None
) -> tuple[int | None, list[str] | None, int | None]:
    """(app_user_id, app-user form scope, web_user_id) of someone allowed to submit."""
    if token is None:
        caller = _caller(project_id, token, submit=True)
        return None, None, caller.web_user.id if caller.web_user else None
    try:
        ref = find_app_user_ref(
            get_session(), token, project_id, cache_seconds=current_app.config["HOT_CACHE_SECONDS"]
        )
    except AuthError:
        _remember_failure(None)
        check_rate_limit(get_session(), current_app.config, _client_ip())
        raise
    return ref.id, ref.form_scope, None


def _read_parts(cfg: dict) -> tuple[bytes, dict[str, bytes], frozenset[str], bool]:
    """The XML part, the other parts by field name, the names of those that are plain form
    fields (no file name), and the *isIncomplete* flag."""
    boundary = request.mimetype_params.get("boundary", "")
    # get_data() enforces MAX_CONTENT_LENGTH (413), also for chunked bodies
    body = request.get_data(cache=False)
    parts = parse_multipart(body, boundary, max_parts=cfg["MAX_SUBMISSION_PARTS"] + 2)
    xml: bytes | None = None
    files: dict[str, bytes] = {}
    fields: set[str] = set()
    incomplete = False
    for part in parts:
        if part.name == "xml_submission_file":
            if xml is None:
                xml = part.data
        elif part.name == "*isIncomplete*" and part.filename is None:
            incomplete = True
        else:
            check_part_name(part.name)
            if part.filename:
                check_part_name(part.filename)
            elif part.name not in files:
                fields.add(part.name)
            files.setdefault(part.name, part.data)
    if xml is None:
        raise BadSubmissionError(
            "The upload has no xml_submission_file part. Try sending it again."
        )
    if len(files) > cfg["MAX_SUBMISSION_PARTS"]:
        raise BadSubmissionError(
            f"Too many files in one upload (more than {cfg['MAX_SUBMISSION_PARTS']})."
        )
    if len(xml) > cfg["MAX_XML_BYTES"]:
        raise PayloadTooLargeError("The submission file itself is too large for this server.")
    if not xml.strip():
        raise BadSubmissionError("The submission file is empty. Try sending it again.")
    return xml, files, frozenset(fields), incomplete


@_route("/submission", methods=["POST"])
def submission(project_id: int, token: str | None = None) -> Response:
    """Receive a submission (§6.2): 201 only after blobs are fsynced and the row committed."""
    ingest_on_autocommit(get_session())
    app_user_id, forms, web_user_id = _submitter(project_id, token)
    cfg = current_app.config
    if request.mimetype != "multipart/form-data":
        raise BadSubmissionError(
            "The upload is not a multipart form. Update ODK Collect, or check the server address."
        )
    if request.content_length is not None and request.content_length > cfg["MAX_CONTENT_LENGTH"]:
        raise PayloadTooLargeError(
            "The submission is too large for this server. Ask your supervisor to raise the limit."
        )
    xml, parts, fields, incomplete = _read_parts(cfg)
    upload = Upload(
        xml=xml,
        parts=parts,
        fields=fields,
        incomplete=incomplete,
        app_user_id=app_user_id,
        app_user_forms=forms,
        web_user_id=web_user_id,
        device_id=request.args.get("deviceID"),
        user_agent=request.headers.get("User-Agent"),
    )
    session = get_session()
    store = make_blob_store(cfg, session)
    receipt = store_upload(
        session,
        store,
        project_id,
        upload,
        lock=write_lock(current_app),
        cache_seconds=cfg["HOT_CACHE_SECONDS"],
    )
    message = (
        "Submission received."
        if receipt.complete or not upload.incomplete
        else "Part of the submission received; the remaining files will follow."
    )
    return _xml(render_openrosa_response(message), status=201)
