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


def test_case_page__change_since_intake_next_due_and_survivor_gap(field, runner, app, client):
    from server.models_cases import Case
    from server.services.users import create_web_user

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
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        create_web_user(s, "reader", PASSWORD, role="admin", realm=app.config["DIGEST_REALM"],
                        method=app.config["PASSWORD_HASH_METHOD"])  # fmt: skip
        case_id = s.query(Case.id).filter_by(case_code="KE-0100").scalar()
        s.commit()

    login(client, "reader")
    page = client.get(f"/admin/projects/{field.project_id}/cases/{case_id}").data.decode()
    assert "None" not in page

    # next due: a year after the latest assessment (the second one), overdue only once passed
    next_due = dt.date(2026, 7, 10) + dt.timedelta(days=365)
    due_cell = re.search(r'<dd id="next-due">(.*?)</dd>', page, re.S).group(1)
    assert next_due.isoformat() in due_cell
    assert ("overdue" in due_cell) == (next_due < dt.date.today())

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
