"""Case exports: long (one row per assessment x domain) or wide (one row per assessment).

Rows are streamed from the database in chunks (server-side cursor on PostgreSQL) and written
as they come, so a million assessments export in bounded memory (measured: ``bench/export.py``).
XLSX uses openpyxl's write-only mode for the same reason. An Excel sheet holds at most
1,048,576 rows, so an XLSX export that has more continues on further sheets
("assessments (2)", ...), each with the header row: a million assessments in long format
(one row per domain) span several sheets, never a truncated one.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from server.models import Form, FormVersion
from server.models_cases import Assessment, AssessmentState, Case, day_rank_sql

__all__ = ["LONG_COLUMNS", "XLSX_MAX_ROWS", "count_rows", "export_cases", "iter_csv"]

#: the survivor's own rating of the domain beside the score, and whether the two are far
#: enough apart for the case page to flag a gap (1/0; empty where the survivor gave none)
LONG_COLUMNS = [
    "case_code", "instance_id", "assessment_date", "collection_point", "casework_type",
    "office", "instrument_version", "domain", "score", "state", "survivor_rating",
    "survivor_gap", "case_status", "case_closed_on",
]  # fmt: skip
#: the wide export's first columns; then score_<domain>, rating_<subdomain>,
#: survivor_<domain> and survivor_gap_<domain>
_BASE = [
    "case_code", "instance_id", "assessment_date", "collection_point", "casework_type",
    "office", "instrument_version", "state", "case_status", "case_closed_on",
]  # fmt: skip
_CHUNK = 1000
XLSX_MAX_ROWS = 1_048_576  # Excel's rows per sheet, the header row included
_SHEET = "assessments"


def _exported(stmt: Any, project_id: int) -> Any:
    return stmt.join(Case, Case.id == Assessment.case_id).where(
        Assessment.project_id == project_id, Assessment.state != AssessmentState.ORPHAN
    )


def _rows(session: Session, project_id: int) -> Iterator[Any]:
    # plain columns, not ORM entities: a million rows never build a million Assessment objects
    # (nor load device_scores or anything the export does not show)
    stmt = _exported(
        select(
            Case.case_code, Assessment.instance_id, Assessment.assessment_date,
            Assessment.collection_point, Assessment.casework_type, Assessment.office,
            Assessment.instrument_version, Assessment.state,
            Case.status.label("case_status"), Case.closed_at.label("case_closed_on"),
            Assessment.scores, Assessment.ratings, Assessment.survivor_view, Assessment.flags,
        ),
        project_id,
    ).order_by(
        Case.case_code, Assessment.assessment_date, day_rank_sql(Assessment.collection_point),
        Assessment.id,
    )  # fmt: skip
    result = session.execute(stmt.execution_options(yield_per=_CHUNK, stream_results=True))
    try:
        yield from result
    finally:  # also when the export stops midway: the server-side cursor is closed at once
        result.close()


def count_rows(session: Session, project_id: int, *, wide: bool = False) -> int:
    """The number of data rows :func:`export_cases` writes now (without reading the rows)."""
    stmt = select(func.count()).select_from(Assessment)
    if not wide:  # a row per key of scores: json_each is a table function in both databases
        keys = func.json_each(Assessment.scores).table_valued("key").alias("score_keys")
        stmt = stmt.join(keys, true())
    return session.scalar(_exported(stmt, project_id)) or 0


#: how a spreadsheet formula can start (OWASP "CSV injection"); tab and CR as well
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str) -> str:
    """A text cell that no spreadsheet will run: values sent by a device (a case code, an
    office) are data, so one that starts like a formula gets a leading apostrophe. Numbers
    ("-1") are left alone."""
    if value.startswith(_FORMULA_START):
        try:
            float(value)
        except ValueError:
            return "'" + value
    return value


def _fmt(value: Any) -> Any:
    """A CSV field: dates in ISO form, nothing at all for a missing value."""
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, str):
        return _text(value)
    return value.isoformat() if hasattr(value, "isoformat") else value


def _cell(value: Any, sheet: Any) -> Any:
    """An XLSX cell: dates stay dates (a date cell, yyyy-mm-dd) and numbers numbers, so a
    spreadsheet sorts, filters and averages them; a missing value is an empty cell. Text is
    kept as sent: a cell typed as text is never run, so one starting with ``=`` (which
    openpyxl would write as a formula) is typed text explicitly, with no apostrophe added."""
    if value is None or value == "":
        return None
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, str) and value.startswith("="):
        from openpyxl.cell import WriteOnlyCell

        cell = WriteOnlyCell(sheet, value)
        cell.data_type = "s"
        return cell
    return value


def _rating(value: Any) -> Any:
    """A rating as the number it is ("3", the "88"/"99" codes), as the CSV reads it too."""
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _wide_columns(session: Session, project_id: int) -> tuple[list[str], list[str]]:
    """Domains and subdomains of every form version of the project, newest version first.

    Every assessment's values get a column, whichever instrument version it was made with
    (mapped versions are stored under the current ids; unmapped ones keep their own).
    """
    reports = session.scalars(
        select(FormVersion.report)
        .join(Form, Form.id == FormVersion.form_id)
        .where(Form.project_id == project_id, FormVersion.report.is_not(None))
        .order_by(FormVersion.published_at.desc(), FormVersion.id.desc())
    )
    domains: dict[str, None] = {}
    subs: dict[str, None] = {}
    for report in reports:
        for d in (report or {}).get("domains") or []:
            domains.setdefault(d["id"])
            for s in d.get("subdomains") or []:
                subs.setdefault(s)
    return list(domains), list(subs)


def _survivor(a: Any) -> tuple[dict[str, Any], Callable[[str], int | None]]:
    """The survivor's ratings of ``a`` by domain, and per domain whether they make a gap."""
    views = {d: _rating(v) for d, v in (a.survivor_view or {}).items() if v not in (None, "")}
    gaps = {f.split(":", 1)[1] for f in a.flags or [] if f.startswith("survivor_gap:")}

    def gap(domain: str) -> int | None:
        if domain in gaps:
            return 1
        return 0 if domain in views and a.scores.get(domain) is not None else None

    return views, gap


