"""An in-memory double of the case services (``server.services.cases``, ``custody``,
``export``) returning the real service dataclasses, so the admin views are tested on exactly
the shapes the services produce without running the reconciliation pipeline. Only display and
wiring are tested through it; ``test_cases_real.py`` runs the views on the real services.
Everything here is fictional.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import sys
import types
from dataclasses import fields
from typing import Any

from server.errors import NotFoundError, ProjectError
from server.services.cases import (
    Aggregates,
    AssessmentView,
    CaseDetail,
    CaseSummary,
    Cell,
    ReviewItem,
)

DOMAINS = ["Safety", "Legal protection", "Mental wellbeing", "Economic empowerment",
           "Social support", "Physical wellbeing"]  # fmt: skip
BASE = [1.25, 1.8, 2.1, 1.5, 2.75, 1.9]  # intake scores per domain (fictional)
STEP = [0.6, 0.35, 0.5, 0.3, 0.15, 0.45]  # change per follow-up


class CaseWorld:
    """State of the double (one per test)."""

    def __init__(self, project_id: int) -> None:
        self.project_id = project_id
        self.unlocked: set[int] = set()
        self.resolved: list[tuple[int, str, int | None, str]] = []
        self.notes_viewed: list[tuple[int, str]] = []
        dates = [dt.date(2026, 1, 10), dt.date(2026, 4, 12), dt.date(2026, 7, 15)]
        self.cases: dict[int, CaseDetail] = {}
        rows = [("CEB", "forced_labour", "overdue", False), ("KLA", "csx", "due", False),
                ("CEB", "osec", None, True)]  # fmt: skip
        for cid, (office, ctype, due, ready) in enumerate(rows, start=1):
            assessments = []
            for i, d in enumerate(dates):
                scores = {
                    dom: round(min(4.0, BASE[k] + STEP[k] * i * (1 + cid % 2)), 2)
                    for k, dom in enumerate(DOMAINS)
                }
                assessments.append(
                    AssessmentView(
                        id=cid * 10 + i,
                        date=d,
                        kind="intake" if i == 0 else "follow_up",
                        state="active",
                        domain_scores=scores,
                        survivor_view={"Safety": "I feel safer at home"} if i else {},
                        survivor_gaps=[],
                        flags=[],
                        has_notes=True,
                        instance_id=f"uuid:{cid}-{i}",
                    )
                )
            first, last = assessments[0].domain_scores, assessments[-1].domain_scores
            self.cases[cid] = CaseDetail(
                id=cid, project_id=project_id, label=f"K-{cid:04d}", office=office,
                casework_type=ctype, status="open", next_due="2026-10-15", due=due,
                closure_ready=ready, assessment_count=len(assessments),
                latest_scores=last,
                change_since_intake={d: round(last[d] - first[d], 2) for d in DOMAINS},
                flags=["score_mismatch"] if cid == 1 else [], assessments=assessments,
                series={dom: [(a.date, a.domain_scores[dom]) for a in assessments]
                        for dom in DOMAINS},
            )  # fmt: skip
        self.queues: dict[str, list[ReviewItem]] = {
            "orphans": [ReviewItem(101, "orphan", "Assessment of 2026-07-20 names unknown case K-0099")],
            "conflicts": [ReviewItem(102, "conflict", "K-0002: two follow-ups on the same day")],
            "score_mismatches": [],
            "quarantined": [],
            "plaintext_for_encrypted_form": [],
        }  # fmt: skip

    # ---- cases
    def list_cases(
        self,
        session: Any,
        project_id: int,
        *,
        office=None,
        casework_type=None,
        status=None,
        due=None,
        closure_ready=None,
        q=None,
        limit=50,
        offset=0,
    ):
        rows = [c for c in self.cases.values() if c.project_id == project_id]
        if office:
            rows = [c for c in rows if c.office == office]
        if casework_type:
            rows = [c for c in rows if c.casework_type == casework_type]
        if status:
            rows = [c for c in rows if c.status == status]
        if due:
            rows = [c for c in rows if c.due == due]
        if closure_ready:
            rows = [c for c in rows if c.closure_ready]
        if q:
            rows = [c for c in rows if q.lower() in c.label.lower()]
        names = [f.name for f in fields(CaseSummary)]
        summaries = [CaseSummary(**{n: getattr(c, n) for n in names}) for c in rows]
        return summaries[offset : offset + limit], len(rows)

    def get_case(self, session: Any, case_id: int) -> CaseDetail:
        if case_id not in self.cases:
            raise NotFoundError(f"Case {case_id} does not exist.")
        return self.cases[case_id]

    def review_queues(self, session: Any, project_id: int) -> dict[str, list[ReviewItem]]:
        return self.queues if project_id == self.project_id else {k: [] for k in self.queues}

    def resolve_review_item(self, session: Any, item_id: int, action: str, *, actor: str,
                            case_id: int | None = None, project_id: int | None = None,
                            case_code: str | None = None) -> None:  # fmt: skip
        known = any(i.id == item_id for items in self.queues.values() for i in items)
        if not known or (project_id is not None and project_id != self.project_id):
            raise NotFoundError("That review item does not exist or is already resolved.")
        for items in self.queues.values():
            items[:] = [i for i in items if i.id != item_id]
        self.resolved.append((item_id, action, case_id, actor))

    def aggregates(self, session: Any, project_id: int) -> Aggregates:
        def cell(label: str, domain: str, mean: float, n: int) -> Cell:
            # as the service publishes them: a suppressed cell has neither value nor n
            return (
                Cell(label, domain, None, None, True)
                if n < 5
                else Cell(label, domain, mean, n, False)
            )

        return Aggregates(
            groups={
                "casework_type": [cell("forced_labour", "Safety", 0.8, 12),
                                  cell("forced_labour", "Mental wellbeing", 0.4, 12),
                                  cell("csx", "Safety", 0.1, 3)],
                "office": [cell("CEB", "Safety", -0.2, 8), cell("KLA", "Safety", 0.3, 2)],
            },
            closure_ready_share=[cell("casework_type:forced_labour", "closure_ready_share", 0.25, 12),
                                 cell("casework_type:csx", "closure_ready_share", 0.0, 3)],
            days_to_closure=[cell("office:CEB", "median_days_to_closure", 210.0, 6),
                             cell("office:KLA", "median_days_to_closure", 90.0, 1)],
        )  # fmt: skip

    def pending_backlog(self, session: Any, project_id: int) -> int:
        return 7

    def decrypt_notes_on_demand(self, session: Any, assessment_id: int, *, actor: str):
        self.notes_viewed.append((assessment_id, actor))
        return {"Safety note": "(fictional) Follow-up visit went well."}

    # ---- custody
    def refuse_guessing(self, session: Any, project_id: int, *, limit: int,
                        window_s: float) -> None:  # fmt: skip
        return None  # the real count of audited failures is tested in test_custody_api

    def unlock_project(self, session: Any, project_id: int, passphrase: bytes, *, actor: str,
                       idle_seconds: float | None = None, lift_admin_lock: bool = True):  # fmt: skip
        if passphrase != b"correct passphrase":
            raise ProjectError("That passphrase does not unlock this project's key.")
        self.unlocked.add(project_id)

    def lock_project(self, session: Any, project_id: int, *, actor: str,
                     everywhere: bool = True) -> None:  # fmt: skip
        self.unlocked.discard(project_id)

    def honour_admin_lock(self, session: Any, project_id: int, *, actor: str) -> Any:
        return types.SimpleNamespace(locked_at=None, forgot=False)  # no admin lock in force

    def is_unlocked(self, project_id: int) -> bool:
        return project_id in self.unlocked

    def rotate_project_key(self, session: Any, project_id: int, passphrase: bytes, *,
                           actor: str) -> str:  # fmt: skip
        return "f" * 64

    # ---- export
    def export_cases(self, session: Any, project_id: int, out: Any, *, fmt: str = "csv",
                     wide: bool = False, progress: Any = None) -> int:  # fmt: skip
        rows = [c for c in self.cases.values() if c.project_id == project_id]
        if fmt == "xlsx":
            import openpyxl

            wb = openpyxl.Workbook()
            ws = wb.active
            ws.append(["case", "office"])
            for c in rows:
                ws.append([c.label, c.office])
            wb.save(out)
            return len(rows)
        text = io.StringIO()
        w = csv.writer(text)
        w.writerow(["case", "office", "casework_type"])
        for c in rows:
            w.writerow([c.label, c.office, c.casework_type])
        out.write(text.getvalue().encode("utf-8"))
        return len(rows)

    def count_rows(self, session: Any, project_id: int, *, wide: bool = False) -> int:
        return sum(1 for c in self.cases.values() if c.project_id == project_id)

    def iter_csv(self, session: Any, project_id: int, *, wide: bool = False) -> Any:
        out = io.BytesIO()
        self.export_cases(session, project_id, out, wide=wide)
        yield from out.getvalue().splitlines(keepends=True)


def install(monkeypatch: Any, world: CaseWorld) -> None:
    """Put the double in ``sys.modules`` as the three service modules."""
    for name, attrs in {
        "cases": ["list_cases", "get_case", "review_queues", "resolve_review_item", "aggregates",
                  "pending_backlog", "decrypt_notes_on_demand"],
        "custody": ["unlock_project", "lock_project", "is_unlocked", "rotate_project_key",
                    "honour_admin_lock", "refuse_guessing"],
        "export": ["export_cases", "count_rows", "iter_csv"],
    }.items():  # fmt: skip
        mod = types.ModuleType(f"server.services.{name}")
        for attr in attrs:
            setattr(mod, attr, getattr(world, attr))
        monkeypatch.setitem(sys.modules, f"server.services.{name}", mod)
