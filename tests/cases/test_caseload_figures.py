"""The numbers and lists a case worker or programme lead sees, at their edges: suppression
with empty groups, filters, a regression of exactly one point, paging, linking an orphan in a
large caseload, a chart across an unscored domain.

Everything goes through the real path: Collect-encrypted uploads, ``kintsugi reconcile
--once``, then the admin API or pages. Expected values are worked out here from the ratings
sent, not with the server's scorer.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
import uuid
from fractions import Fraction
from pathlib import Path
from urllib.parse import urljoin

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import select

from server.models import FormVersion
from tests.admin.conftest import login, page_csrf
from tests.cases.fieldwork import encrypted_upload, instance_xml, ratings_for

MIN_CELL = 5  # "cells with fewer than 5 survivors are suppressed"
INSTRUMENT = json.loads(
    (Path(__file__).resolve().parents[2] / "instruments/aso/instrument.json").read_text()
)
INSTRUMENT_DOMAINS = [d["id"] for d in INSTRUMENT["domains"]]


def _sender(field, db_session):
    """``send(casework_type=..., office=..., **instance_xml kwargs)``: one Collect upload with the
    casework type and office chosen (the fixture's ``send`` always takes the first of each)."""
    version = db_session.scalar(select(FormVersion).where(FormVersion.report.is_not(None)))
    public = load_der_public_key(base64.b64decode(version.public_key_b64))

    def send(*, casework_type="unlawful_detention", office="nairobi", **kw):
        report = {**field.report, "casework_types": [casework_type], "offices": [office]}
        instance_id, xml = instance_xml(report, **kw)
        field.post(*encrypted_upload(report, public, instance_id, xml))
        return instance_id

    return send


def _case(send, code, *, intake, follow=None, point="six_month", intake_date="2025-01-10",
          follow_date="2025-07-10", **kw):  # fmt: skip
    entity = str(uuid.uuid4())
    send(case_code=code, point="intake", date=intake_date, ratings=intake, entity_id=entity, **kw)
    if follow is not None:
        send(case_code=code, point=point, date=follow_date, ratings=follow, entity_id=entity, **kw)
    return entity


# ---------------------------------------------------------------- suppression (privacy)


@pytest.fixture
def one_small_group(field, reconcile, db_session):
    """One office (Nairobi). By casework type: 6 unlawful-detention survivors (intake rated 2,
    closed rated 3), 3 torture survivors (intake 1, closed 4) and 2 families of people killed
    by police with only an intake. Returns what each group really is."""
    send = _sender(field, db_session)
    r = field.report
    n = 0
    truth = {}
    for ctype, k, start, end in (("unlawful_detention", 6, "2", "3"), ("torture", 3, "1", "4"),
                                 ("extrajudicial_killing", 2, "2", None)):  # fmt: skip
        days = []
        for j in range(k):
            n += 1
            close = dt.date(2025, 2 + j + (0 if ctype != "torture" else 6), 10)
            _case(send, f"KE-{n:04d}", casework_type=ctype, intake=ratings_for(r, start),
                  follow=None if end is None else ratings_for(r, end), point="closure",
                  follow_date=close.isoformat())  # fmt: skip
            if end is not None:
                days.append((close - dt.date(2025, 1, 10)).days)
        change = None if end is None else int(end) - int(start)
        truth[ctype] = {"followed_up": len(days), "change": change, "closed": len(days)}
    reconcile()
    return truth


def _residual(published: list[dict], totals: list[dict]) -> int | None:
    """Survivors in the suppressed cells of ``published``, as the other dimension's totals give
    them away (None when the other dimension hides a cell too)."""
    if any(c["suppressed"] for c in totals):
        return None
    return sum(c["n"] for c in totals) - sum(c["n"] for c in published if not c["suppressed"])


def test_aggregates__an_empty_suppressed_group_does_not_hide_a_small_one__mean_change(
    admin_api, one_small_group
):
    """The torture group (3 survivors) is suppressed; the only other suppressed group has nobody
    followed up (n=0), so nothing is suppressed with it: Nairobi's published figure minus
    unlawful detention's gives the 3 torture survivors' mean change and their number."""
    agg = admin_api("GET", "/aggregates").get_json()
    for domain in INSTRUMENT_DOMAINS:
        by_type = [c for c in agg["groups"]["casework_type"] if c["domain"] == domain]
        by_office = [c for c in agg["groups"]["office"] if c["domain"] == domain]
        hidden_n = _residual(by_type, by_office)
        if hidden_n:  # worked out: the suppressed survivors, together, and their mean
            total = sum(c["n"] * c["mean"] for c in by_office)
            shown = sum(c["n"] * c["mean"] for c in by_type if not c["suppressed"])
            derived = round((total - shown) / hidden_n, 2)
            assert hidden_n >= MIN_CELL, (
                f"{domain}: the suppressed casework types hold {hidden_n} survivor(s) whose mean "
                f"change can be worked out as {derived:+.2f} (torture: really "
                f"{one_small_group['torture']['change']:+.2f} for "
                f"{one_small_group['torture']['followed_up']})"
            )


def test_aggregates__an_empty_suppressed_group_does_not_hide_a_small_one__days_to_closure(
    admin_api, one_small_group
):
    """The same for time to closure: the 3 closed torture cases' n is published by difference
    (9 closed in Nairobi minus 6 closed unlawful-detention cases)."""
    agg = admin_api("GET", "/aggregates").get_json()
    cells = agg["days_to_closure"]
    by_type = [c for c in cells if c["label"].startswith("casework_type:")]
    by_office = [c for c in cells if c["label"].startswith("office:")]
    hidden_n = _residual(by_type, by_office)
    assert hidden_n in (None, 0) or hidden_n >= MIN_CELL, (
        f"{hidden_n} closed case(s) in suppressed casework types can be counted from the "
        f"published n (torture really has {one_small_group['torture']['closed']})"
    )


# ---------------------------------------------------------------- caseload filters


def test_cases_api__closure_ready_false__lists_only_cases_not_ready(
    field, reconcile, admin_api, db_session
):
    """``closure_ready`` is a boolean filter: false must leave out the closure-ready cases."""
    send = _sender(field, db_session)
    r = field.report
    # every domain 3.0 or more at the latest assessment (the closure rule) vs safety at 2.0
    _case(send, "KE-0001", intake=ratings_for(r, "2"), follow=ratings_for(r, "3"))
    _case(send, "KE-0002", intake=ratings_for(r, "2"), follow=ratings_for(r, {"SAF": "2"}))
    reconcile()
    ready = admin_api("GET", "/cases?closure_ready=true").get_json()
    assert [c["label"] for c in ready["items"]] == ["KE-0001"]
    not_ready = admin_api("GET", "/cases?closure_ready=false").get_json()
    assert [c["label"] for c in not_ready["items"]] == ["KE-0002"], not_ready["items"]
    assert not_ready["total"] == 1


def test_cases_api__due_filter__rows_agree_with_their_due_field(
    field, reconcile, admin_api, db_session, frozen_today
):
    """``due`` is "due" (within 30 days) or "overdue" per row; filtering on due=due must not
    return rows that the same response marks "overdue" (they have their own filter)."""
    send = _sender(field, db_session)
    r = field.report
    today = frozen_today  # the server's date too: next due exactly today is this test's edge
    # intake 6 months (182 days) before: next due today -> "due" (not yet overdue)
    _case(send, "KE-0001", intake=ratings_for(r, "2"),
          intake_date=(today - dt.timedelta(days=182)).isoformat())  # fmt: skip
    # intake 2 years ago, never followed up -> overdue
    _case(send, "KE-0002", intake=ratings_for(r, "2"),
          intake_date=(today - dt.timedelta(days=730)).isoformat())  # fmt: skip
    reconcile()
    due = admin_api("GET", "/cases?due=due").get_json()["items"]
    assert {c["label"]: c["due"] for c in due} == {"KE-0001": "due"}
    overdue = admin_api("GET", "/cases?due=overdue").get_json()["items"]
    assert {c["label"]: c["due"] for c in overdue} == {"KE-0002": "overdue"}


# ---------------------------------------------------------------- regression rule


def test_cases_api__regression_flag__a_drop_of_exactly_one_in_thirds(
    field, reconcile, admin_api, db_session
):
    """Safety has three subdomains: 1,3,4 (8/3) at intake then 1,1,3 (5/3) at six months is a
    drop of exactly 1.0 = the instrument's regression_drop, so the case must be flagged."""
    send = _sender(field, db_session)
    r = field.report
    before = {"SAF1": "1", "SAF2": "3", "SAF3": "4"}
    after = {"SAF1": "1", "SAF2": "1", "SAF3": "3"}
    drop = Fraction(sum(map(int, before.values())), 3) - Fraction(sum(map(int, after.values())), 3)
    assert drop == Fraction(INSTRUMENT["scoring"]["regression_drop"])
    _case(send, "KE-0001", intake=ratings_for(r, before), follow=ratings_for(r, after),
          intake_date="2026-06-01", follow_date="2026-11-20")  # fmt: skip
    reconcile()
    (row,) = admin_api("GET", "/cases").get_json()["items"]
    assert row["change_since_intake"]["SAF"] == pytest.approx(-1.0)
    assert "regression" in row["flags"], row["flags"]
    detail = admin_api("GET", f"/cases/{row['id']}").get_json()
    assert "regression" in detail["flags"]


# ---------------------------------------------------------------- pages


def test_caseload_page__next_page_link__reaches_the_third_page(
    field, reconcile, admin_api, db_session, client
):
    """120 cases, 50 a page: following "Next page" twice must show cases 101-120."""
    send = _sender(field, db_session)
    r = field.report
    for i in range(120):  # same intake date: ordered by case code
        _case(send, f"KE-{i:04d}", intake=ratings_for(r, "2"), intake_date="2026-06-01")
    reconcile()
    login(client, "lead")
    base = f"/admin/projects/{field.project_id}/cases"
    url, pages = base, []
    for _ in range(3):
        page = client.get(url).data.decode()
        pages.append(re.findall(r'class="case-link"[^>]*>([^<]+)</a>', page))
        link = re.search(r'<a href="([^"]+)">Next page', page)
        if link is None:
            break
        url = urljoin(base, html.unescape(link.group(1)))
    assert [p[0] for p in pages] == ["KE-0000", "KE-0050", "KE-0100"], url
    assert pages[2] == [f"KE-{i:04d}" for i in range(100, 120)]


def test_review_page__orphan_can_be_linked_to_any_case_of_a_large_caseload(
    field, reconcile, admin_api, db_session, client
):
    """The orphan's list of cases stops at 500 (a page must stay light with 100,000 cases):
    with 501 cases, the one due last is linked by typing its code, and the page says how many
    more cases there are."""
    send = _sender(field, db_session)
    r = field.report
    for i in range(501):  # KE-0500 has the latest intake, so it is due last
        day = dt.date(2026, 1, 1) + dt.timedelta(days=i // 100)
        _case(send, f"KE-{i:04d}", intake=ratings_for(r, "2"), intake_date=day.isoformat())
    # its 6-month review, typed with a wrong code on a tablet without the case: an orphan
    send(case_code="KE-5000", point="six_month", date="2026-07-10", ratings=ratings_for(r, "3"),
         entity_id=str(uuid.uuid4()))  # fmt: skip
    reconcile()
    [orphan] = admin_api("GET", "/review-queues").get_json()["orphans"]
    login(client, "lead")
    review = f"/admin/projects/{field.project_id}/review"
    page = client.get(review).data.decode()
    options = re.findall(r'<option value="\d+">([^<]+)</option>', page)
    assert len(options) == 500 and "KE-0500" not in options
    assert 'placeholder="1 more cases"' in page
    token = page_csrf(client, review)
    wrong = client.post(f"{review}/{orphan['id']}", data={"csrf_token": token, "action": "link",
                                                          "link_code": "KE-9999"})  # fmt: skip
    assert wrong.status_code == 400 and b"no case KE-9999" in wrong.data
    done = client.post(f"{review}/{orphan['id']}", data={"csrf_token": token, "action": "link",
                                                         "link_code": "KE-0500"})  # fmt: skip
    assert done.status_code == 302
    assert admin_api("GET", "/review-queues").get_json()["orphans"] == []
    (case,) = admin_api("GET", "/cases?q=KE-0500").get_json()["items"]
    assert case["assessment_count"] == 2


def test_case_page__chart_line_breaks_where_a_domain_was_not_scored(
    field, reconcile, admin_api, db_session, client
):
    """Safety scored at intake (2.0), not at six months (every subdomain 88, no score), scored
    again at the annual review (3.0): the chart must not draw one line through the gap as if
    the six-month review had scored it (the other domains run through all three)."""
    send = _sender(field, db_session)
    r = field.report
    entity = _case(send, "KE-0001", intake=ratings_for(r, "2"), intake_date="2025-01-10",
                   follow=ratings_for(r, {"SAF": "88"}), follow_date="2025-07-10")  # fmt: skip
    send(case_code="KE-0001", point="annual", date="2026-07-10", ratings=ratings_for(r, "3"),
         entity_id=entity)  # fmt: skip
    reconcile()
    (row,) = admin_api("GET", "/cases").get_json()["items"]
    detail = admin_api("GET", f"/cases/{row['id']}").get_json()
    assert [v for _, v in detail["series"]["SAF"]] == [2.0, None, 3.0]
    login(client, "lead")
    page = client.get(f"/admin/projects/{field.project_id}/cases/{row['id']}").data.decode()
    gap_x = float(
        re.search(r'<text class="axis-label x-label" x="([0-9.]+)"[^>]*>2025-07-10<', page)[1]
    )
    lines = re.findall(r'<polyline class="series-line" data-domain="Safety" points="([^"]+)"', page)
    segments = [
        (float(a.split(",")[0]), float(b.split(",")[0]))
        for points in lines
        for a, b in zip(points.split(), points.split()[1:], strict=False)
    ]
    assert not [s for s in segments if s[0] < gap_x < s[1]], lines
