"""Forms and their published versions, attachments and what Collect downloads."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from server import hotcache
from server.blobs import BlobStore, new_key
from server.compat import fingerprint_of_b64
from server.errors import NotFoundError, PublishError
from server.models import AppUser, Form, FormAttachment, FormState, FormVersion, Project
from server.services import audit

_MEDIA_RE = re.compile(r"jr://(?:file|file-csv|images|audio|video)/([^\"'<>\s]+)")
_CONTENT_TYPES = {
    ".csv": "text/csv",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".mp3": "audio/mpeg",
    ".xml": "text/xml",
    ".geojson": "application/geo+json",
}


@dataclass(slots=True)
class XFormMeta:
    """What the server needs to know about an XForm (read with a hardened parser)."""

    form_id: str
    version: str
    title: str
    public_key_b64: str | None
    submission_url: str | None
    datasets_written: set[str] = field(default_factory=set)  # entity datasets the form creates
    media: list[str] = field(default_factory=list)  # jr:// file names it references
    # the primary instance has meta/instanceID (submissions without one are refused)
    has_instance_id: bool = True


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_xform_meta(xml: bytes) -> XFormMeta:
    """Form id, version, title, key, submission URL, entity datasets and media of an XForm."""
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    try:
        root = ElementTree.fromstring(xml, forbid_dtd=True)
    except DefusedXmlException as err:
        raise PublishError(
            "The form uses XML features this server refuses (DTD/entities)."
        ) from err
    except Exception as err:
        raise PublishError("The form file is not valid XML.") from err
    title = ""
    model = None
    for el in root.iter():
        name = _local(el.tag)
        if name == "title" and not title:
            title = (el.text or "").strip()
        elif name == "model" and model is None:
            model = el
    if model is None:
        raise PublishError("The file is not an XForm: it has no <model>.")
    primary = None
    submission = None
    for child in model:
        name = _local(child.tag)
        if name == "instance" and primary is None:
            primary = next(iter(child), None)
        elif name == "submission" and submission is None:
            submission = child
    if primary is None:
        raise PublishError("The XForm has no primary instance.")
    form_id = (primary.get("id") or "").strip()
    if not form_id:
        raise PublishError("The XForm's primary instance has no id attribute.")
    attrs = {_local(k): v for k, v in primary.attrib.items()}
    sub_attrs = {
        _local(k): v for k, v in (submission.attrib if submission is not None else {}).items()
    }
    datasets = {
        el.get("dataset")
        for el in primary.iter()
        if _local(el.tag) == "entity" and el.get("dataset")
    }
    meta = next((el for el in primary if _local(el.tag) == "meta"), None)
    has_instance_id = meta is not None and any(_local(el.tag) == "instanceID" for el in meta)
    text = xml.decode("utf-8", errors="replace")
    media = sorted({m.rsplit("/", 1)[-1] for m in _MEDIA_RE.findall(text)})
    return XFormMeta(
        form_id=form_id,
        version=(attrs.get("version") or "").strip(),
        title=title or form_id,
        public_key_b64=(sub_attrs.get("base64RsaPublicKey") or "").strip() or None,
        submission_url=(sub_attrs.get("action") or "").strip() or None,
        datasets_written={d for d in datasets if d},
        media=media,
        has_instance_id=has_instance_id,
    )


def _project_datasets(session: Session, project: Project) -> set[str]:
    """Datasets any form of the project writes (from the stored report or the XForm)."""
    out: set[str] = set()
    versions = session.scalars(
        select(FormVersion).join(Form).where(Form.project_id == project.id)
    ).all()
    for v in versions:
        out |= _report_datasets(v.report)
        out |= parse_xform_meta(v.xml).datasets_written
    return out


def _report_datasets(report: dict[str, Any] | None) -> set[str]:
    if not report:
        return set()
    out = set()
    ent = report.get("entity_list") or {}
    if isinstance(ent, dict) and ent.get("dataset"):
        out.add(ent["dataset"])
    for key in ("entities", "datasets"):
        for item in report.get(key) or []:
            if isinstance(item, str):
                out.add(item)
            elif isinstance(item, dict) and item.get("dataset"):
                out.add(item["dataset"])
    return out


def load_report(xml: bytes, data: bytes, name: str) -> dict[str, Any]:
    """The compiler's report (``<form_id>.report.json``, file ``name``) of the XForm ``xml``.

    :raises PublishError: not a report, or the report of another form or version
    """
    try:
        report = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise PublishError(
            f"{name} is not a report of kintsugi compile: it is not JSON. Give the "
            "<form_id>.report.json that kintsugi compile wrote beside the form."
        ) from err
    if not isinstance(report, dict) or not isinstance(report.get("form_id"), str):
        raise PublishError(
            f"{name} is not a report of kintsugi compile: it names no form_id. Give the "
            "<form_id>.report.json that kintsugi compile wrote beside the form."
        )
    _check_report(parse_xform_meta(xml), report)
    return report


def _check_report(meta: XFormMeta, report: dict[str, Any]) -> None:
    """A report scores and lists the cases of exactly the form it was compiled with."""
    theirs = (report.get("form_id"), report.get("version"))
    if theirs != (meta.form_id, meta.version):
        raise PublishError(
            f"The report is for form {theirs[0]!r} version {theirs[1]!r}, not for form "
            f"{meta.form_id!r} version {meta.version!r}. Publish the form with the "
            f"{meta.form_id}.report.json that kintsugi compile wrote beside it."
        )


def publish_form(
    session: Session,
    store: BlobStore,
    project: Project,
    xml: bytes,
    *,
    report: dict[str, Any] | None = None,
    attachments: dict[str, bytes] | None = None,
    actor: str = "cli",
) -> tuple[FormVersion, bool]:
    """Publish ``xml`` to ``project``; returns (version, created).

    Re-publishing identical bytes is a no-op; the same version with other bytes is refused
    (devices keep drafts per version: bytes must never change under a version, openrosa.md §3.2).
    """
    meta = parse_xform_meta(xml)
    if not meta.has_instance_id:
        # Collect would fill and send it, and every submission would be refused (400).
        raise PublishError(
            f"Form {meta.form_id!r} has no meta/instanceID, so every submission Collect sends "
            "for it would be refused. In the XLSForm, remove the omit_instanceID setting from "
            "the settings sheet; in a hand-written XForm, put <instanceID/> in the <meta> "
            "block of the primary instance, with a bind that fills it: "
            'jr:preload="uid".'
        )
    active = project.active_key
    if project.encrypted:
        if meta.public_key_b64 is None:
            raise PublishError(
                f"Project {project.name!r} is encrypted but form {meta.form_id!r} carries no "
                "base64RsaPublicKey; compile it for this project (kintsugi forms publish "
                "--context ...)."
            )
        if active is not None and meta.public_key_b64 != active.public_key_b64:
            context = (report or {}).get("context") or "NAME"
            raise PublishError(
                f"Form {meta.form_id!r} is encrypted to another key "
                f"({fingerprint_of_b64(meta.public_key_b64)}) than project {project.name!r}'s "
                f"current key ({active.fingerprint}), so the server could not read what phones "
                "send. Compile it for this project's key and publish it in one step: "
                f"kintsugi forms publish --project {project.id} --context {context}"
            )
    form = session.scalar(
        select(Form).where(Form.project_id == project.id, Form.xml_form_id == meta.form_id)
    )
    if form is None:
        form = Form(project=project, xml_form_id=meta.form_id, title=meta.title)
        session.add(form)
        session.flush()
    existing = session.scalar(
        select(FormVersion).where(
            FormVersion.form_id == form.id, FormVersion.version == meta.version
        )
    )
    md5 = hashlib.md5(xml, usedforsecurity=False).hexdigest()
    if existing is not None:
        if existing.md5 == md5:
            return existing, False
        raise PublishError(
            f"Form {meta.form_id!r} version {meta.version!r} is already published with different "
            "content. Change the version before publishing again."
        )
    version = FormVersion(
        form=form,
        version=meta.version,
        title=meta.title,
        xml=xml,
        md5=md5,
        public_key_b64=meta.public_key_b64,
        key_fingerprint=fingerprint_of_b64(meta.public_key_b64) if meta.public_key_b64 else None,
        submission_url=meta.submission_url,
        report=report,
    )
    form.title = meta.title
    session.add(version)
    session.flush()
    datasets = _project_datasets(session, project) | _report_datasets(report)
    given = dict(attachments or {})
    for name in sorted(set(meta.media) | set(given)):
        if "/" in name or "\\" in name or name.startswith("."):
            raise PublishError(f"Attachment name {name!r} is not a plain file name.")
        stem, _, ext = name.rpartition(".")
        att = FormAttachment(
            form_version=version,
            name=name,
            content_type=_CONTENT_TYPES.get("." + ext.lower(), "application/octet-stream"),
        )
        # An entity list is served from the entities table even when the compiler ships a
        # header-only template under the same name (Collect must get live cases).
        if ext.lower() == "csv" and stem in datasets:
            att.kind = "entityList"
            att.dataset = stem
        elif name in given:
            key = new_key("form-media")
            size, _sha = store.put(key, given[name])
            att.blob_key = key
            att.size = size
            att.md5 = hashlib.md5(given[name], usedforsecurity=False).hexdigest()
        session.add(att)
    session.flush()
    audit.record(
        session,
        actor,
        "form.publish",
        f"form:{form.id}",
        xml_form_id=meta.form_id,
        version=meta.version,
        encrypted=version.encrypted,
    )
    return version, True


def set_form_state(session: Session, form: Form, state: str, *, actor: str = "cli") -> None:
    """Open, close or set a form to closing."""
    FormState(state)  # validates
    form.state = state
    audit.record(session, actor, "form.state", f"form:{form.id}", state=state)
    hotcache.invalidate_on_commit(session)


def visible_forms(session: Session, project: Project, app_user: AppUser | None) -> list[Form]:
    """Open forms of the project the caller may see (formList)."""
    forms = session.scalars(
        select(Form)
        .where(Form.project_id == project.id, Form.state == FormState.OPEN.value)
        .options(selectinload(Form.versions).selectinload(FormVersion.attachments))
        .order_by(Form.xml_form_id)
    ).all()
    return [
        f
        for f in forms
        if f.versions and (app_user is None or app_user.may_use_form(f.xml_form_id))
    ]


def get_form(
    session: Session, project: Project, xml_form_id: str, app_user: AppUser | None
) -> Form:
    """A form of the project the caller may use, or NotFoundError."""
    form = session.scalar(
        select(Form).where(Form.project_id == project.id, Form.xml_form_id == xml_form_id)
    )
    if (
        form is None
        or not form.versions
        or (app_user is not None and not app_user.may_use_form(xml_form_id))
    ):
        raise NotFoundError(f"Form {xml_form_id!r} is not on this server.")
    return form


def get_version(form: Form, md5: str | None = None) -> FormVersion:
    """The version with this md5 (every version stays downloadable), else the current one."""
    if md5:
        for v in form.versions:
            if v.md5 == md5:
                return v
        raise NotFoundError("That version of the form is not on this server.")
    current = form.current_version
    if current is None:
        raise NotFoundError("The form has no published version.")
    return current


def caseload_choices(session: Session, project_id: int) -> dict[str, list[str]]:
    """The offices and casework types the project's published forms offer (the values a
    device can send), in first-published order: the caseload page's filter choices."""
    reports = session.scalars(
        select(FormVersion.report)
        .join(Form, Form.id == FormVersion.form_id)
        .where(Form.project_id == project_id, FormVersion.report.is_not(None))
        .order_by(FormVersion.id)
    )
    choices: dict[str, list[str]] = {"office": [], "casework_type": []}
    for report in reports:
        for key, field_name in (("offices", "office"), ("casework_types", "casework_type")):
            for value in (report or {}).get(key) or []:
                if value not in choices[field_name]:
                    choices[field_name].append(value)
    return choices
