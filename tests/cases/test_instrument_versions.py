"""A case's trend across instrument versions, through the version map the instrument declares.

The shipped instrument (1.0.0) declares how its 0.9.0 pilot's subdomains map onto its own
(``version_map`` in instruments/aso/instrument.json): the pilot's one "Legal case" subdomain
split into LEG1 and LEG2, "Housing" folded into PHY3, and the three safety subdomains renamed.
Here a pilot form version (the 1.0.0 report with its subdomains turned back into the pilot's)
sits beside the current one in the project, as when devices still hold last year's form; an
intake made with it and a follow-up made with the current form must form one comparable trend.
"""

from __future__ import annotations

import base64
import copy
import csv
import datetime as dt
import io
import uuid

from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import select

from server.models import FormVersion
from server.models_cases import Assessment, Case
from tests.cases.fieldwork import encrypted_upload, expected_scores, instance_xml, ratings_for

#: the pilot's subdomain ids, as instrument.json's version_map declares them (LEG1 and LEG2
#: were one subdomain, LEGCASE)
PILOT_ID = {"SAF1": "SAF_NOW", "SAF2": "SAF_THREAT", "SAF3": "SAF_SELF", "LEG1": "LEGCASE",
            "PHY3": "HOUSING"}  # fmt: skip


def _pilot_report(current: dict) -> dict:
    old = copy.deepcopy(current)
    old["version"] = "2025-pilot"
    old["instrument"]["version"] = "0.9.0"
    old["version_map"] = {}
    for d in old["domains"]:
        prefix = d["rating_refs"][0].rsplit("/", 1)[0]
        d["subdomains"] = [PILOT_ID.get(s, s) for s in d["subdomains"] if s != "LEG2"]
        d["rating_refs"] = [f"{prefix}/{s}" for s in d["subdomains"]]
    return old


def test_trend__pilot_intake_and_current_follow_up__scored_on_one_basis(
    field, reconcile, admin_api, db_session
):
    """Should store the pilot assessment's ratings under the current subdomain ids and score
    them with the current scorer (LEG: the pilot's one legal rating counts for both LEG1 and
    LEG2), while checking the device's own pilot scores against the pilot's rules."""
    current = db_session.scalar(select(FormVersion).where(FormVersion.report.is_not(None)))
    pilot = _pilot_report(field.report)
    db_session.add(FormVersion(
        form_id=current.form_id, version=pilot["version"], title=current.title,
        xml=b"<pilot/>", md5="0" * 32, key_fingerprint=current.key_fingerprint,
        public_key_b64=current.public_key_b64, report=pilot,
        published_at=current.published_at - dt.timedelta(days=365),
    ))  # fmt: skip
    db_session.commit()
    public = load_der_public_key(base64.b64decode(current.public_key_b64))
    ent = str(uuid.uuid4())

    # intake on a tablet still holding the pilot form
    pilot_ratings = ratings_for(pilot, {"SAF": "2", "LEG": "3", "PHY": "2", "MEN": "2",
                                        "ECO": "2", "SOC": "2"})  # fmt: skip
    pilot_ratings |= {"LEGCASE": "1", "HOUSING": "4"}
    iid, xml = instance_xml(pilot, case_code="KE-0750", point="intake", date="2026-01-10",
                            ratings=pilot_ratings, entity_id=ent)  # fmt: skip
    field.post(*encrypted_upload(pilot, public, iid, xml))
    # the 6-month review with the current form
    six = ratings_for(field.report, "3")
    field.send(case_code="KE-0750", point="six_month", date="2026-07-10", entity_id=ent,
               ratings=six)  # fmt: skip
    reconcile()

    intake = db_session.scalar(select(Assessment).where(Assessment.instance_id == iid))
    assert intake.instrument_version == "0.9.0"
    assert "LEGCASE" not in intake.ratings and "HOUSING" not in intake.ratings
    assert intake.ratings["LEG1"] == intake.ratings["LEG2"] == "1"
    assert intake.ratings["PHY3"] == "4" and intake.ratings["SAF1"] == "2"
    # current basis: LEG = mean(LEG1=1, LEG2=1, LEG3=3, LEG4=3); the pilot's own: mean(1, 3, 3)
    back = {pilot_id: now for now, pilot_id in PILOT_ID.items()}
    mapped = {back.get(s, s): v for s, v in pilot_ratings.items()} | {"LEG2": "1"}
    assert intake.scores == expected_scores(field.report, mapped)
    assert intake.scores["LEG"] == 2.0
    assert expected_scores(pilot, pilot_ratings)["LEG"] != 2.0
    assert not [f for f in intake.flags if f.startswith("score_mismatch")]

    case = db_session.scalar(select(Case).where(Case.case_code == "KE-0750"))
    detail = admin_api("GET", f"/cases/{case.id}").get_json()
    legal = [point[1] for point in detail["series"]["LEG"]]
    assert legal == [2.0, expected_scores(field.report, six)["LEG"]]
    assert detail["change_since_intake"]["LEG"] == legal[1] - legal[0]


def test_wide_export__an_unmapped_older_version_first__every_column_kept(
    field, reconcile, runner, db_session, tmp_path
):
    """Should give every subdomain of every form version its column in the wide export, even
    when the first row exported comes from a version the current one declares no map for."""
    current = db_session.scalar(select(FormVersion).where(FormVersion.report.is_not(None)))
    older = _pilot_report(field.report) | {"version": "2024-trial"}
    older["instrument"] = {**older["instrument"], "version": "0.8.0"}  # not in version_map
    db_session.add(FormVersion(
        form_id=current.form_id, version=older["version"], title=current.title,
        xml=b"<trial/>", md5="1" * 32, key_fingerprint=current.key_fingerprint,
        public_key_b64=current.public_key_b64, report=older,
        published_at=current.published_at - dt.timedelta(days=700),
    ))  # fmt: skip
    db_session.commit()
    public = load_der_public_key(base64.b64decode(current.public_key_b64))
    iid, xml = instance_xml(older, case_code="KE-0001", point="intake", date="2025-01-10",
                            ratings=ratings_for(older, "2") | {"LEGCASE": "1"},
                            entity_id=str(uuid.uuid4()))  # fmt: skip
    field.post(*encrypted_upload(older, public, iid, xml))
    now = ratings_for(field.report, "3") | {"LEG2": "4"}
    field.send(case_code="KE-0002", point="intake", date="2026-01-10", ratings=now,
               entity_id=str(uuid.uuid4()))  # fmt: skip
    reconcile()

    out = tmp_path / "wide.csv"
    result = runner.invoke("export", "cases", "--project", str(field.project_id), "--format",
                           "csv", "--wide", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["case_code"] for r in rows] == ["KE-0001", "KE-0002"]
    assert rows[0]["rating_LEGCASE"] == "1" and rows[0]["rating_LEG2"] == ""
    assert rows[1]["rating_LEG2"] == "4" and rows[1]["rating_LEGCASE"] == ""
    assert float(rows[1]["score_LEG"]) == expected_scores(field.report, now)["LEG"]
