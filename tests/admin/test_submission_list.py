"""The submissions listing: status and flagged filters, total and pages, computed in SQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select

from server.models import FLAG_DISCARDED_PARTS, FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM, Form
from server.services.submission_list import list_submissions
from tests.admin.conftest import Api, World, add_submission


@pytest.fixture
def mixed(app: Any, world: World) -> list[str]:
    """20 submissions in project A, every third flagged (one with two flags), half of them
    decrypted; returns the flagged instance ids newest first."""
    flagged: list[str] = []
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        form = s.scalar(select(Form).where(Form.project_id == world.project_a))
        for i in range(20):
            flags = []
            if i % 3 == 0:
                flags = [FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM]
            if i == 9:
                flags = [FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM, FLAG_DISCARDED_PARTS]
            status = "decrypted" if i % 2 else "received"
            add_submission(s, form, f"uuid:s-{i:02d}", flags=flags, status=status)
            if flags:
                flagged.append(f"uuid:s-{i:02d}")
        s.commit()
    return flagged[::-1]


def _pages(api: Api, project_id: int, query: str, limit: int) -> tuple[list[list[str]], set]:
    pages, totals, offset = [], set(), 0
    while True:
        body = api(
            "GET", f"/projects/{project_id}/submissions?{query}&limit={limit}&offset={offset}"
        ).get_json()
        totals.add(body["total"])
        ids = [item["instance_id"] for item in body["items"]]
        if not ids:
            return pages, totals
        pages.append(ids)
        offset += limit


def test_submissions_api__flagged_pages__every_flagged_once_in_order(
    api: dict[str, Api], world: World, mixed: list[str]
) -> None:
    """Should page through exactly the flagged submissions, newest first, full pages of 3."""
    pages, totals = _pages(api["manager"], world.project_a, "flagged=1", 3)
    assert totals == {len(mixed)} == {7}
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for p in pages for i in p] == mixed
    first = api["manager"]("GET", f"/projects/{world.project_a}/submissions?flagged=1&limit=3")
    assert all(item["flagged"] for item in first.get_json()["items"])


def test_submissions_api__flagged_and_status__combined_in_the_query(
    api: dict[str, Api], world: World, mixed: list[str]
) -> None:
    """Should combine both filters before paging (total and pages agree)."""
    decrypted = [i for i in mixed if int(i[-2:]) % 2]
    pages, totals = _pages(api["manager"], world.project_a, "flagged=true&status=decrypted", 2)
    assert totals == {len(decrypted)} == {3}
    assert [i for p in pages for i in p] == decrypted


def test_list_submissions__one_page__filter_and_limit_run_in_sql(
    app: Any, world: World, mixed: list[str], db_session: Any
) -> None:
    """Should fetch only the requested page (LIMIT/OFFSET and the flag test in the SQL)."""
    statements: list[str] = []
    engine = app.extensions["kintsugi.db"].engine

    def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement.lower())

    event.listen(engine, "before_cursor_execute", capture)
    try:
        page = list_submissions(db_session, world.project_a, flagged=True, limit=2, offset=2)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert [s.instance_id for s in page.items] == mixed[2:4]
    assert page.total == len(mixed)
    assert len(statements) == 2  # count + page; the form came with the page's join
    assert all("json_array_length" in s for s in statements)
    assert "limit" in statements[1] and "offset" in statements[1]


def test_submissions_page__more_than_a_page__older_ones_reachable_with_the_filter_kept(
    app: Any, client: Any, world: World
) -> None:
    """Should let the admin page through every submission, not just the newest page: here 210
    flagged ones among 220, followed from page to page with the flagged filter kept."""
    import html
    import re

    from tests.admin.conftest import login

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        form = s.scalar(select(Form).where(Form.project_id == world.project_a))
        for i in range(220):
            flags = [FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM] if i % 22 else []
            add_submission(s, form, f"uuid:p-{i:03d}", flags=flags)
        s.commit()
    flagged = [f"uuid:p-{i:03d}" for i in reversed(range(220)) if i % 22]
    login(client, "manager")
    url: str | None = f"/admin/projects/{world.project_a}/submissions?flagged=1"
    seen: list[str] = []
    while url:
        page = client.get(url).data.decode()
        assert "210 submission(s)" in page
        assert re.search(r'name="flagged" value="1" checked', page)  # the filter stays
        seen += re.findall(r"<code>(uuid:p-\d+)</code>", page)
        found = re.search(r'<a href="([^"]+)">Next page<', page)
        url = html.unescape(found.group(1)) if found else None
    assert seen == flagged
