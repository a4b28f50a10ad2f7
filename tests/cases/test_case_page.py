"""The case page on real pipeline data: Collect-encrypted uploads, reconciled with the CLI, then
read as an admin reads it. Expected values are computed here from the ratings sent."""

from __future__ import annotations

import datetime as dt
import re
import uuid

from tests.admin.conftest import PASSWORD, login
from tests.cases.fieldwork import expected_scores, ratings_for


def _row(page: str, table: str, domain: str) -> str:
    body = re.search(rf'<table class="{table}" id="{table}">(.*?)</table>', page, re.S).group(1)
    return re.search(rf'<tr data-domain="{domain}"[^>]*>.*?</tr>', body, re.S).group(0)


def _sign_in_reader(app, client, case_code: str) -> int:
    """Sign in as a new admin ``reader``; the id of the case ``case_code``."""
    from server.models_cases import Case
    from server.services.users import create_web_user

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        create_web_user(s, "reader", PASSWORD, role="admin", realm=app.config["DIGEST_REALM"],
                        method=app.config["PASSWORD_HASH_METHOD"])  # fmt: skip
        case_id = s.query(Case.id).filter_by(case_code=case_code).scalar()
        s.commit()
    login(client, "reader")
    return case_id


def test_case_page__change_since_intake_next_due_and_survivor_gap(
    field, runner, app, client, frozen_today
):
    r = field.report
    ent = str(uuid.uuid4())
    intake = ratings_for(
        r, {"SAF": "1", "LEG": "2", "MEN": "2", "ECO": "1", "SOC": "2", "PHY": "2"}
    )
    six = ratings_for(r, {"SAF": "2", "LEG": "3", "MEN": "3", "ECO": "2", "SOC": "2", "PHY": "4"})
    # at intake the survivor rates only social support (as the practitioner: no gap); at six
    # months only safety, 4 against the practitioner's 2.0: a gap of 2
    field.send(case_code="KE-0100", point="intake", date="2026-01-10", ratings=intake,
               entity_id=ent, survivor_view={"SOC": "2"})  # fmt: skip
    field.send(case_code="KE-0100", point="six_month", date="2026-07-10", ratings=six,
               entity_id=ent, survivor_view={"SAF": "4"})  # fmt: skip
    result = runner.invoke("reconcile", "--project", str(field.project_id), "--passphrase-file",
                           str(field.passphrase_file), "--once")  # fmt: skip
    assert result.exit_code == 0, result.output
    case_id = _sign_in_reader(app, client, "KE-0100")
    page = client.get(f"/admin/projects/{field.project_id}/cases/{case_id}").data.decode()
    assert "None" not in page

    # next due: a year after the latest assessment (the second one), overdue only once passed
    next_due = dt.date(2026, 7, 10) + dt.timedelta(days=365)
    due_cell = re.search(r'<dd id="next-due">(.*?)</dd>', page, re.S).group(1)
    assert next_due.isoformat() in due_cell
    assert ("overdue" in due_cell) == (next_due < frozen_today)

    first, latest = expected_scores(r, intake), expected_scores(r, six)
    for domain in first:
        row = _row(page, "domains", domain)
        cells = re.findall(r"<td>(.*?)</td>", row, re.S)
        assert cells[1:4] == [
            f"{first[domain]:.2f}", f"{latest[domain]:.2f}", f"{latest[domain] - first[domain]:+.2f}"
        ], domain  # fmt: skip
        if domain == "SAF":
            assert 'class="gap"' in row and cells[4].startswith("4") and ">gap<" in cells[4]
        else:  # the survivor gave no view of it at the latest assessment
            assert 'class="gap"' not in row and cells[4] == "–"

    assessments = re.search(r'<table class="assessments".*?</table>', page, re.S).group(0)
    rows = re.findall(r"<tr>.*?</tr>", assessments.split("<tbody>")[1], re.S)
    assert len(rows) == 2 and "2026-01-10" in rows[0] and "2026-07-10" in rows[1]
    soc_intake = re.search(r'<td data-domain="SOC"[^>]*>(.*?)</td>', rows[0], re.S).group(0)
    assert f"{first['SOC']:.2f}" in soc_intake and "survivor: 2<" in soc_intake
    assert "gap" not in soc_intake  # 2 against 2.0
    saf_six = re.search(r'<td data-domain="SAF"[^>]*>(.*?)</td>', rows[1], re.S).group(0)
    assert 'class="gap"' in saf_six and "survivor: 4<" in saf_six
    assert (
        page.count('class="badge bad">gap</strong>') == 2
    )  # the summary row and the six-month cell
    # the chart: a line per domain through both assessments
    lines = re.findall(r'<polyline class="series-line" data-domain="[^"]+" points="([^"]+)"', page)
    assert len(lines) == len(first) and all(len(p.split()) == 2 for p in lines)


