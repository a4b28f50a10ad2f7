"""Case exports: long (one row per assessment x domain) or wide (one row per assessment).

Rows are streamed from the database in chunks (server-side cursor on PostgreSQL) and written
as they come, so a million assessments export in bounded memory. XLSX uses openpyxl's
write-only mode for the same reason.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models_cases import Assessment, AssessmentState, Case

__all__ = ["LONG_COLUMNS", "export_cases"]

LONG_COLUMNS = [
    "case_code", "instance_id", "assessment_date", "collection_point", "casework_type",
    "office", "instrument_version", "domain", "score", "state",
]  # fmt: skip
_BASE = [
    "case_code",
    "instance_id",
    "assessment_date",
    "collection_point",
    "casework_type",
    "office",
    "instrument_version",
    "state",
]
_CHUNK = 1000


def _rows(session: Session, project_id: int) -> Iterator[tuple[Assessment, str]]:
    stmt = (
        select(Assessment, Case.case_code)
        .join(Case, Case.id == Assessment.case_id)
        .where(Assessment.project_id == project_id, Assessment.state != AssessmentState.ORPHAN)
        .order_by(Case.case_code, Assessment.assessment_date, Assessment.id)
        .execution_options(yield_per=_CHUNK, stream_results=True)
    )
    yield from session.execute(stmt)


def _fmt(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 4)
    return value.isoformat() if hasattr(value, "isoformat") else value


def _records(session: Session, project_id: int, wide: bool) -> Iterator[list[Any]]:
    domains: list[str] | None = None
    for a, code in _rows(session, project_id):
        base = [
            code,
            a.instance_id,
            a.assessment_date,
            a.collection_point,
            a.casework_type,
            a.office,
            a.instrument_version,
            a.state,
        ]
        if wide:
            if domains is None:
                domains = list(a.scores)
                subs = sorted(a.ratings)
                yield [*_BASE, *(f"score_{d}" for d in domains), *(f"rating_{s}" for s in subs)]
            yield (
                [_fmt(v) for v in base]
                + [_fmt(a.scores.get(d)) for d in domains]
                + [_fmt(a.ratings.get(s)) for s in subs]
            )
        else:
            if domains is None:
                domains = []
                yield LONG_COLUMNS
            for domain, score in a.scores.items():
                row = [*base[:7], domain, score, base[7]]
                yield [_fmt(v) for v in row]
    if domains is None:
        yield [*_BASE, "score"] if wide else LONG_COLUMNS


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
        ws = wb.create_sheet("assessments")
        for i, record in enumerate(_records(session, project_id, wide)):
            ws.append(record)
            if i:
                count += 1
                if progress and count % _CHUNK == 0:
                    progress(count)
        wb.save(out)
    elif fmt == "csv":
        text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        writer = csv.writer(text)
        for i, record in enumerate(_records(session, project_id, wide)):
            writer.writerow(record)
            if i:
                count += 1
                if progress and count % _CHUNK == 0:
                    progress(count)
        text.flush()
        text.detach()
    else:
        raise ValueError(f"unknown export format {fmt!r} (csv or xlsx)")
    if progress:
        progress(count)
    return count
