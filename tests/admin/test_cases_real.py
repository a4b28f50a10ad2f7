"""The case pages and API on the real case services (rows written through the case models,
as the reconciliation worker leaves them)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any

import pytest

from tests.admin.conftest import Api, World, add_submission, login, page_csrf

DOMAINS = ["safety", "legal", "mental"]


@pytest.fixture
def caseload(app: Any, world: World) -> dict[str, int]:
    """Case K-1 (two assessments, overdue) and an orphan follow-up naming K-9, in project A."""
    from pathlib import Path

    from server.blobs import make_blob_store
    from server.models import Project
    from server.models_cases import Assessment, Case, ReviewItem
    from server.services.publishing import list_contexts, publish_context

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        # a compiled instrument form: its report is what the case services score with
        context = list_contexts(Path(app.config["INSTRUMENTS_DIR"]))[0]
        version, _ = publish_context(
            s, make_blob_store(app.config, s), s.get(Project, world.project_a), app.config,
            context,
        )  # fmt: skip
        form = version.form
        case = Case(
            project_id=world.project_a, case_code="K-1", casework_type="forced_labour",
            office="CEB", intake_date=dt.date(2026, 1, 5), next_due=dt.date(2026, 2, 1),
            latest_scores={"safety": 2.5, "legal": 2.0, "mental": 3.0},
            intake_scores={"safety": 1.5, "legal": 2.0, "mental": 2.0}, assessment_count=2,
        )  # fmt: skip
        s.add(case)
        s.flush()
        ids = {"case": case.id}
        for i, (day, scores) in enumerate(
            [(dt.date(2026, 1, 5), [1.5, 2.0, 2.0]), (dt.date(2026, 4, 5), [2.5, 2.0, 3.0])]
        ):
            sub = add_submission(s, form, f"uuid:case-{i}")
            s.add(Assessment(
                project_id=world.project_a, case_id=case.id, submission_id=sub.id,
                instance_id=sub.instance_id, case_code="K-1", assessment_date=day,
                collection_point="intake" if i == 0 else "follow_up",
                scores=dict(zip(DOMAINS, scores, strict=True)),
            ))  # fmt: skip
        sub = add_submission(s, form, "uuid:orphan")
        orphan = Assessment(
            project_id=world.project_a, case_id=None, submission_id=sub.id,
            instance_id=sub.instance_id, case_code="K-9", assessment_date=dt.date(2026, 5, 1),
            collection_point="follow_up", state="orphan", scores={"safety": 3.0},
        )  # fmt: skip
        s.add(orphan)
        s.flush()
        item = ReviewItem(
            project_id=world.project_a, kind="orphan", assessment_id=orphan.id,
            summary="Follow-up names case K-9, unknown here",
        )  # fmt: skip
        s.add(item)
        s.commit()
        ids["orphan_item"] = item.id
        return ids


def test_cases_api__viewer_lists_and_opens_case(
    api: dict[str, Api], world: World, caseload: dict[str, int]
) -> None:
    listed = api["viewer"]("GET", f"/projects/{world.project_a}/cases?due=overdue").get_json()
    assert listed["total"] == 1
    assert listed["items"][0]["label"] == "K-1" and listed["items"][0]["due"] == "overdue"
    detail = api["viewer"]("GET", f"/projects/{world.project_a}/cases/{caseload['case']}")
    body = detail.get_json()
    assert [a["date"] for a in body["assessments"]] == ["2026-01-05", "2026-04-05"]
    assert body["series"]["safety"] == [["2026-01-05", 1.5], ["2026-04-05", 2.5]]
    other = api["viewer"]("GET", f"/projects/{world.project_b}/cases/{caseload['case']}")
    assert other.status_code == 404


def test_case_page__real_series__line_per_domain(
    client: Any, world: World, caseload: dict[str, int]
) -> None:
    login(client, "viewer")
    page = client.get(f"/admin/projects/{world.project_a}/cases/{caseload['case']}")
    svg = page.data.decode()
    lines = re.findall(r'<polyline class="series-line" data-domain="([^"]+)" points="([^"]+)"', svg)
    assert sorted(d for d, _ in lines) == sorted(DOMAINS)
    assert all(len(points.split()) == 2 for _, points in lines)


def test_review__link_orphan_via_api__queue_empties_case_grows(
    api: dict[str, Api], world: World, caseload: dict[str, int]
) -> None:
    a, item = world.project_a, caseload["orphan_item"]
    queues = api["manager"]("GET", f"/projects/{a}/review-queues").get_json()
    assert [i["id"] for i in queues["orphans"]] == [item]
    foreign = api["manager"](
        "POST", f"/projects/{world.project_b}/review-items/{item}/resolve",
        json={"action": "link", "case_id": caseload["case"]},
    )  # fmt: skip
    assert foreign.status_code == 404
    ok = api["manager"](
        "POST", f"/projects/{a}/review-items/{item}/resolve",
        json={"action": "link", "case_id": caseload["case"]},
    )  # fmt: skip
    assert ok.status_code == 204
    assert api["manager"]("GET", f"/projects/{a}/review-queues").get_json()["orphans"] == []
    detail = api["viewer"]("GET", f"/projects/{a}/cases/{caseload['case']}").get_json()
    assert len(detail["assessments"]) == 3


def test_review_page__resolve_with_form(
    client: Any, world: World, caseload: dict[str, int]
) -> None:
    login(client, "manager")
    path = f"/admin/projects/{world.project_a}/review"
    assert b"Follow-up names case K-9" in client.get(path).data
    token = page_csrf(client, path)
    resp = client.post(
        f"{path}/{caseload['orphan_item']}",
        data={"csrf_token": token, "action": "link", "case_id": str(caseload["case"])},
    )
    assert resp.status_code == 302
    assert b"Follow-up names case K-9" not in client.get(path).data


def test_aggregates_and_impact__small_groups_suppressed(
    api: dict[str, Api], client: Any, world: World, caseload: dict[str, int]
) -> None:
    agg = api["viewer"]("GET", f"/projects/{world.project_a}/aggregates").get_json()
    cells = agg["groups"]["casework_type"]
    assert cells and all(c["suppressed"] and c["mean"] is None for c in cells)  # one case < 5
    login(client, "viewer")
    page = client.get(f"/admin/projects/{world.project_a}/impact").data.decode()
    assert 'class="bar suppressed"' in page and 'class="bar"' not in page


def test_export__csv_via_api(api: dict[str, Api], world: World, caseload: dict[str, int]) -> None:
    resp = api["manager"]("GET", f"/projects/{world.project_a}/export?format=csv")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    assert "K-1" in resp.get_data(as_text=True)
    bad = api["manager"]("GET", f"/projects/{world.project_a}/export?format=pdf")
    assert bad.status_code == 400 and "format" in bad.get_json()["fields"]


def test_export_wide__documented_and_served_one_row_per_assessment(
    api: dict[str, Api], client: Any, world: World, caseload: dict[str, int]
) -> None:
    doc = client.get("/api/v1/openapi.json").get_json()
    params = doc["paths"]["/projects/{project_id}/export"]["get"]["parameters"]
    wide = next(p for p in params if p["name"] == "wide")
    assert "one row per assessment" in wide["description"]
    assert "per case" not in wide["description"]
    # K-1 has two assessments (the orphan belongs to no case): two rows, one per assessment
    resp = api["manager"]("GET", f"/projects/{world.project_a}/export?format=csv&wide=1")
    rows = list(csv.reader(io.StringIO(resp.get_data(as_text=True))))
    assert len(rows) == 1 + 2 and len({tuple(r[:3]) for r in rows[1:]}) == 2
    assert [r[0] for r in rows[1:]] == ["K-1", "K-1"]
    login(client, "manager")
    page = client.get(f"/admin/projects/{world.project_a}/export").data.decode()
    assert "one row per case" not in page


def test_export_page__each_format_in_each_shape(
    client: Any, world: World, caseload: dict[str, int]
) -> None:
    """Should offer the XLSX one row per assessment too (programme leads work in Excel), not
    only as the API's ``wide=1``: the page links each format in each shape, and they work."""
    from openpyxl import load_workbook

    login(client, "manager")
    base = f"/admin/projects/{world.project_a}/export"
    page = client.get(base).data.decode().replace("&amp;", "&")
    for query in ("format=csv", "format=csv&wide=1", "format=xlsx", "format=xlsx&wide=1"):
        assert f'href="{base}?{query}"' in page, query
    resp = client.get(f"{base}?format=xlsx&wide=1")
    data = resp.get_data()
    resp.close()
    book = load_workbook(io.BytesIO(data), read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    book.close()
    assert [r[0] for r in rows[1:]] == ["K-1", "K-1"]  # one row per assessment


def _assessments(app: Any, project_id: int) -> list[Any]:
    from sqlalchemy import select

    from server.models_cases import Assessment

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        return list(s.scalars(select(Assessment).where(
            Assessment.project_id == project_id, Assessment.state != "orphan"
        ).order_by(Assessment.assessment_date)))  # fmt: skip


def _audited_rows(app: Any) -> list[Any]:
    from sqlalchemy import select

    from server.models import AuditLog

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        logs = s.scalars(select(AuditLog).where(AuditLog.action == "export.download"))
        return [(log.actor, log.details["fmt"], log.details["rows"]) for log in logs]


def test_export_csv__streamed_rows_are_the_assessments(
    app: Any, api: dict[str, Api], world: World, caseload: dict[str, int], monkeypatch: Any
) -> None:
    """Should stream the CSV in pieces (not build it in memory) with the headers and audit of a
    download, one row per assessment x domain holding the stored scores."""
    from server.services import export

    monkeypatch.setattr(export, "_CHUNK", 1)  # a piece per row: the response must be a stream
    resp = api["manager"]("GET", f"/projects/{world.project_a}/export?format=csv")
    assert resp.status_code == 200 and resp.is_streamed
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert re.fullmatch(
        rf'attachment; filename="kintsugi-project{world.project_a}-cases-long-\d{{8}}\.csv"',
        resp.headers["Content-Disposition"],
    )
    assert resp.headers["Cache-Control"] == "no-store"
    pieces = list(resp.response)
    resp.close()
    assert len(pieces) > 2
    rows = list(csv.DictReader(io.StringIO(b"".join(pieces).decode())))
    want = [
        (a.case_code, a.instance_id, a.assessment_date.isoformat(), a.collection_point, d, s)
        for a in _assessments(app, world.project_a) for d, s in a.scores.items()
    ]  # fmt: skip
    got = [(r["case_code"], r["instance_id"], r["assessment_date"], r["collection_point"],
            r["domain"], float(r["score"])) for r in rows]  # fmt: skip
    assert got == want and len(got) == 2 * 3
    assert resp.headers["X-Row-Count"] == "6"
    assert _audited_rows(app) == [("web:manager", "csv", 6)]


@pytest.mark.parametrize("wide", [False, True])
def test_export_xlsx__streamed_from_a_temporary_file(
    app: Any, client: Any, world: World, caseload: dict[str, int], wide: bool, monkeypatch: Any
) -> None:
    """Should stream the XLSX from a temporary file that is gone afterwards (page download),
    with the assessments' values in it."""
    import tempfile

    from openpyxl import load_workbook

    made = []
    real = tempfile.TemporaryFile

    def spy(*a: Any, **kw: Any) -> Any:
        made.append(real(*a, **kw))
        return made[-1]

    monkeypatch.setattr(tempfile, "TemporaryFile", spy)
    login(client, "manager")
    path = f"/admin/projects/{world.project_a}/export?format=xlsx" + ("&wide=1" if wide else "")
    resp = client.get(path)
    assert resp.status_code == 200 and resp.is_streamed
    assert resp.headers["Content-Type"].startswith("application/vnd.openxmlformats")
    kind = "wide" if wide else "long"
    assert re.fullmatch(
        rf'attachment; filename="kintsugi-project{world.project_a}-cases-{kind}-\d{{8}}\.xlsx"',
        resp.headers["Content-Disposition"],
    )
    data = resp.get_data()
    resp.close()
    assert len(made) == 1 and made[0].closed  # the temporary file is closed, hence deleted
    workbook = load_workbook(io.BytesIO(data), read_only=True)
    rows = list(workbook["assessments"].iter_rows(values_only=True))
    workbook.close()
    # an empty cell at the end of a row is not written, so a read-only sheet gives a shorter row
    header = rows[0]
    rows = [dict(zip(header, r + (None,) * (len(header) - len(r)), strict=True)) for r in rows[1:]]
    assessments = _assessments(app, world.project_a)
    if wide:
        assert [(r["case_code"], r["instance_id"], r["collection_point"]) for r in rows] == [
            (a.case_code, a.instance_id, a.collection_point) for a in assessments
        ]
        for r, a in zip(rows, assessments, strict=True):
            assert {d: r[f"score_{d}"] for d in a.scores} == a.scores
    else:
        assert "domain" in header and "score" in header
        assert [(r["instance_id"], r["domain"], r["score"]) for r in rows] == [
            (a.instance_id, d, s) for a in assessments for d, s in a.scores.items()
        ]
    assert _audited_rows(app) == [("web:manager", "xlsx", len(rows))]


def _notice(page: str) -> str:
    found = re.search(r'<p class="notice" role="status">(.*?)</p>', page, re.S)
    assert found, "the page says nothing of what was done"
    return found.group(1)


def test_review_page__resolved_item__page_says_what_was_done(
    client: Any, world: World, caseload: dict[str, int]
) -> None:
    """Should confirm, on the review page the admin returns to, what became of the item."""
    login(client, "manager")
    path = f"/admin/projects/{world.project_a}/review"
    token = page_csrf(client, path)
    item = caseload["orphan_item"]
    resp = client.post(
        f"{path}/{item}",
        data={"csrf_token": token, "action": "link", "case_id": str(caseload["case"])},
        follow_redirects=True,
    )
    assert resp.status_code == 200 and resp.request.path == path
    assert _notice(resp.data.decode()) == f"Item #{item}: linked to case K-1."
    assert 'role="status"' not in client.get(path).data.decode()  # said once


def test_review_page__action_refused__error_page_leads_back_to_the_queue(
    client: Any, world: World, caseload: dict[str, int]
) -> None:
    """Should explain a refused action and link back to the review page, filters and all."""
    login(client, "manager")
    path = f"/admin/projects/{world.project_a}/review"
    token = page_csrf(client, path)
    resp = client.post(
        f"{path}/{caseload['orphan_item']}",
        data={"csrf_token": token, "action": "link", "case_id": ""},
        headers={"Referer": f"http://localhost{path}"},
    )
    page = resp.data.decode()
    assert "Choose an existing case of this project" in page
    assert f'<a id="back" href="{path}">' in page


def test_review_page__conflict_and_mismatch__link_to_their_case(
    app: Any, client: Any, world: World, caseload: dict[str, int]
) -> None:
    """Should let the manager open the case of a conflict (to compare the two assessments
    before keeping one) and of a score mismatch (whose item names the assessment only)."""
    from sqlalchemy import select

    from server.models_cases import Assessment, ReviewItem

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        first = s.scalar(select(Assessment).where(Assessment.case_id == caseload["case"]))
        s.add(
            ReviewItem(
                project_id=world.project_a,
                kind="conflict",
                assessment_id=first.id,
                case_id=caseload["case"],
                summary="Case K-1: two intake assessments",
            )
        )
        s.add(
            ReviewItem(
                project_id=world.project_a,
                kind="score_mismatch",
                assessment_id=first.id,
                summary="K-1: device scores differ",
            )
        )
        s.commit()  # fmt: skip
    login(client, "manager")
    page = client.get(f"/admin/projects/{world.project_a}/review").data.decode()
    case_url = f"/admin/projects/{world.project_a}/cases/{caseload['case']}"
    for queue in ("conflicts", "score_mismatches"):
        section = re.search(rf'<section class="queue" id="queue-{queue}">.*?</section>', page, re.S)
        assert f'href="{case_url}"' in section.group(0), queue
