"""The ``cases`` entity list as Collect downloads it after reconciliation (OpenRosa §4, §11)."""

from __future__ import annotations

import csv
import io

from tests.cases.fieldwork import expected_scores, ratings_for

OPEN_CASE = "3a9d1c7e-5b2f-4e8a-9c1d-7f6e5d4c3b2a"
CLOSED_CASE = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"


def _cases_csv(field) -> tuple[list[dict[str, str]], str]:
    resp = field.collect.get(
        f"{field.collect.base}/forms/{field.report['form_id']}/attachments/cases.csv"
    )
    assert resp.status_code == 200, resp.data
    return list(csv.DictReader(io.StringIO(resp.get_data(as_text=True)))), resp.headers["ETag"]


def test_cases_csv__reconciled_and_closed_cases__open_listed_closed_removed(field, runner):
    """Should list open cases with their latest state and drop closed ones (integrity: deleted)."""
    r = field.report
    first, latest = ratings_for(r, "2"), ratings_for(r, "3")
    field.send(case_code="KE-0501", point="intake", date="2026-03-01", ratings=first,
               entity_id=OPEN_CASE)  # fmt: skip
    field.send(case_code="KE-0501", point="six_month", date="2026-09-01", ratings=latest,
               entity_id=OPEN_CASE)  # fmt: skip
    field.send(case_code="KE-0502", point="intake", date="2026-03-02", ratings=first,
               entity_id=CLOSED_CASE)  # fmt: skip
    _before, empty_etag = _cases_csv(field)
    args = ["--project", str(field.project_id), "--passphrase-file", str(field.passphrase_file)]
    assert runner.invoke("reconcile", *args, "--once").exit_code == 0
    rows, etag = _cases_csv(field)
    assert etag != empty_etag  # the list changed, so must its hash
    assert {row["name"] for row in rows} == {OPEN_CASE, CLOSED_CASE}

    field.send(case_code="KE-0502", point="closure", date="2027-03-02", ratings=latest,
               entity_id=CLOSED_CASE)  # fmt: skip
    assert runner.invoke("reconcile", *args, "--once").exit_code == 0
    rows, after_close = _cases_csv(field)
    assert after_close != etag
    assert [row["name"] for row in rows] == [OPEN_CASE]
    row = rows[0]
    assert row["label"] == "KE-0501" and int(row["__version"]) >= 2
    assert row["case_code"] == "KE-0501"
    assert row["last_assessment_date"] == "2026-09-01"
    assert row["last_collection_point"] == "six_month"
    for domain, score in expected_scores(r, latest).items():
        assert float(row[f"score_{domain}"]) == score

    resp = field.collect.get(
        f"{field.collect.base}/datasets/cases/integrity?id={OPEN_CASE},{CLOSED_CASE}"
    )
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert f'<entity id="{CLOSED_CASE}"><deleted>true</deleted>' in body
    assert f'<entity id="{OPEN_CASE}"><deleted>false</deleted>' in body

    # re-running reconciliation changes nothing the devices see
    assert runner.invoke("reconcile", *args, "--once").exit_code == 0
    assert _cases_csv(field)[1] == after_close
