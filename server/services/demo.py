"""Fictional demo survivors, produced through the real path.

Only ever used for the demo project that ``kintsugi setup --demo`` creates. Every case is
invented: codes ``DEMO-nnn``, made-up dates and ratings. Each assessment goes the way a real
one does: an instance of the compiled form, encrypted exactly as Collect encrypts it, uploaded
over HTTP to the OpenRosa endpoint with the demo device's token, then reconciled with the demo
project's key. A newcomer sees a caseload, case charts and review queues at once.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import random
import uuid
from typing import Any

from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import func, select

import server.db
from form_compiler.instance import build_instance
from server.db import write_lock
from server.models import Form, FormVersion, Project, Submission
from server.services import custody
from server.services.reconcile import ReconcileResult, reconcile_pending
from sync_protocol.crypto import encrypt_submission

__all__ = ["seed_demo"]

N_CASES = 36
STEPS = [("intake", 0), ("six_month", 182), ("annual", 547), ("closure", 912)]


def _answers(
    report: dict[str, Any],
    *,
    code: str,
    point: str,
    date: dt.date,
    case: str,
    casework_type: str,
    office: str,
    level: float,
    rng: random.Random,
) -> dict[str, str]:
    refs = report["refs"]
    answers = {
        refs["consent"]: "yes",
        refs["collection_point"]: point,
        refs["case_code"]: code,
        refs["assessment_date"]: date.isoformat(),
        refs["assessor"]: "DEMO-CW",
        refs["casework_type"]: casework_type,
        refs["office"]: office,
        refs["return_environment"]: "yes",
    }
    answers[refs["case_code_new"] if point == "intake" else refs["case"]] = (
        code if point == "intake" else case
    )
    for domain in report["domains"]:
        values = []
        for ref in domain["rating_refs"]:
            value = str(max(1, min(4, round(level + rng.uniform(-0.8, 0.8)))))
            if rng.random() < 0.05:
                value = "99"  # not assessed
            answers[ref] = value
            values.append(value)
        counted = [int(v) for v in values if v in domain["counted_values"]]
        score = sum(counted) / len(counted) if len(counted) >= domain["min_counted"] else None
        answers[domain["score_ref"]] = "" if score is None else repr(score)
        if rng.random() < 0.3:
            answers[domain["survivor_rating_ref"]] = str(
                max(1, min(4, round(level + rng.uniform(-1.5, 1.5))))
            )
    return answers


def _post(client: Any, path: str, manifest: bytes, files: dict[str, bytes]) -> int:
    data: dict[str, Any] = {"xml_submission_file": (io.BytesIO(manifest), "demo.xml", "text/xml")}
    for name, blob in files.items():
        data[name] = (io.BytesIO(blob), name, "application/octet-stream")
    resp = client.post(path, data=data, headers={"X-OpenRosa-Version": "1.0"})
    return resp.status_code


def seed_demo(
    app: Any, project_id: int, token: str, passphrase: bytes, *, today: dt.date | None = None
) -> ReconcileResult | None:
    """Seed the demo project once (returns None when it already has submissions)."""
    today = today or server.db.today()
    database = app.extensions["kintsugi.db"]
    with database.sessionmaker() as session:
        project = session.get(Project, project_id)
        if project is None or "fictional" not in project.name.lower():
            raise ValueError("demo data is only ever seeded into the demo project")
        already = session.scalar(
            select(func.count())
            .select_from(Submission)
            .join(Form, Form.id == Submission.form_id)
            .where(Form.project_id == project_id)
        )
        if already:
            return None
        versions = session.scalars(
            select(FormVersion)
            .join(Form, Form.id == FormVersion.form_id)
            .where(Form.project_id == project_id)
            .order_by(FormVersion.id)
        ).all()
        forms = [(v.report, v.public_key_b64) for v in versions if v.report and v.public_key_b64]
    if not forms:
        return None
    rng = random.Random(20261126)
    client = app.test_client()
    path = f"/v1/key/{token}/projects/{project_id}/submission"

    def send(report, key_b64, **kw) -> None:
        instance_id = f"uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        entity = kw.pop("entity")
        xml = build_instance(
            report, _answers(report, rng=rng, **kw), instance_id=instance_id, entity=entity
        )
        manifest, files = encrypt_submission(
            xml,
            load_der_public_key(base64.b64decode(key_b64)),
            form_id=report["form_id"],
            version=report["version"],
            instance_id=instance_id,
        )
        status = _post(client, path, manifest, files)
        if status != 201:
            raise RuntimeError(f"demo upload refused with HTTP {status}")

    conflict_sent = False
    for n in range(1, N_CASES + 1):
        report, key_b64 = forms[n % len(forms)]
        code = f"DEMO-{n:03d}"
        case = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        # a case keeps its casework type and office across its assessments
        kind = {
            "casework_type": rng.choice(report["casework_types"]),
            "office": rng.choice(report["offices"]) if report["offices"] else "HQ",
        }
        intake = today - dt.timedelta(days=rng.randint(40, 1000))
        level = rng.uniform(1.2, 2.2)
        # the device's version of the case entity: 1 after the intake, one more per follow-up
        branch, visit = str(uuid.UUID(int=rng.getrandbits(128), version=4)), 0
        for point, offset in STEPS:
            date = intake + dt.timedelta(days=offset)
            if date > today or (point == "closure" and level < 2.8):
                break
            if n % 4 == 1 and point != "intake":
                break  # the follow-up never happened: this case is overdue
            # one device per case, one offline branch (openrosa.md §11.4): the intake is
            # version 1 on the device, each follow-up is based on the one before it
            entity = {"dataset": "cases", "id": case, "create": "1" if point == "intake" else "0",
                      "update": "0" if point == "intake" else "1", "label": code,
                      "baseVersion": "" if point == "intake" else str(visit), "trunkVersion": "",
                      "branchId": branch}  # fmt: skip
            visit += 1
            send(
                report,
                key_b64,
                code=code,
                point=point,
                date=date,
                case=case,
                level=level,
                entity=entity,
                **kind,
            )
            level = min(4.0, level + rng.uniform(0.3, 0.9))
            if not conflict_sent and point == "six_month":
                # once in the caseload: a second, different 6-month assessment of the same day,
                # from another device that had the case list at version 1: a conflict to
                # review, and a parallel update of the case's entity
                conflict_sent = True
                other = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                send(
                    report,
                    key_b64,
                    code=code,
                    point=point,
                    date=date,
                    case=case,
                    level=1.5,
                    entity=entity | {"baseVersion": "1", "trunkVersion": "1", "branchId": other},
                    **kind,
                )
    # one follow-up for a case nobody registered: an orphan to review
    report, key_b64 = forms[0]
    stray = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    send(report, key_b64, code="DEMO-999", point="six_month", date=today - dt.timedelta(days=20), case=stray, level=2.0,
         casework_type=report["casework_types"][0], office=(report["offices"] or ["HQ"])[0],
         entity={"dataset": "cases", "id": stray, "create": "0", "update": "1", "baseVersion": "1", "label": "DEMO-999"})  # fmt: skip

    with database.sessionmaker() as session:
        custody.unlock_project(session, project_id, passphrase, actor="setup")
        session.commit()
    try:
        return reconcile_pending(
            database.sessionmaker,
            project_id,
            config=app.config,
            actor="setup",
            write_lock=write_lock(app),
        )
    finally:
        with database.sessionmaker() as session:
            custody.lock_project(session, project_id, actor="setup", everywhere=False)
            session.commit()
