"""What the case export's cells hold when an M&E officer opens it: in Excel or LibreOffice
(XLSX read back with openpyxl), and in pandas, R or Stata (CSV read back with the csv module).

Dates are dates and scores and ratings numbers in XLSX (sortable, filterable, averaged, never
"number stored as text"), a missing score is an empty cell in both formats, and non-ASCII case
codes and offices come out as sent (CSV: UTF-8 without a byte-order mark, as ODK Central's
exports; Excel users take the XLSX).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

import pytest
from openpyxl import load_workbook

from tests.cases.fieldwork import expected_scores, ratings_for

CODE = "KE-ÑØ-0042"  # a case code a device may send (non-ASCII)


def _case(field) -> dict[str, str]:
    """One case: an intake with too few ratings for any score, a six-month follow-up scored."""
    r = field.report
    ent = str(uuid.uuid4())
    field.send(
        case_code=CODE,
        point="intake",
        date="2026-01-05",
        ratings=ratings_for(r, "99"),
        entity_id=ent,
    )  # fmt: skip  "not assessed": no score
    later = ratings_for(r, "3") | {r["domains"][0]["subdomains"][0]: "2"}
    field.send(case_code=CODE, point="six_month", date="2026-07-05", ratings=later,
               entity_id=ent)  # fmt: skip
    return later


def _sheet(admin_api, wide: bool) -> list[list]:
    resp = admin_api("GET", "/export?format=xlsx" + ("&wide=1" if wide else ""))
    assert resp.status_code == 200
    data = resp.data
    resp.close()
    book = load_workbook(io.BytesIO(data))  # not read-only: cell types as Excel sees them
    return [list(row) for row in book.worksheets[0].iter_rows()]


def test_export_xlsx_long__dates_are_dates_scores_numbers_missing_scores_empty(
    field, reconcile, admin_api
):
    """Should write assessment dates as date cells and scores as numbers, and leave a score the
    rules could not compute as an empty cell (not text, not an empty string)."""
    later = _case(field)
    reconcile()
    rows = _sheet(admin_api, wide=False)
    header = [c.value for c in rows[0]]
    col = {name: header.index(name) for name in header}
    data = rows[1:]
    assert len(data) == 2 * len(field.report["domains"])
    for row in data:
        date = row[col["assessment_date"]]
        assert date.is_date and date.value.date() in {dt.date(2026, 1, 5), dt.date(2026, 7, 5)}
        assert row[col["case_code"]].value == CODE
    intake = [r for r in data if r[col["collection_point"]].value == "intake"]
    for row in intake:
        score = row[col["score"]]
        assert score.value is None and score.data_type == "n", (score.value, score.data_type)
    want = expected_scores(field.report, later)
    for row in data:
        if row[col["collection_point"]].value == "six_month":
            score = row[col["score"]]
            assert score.data_type == "n"
            assert score.value == pytest.approx(want[row[col["domain"]].value], abs=1e-4)


def test_export_xlsx_wide__ratings_are_numbers(field, reconcile, admin_api):
    """Should write subdomain ratings (1-4, and the 88/99 codes) as numbers in the wide XLSX,
    as they read in the CSV: text digits are "numbers stored as text" that AVERAGE skips."""
    later = _case(field)
    reconcile()
    rows = _sheet(admin_api, wide=True)
    header = [c.value for c in rows[0]]
    six = next(r for r in rows[1:] if r[header.index("collection_point")].value == "six_month")
    intake = next(r for r in rows[1:] if r[header.index("collection_point")].value == "intake")
    for sub, value in later.items():
        cell = six[header.index(f"rating_{sub}")]
        assert (cell.value, cell.data_type) == (int(value), "n")
        assert intake[header.index(f"rating_{sub}")].value == 99
    assert intake[header.index("assessment_date")].is_date
    for d in field.report["domains"]:
        cell = intake[header.index(f"score_{d['id']}")]
        assert cell.value is None and cell.data_type == "n"


def test_export_csv__non_ascii_codes_utf8_and_missing_scores_empty(field, reconcile, admin_api):
    """Should send UTF-8 without a byte-order mark (the header starts ``case_code``, as
    scripts key on it) with the case code as sent, ISO dates, and an empty field, not "None"
    or "nan", for a score the rules could not compute."""
    _case(field)
    reconcile()
    for wide in (False, True):
        resp = admin_api("GET", "/export?format=csv" + ("&wide=1" if wide else ""))
        body = resp.get_data()
        resp.close()
        assert body.startswith(b"case_code,")
        rows = list(csv.DictReader(io.StringIO(body.decode("utf-8"))))
        assert {r["case_code"] for r in rows} == {CODE}
        assert {r["assessment_date"] for r in rows} == {"2026-01-05", "2026-07-05"}
        intake = [r for r in rows if r["collection_point"] == "intake"]
        scores = (
            [r["score"] for r in intake]
            if not wide
            else [v for r in intake for k, v in r.items() if k.startswith("score_")]
        )
        assert scores and set(scores) == {""}, scores
