"""The case export's columns as an analyst builds on them: the survivor's own rating beside
the case worker's score (and the gap the case page flags), the case's status and closing date,
and a wide header that is the same whether or not the project has assessments yet."""

from __future__ import annotations

import csv
import io
import uuid

from server.services.export import LONG_COLUMNS
from tests.cases.fieldwork import ratings_for


def _csv(admin_api, wide: bool) -> list[dict[str, str]]:
    resp = admin_api("GET", "/export?format=csv" + ("&wide=1" if wide else ""))
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    resp.close()
    return list(csv.DictReader(io.StringIO(text)))


def _header(admin_api, wide: bool) -> list[str]:
    resp = admin_api("GET", "/export?format=csv" + ("&wide=1" if wide else ""))
    text = resp.get_data(as_text=True)
    resp.close()
    return next(csv.reader(io.StringIO(text)))


def _closed_case(field) -> tuple[str, str]:
    """KE-0800: intake (all 2s) where the survivor rates safety 4 and legal 2, then closure."""
    r = field.report
    saf, leg = r["domains"][0]["id"], r["domains"][1]["id"]
    ent = str(uuid.uuid4())
    field.send(case_code="KE-0800", point="intake", date="2026-01-10",
               ratings=ratings_for(r, "2"), entity_id=ent,
               survivor_view={saf: "4", leg: "2"})  # fmt: skip
    field.send(case_code="KE-0800", point="closure", date="2026-09-10",
               ratings=ratings_for(r, "4"), entity_id=ent)  # fmt: skip
    return saf, leg


def test_export_long__survivor_rating_gap_and_case_status_columns(field, reconcile, admin_api):
    """Should put the survivor's own rating of each domain and whether it is a gap the case
    page flags beside the score, and the case's status and closing date on each row: without
    them an analyst cannot report on the survivor's perspective or on closed cases."""
    saf, leg = _closed_case(field)
    reconcile()
    detail = admin_api("GET", "/cases").get_json()["items"][0]
    assert detail["status"] == "closed"
    rows = _csv(admin_api, wide=False)
    intake = {r["domain"]: r for r in rows if r["collection_point"] == "intake"}
    assert (intake[saf]["survivor_rating"], intake[saf]["survivor_gap"]) == ("4", "1")
    assert (intake[leg]["survivor_rating"], intake[leg]["survivor_gap"]) == ("2", "0")
    other = next(d["id"] for d in field.report["domains"][2:])
    assert (intake[other]["survivor_rating"], intake[other]["survivor_gap"]) == ("", "")
    assert {(r["case_status"], r["case_closed_on"]) for r in rows} == {("closed", "2026-09-10")}


def test_export_wide__survivor_columns_and_case_status(field, reconcile, admin_api):
    """Should give the wide export a survivor rating and a gap column per domain, and the
    case's status and closing date."""
    saf, leg = _closed_case(field)
    reconcile()
    rows = _csv(admin_api, wide=True)
    intake = next(r for r in rows if r["collection_point"] == "intake")
    assert (intake[f"survivor_{saf}"], intake[f"survivor_gap_{saf}"]) == ("4", "1")
    assert (intake[f"survivor_{leg}"], intake[f"survivor_gap_{leg}"]) == ("2", "0")
    assert all((r["case_status"], r["case_closed_on"]) == ("closed", "2026-09-10") for r in rows)


def test_export_wide__no_assessment_yet__same_header_as_later(field, reconcile, admin_api):
    """Should give the wide export of a project with a published form but no assessment yet
    the header it will have once assessments arrive (a column per domain score and subdomain
    rating), so a template or a script built on the first download keeps working."""
    empty = _header(admin_api, wide=True)
    _closed_case(field)
    reconcile()
    assert empty == _header(admin_api, wide=True)
    assert _header(admin_api, wide=False) == LONG_COLUMNS
