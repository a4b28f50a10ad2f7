"""Server-rendered admin pages under ``/admin`` (Jinja, one CSS file, no JavaScript).

Every page sends ``Content-Security-Policy: default-src 'self'``; every POST form carries the
session's CSRF token; pages redirect to the sign-in page when there is no session.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.errors import NotFoundError, ServerError
from server.models import (
    FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM,
    AppUser,
    Form,
    FormState,
    Project,
    Role,
    SubmissionStatus,
    WebUser,
)
from server.models_cases import Assessment, Case
from server.services import access
from server.services.submission_list import list_submissions
from server.views import admin_api as core
from server.views.admin_charts import Bar, bar_chart, trend_chart
from server.web_auth import (
    authorize,
    check_csrf,
    csrf_token,
    login_session,
    logout_session,
    role_at_least,
    session_user,
)

bp = Blueprint(
    "admin",
    __name__,
    url_prefix="/admin",
    template_folder="../templates",
    static_folder="../static",
    static_url_path="/static",
)

ADMIN, MANAGER, VIEWER = Role.ADMIN.value, Role.MANAGER.value, Role.VIEWER.value

CSP = (
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'"
)

#: What each submission flag means, in words an admin understands.
FLAG_EXPLANATIONS = {
    FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM: (
        "Arrived unencrypted although the form is encrypted. The device probably had an old "
        "copy of the form without the key, or was set up by hand. The answers were readable "
        "in transit: check the device, update its forms, and review this submission before "
        "using it."
    ),
    "discarded_unexpected_parts": (
        "The upload carried extra files the form does not ask for; they were not kept."
    ),
    "encrypted_on_arrival": (
        "The server encrypted it to the form's key, as the device should have (an upload in "
        "several parts once its last part arrived; one an older server stored unencrypted "
        "when an admin ran kintsugi submissions encrypt-stored): it is kept only encrypted "
        "and read with the key like any encrypted submission."
    ),
}

STATUS_WORDS = {
    SubmissionStatus.RECEIVED.value: "received",
    SubmissionStatus.PENDING_DECRYPTION.value: "waiting for the key to be unlocked",
    SubmissionStatus.DECRYPTED.value: "decrypted",
    SubmissionStatus.QUARANTINED.value: "quarantined (not usable until reviewed)",
}


def register(app: Any) -> None:
    """Register the admin API and pages on ``app`` (called by the app factory)."""
    from server import web_auth

    web_auth.init_app(app)
    app.register_blueprint(core.bp)
    app.register_blueprint(bp)


@bp.after_request
def _headers(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


@bp.app_context_processor
def _globals() -> dict[str, Any]:
    from flask import g

    return {
        "csrf_token": csrf_token,
        "role_at_least": role_at_least,
        "project_role": g.get("project_role"),
    }


@bp.errorhandler(ServerError)
def _error_page(err: ServerError) -> Response:
    return error_page(err.message, err.http_status)


def error_page(message: str, status: int) -> Response:
    """The admin error page: ``message``, a way back to the page the admin came from, and the
    pages' headers (also for errors met before any admin view ran: an unknown address)."""
    from flask import make_response

    from server.db import get_session

    user = None
    try:
        db = get_session()
        db.rollback()  # after a fault the transaction may be unusable
        user = session_user(db)
    except Exception:  # the page must render whatever failed
        user = None
    resp = make_response(
        render_template(
            "admin/error.html", message=message, status=status, user=user, back=referring_page()
        ),
        status,
    )
    return _headers(resp)


def referring_page() -> str | None:
    """Path and query of the admin page this request came from (the ``Referer`` of this site's
    pages: ``Referrer-Policy: same-origin``), or None."""
    from urllib.parse import urlsplit

    ref = urlsplit(request.referrer or "")
    if ref.netloc != request.host or not ref.path.startswith("/admin"):
        return None
    if ref.path.startswith(("/admin/login", "/admin/logout", "//")):
        return None
    return ref.path + (f"?{ref.query}" if ref.query else "")


def _back_after_sign_in() -> str:
    """Where signing in again should lead: this page, or for a form sent after the session
    ended (its address answers POST only) the page the form was on."""
    if request.method == "GET":
        return request.full_path
    return referring_page() or ""


