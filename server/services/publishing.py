"""Compile instrument contexts for a project and publish them.

Every form published to an encrypted project carries the project's active public key. Forms
carry no submission URL (unless ``EMBED_SUBMISSION_URL`` is on) and are served exactly as
published: Collect then posts to ``<its server URL>/submission``, which for a device given a
QR code is its own app-user token URL. An action in the form would be stored on every
instance and used for ever, so a device given a new QR code could not send what it filled
before (see ``server.views.openrosa.form_xml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from server.blobs import BlobStore
from server.errors import PublishError
from server.models import FormVersion, Project
from server.services.forms import publish_form


def _as_json(report: Any) -> dict[str, Any] | None:
    """The compiler's report as plain JSON data (it is stored on the form version)."""
    import dataclasses
    import json

    if report is None:
        return None
    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        report = dataclasses.asdict(report)
    elif hasattr(report, "to_dict"):
        report = report.to_dict()
    data = json.loads(json.dumps(report, default=str))
    return data if isinstance(data, dict) else {"report": data}


def submission_url_for(config: dict[str, Any], project: Project) -> str | None:
    """The submission URL to embed in forms of ``project`` (None unless configured)."""
    if not config.get("EMBED_SUBMISSION_URL") or not config.get("BASE_URL"):
        return None
    return f"{config['BASE_URL'].rstrip('/')}/v1/projects/{project.id}/submission"


def list_contexts(instruments_root: Path) -> list[str]:
    """Context names the compiler knows under ``instruments_root``."""
    from form_compiler.api import list_contexts as _list

    return [str(c) for c in _list(instruments_root)]


def publish_context(
    session: Session,
    store: BlobStore,
    project: Project,
    config: dict[str, Any],
    context: str,
    *,
    actor: str = "cli",
) -> tuple[FormVersion, bool]:
    """Compile ``context`` for ``project`` (its key, our URL) and publish it with its report."""
    try:
        from form_compiler.api import compile_context
    except ImportError as err:
        raise PublishError("The form compiler is not installed in this checkout.") from err
    key = project.active_key
    if project.encrypted and key is None:
        raise PublishError(f"Project {project.name!r} is encrypted but has no active key.")
    compiled = compile_context(
        Path(config["INSTRUMENTS_DIR"]),
        context,
        public_key=key.public_key_b64 if key is not None else None,
        submission_url=submission_url_for(config, project),
    )
    xml = getattr(compiled, "xform", None)
    if xml is None:
        xml = compiled.xml
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    report = _as_json(getattr(compiled, "report", None))
    attachments = dict(getattr(compiled, "attachments", None) or {})
    attachments = {
        k: v.encode("utf-8") if isinstance(v, str) else v for k, v in attachments.items()
    }
    return publish_form(
        session, store, project, xml, report=report, attachments=attachments, actor=actor
    )
