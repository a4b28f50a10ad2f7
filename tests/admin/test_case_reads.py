"""What the case services answer when read, on the real services (rows written through the case
models as the reconciliation worker leaves them): overdue as of the day read, and the impact
aggregates' counting and suppression. Everything here is fictional."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from tests.admin.conftest import Api, World, login

TODAY = dt.date.today()


def expected_due(next_due: dt.date | None) -> str | None:
    """The rule, written out here: overdue before today, due within 30 days."""
    if next_due is None:
        return None
    if next_due < TODAY:
        return "overdue"
    return "due" if (next_due - TODAY).days <= 30 else None


#: case code -> (next_due, flags stored by the last reconciliation)
TIMELINE = {
    # reconciled while it was not yet due; the due date has passed since
    "T-LATE": (TODAY - dt.timedelta(days=3), []),
    # a stored "overdue" that is no longer true must not be shown
    "T-STALE": (TODAY + dt.timedelta(days=10), ["overdue", "regression"]),
    "T-FINE": (TODAY + dt.timedelta(days=100), []),
}


@pytest.fixture
def timeline(app: Any, world: World) -> dict[str, int]:
    from server.models_cases import Case

    ids = {}
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        for code, (next_due, flags) in TIMELINE.items():
            case = Case(
                project_id=world.project_a, case_code=code, casework_type="forced_labour",
                office="CEB", intake_date=TODAY - dt.timedelta(days=200),
                latest_date=TODAY - dt.timedelta(days=200), next_due=next_due, flags=flags,
                intake_scores={"SAF": 2.0}, latest_scores={"SAF": 2.0}, assessment_count=1,
            )  # fmt: skip
            s.add(case)
            s.flush()
            ids[code] = case.id
        s.commit()
    return ids


def test_cases_api__overdue_as_of_today__flags_agree_with_due(
    api: dict[str, Api], world: World, timeline: dict[str, int]
) -> None:
    listed = api["viewer"]("GET", f"/projects/{world.project_a}/cases").get_json()["items"]
    by_code = {c["label"]: c for c in listed}
    for code, (next_due, stored) in TIMELINE.items():
        due = expected_due(next_due)
        flags = sorted(
            {f for f in stored if f != "overdue"} | ({"overdue"} if due == "overdue" else set())
        )
        assert by_code[code]["due"] == due, code
        assert by_code[code]["flags"] == flags, code
        detail = api["viewer"]("GET", f"/projects/{world.project_a}/cases/{timeline[code]}")
        body = detail.get_json()
        assert (body["due"], body["flags"]) == (due, flags), code
        assert body["next_due"] == next_due.isoformat()
    assert by_code["T-LATE"]["flags"] == ["overdue"]
    assert by_code["T-STALE"]["flags"] == ["regression"]
    overdue = api["viewer"]("GET", f"/projects/{world.project_a}/cases?due=overdue").get_json()
    assert [c["label"] for c in overdue["items"]] == ["T-LATE"]


def _next_due_cell(page: str) -> str:
    return re.search(r'<dd id="next-due">(.*?)</dd>', page, re.S).group(1)


def test_case_page__next_due_and_overdue_badge(
    client: Any, world: World, timeline: dict[str, int]
) -> None:
    login(client, "viewer")
    base = f"/admin/projects/{world.project_a}/cases"
    late = client.get(f"{base}/{timeline['T-LATE']}").data.decode()
    cell = _next_due_cell(late)
    assert TIMELINE["T-LATE"][0].isoformat() in cell and 'class="badge bad">overdue' in cell
    stale = client.get(f"{base}/{timeline['T-STALE']}").data.decode()
    cell = _next_due_cell(stale)
    assert TIMELINE["T-STALE"][0].isoformat() in cell and "due within 30 days" in cell
    assert "overdue" not in stale  # neither the badge nor the stale stored flag
    fine = _next_due_cell(client.get(f"{base}/{timeline['T-FINE']}").data.decode())
    assert TIMELINE["T-FINE"][0].isoformat() in fine and "badge" not in fine
    caseload = client.get(base).data.decode()
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r'class="case-link"[^>]*>([^<]+)</a>.*?</tr>', caseload, re.S)
    }
    assert "overdue" in rows["T-LATE"] and "overdue" not in rows["T-STALE"]


# ---------------------------------------------------------------- impact aggregates

#: (casework type, office, change since intake of SAF or None for an intake only, ready)
COHORT = (
    [("forced_labour", "CEB", c, r) for c, r in
     [(1.0, True), (0.5, False), (1.5, True), (0.25, False), (-0.5, False), (1.0, False)]]
    + [("forced_labour", "KLA", None, False)] * 3  # intake only: no change yet, not 0.0
    + [("csx", "KLA", c, r) for c, r in
       [(0.5, False), (0.75, True), (0.0, False), (1.25, False), (0.5, False)]]
    + [("osec", "CEB", c, False) for c in (2.0, -1.0)]
)  # fmt: skip


@pytest.fixture
def cohort(app: Any, world: World) -> None:
    from server.models_cases import Case

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        for i, (ctype, office, change, ready) in enumerate(COHORT):
            intake = {"SAF": 1.5}
            follow_up = change is not None
            s.add(Case(
                project_id=world.project_a, case_code=f"I-{i:03d}", casework_type=ctype,
                office=office, intake_date=dt.date(2025, 1, 10),
                latest_date=dt.date(2025, 7, 10) if follow_up else dt.date(2025, 1, 10),
                intake_scores=intake,
                latest_scores={"SAF": 1.5 + change} if follow_up else intake,
                assessment_count=2 if follow_up else 1, closure_ready=ready,
            ))  # fmt: skip
        s.commit()


def _cells(cells: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["label"]: c for c in cells}


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 3)


def test_aggregates_api__counts_follow_ups_only_and_suppresses_complementary(
    api: dict[str, Api], world: World, cohort: None
) -> None:
    agg = api["viewer"]("GET", f"/projects/{world.project_a}/aggregates").get_json()
    fl = [c for t, _, c, _ in COHORT if t == "forced_labour" and c is not None]
    by_type = _cells(agg["groups"]["casework_type"])
    # (a) the three intake-only cases are not counted as a change of 0
    assert by_type["forced_labour"] == {
        "label": "forced_labour", "domain": "SAF", "mean": _mean(fl), "n": 6, "suppressed": False,
    }  # fmt: skip
    # (b) osec has 2 survivors: suppressed, n hidden too; (c) csx (5, the next smallest) with it
    for label in ("osec", "csx"):
        assert by_type[label] == {
            "label": label, "domain": "SAF", "mean": None, "n": None, "suppressed": True,
        }  # fmt: skip
    # by office every group has 5+ followed-up survivors: nothing suppressed
    by_office = _cells(agg["groups"]["office"])
    for office in ("CEB", "KLA"):
        values = [c for _, o, c, _ in COHORT if o == office and c is not None]
        assert (by_office[office]["mean"], by_office[office]["n"]) == (_mean(values), len(values))
    # share closure-ready counts every case: forced_labour 9, csx 5, osec 2 -> osec and csx hidden
    share = _cells(agg["closure_ready_share"])
    ready_fl = [r for t, _, _, r in COHORT if t == "forced_labour"]
    assert share["casework_type:forced_labour"]["mean"] == round(sum(ready_fl) / len(ready_fl), 3)
    assert share["casework_type:forced_labour"]["n"] == len(ready_fl) == 9
    for label in ("casework_type:csx", "casework_type:osec"):
        assert (share[label]["mean"], share[label]["n"], share[label]["suppressed"]) == (
            None, None, True,
        )  # fmt: skip
    for office in ("CEB", "KLA"):
        members = [r for _, o, _, r in COHORT if o == office]
        assert share[f"office:{office}"]["n"] == len(members) == 8
    # nobody closed: every days-to-closure cell is suppressed and says nothing of its size
    assert all(c["suppressed"] and c["n"] is None for c in agg["days_to_closure"])


def test_aggregates__one_small_group_of_two__both_suppressed(
    api: dict[str, Api], world: World, app: Any
) -> None:
    """Two offices of 7 and 3: publishing the 7 would give the 3 away (the casework type split
    publishes the total), so both are suppressed."""
    from server.models_cases import Case

    with app.extensions["kintsugi.db"].sessionmaker() as s:
        for i in range(10):
            s.add(Case(
                project_id=world.project_a, case_code=f"J-{i}", casework_type="csx",
                office="CEB" if i < 7 else "KLA", intake_date=dt.date(2025, 1, 1),
                latest_date=dt.date(2025, 6, 1), intake_scores={"SAF": 1.0},
                latest_scores={"SAF": 1.0 + i / 4}, assessment_count=2,
            ))  # fmt: skip
        s.commit()
    agg = api["viewer"]("GET", f"/projects/{world.project_a}/aggregates").get_json()
    office = _cells(agg["groups"]["office"])
    assert set(office) == {"CEB", "KLA"}
    assert all(c["suppressed"] and c["mean"] is None and c["n"] is None for c in office.values())
    (csx,) = agg["groups"]["casework_type"]
    assert (csx["mean"], csx["n"]) == (_mean([i / 4 for i in range(10)]), 10)


def test_impact_page__hides_n_of_suppressed_cells_and_states_the_rule(
    client: Any, world: World, cohort: None
) -> None:
    login(client, "viewer")
    page = client.get(f"/admin/projects/{world.project_a}/impact").data.decode()
    fl = [c for t, _, c, _ in COHORT if t == "forced_labour" and c is not None]
    assert f"{_mean(fl):+.2f} (n=6)" in page
    for label in ("csx · Safety", "osec · Safety", ">csx", ">osec"):  # change, then share
        assert re.search(f'{label}</text><rect class="bar suppressed"', page), label
    assert "(n=2)" not in page and "(n=9)" in page  # osec never; forced_labour's share
    # change by type: 2 of 3; share by type: 2 of 3; days: all 5 (nobody closed)
    assert page.count('class="bar suppressed"') == 2 + 2 + 5
    rule = re.search(r'<p class="help" id="suppression-rule">(.*?)</p>', page, re.S).group(1)
    assert "fewer than five" in rule and "next-smallest" in rule
