"""Exports as an admin runs them, and several reconciliation workers at once."""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
import uuid

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from server.db import write_lock
from server.models import Submission
from server.models_cases import Assessment
from server.services.reconcile import reconcile_pending
from tests.cases.fieldwork import expected_scores, ratings_for


def _season(field, n_cases: int = 3) -> dict[str, dict]:
    r = field.report
    sent = {}
    for i in range(n_cases):
        ent = str(uuid.uuid4())
        code = f"KE-{100 + i:04d}"
        first = ratings_for(r, str(1 + i % 3))
        later = ratings_for(r, str(2 + i % 3))
        field.send(
            case_code=code,
            point="intake",
            date="2026-01-0" + str(i + 1),
            ratings=first,
            entity_id=ent,
        )
        field.send(
            case_code=code,
            point="six_month",
            date="2026-07-0" + str(i + 1),
            ratings=later,
            entity_id=ent,
        )
        sent[code] = {"intake": expected_scores(r, first), "six_month": expected_scores(r, later)}
    return sent


def test_export_cases__long_wide_xlsx__rows_and_scores(field, runner, tmp_path):
    """Should export one row per assessment x domain (long) and per assessment (wide)."""
    sent = _season(field)
    assert runner.invoke("reconcile", "--project", str(field.project_id), "--passphrase-file",
                         str(field.passphrase_file), "--once").exit_code == 0  # fmt: skip
    long_path = tmp_path / "long.csv"
    result = runner.invoke(
        "export", "cases", "--project", str(field.project_id), "--out", str(long_path)
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(long_path.read_text())))
    assert len(rows) == 3 * 2 * 6
    assert {
        "case_code",
        "instance_id",
        "assessment_date",
        "collection_point",
        "domain",
        "score",
    } <= set(rows[0])
    for row in rows:
        want = sent[row["case_code"]][row["collection_point"]][row["domain"]]
        assert float(row["score"]) == pytest.approx(want)
    wide_path = tmp_path / "wide.csv"
    runner.invoke(
        "export", "cases", "--project", str(field.project_id), "--wide", "--out", str(wide_path)
    )
    wide = list(csv.DictReader(io.StringIO(wide_path.read_text())))
    assert len(wide) == 6 and "score_SAF" in wide[0] and "rating_SAF1" in wide[0]
    xlsx_path = tmp_path / "cases.xlsx"
    runner.invoke(
        "export",
        "cases",
        "--project",
        str(field.project_id),
        "--format",
        "xlsx",
        "--out",
        str(xlsx_path),
    )
    workbook = load_workbook(xlsx_path, read_only=True)
    try:
        assert sum(1 for _ in workbook.active.iter_rows()) == 1 + 36
    finally:
        workbook.close()


def test_reconcile__two_workers_at_once__every_submission_exactly_once(field, app, db_session):
    """Should let two workers run at once without double-processing.

    PostgreSQL: rows are claimed with FOR UPDATE SKIP LOCKED. SQLite: writers serialise, and the
    per-submission idempotency check keeps a second claim of a row from adding anything.
    """
    _season(field, n_cases=5)
    sessionmaker = field.unlock()
    results, errors = [], []

    def work():
        try:
            results.append(
                reconcile_pending(
                    sessionmaker,
                    field.project_id,
                    config=app.config,
                    batch=2,
                    write_lock=write_lock(app),
                )
            )
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sum(r.processed for r in results) == 10
    db_session.expire_all()
    assert db_session.scalar(select(func.count(Assessment.id))) == 10
    statuses = db_session.scalars(select(Submission.status)).all()
    assert statuses == ["decrypted"] * 10


def test_export_xlsx__more_rows_than_a_sheet_holds__continues_on_new_sheets(
    field, runner, app, monkeypatch
):
    """Should split an XLSX past Excel's row limit across sheets (each with the header), never
    truncate; the rows in order are the CSV's, and count_rows predicts the count."""
    from server.services import export

    _season(field)
    assert runner.invoke("reconcile", "--project", str(field.project_id), "--passphrase-file",
                         str(field.passphrase_file), "--once").exit_code == 0  # fmt: skip
    monkeypatch.setattr(export, "XLSX_MAX_ROWS", 10)  # header + 9 data rows per sheet
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        for wide, want in ((False, 36), (True, 6)):
            assert export.count_rows(s, field.project_id, wide=wide) == want
            csv_out, xlsx_out = io.BytesIO(), io.BytesIO()
            assert export.export_cases(s, field.project_id, csv_out, wide=wide) == want
            n = export.export_cases(s, field.project_id, xlsx_out, fmt="xlsx", wide=wide)
            assert n == want
            workbook = load_workbook(xlsx_out, read_only=True)
            sheets = [list(ws.iter_rows(values_only=True)) for ws in workbook.worksheets]
            workbook.close()
            names = ["assessments"] + [f"assessments ({i})" for i in range(2, len(sheets) + 1)]
            assert workbook.sheetnames == names and len(sheets) == -(-want // 9)
            header = sheets[0][0]
            assert all(len(rows) <= 10 and rows[0] == header for rows in sheets)
            # a read-only sheet leaves out the empty cells that end a row
            data = [row + ("",) * (len(header) - len(row)) for rows in sheets for row in rows[1:]]
            expected = list(csv.reader(io.StringIO(csv_out.getvalue().decode())))
            assert list(header) == expected[0]
            assert [[_cell(v) for v in row] for row in data] == [
                [_cell(v) for v in row] for row in expected[1:]
            ]


def _cell(value):
    """A spreadsheet cell and a CSV field compared alike (Excel keeps 1.0 as the number 1; a
    date cell reads back as midnight of that day, the CSV has the ISO date)."""
    if value is None or value == "":
        return ""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


@pytest.mark.parametrize("wide", [False, True])
def test_export_csv__reconciliation_commits_after_the_count__count_and_rows_agree(
    field, reconcile, admin_api, wide, monkeypatch
):
    """Should send exactly the rows X-Row-Count announced (and the audit recorded) when a
    reconciliation commits new assessments between the count and the reading of the rows:
    both come from one snapshot."""
    from server.services import export

    _season(field, n_cases=2)
    reconcile()
    _season(field, n_cases=3)  # a third case's submissions wait to be reconciled...
    count_rows = export.count_rows

    def count_then_reconcile(*args, **kwargs):
        n = count_rows(*args, **kwargs)
        reconcile()  # ...and the worker commits them right after the count
        return n

    monkeypatch.setattr(export, "count_rows", count_then_reconcile)
    query = "/export?format=csv" + ("&wide=1" if wide else "")
    resp = admin_api("GET", query)
    assert resp.status_code == 200 and resp.is_streamed
    announced = int(resp.headers["X-Row-Count"])
    try:
        rows = list(csv.reader(io.StringIO(b"".join(resp.response).decode())))
    finally:
        resp.close()
    assert announced == (4 if wide else 4 * 6)  # 2 cases x 2 assessments (x 6 domains)
    assert len(rows) - 1 == announced  # the header, then exactly the announced rows
    monkeypatch.setattr(export, "count_rows", count_rows)
    later = admin_api("GET", query)  # the third case is there for the next download
    assert int(later.headers["X-Row-Count"]) == (6 if wide else 6 * 6)
    assert len(later.get_data().splitlines()) - 1 == int(later.headers["X-Row-Count"])
