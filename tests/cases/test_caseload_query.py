"""The caseload query: order and search as a case worker types it."""

from __future__ import annotations

import datetime as dt

from server.models_cases import Case
from server.services.cases import list_cases
from server.services.projects import create_project


def test_list_cases__order_and_literal_search(app, db_session):
    """Should list by next due date (undated last), then case code, and treat % and _ in a
    search as the characters typed, not as wildcards."""
    project = create_project(db_session, "Caseload office")
    db_session.flush()
    due = dt.date(2027, 1, 1)
    for code, next_due in [("KE-0003", due), ("KE-0001", None), ("KE-0002", due),
                           ("KE_10%", due - dt.timedelta(days=1)), ("KEX100", None)]:  # fmt: skip
        db_session.add(Case(project_id=project.id, case_code=code, next_due=next_due, status="open",
                            latest_scores={}, intake_scores={}, flags=[]))  # fmt: skip
    db_session.commit()
    rows, total = list_cases(db_session, project.id, today=due)
    assert [r.label for r in rows] == ["KE_10%", "KE-0002", "KE-0003", "KE-0001", "KEX100"]
    assert total == 5
    assert [r.label for r in list_cases(db_session, project.id, q="e_1")[0]] == ["KE_10%"]
    assert [r.label for r in list_cases(db_session, project.id, q="10%")[0]] == ["KE_10%"]
    assert list_cases(db_session, project.id, q="%")[1] == 1
    assert list_cases(db_session, project.id, q="ke-000")[1] == 3  # case-insensitive substring