def _validation_message(err: Any) -> str:
    msgs = err.messages if isinstance(err.messages, dict) else {"": err.messages}
    return "; ".join(f"{k}: {' '.join(map(str, v))}" if k else str(v) for k, v in msgs.items())


def page(role: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: signed-in user with ``role`` (else sign-in redirect), CSRF on POST."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            from marshmallow import ValidationError

            from server.db import get_session

            db = get_session()
            user = session_user(db)
            if user is None:
                return redirect(url_for("admin.login", next=_back_after_sign_in()))
            if request.method == "POST":
                check_csrf(request.form.get("csrf_token"))
            authorize(db, user, role, kwargs)  # in the URL's project, when it names one
            try:
                return fn(db, user, **kwargs)
            except ValidationError as err:
                return error_page(_validation_message(err), 400)

        return wrapper

    return deco


def _project_ctx(db: Session, project_id: int) -> Project:
    return core.get_project(db, project_id)


# ---------------------------------------------------------------- sign in/out


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Password sign-in (rate limited like every other login)."""
    from server.auth import check_password, check_rate_limit, record_failure
    from server.db import get_session

    db = get_session()
    error = None
    nxt = request.values.get("next") or ""
    if not nxt.startswith("/admin") or nxt.startswith("//"):
        nxt = url_for("admin.projects")  # no open redirect
    if request.method == "POST":
        check_csrf(request.form.get("csrf_token"))
        client = request.remote_addr or "unknown"
        username = request.form.get("username", "").strip()
        check_rate_limit(db, current_app.config, client, username)
        user = db.scalar(select(WebUser).where(WebUser.username == username))
        if (
            user is not None
            and user.disabled_at is None
            and check_password(user, request.form.get("password", ""))
        ):
            login_session(user)
            return redirect(nxt)
        record_failure(db, client, username)
        db.commit()
        error = "Wrong username or password."
    return render_template("admin/login.html", error=error, next=nxt, user=None), (
        401 if error else 200
    )


@bp.post("/logout")
def logout() -> Any:
    """Sign out (POST with CSRF token, so another site cannot sign you out)."""
    check_csrf(request.form.get("csrf_token"))
    logout_session()
    return redirect(url_for("admin.login"))


# ---------------------------------------------------------------- projects


@bp.get("/")
@page(VIEWER)
def projects(db: Session, user: WebUser) -> Any:
    rows = access.visible_projects(db, user)
    return render_template("admin/projects.html", user=user, projects=rows)


@bp.post("/projects")
@page(ADMIN)
def project_create(db: Session, user: WebUser) -> Any:
    from server.services.projects import create_project

    passphrase = request.form.get("passphrase") or None
    project = create_project(
        db,
        request.form.get("name", ""),
        passphrase=passphrase.encode("utf-8") if passphrase else None,
        actor=core.actor(user),
    )
    db.commit()
    return redirect(url_for("admin.project", project_id=project.id))


@bp.get("/projects/<int:project_id>")
@page(VIEWER)
def project(db: Session, user: WebUser, project_id: int) -> Any:
    p = _project_ctx(db, project_id)
    forms = db.scalars(select(Form).where(Form.project_id == p.id).order_by(Form.xml_form_id))
    app_users = db.scalars(
        select(AppUser).where(AppUser.project_id == p.id).order_by(AppUser.id)
    ).all()
    contexts: list[str] = []
    if role_at_least(user, MANAGER):
        try:
            from pathlib import Path

            from server.services.publishing import list_contexts

            contexts = list_contexts(Path(current_app.config["INSTRUMENTS_DIR"]))
        except Exception:
            contexts = []
    return render_template(
        "admin/project.html", user=user, project=p, forms=list(forms), app_users=app_users,
        contexts=contexts, states=[s.value for s in FormState], key=core.key_status(db, p),
    )  # fmt: skip


@bp.post("/projects/<int:project_id>/forms")
@page(MANAGER)
def form_publish(db: Session, user: WebUser, project_id: int) -> Any:
    from marshmallow import ValidationError

    p = _project_ctx(db, project_id)
    upload = request.files.get("xform")
    context = request.form.get("context", "").strip()
    if upload is not None and upload.filename:
        core.publish_upload_or_context(
            db, user, p, xml=upload.read(), context=None, report=request.files.get("report")
        )
    elif context:
        core.publish_upload_or_context(db, user, p, xml=None, context=context)
    else:
        raise ValidationError({"form": ["Choose an XForm file or an instrument context."]})
    return redirect(url_for("admin.project", project_id=p.id))


@bp.post("/projects/<int:project_id>/forms/<xml_form_id>/state")
@page(MANAGER)
def form_state(db: Session, user: WebUser, project_id: int, xml_form_id: str) -> Any:
    from marshmallow import ValidationError

    from server.services.forms import set_form_state

    form = core.get_form(db, project_id, xml_form_id)
    state = request.form.get("state", "")
    if state not in {s.value for s in FormState}:
        raise ValidationError({"state": ["Choose open, closing or closed."]})
    set_form_state(db, form, state, actor=core.actor(user))
    db.commit()
    flash(f"Form {form.xml_form_id} is now {state}: {FORM_STATE_WORDS[state]}")
    return redirect(url_for("admin.project", project_id=project_id))


#: what a form state means for the devices
FORM_STATE_WORDS = {
    FormState.OPEN.value: "devices download it and can send its submissions.",
    FormState.CLOSING.value: (
        "devices no longer download it; submissions of copies already filled in are accepted."
    ),
    FormState.CLOSED.value: "devices no longer download it and its submissions are refused.",
}


@bp.post("/projects/<int:project_id>/app-users")
@page(MANAGER)
def app_user_create(db: Session, user: WebUser, project_id: int) -> Any:
    import base64

    from server.qr import qr_png_bytes, qr_svg_inline

    p = _project_ctx(db, project_id)
    forms = [f for f in request.form.getlist("forms") if f]
    created = core.create_app_user_with_qr(db, user, p, request.form.get("name", ""), forms)
    return render_template(
        "admin/app_user_created.html", user=user, project=p, created=created,
        qr_svg=qr_svg_inline(created["qr_payload"]),
        qr_png_b64=base64.b64encode(qr_png_bytes(created["qr_payload"])).decode("ascii"),
    )  # fmt: skip


@bp.post("/projects/<int:project_id>/app-users/<int:user_id>/revoke")
@page(MANAGER)
def app_user_revoke(db: Session, user: WebUser, project_id: int, user_id: int) -> Any:
    from marshmallow import ValidationError

    from server.services.users import revoke_app_user

    au = core._app_user(db, project_id, user_id)
    if request.form.get("confirm") != "yes":  # one click must not cut a tablet off for good
        raise ValidationError({"confirm": [
            f"Tick the box to confirm: {au.display_name}'s QR code stops working for good, and "
            "the device needs a new app user to send again."
        ]})  # fmt: skip
    revoke_app_user(db, au.id, actor=core.actor(user))
    db.commit()
    flash(
        f"App user {au.display_name} is revoked: its QR code and server address no longer work. "
        "Create a new app user for the device if it should keep sending."
    )
    return redirect(url_for("admin.project", project_id=project_id))


# ---------------------------------------------------------------- submissions


@bp.get("/projects/<int:project_id>/submissions")
@page(MANAGER)
def submissions(db: Session, user: WebUser, project_id: int) -> Any:
    p = _project_ctx(db, project_id)
    status = request.args.get("status") or None
    if status not in {None, *STATUS_WORDS}:
        status = None
    flagged = request.args.get("flagged") == "1"
    offset = core.int_arg("offset", 0, hi=10**9)
    found = list_submissions(
        db, p.id, status=status, flagged=flagged, limit=SUBMISSIONS_PER_PAGE, offset=offset
    )
    return render_template(
        "admin/submissions.html", user=user, project=p, rows=found.items, total=found.total,
        status=status, flagged=flagged, status_words=STATUS_WORDS,
        flag_explanations=FLAG_EXPLANATIONS,
        quarantined_uploads=core.quarantined_uploads(db, p.id),
        pager=_pager("admin.submissions", offset, SUBMISSIONS_PER_PAGE, found.total,
                     project_id=p.id),
    )  # fmt: skip


#: submissions on a page of the submissions listing
SUBMISSIONS_PER_PAGE = 200

#: cases on a page of the caseload
CASES_PER_PAGE = 50


@dataclasses.dataclass(frozen=True, slots=True)
class Pager:
    """Links to the previous and next page of a listing, the filters of the query kept."""

    first: int  # 1-based number of the first row shown
    last: int
    total: int
    previous_url: str | None
    next_url: str | None


def _pager(endpoint: str, offset: int, size: int, total: int, **view_args: Any) -> Pager:
    args = {k: v for k, v in request.args.items() if k != "offset"}  # the filters as typed

    def url(at: int) -> str:
        return url_for(endpoint, **view_args, **args, **({"offset": at} if at else {}))

    return Pager(
        first=min(offset + 1, total),
        last=min(offset + size, total),
        total=total,
        previous_url=url(max(0, min(offset, total) - size)) if offset else None,
        next_url=url(offset + size) if total > offset + size else None,
    )


# ---------------------------------------------------------------- key custody


@bp.get("/projects/<int:project_id>/key")
@page(MANAGER)
def key(db: Session, user: WebUser, project_id: int) -> Any:
    p = _project_ctx(db, project_id)
    return render_template("admin/key.html", user=user, project=p, key=core.key_status(db, p))


@bp.post("/projects/<int:project_id>/key/<action>")
@page(ADMIN)
def key_action(db: Session, user: WebUser, project_id: int, action: str) -> Any:
    p = core._encrypted_project(db, project_id)
    custody = core.service("custody")
    passphrase = request.form.get("passphrase", "").encode("utf-8")
    if action == "unlock":
        custody.refuse_guessing(
            db, p.id, limit=current_app.config["UNLOCK_FAIL_LIMIT"],
            window_s=current_app.config["UNLOCK_FAIL_WINDOW"],
        )  # fmt: skip
        with core.commit_audit_on_failure(db):
            custody.unlock_project(
                db, p.id, passphrase, actor=core.actor(user),
                idle_seconds=current_app.config["KEY_IDLE_SECONDS"],
            )  # fmt: skip
        waiting = core.key_status(db, p)["pending_backlog"]
        message = (
            f"Key unlocked. {waiting} submission(s) wait for decryption: the reconciliation "
            "worker (kintsugi reconcile) decrypts them on its next pass; this page does not."
        )
    elif action == "lock":
        custody.lock_project(db, p.id, actor=core.actor(user))
        message = (
            "Key locked everywhere: this server forgot it, and the reconciliation worker forgets "
            "it before its next batch. Submissions wait as pending until an admin unlocks it."
        )
    elif action == "rotate":
        with core.commit_audit_on_failure(db):
            fp = custody.rotate_project_key(db, p.id, passphrase, actor=core.actor(user))
        message = f"New key {fp[:16]}… is used by forms published from now on."
    else:
        raise NotFoundError("Unknown key action.")
    db.commit()
    # post/redirect/get: reloading the page must not send the passphrase form again
    flash(message)
    return redirect(url_for("admin.key", project_id=p.id))


# ---------------------------------------------------------------- cases


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


@bp.app_template_filter("domain_label")
def _domain_label_filter(domain: str) -> str:
    return domain_label(str(domain))


@bp.app_template_filter("field")
def _field_filter(obj: Any, *names: str) -> Any:
    return _get(obj, *names)


@bp.get("/projects/<int:project_id>/cases")
@page(VIEWER)
def cases(db: Session, user: WebUser, project_id: int) -> Any:
    p = _project_ctx(db, project_id)
    filters = core.case_filters()
    offset = core.int_arg("offset", 0, hi=10**9)
    items, total = core.service("cases").list_cases(
        db, p.id, **filters, limit=CASES_PER_PAGE, offset=offset
    )
    from server.services.forms import caseload_choices

    return render_template(
        "admin/cases.html", user=user, project=p, cases=items, total=total, filters=filters,
        pager=_pager("admin.cases", offset, CASES_PER_PAGE, total, project_id=p.id),
        choices=caseload_choices(db, p.id),
    )  # fmt: skip


@functools.cache
def _instrument_labels(instruments_dir: str) -> dict[str, str]:
    import json
    from pathlib import Path

    labels: dict[str, str] = {}
    for path in sorted(Path(instruments_dir).glob("*/instrument.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for d in data.get("domains", []):
            if isinstance(d, dict) and d.get("id") and d.get("label"):
                labels.setdefault(str(d["id"]), str(d["label"]))
    return labels


def domain_label(domain: str) -> str:
    """The instrument's label of a domain id (``SAF`` -> ``Safety``), else the id itself."""
    return _instrument_labels(current_app.config["INSTRUMENTS_DIR"]).get(domain, domain)


@bp.get("/projects/<int:project_id>/cases/<int:case_id>")
@page(VIEWER)
def case(db: Session, user: WebUser, project_id: int, case_id: int) -> Any:
    p = _project_ctx(db, project_id)
    detail = core.case_of_project(db, p.id, case_id)
    series = _get(detail, "series", "domain_series", "per_domain", default={}) or {}
    series = {domain_label(str(k)): v for k, v in series.items()}
    assessments = _get(detail, "assessments", default=[]) or []
    return render_template(
        "admin/case.html", user=user, project=p, case=detail,
        chart=trend_chart(series, title="Domain scores over time"),
        assessments=assessments, domains=_case_domains(detail, assessments),
        columns=_domain_columns(assessments),
    )  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class DomainRow:
    """A domain of a case: intake and latest score, change since intake, the survivor's own
    view at the latest assessment and whether it differs from the score (``gap``: flagged at
    reconciliation when they are the instrument's ``survivor_gap`` apart, 2 in the ASO)."""

    id: str
    intake: float | None
    latest: float | None
    change: float | None
    survivor: str | None
    gap: bool


def _case_domains(detail: Any, assessments: list[Any]) -> list[DomainRow]:
    latest_scores = _get(detail, "latest_scores", default={}) or {}
    intake_scores = _get(detail, "intake_scores", default={}) or {}
    change = _get(detail, "change_since_intake", default={}) or {}
    latest = next((a for a in reversed(assessments) if _get(a, "state") == "active"), None)
    views = (_get(latest, "survivor_view", default={}) or {}) if latest else {}
    gaps = set(_get(latest, "survivor_gaps", default=[]) or []) if latest else set()
    ids = dict.fromkeys([*latest_scores, *intake_scores, *change, *views])
    return [
        DomainRow(
            d, intake_scores.get(d), latest_scores.get(d), change.get(d), views.get(d), d in gaps
        )
        for d in ids
    ]


def _domain_columns(assessments: list[Any]) -> list[str]:
    """The domains of the assessments table, in the order the assessments give them."""
    ids: dict[str, None] = {}
    for a in assessments:
        ids.update(dict.fromkeys(_get(a, "domain_scores", default={}) or {}))
        ids.update(dict.fromkeys(_get(a, "survivor_view", default={}) or {}))
    return list(ids)


@bp.post("/projects/<int:project_id>/assessments/<int:assessment_id>/notes")
@page(MANAGER)
def notes(db: Session, user: WebUser, project_id: int, assessment_id: int) -> Any:
    p = _project_ctx(db, project_id)
    cases = core.service("cases")
    core.assessment_in_project(db, p.id, assessment_id)
    decrypted = cases.decrypt_notes_on_demand(db, assessment_id, actor=core.actor(user))
    db.commit()
    assessment = db.get(Assessment, assessment_id)
    return render_template(
        "admin/notes.html", user=user, project=p, assessment=assessment,
        case=db.get(Case, assessment.case_id) if assessment and assessment.case_id else None,
        notes={_note_label(k): v for k, v in decrypted.items()},
    )  # fmt: skip


def _note_label(key: str) -> str:
    """``SAF note`` -> ``Safety note`` (the notes are keyed by domain id)."""
    domain, sep, rest = key.partition(" ")
    return f"{domain_label(domain)}{sep}{rest}"


@bp.get("/projects/<int:project_id>/review")
@page(MANAGER)
def review(db: Session, user: WebUser, project_id: int) -> Any:
    p = _project_ctx(db, project_id)
    cases_service = core.service("cases")
    queues = cases_service.review_queues(db, p.id)
    choices: list[Any] = []
    more = 0
    if queues.get("orphans"):  # the cases an orphan can be linked to, by case code
        choices, total = cases_service.list_cases(db, p.id, limit=CASE_CHOICES)
        choices = sorted(choices, key=lambda c: str(_get(c, "label", default="")))
        more = max(0, total - len(choices))  # beyond the list: typed as a case code
    return render_template(
        "admin/review.html", user=user, project=p, queues=queues, case_choices=choices,
        more_cases=more,
    )  # fmt: skip


#: cases offered in an orphan's list on the review page; any other is linked by typing its code
CASE_CHOICES = 500


@bp.post("/projects/<int:project_id>/review/<int:item_id>")
@page(MANAGER)
def review_resolve(db: Session, user: WebUser, project_id: int, item_id: int) -> Any:
    from marshmallow import ValidationError

    p = _project_ctx(db, project_id)
    action = request.form.get("action", "").strip()
    if not action:
        raise ValidationError({"action": ["Choose what to do with this item."]})
    raw_case = request.form.get("case_id", "").strip()
    case_id = int(raw_case) if raw_case.isdigit() else None
    case_code = request.form.get("case_code", "").strip() or None
    link_code = request.form.get("link_code", "").strip()
    if action == "link" and case_id is None and link_code:  # a case beyond the offered list
        found, _ = core.service("cases").list_cases(db, p.id, q=link_code, limit=50)
        case_id = next(
            (_get(c, "id") for c in found if str(_get(c, "label", default="")) == link_code), None
        )
        if case_id is None:
            raise ValidationError({"link_code": [f"This project has no case {link_code}."]})
    core.resolve_item(db, user, p.id, item_id, action, case_id, case_code)
    flash(_resolution_words(db, item_id))
    return redirect(url_for("admin.review", project_id=p.id))


#: what became of a review item, by its resolution (``{case}``: the code of its case)
RESOLUTION_WORDS = {
    "link": "linked to case {case}.",
    "link_conflict": (
        "linked to case {case}, where it differs from an assessment of the same collection "
        "point and date: choose which to keep under Conflicts."
    ),
    "create_case": "opened as new case {case}.",
    "keep": "kept in case {case}; the other assessment of that date is set aside as history.",
    "discard": "set aside as history; the assessment already in case {case} stays.",
    "resolve": "marked resolved.",
    "retry": "sent back to the reconciliation worker, which processes it on its next pass.",
    "dismiss": "dismissed.",
}


def _resolution_words(db: Session, item_id: int) -> str:
    from server.models_cases import ReviewItem as ReviewRow

    item = db.get(ReviewRow, item_id)
    if item is None:
        return f"Item #{item_id}: done."
    resolution, case_id = item.resolution or "", item.case_id
    if item.assessment_id is not None:
        assessment = db.get(Assessment, item.assessment_id)
        case_id = assessment.case_id if assessment and assessment.case_id else case_id
    case = db.get(Case, case_id) if case_id else None
    words = RESOLUTION_WORDS.get(resolution, "done.")
    return f"Item #{item_id}: " + words.format(case=case.case_code if case else "?")


def _dimension_title(name: str) -> str:
    return "by " + name.replace("_", " ")


@dataclasses.dataclass(frozen=True, slots=True)
class Chart:
    """A bar chart and its figures as table rows ``(group, figure, survivors)``: a screen
    reader announces the SVG (``role="img"``) by its title only."""

    svg: Any
    rows: list[tuple[str, str, str]]


#: the survivors column of a suppressed cell (its n is not published either)
SUPPRESSED_N = "fewer than 5, or hidden with a smaller group"


def _chart(title: str, bars: list[Bar], fmt: str, **kw: Any) -> Chart:
    rows = [
        (b.label, "suppressed", SUPPRESSED_N)
        if b.suppressed or b.value is None
        else (b.label, fmt.format(b.value), "" if b.n is None else str(b.n))
        for b in bars
    ]
    return Chart(bar_chart(title, bars, fmt=fmt, **kw), rows)


def _group_label(label: str) -> str:
    return label.replace("_", " ")  # casework types are ids: forced_labour


def aggregate_charts(agg: Any) -> list[Chart]:
    """Bar charts of :class:`server.services.cases.Aggregates`.

    Per grouping (casework type, office): the mean change since intake per domain (drawn
    around zero), the share of closure-ready cases (0-100 %) and the median days to closure.
    Suppressed cells stay in the chart, drawn as suppressed, without their figures.
    """
    out = []
    for dimension, cells in (getattr(agg, "groups", None) or {}).items():
        bars = [
            Bar(f"{_group_label(c.label)} · {domain_label(c.domain)}", c.mean, c.n, c.suppressed)
            for c in cells
        ]
        if bars:
            span = max([0.5, *(abs(b.value) for b in bars if b.value is not None)])
            out.append(
                _chart(
                    f"Mean change since intake, {_dimension_title(dimension)}",
                    bars,
                    "{:+.2f}",
                    vmin=-span,
                    vmax=span,
                )
            )
    for attr, title, kw in (
        ("closure_ready_share", "Share closure-ready", {"fmt": "{:.0%}", "vmin": 0.0, "vmax": 1.0}),
        ("days_to_closure", "Median days to closure", {"fmt": "{:.0f} days"}),
    ):
        by_dim: dict[str, list[Bar]] = {}
        for c in getattr(agg, attr, None) or []:
            dimension, _, label = c.label.partition(":")
            if not label:
                dimension, label = "group", dimension
            by_dim.setdefault(dimension, []).append(
                Bar(_group_label(label), c.mean, c.n, c.suppressed)
            )
        for dimension, bars in by_dim.items():
            out.append(_chart(f"{title}, {_dimension_title(dimension)}", bars, **kw))
    return out


@bp.get("/projects/<int:project_id>/impact")
@page(VIEWER)
def impact(db: Session, user: WebUser, project_id: int) -> Any:
    p = _project_ctx(db, project_id)
    agg = core.service("cases").aggregates(db, p.id)
    return render_template("admin/impact.html", user=user, project=p, charts=aggregate_charts(agg))


@bp.get("/projects/<int:project_id>/export")
@page(MANAGER)
def export(db: Session, user: WebUser, project_id: int) -> Any:
    p = _project_ctx(db, project_id)
    fmt = request.args.get("format")
    if fmt:
        return core.export_response(db, user, p, fmt, request.args.get("wide") == "1")
    return render_template("admin/export.html", user=user, project=p)


# ---------------------------------------------------------------- web users (admin)


def _users_page(db: Session, user: WebUser, **extra: Any) -> str:
    return render_template(
        "admin/users.html", user=user,
        users=db.scalars(select(WebUser).order_by(WebUser.username)).all(),
        project_roles=access.PROJECT_ROLES,
        projects=db.scalars(select(Project).order_by(Project.name)).all(),
        memberships=access.all_memberships(db), **{"created": None, "message": None, **extra},
    )  # fmt: skip


@bp.get("/users")
@page(ADMIN)
def users(db: Session, user: WebUser) -> Any:
    return _users_page(db, user)


@bp.post("/users")
@page(ADMIN)
def user_create(db: Session, user: WebUser) -> Any:
    from server.services.users import create_web_user, generate_password

    password = generate_password()
    new = create_web_user(
        db,
        request.form.get("username", ""),
        password,
        role=request.form.get("role", VIEWER)
        if request.form.get("role") in ROLE_VALUES
        else VIEWER,
        email=request.form.get("email") or None,
        realm=current_app.config["DIGEST_REALM"],
        method=current_app.config["PASSWORD_HASH_METHOD"],
        actor=core.actor(user),
    )
    db.commit()
    return _users_page(db, user, created={"username": new.username, "password": password})


def _form_int(name: str) -> int:
    from marshmallow import ValidationError

    raw = request.form.get(name, "").strip()
    if not raw.isdigit():
        raise ValidationError({name: ["Choose one."]})
    return int(raw)


@bp.post("/users/project-roles")
@page(ADMIN)
def project_role_grant(db: Session, user: WebUser) -> Any:
    """Give a web user a role in a project (replacing the one they had there)."""
    target = core._web_user(db, _form_int("user_id"))
    project = core.get_project(db, _form_int("project_id"))
    role = request.form.get("role", "")
    access.grant_project_role(db, target, project, role, actor=core.actor(user))
    db.commit()
    return _users_page(db, user, message=f"{target.username} is now {role} of {project.name}.")


@bp.post("/users/project-roles/revoke")
@page(ADMIN)
def project_role_revoke(db: Session, user: WebUser) -> Any:
    """Take a web user's role in a project away."""
    target = core._web_user(db, _form_int("user_id"))
    project = core.get_project(db, _form_int("project_id"))
    if not access.revoke_project_role(db, target, project.id, actor=core.actor(user)):
        raise NotFoundError(f"{target.username} has no role in {project.name}.")
    db.commit()
    return _users_page(db, user, message=f"{target.username} no longer has {project.name}.")


ROLE_VALUES = {r.value for r in Role}
