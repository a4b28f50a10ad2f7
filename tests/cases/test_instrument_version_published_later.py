"""A case's trend when the current instrument version is published after its intake was
reconciled: the pilot intake must be put on the current basis (through the declared version
map) as soon as follow-ups of the current form join the case."""

from __future__ import annotations

import base64
import datetime as dt
import uuid

from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import select, update

from server.models import FormVersion
from server.models_cases import Case
from tests.cases.fieldwork import encrypted_upload, expected_scores, instance_xml, ratings_for
from tests.cases.test_instrument_versions import PILOT_ID, _pilot_report


def test_trend__pilot_intake_reconciled_before_the_current_version__rescored_on_its_basis(
    field, reconcile, admin_api, db_session
):
    """Should compare the 6-month review with the pilot intake on the current basis (LEG: the
    pilot's one legal rating counts for LEG1 and LEG2), also when the intake was reconciled
    while the pilot was still the project's newest form version."""
    current = db_session.scalar(select(FormVersion).where(FormVersion.report.is_not(None)))
    pilot = _pilot_report(field.report)
    # the pilot is the newest version while the intake is reconciled...
    db_session.add(FormVersion(
        form_id=current.form_id, version=pilot["version"], title=current.title,
        xml=b"<pilot/>", md5="0" * 32, key_fingerprint=current.key_fingerprint,
        public_key_b64=current.public_key_b64, report=pilot,
        published_at=current.published_at + dt.timedelta(days=1),
    ))  # fmt: skip
    db_session.commit()
    public = load_der_public_key(base64.b64decode(current.public_key_b64))
    ent = str(uuid.uuid4())
    pilot_ratings = ratings_for(pilot, "3") | {"LEGCASE": "1", "HOUSING": "4"}
    iid, xml = instance_xml(pilot, case_code="KE-0850", point="intake", date="2026-01-10",
                            ratings=pilot_ratings, entity_id=ent)  # fmt: skip
    field.post(*encrypted_upload(pilot, public, iid, xml))
    reconcile()
    # ...then the current instrument is published (it declares the map from the pilot)
    db_session.execute(
        update(FormVersion)
        .where(FormVersion.id == current.id)
        .values(published_at=current.published_at + dt.timedelta(days=2))
    )
    db_session.commit()
    six = ratings_for(field.report, "3")
    field.send(case_code="KE-0850", point="six_month", date="2026-07-10", entity_id=ent,
               ratings=six)  # fmt: skip
    reconcile()

    back = {pilot_id: now for now, pilot_id in PILOT_ID.items()}
    mapped = {back.get(s, s): v for s, v in pilot_ratings.items()} | {"LEG2": "1"}
    intake_now = expected_scores(field.report, mapped)
    assert intake_now["LEG"] == 2.0  # mean(1, 1, 3, 3); the pilot's own: mean(1, 3, 3)
    assert expected_scores(pilot, pilot_ratings)["LEG"] != 2.0
    case = db_session.scalar(select(Case).where(Case.case_code == "KE-0850"))
    detail = admin_api("GET", f"/cases/{case.id}").get_json()
    want_six = expected_scores(field.report, six)
    assert [p[1] for p in detail["series"]["LEG"]] == [2.0, want_six["LEG"]]
    assert detail["intake_scores"] == intake_now
    assert detail["change_since_intake"]["LEG"] == want_six["LEG"] - 2.0
    assert detail["change_since_intake"]["PHY"] == want_six["PHY"] - intake_now["PHY"]
