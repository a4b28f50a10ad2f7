"""``kintsugi export cases --out FILE`` as an admin runs it on the server: the file it leaves
(complete or none at all, an earlier export kept until the new one is whole), the audit row
each export writes, and ``--out -`` for a pipe."""

from __future__ import annotations

import csv
import io
import os
import stat
import uuid

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from server.models import AuditLog
from tests.cases.fieldwork import ratings_for


def _cases(field, n: int = 3) -> None:
    for i in range(n):
        field.send(case_code=f"KE-{700 + i}", point="intake", date=f"2026-03-0{i + 1}",
                   ratings=ratings_for(field.report, "2"), entity_id=str(uuid.uuid4()))  # fmt: skip


def _export(runner, field, *args: str):
    return runner.invoke("export", "cases", "--project", str(field.project_id), *args)


def _fail_after_rows(monkeypatch, n: int, error: BaseException) -> None:
    """The database read breaks after ``n`` assessments (a dropped connection, Ctrl-C)."""
    from server.services import export

    rows = export._rows

    def breaking(*args, **kwargs):
        for i, row in enumerate(rows(*args, **kwargs)):  # left unclosed, as a real failure
            if i == n:
                raise error
            yield row

    monkeypatch.setattr(export, "_rows", breaking)
    monkeypatch.setattr(export, "_CHUNK", 1)  # what was read so far is already written out


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError("connection lost")])
@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_export_cli__interrupted__earlier_file_kept_no_partial_file(
    field, reconcile, runner, tmp_path, monkeypatch, fmt, error
):
    """Should leave the file an earlier export wrote as it was, and no half-written file under
    any name that looks complete, when an export stops midway: a truncated CSV opens without
    complaint and reads as a smaller caseload."""
    _cases(field)
    reconcile()
    out = tmp_path / f"cases.{fmt}"
    first = _export(runner, field, "--format", fmt, "--wide", "--out", str(out))
    assert first.exit_code == 0, first.output
    before = out.read_bytes()
    _cases(field, 2)  # more assessments since
    reconcile()
    _fail_after_rows(monkeypatch, 2, error)
    listed = sorted(tmp_path.iterdir())
    result = _export(runner, field, "--format", fmt, "--wide", "--out", str(out))
    assert result.exit_code != 0
    assert out.read_bytes() == before
    assert sorted(tmp_path.iterdir()) == listed, "a partial file was left behind"
    fresh = tmp_path / f"new.{fmt}"
    result = _export(runner, field, "--format", fmt, "--wide", "--out", str(fresh))
    assert result.exit_code != 0 and not fresh.exists()


def test_export_cli__each_export__audited_with_format_and_rows(
    field, reconcile, runner, tmp_path, db_session
):
    """Should write an audit row for each export to a file, as the web download does
    (``export.download``): who exported which project, in what shape, how many rows."""
    _cases(field)
    reconcile()
    out = tmp_path / "cases.xlsx"
    assert _export(runner, field, "--out", str(tmp_path / "c.csv")).exit_code == 0
    assert _export(runner, field, "--format", "xlsx", "--wide", "--out", str(out)).exit_code == 0
    db_session.expire_all()
    rows = db_session.scalars(
        select(AuditLog).where(AuditLog.action == "export.file").order_by(AuditLog.id)
    ).all()
    got = [
        (r.actor, r.target, r.details["fmt"], r.details["wide"], r.details["rows"]) for r in rows
    ]
    domains = len(field.report["domains"])
    target = f"project:{field.project_id}"
    assert got == [("cli", target, "csv", False, 3 * domains), ("cli", target, "xlsx", True, 3)]


def test_export_cli__out_dash__csv_on_stdout_no_file_named_dash(
    field, reconcile, runner, tmp_path, monkeypatch, db_session
):
    """Should write the CSV to standard output for ``--out -`` (``kintsugi export cases ...
    --out - | gpg -e ...``: never on disk in plaintext) with the summary on standard error,
    not create a file named "-" in the working directory."""
    _cases(field)
    reconcile()
    monkeypatch.chdir(tmp_path)
    result = _export(runner, field, "--wide", "--out", "-")
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "-").exists()
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["case_code"] for r in rows] == ["KE-700", "KE-701", "KE-702"]
    assert "wrote 3 rows" in result.stderr
    xlsx = _export(runner, field, "--format", "xlsx", "--out", "-")
    assert xlsx.exit_code == 0, xlsx.stderr
    book = load_workbook(io.BytesIO(xlsx.stdout_bytes), read_only=True)
    assert sum(1 for _ in book.worksheets[0].iter_rows()) == 1 + 3 * len(field.report["domains"])
    book.close()


def test_export_cli__existing_file__replaced_whole_and_owner_only(
    field, reconcile, runner, tmp_path
):
    """Should replace an existing file at ``--out`` by the new export, readable by the owner
    only whatever the old file's mode was."""
    _cases(field)
    reconcile()
    out = tmp_path / "cases.csv"
    out.write_text("old,contents\n" * 1000)
    out.chmod(0o644)
    result = _export(runner, field, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("case_code,") and "old,contents" not in out.read_text()
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
