"""Case state when a domain is rated "not applicable" (88) or "not assessed" (99) throughout
an assessment: the domain has no score there, and the case's flags and change since intake
must neither invent nor hide a change because of that gap."""

from __future__ import annotations

import uuid

from tests.cases.fieldwork import expected_scores, ratings_for


def _detail(admin_api, code: str) -> dict:
    [row] = [c for c in admin_api("GET", f"/cases?q={code}").get_json()["items"]
             if c["label"] == code]  # fmt: skip
    return admin_api("GET", f"/cases/{row['id']}").get_json()


def test_regression__a_domain_not_assessed_in_between__drop_still_flagged(
    field, reconcile, admin_api
):
    """Should flag a regression when safety fell from 4 to 1 although the review in between
    had it all "not assessed" (99): the drop is measured from the last time it was scored."""
    r, ent = field.report, str(uuid.uuid4())
    intake = ratings_for(r, {"SAF": "4"})
    gap = ratings_for(r, {"SAF": "99"})
    fall = ratings_for(r, {"SAF": "1"})
    assert expected_scores(r, gap)["SAF"] is None
    field.send(case_code="KE-0870", point="intake", date="2026-01-10", entity_id=ent,
               ratings=intake)  # fmt: skip
    field.send(case_code="KE-0870", point="six_month", date="2026-07-10", entity_id=ent,
               ratings=gap)  # fmt: skip
    field.send(case_code="KE-0870", point="ad_hoc", date="2026-09-10", entity_id=ent,
               ratings=fall)  # fmt: skip
    reconcile()

    detail = _detail(admin_api, "KE-0870")
    assert [p[1] for p in detail["series"]["SAF"]] == [4.0, None, 1.0]
    assert "regression" in detail["flags"]
    assert detail["change_since_intake"]["SAF"] == -3.0
    assert detail["latest_scores"]["SAF"] == 1.0 and detail["closure_ready"] is False


def test_regression__all_not_applicable_then_scored__no_drop_invented(field, reconcile, admin_api):
    """Should not flag a regression, nor a change since intake, for a domain that was "not
    applicable" (88) at intake and is scored later: there is nothing to compare with."""
    r, ent = field.report, str(uuid.uuid4())
    field.send(case_code="KE-0871", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, {"LEG": "88"}))  # fmt: skip
    field.send(case_code="KE-0871", point="six_month", date="2026-07-10", entity_id=ent,
               ratings=ratings_for(r, {"LEG": "1"}))  # fmt: skip
    reconcile()

    detail = _detail(admin_api, "KE-0871")
    assert detail["change_since_intake"]["LEG"] is None
    assert detail["change_since_intake"]["SAF"] == 0.0
    assert "regression" not in detail["flags"]
