"""An in-memory double of the case services' contract (``server.services.cases``, ``custody``,
``export``), used to test how the admin views display and drive them while the real services
are written in parallel. It follows the signatures of the brief exactly; it is never used by the
server itself. Everything here is fictional.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import sys
import types
from dataclasses import dataclass, field
from typing import Any

from server.errors import ProjectError

DOMAINS = ["Safety", "Legal protection", "Mental wellbeing", "Economic empowerment",
           "Social support", "Physical wellbeing"]  # fmt: skip
BASE = [1.25, 1.8, 2.1, 1.5, 2.75, 1.9]  # intake scores per domain (fictional)
STEP = [0.6, 0.35, 0.5, 0.3, 0.15, 0.45]  # change per follow-up


@dataclass
class CaseSummary:
    id: int
    project_id: int
    label: str
    office: str
    casework_type: str
    status: str
    next_due: str | None
    due: str | None  # "due" | "overdue" | None
    closure_ready: bool
    assessment_count: int


@dataclass
class Assessment:
    id: int
    date: dt.date
    kind: str
    domain_scores: dict[str, float | None]
    has_notes: bool = True


@dataclass
class CaseDetail(CaseSummary):
    assessments: list[Assessment] = field(default_factory=list)
    series: dict[str, list[tuple[dt.date, float | None]]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)


@dataclass
class ReviewItem:
    id: int
    kind: str
    summary: str


@dataclass
class Cell:
    """One group's figures; with n < 5 every figure is None and suppressed is True."""

    label: str
    n: int
    suppressed: bool
    mean_change: dict[str, float | None] | None
    share_closure_ready: float | None
    median_days_to_closure: float | None


@dataclass
class Aggregates:
    groups: dict[str, list[Cell]]


class CaseWorld:
    """State of the double (one per test)."""

    def __init__(self, project_id: int) -> None:
        self.project_id = project_id
        self.unlocked: set[int] = set()
        self.resolved: list[tuple[int, str, int | None, str]] = []
        self.notes_viewed: list[tuple[int, str]] = []
        dates = [dt.date(2026, 1, 10), dt.date(2026, 4, 12), dt.date(2026, 7, 15)]
        self.cases: dict[int, CaseDetail] = {}
        for cid, (office, ctype, due, ready) in enumerate(
            [
                ("CEB", "forced_labour", "overdue", False),
                ("KLA", "csx", "due", False),
                ("CEB", "osec", None, True),
            ],
            start=1,
        ):
            assessments = [
                Assessment(
                    cid * 10 + i,
                    d,
                    "intake" if i == 0 else "follow-up",
                    {
                        dom: round(min(4.0, BASE[k] + STEP[k] * i * (1 + cid % 2)), 2)
                        for k, dom in enumerate(DOMAINS)
                    },
                )
                for i, d in enumerate(dates)
            ]
            self.cases[cid] = CaseDetail(
                id=cid, project_id=project_id, label=f"K-{cid:04d}", office=office,
                casework_type=ctype, status="open", next_due="2026-10-15", due=due,
                closure_ready=ready, assessment_count=len(assessments), assessments=assessments,
                series={
                    dom: [(a.date, a.domain_scores[dom]) for a in assessments] for dom in DOMAINS
                },
                flags=["score_mismatch"] if cid == 1 else [],
            )  # fmt: skip
        self.queues: dict[str, list[ReviewItem]] = {
            "orphans": [ReviewItem(101, "orphan", "Assessment 2026-07-20 names unknown case K-0099")],
            "conflicts": [ReviewItem(102, "conflict", "K-0002 changed on two devices")],
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
        return [CaseSummary(**{f: getattr(c, f) for f in CaseSummary.__dataclass_fields__})
                for c in rows][offset : offset + limit], len(rows)  # fmt: skip

    def get_case(self, session: Any, case_id: int) -> CaseDetail:
        from server.errors import NotFoundError

        if case_id not in self.cases:
            raise NotFoundError(f"Case {case_id} does not exist.")
        return self.cases[case_id]

    def review_queues(self, session: Any, project_id: int) -> dict[str, list[ReviewItem]]:
        return self.queues if project_id == self.project_id else {k: [] for k in self.queues}

    def resolve_review_item(self, session: Any, item_id: int, action: str, *, actor: str,
                            case_id: int | None = None) -> None:  # fmt: skip
        for items in self.queues.values():
            items[:] = [i for i in items if i.id != item_id]
        self.resolved.append((item_id, action, case_id, actor))

    def aggregates(self, session: Any, project_id: int) -> Aggregates:
        def cell(label: str, n: int, change: float, share: float, days: float) -> Cell:
            if n < 5:
                return Cell(label, n, True, None, None, None)
            return Cell(label, n, False, {"Safety": change, "Mental wellbeing": change / 2},
                        share, days)  # fmt: skip

        return Aggregates(groups={
            "casework type": [cell("forced labour", 12, 0.8, 0.25, 210),
                              cell("csx", 3, 0, 0, 0)],
            "office": [cell("CEB", 8, -0.2, 0.5, 180), cell("KLA", 2, 0, 0, 0)],
        })  # fmt: skip

    def pending_backlog(self, session: Any, project_id: int) -> int:
        return 7

    def decrypt_notes_on_demand(self, session: Any, assessment_id: int, *, actor: str):
        self.notes_viewed.append((assessment_id, actor))
        return {"worker_note": "(fictional) Follow-up visit went well."}

    # ---- custody
    def unlock_project(self, session: Any, project_id: int, passphrase: bytes, *, actor: str):
        if passphrase != b"correct passphrase":
            raise ProjectError("That passphrase does not unlock this project's key.")
        self.unlocked.add(project_id)

    def lock_project(self, session: Any, project_id: int, *, actor: str) -> None:
        self.unlocked.discard(project_id)

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


def install(monkeypatch: Any, world: CaseWorld) -> None:
    """Put the double in ``sys.modules`` as the three service modules."""
    for name, attrs in {
        "cases": ["list_cases", "get_case", "review_queues", "resolve_review_item", "aggregates",
                  "pending_backlog", "decrypt_notes_on_demand"],
        "custody": ["unlock_project", "lock_project", "is_unlocked", "rotate_project_key"],
        "export": ["export_cases"],
    }.items():  # fmt: skip
        mod = types.ModuleType(f"server.services.{name}")
        for attr in attrs:
            setattr(mod, attr, getattr(world, attr))
        monkeypatch.setitem(sys.modules, f"server.services.{name}", mod)