def test_case_page__notes__shown_with_their_case_refused_with_a_way_back_while_locked(
    field, reconcile, app, client
):
    """Should show decrypted notes under the case and assessment they belong to, with the
    domain's name and a link back to the case; while the key is locked, refuse clearly and
    lead back to the case."""
    from tests.admin.conftest import page_csrf
    from tests.cases.conftest import PASSPHRASE

    field.send(case_code="KE-0200", point="intake", date="2026-03-02",
               ratings=ratings_for(field.report, "2"), entity_id=str(uuid.uuid4()),
               notes={"SAF": "fictional note <i>kept as text</i>"})  # fmt: skip
    reconcile()
    case_id = _sign_in_reader(app, client, "KE-0200")
    case_page = f"/admin/projects/{field.project_id}/cases/{case_id}"
    page = client.get(case_page).data.decode()
    action = re.search(r'action="([^"]+/notes)"', page).group(1)
    token = page_csrf(client, case_page)
    came_from = {"Referer": f"http://localhost{case_page}"}

    locked = client.post(action, data={"csrf_token": token}, headers=came_from)
    assert locked.status_code == 409
    assert "key is locked" in locked.data.decode()
    assert f'<a id="back" href="{case_page}">' in locked.data.decode()

    unlocked = client.post(
        f"/admin/projects/{field.project_id}/key/unlock",
        data={"csrf_token": token, "passphrase": PASSPHRASE},
    )
    assert unlocked.status_code == 302
    notes = client.post(action, data={"csrf_token": token}, headers=came_from).data.decode()
    heading = re.search(r"<h1>(.*?)</h1>", notes, re.S).group(1)
    assert "KE-0200" in heading and "2026-03-02" in heading and "intake" in heading
    assert "<dt>Safety note</dt><dd>fictional note &lt;i&gt;kept as text&lt;/i&gt;</dd>" in notes
    assert f'href="{case_page}"' in notes.split("</header>")[1]


def test_caseload_page__office_and_casework_filters__chosen_from_what_forms_offer(
    field, reconcile, app, client
):
    """Should offer the offices and casework types the published forms offer as choices (a
    typed office had to match exactly, case and underscores included), and filter by them."""
    r = field.report
    field.send(case_code="KE-0700", point="intake", date="2026-01-10", entity_id=str(uuid.uuid4()),
               ratings=ratings_for(r, "2"))  # fmt: skip
    reconcile()
    _sign_in_reader(app, client, "KE-0700")
    base = f"/admin/projects/{field.project_id}/cases"
    page = client.get(base).data.decode()
    for name, values in (("office", r["offices"]), ("casework_type", r["casework_types"])):
        select = re.search(rf'<select name="{name}">(.*?)</select>', page, re.S).group(1)
        assert re.findall(r'<option value="([^"]*)"', select) == ["", *values]
    assert len(r["offices"]) > 1  # the case is in the first office; the second has none
    first = client.get(f"{base}?office={r['offices'][0]}").data.decode()
    assert "KE-0700" in first and f'<option value="{r["offices"][0]}" selected>' in first
    assert "KE-0700" not in client.get(f"{base}?office={r['offices'][1]}").data.decode()