def _records(session: Session, project_id: int, wide: bool) -> Iterator[list[Any]]:
    """The header, then a record per row, values as they are (formatted per file format)."""
    if not wide:
        yield LONG_COLUMNS
        for a in _rows(session, project_id):
            views, gap = _survivor(a)
            for domain, score in a.scores.items():
                yield [*a[:7], domain, score, a.state, views.get(domain), gap(domain),
                       a.case_status, a.case_closed_on]  # fmt: skip
        return
    domains, subs = _wide_columns(session, project_id)  # before the stream opens
    rows = _rows(session, project_id)
    first = next(rows, None)
    if first is not None:  # a version no report describes (kept as a safety net)
        domains += [d for d in first.scores if d not in domains]
        subs += sorted(s for s in first.ratings if s not in subs)
    yield [
        *_BASE, *(f"score_{d}" for d in domains), *(f"rating_{s}" for s in subs),
        *(f"survivor_{d}" for d in domains), *(f"survivor_gap_{d}" for d in domains),
    ]  # fmt: skip
    for a in itertools.chain([first] if first is not None else [], rows):
        views, gap = _survivor(a)
        yield [
            *a[: len(_BASE)], *(a.scores.get(d) for d in domains),
            *(_rating(a.ratings.get(s)) for s in subs),
            *(views.get(d) for d in domains), *(gap(d) for d in domains),
        ]  # fmt: skip


def _csv_chunks(session: Session, project_id: int, wide: bool) -> Iterator[tuple[bytes, int]]:
    """UTF-8 CSV in pieces of about ``_CHUNK`` rows, each with the data rows written so far."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    count = -1  # the header is not a data row
    for record in _records(session, project_id, wide):
        writer.writerow([_fmt(v) for v in record])
        count += 1
        if count and count % _CHUNK == 0:
            yield buf.getvalue().encode("utf-8"), count
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode("utf-8"), max(count, 0)


def iter_csv(session: Session, project_id: int, *, wide: bool = False) -> Iterator[bytes]:
    """The CSV export as it is produced (for a streamed download): the header, then rows."""
    for chunk, _ in _csv_chunks(session, project_id, wide):
        if chunk:
            yield chunk


def export_cases(
    session: Session,
    project_id: int,
    out: BinaryIO,
    *,
    fmt: str = "csv",
    wide: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the project's assessments to ``out``; return the number of data rows."""
    count = 0
    if fmt == "xlsx":
        from openpyxl import Workbook

        wb = Workbook(write_only=True)
        records = _records(session, project_id, wide)
        header = next(records)
        ws, used = wb.create_sheet(_SHEET), 1
        ws.append(header)
        for record in records:
            if used == XLSX_MAX_ROWS:  # full: go on on a new sheet, never past Excel's limit
                ws, used = wb.create_sheet(f"{_SHEET} ({len(wb.worksheets) + 1})"), 1
                ws.append(header)
            ws.append([_cell(v, ws) for v in record])
            used += 1
            count += 1
            if progress and count % _CHUNK == 0:
                progress(count)
        wb.save(out)
    elif fmt == "csv":
        for chunk, count in _csv_chunks(session, project_id, wide):
            out.write(chunk)
            if progress:
                progress(count)
    else:
        raise ValueError(f"unknown export format {fmt!r} (csv or xlsx)")
    if progress:
        progress(count)
    return count
