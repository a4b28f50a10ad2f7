"""The set-based worker: a batch of any size reconciles to exactly what one-at-a-time does.

A seeded, messy field season (follow-ups before intakes, edits, resends of the same assessment,
conflicts, orphans, closures, refused consent, a tampered upload) is reconciled one submission
per transaction, the result snapshotted, the tables reset, and reconciled again in large
batches: cases, assessments, entity versions and review queues must be identical.
"""

from __future__ import annotations

import random
import uuid

import pytest
from sqlalchemy import delete, select, update

from server.models import Entity, EntityBacklog, EntityVersion, Submission
from server.models_cases import Assessment, Case, ReviewItem
from server.services.reconcile import reconcile_pending
from tests.cases.fieldwork import ratings_for

POINTS = ["intake", "six_month", "annual", "closure"]
DATES = ["2025-01-10", "2025-07-12", "2026-07-15", "2027-07-20"]


def _messy_season(field, rng: random.Random) -> int:
    """Upload a season in a shuffled, offline-device order; return how many were sent."""
    r = field.report
    plan: list[dict] = []
    for i in range(6):
        code, ent = f"KE-{700 + i:04d}", str(uuid.UUID(int=rng.getrandbits(128), version=4))
        # even cases: one tablet's offline branch (updates held until their predecessor
        # arrives); odd ones: no branch, each update naming the version before it
        branch = str(uuid.UUID(int=rng.getrandbits(128), version=4)) if i % 2 == 0 else None
        for k in range(rng.randint(1, 4)):
            plan.append({"case_code": code, "point": POINTS[k], "date": DATES[k], "entity_id": ent,
                         "ratings": ratings_for(r, str(rng.randint(1, 4))), "base_version": max(k, 1),
                         "branch_id": branch})  # fmt: skip
    rng.shuffle(plan)  # devices sync late and out of order: follow-ups can precede intakes
    plan.append({"case_code": "KE-0999", "point": "annual", "date": "2026-02-02",
                 "entity_id": str(uuid.uuid4()), "ratings": ratings_for(r, "2")})  # an orphan  # fmt: skip
    sent = []
    for kw in plan:
        sent.append((field.send(**kw)[0], kw))
    for iid, kw in rng.sample(sent, 3):  # edits of earlier assessments
        field.send(**{**kw, "ratings": ratings_for(r, str(rng.randint(1, 4)))}, deprecated_id=iid)
    _iid, kw = rng.choice(sent[:-1])
    field.send(**kw)  # the same assessment sent again under a new instanceID: a duplicate
    _iid, kw = rng.choice(sent[:-1])
    other = "1" if kw["ratings"][next(iter(kw["ratings"]))] != "1" else "4"
    field.send(**{**kw, "ratings": ratings_for(r, other)})  # a different one, same date: conflict
    field.send(case_code="KE-0800", point="intake", date="2026-01-01", entity_id=str(uuid.uuid4()),
               ratings=ratings_for(r, "3"), consent="no")  # fmt: skip
    iid, manifest, files = field.encrypt(case_code="KE-0801", point="intake", date="2026-01-01",
                                         entity_id=str(uuid.uuid4()), ratings=ratings_for(r, "3"))  # fmt: skip
    files["submission.xml.enc"] = files["submission.xml.enc"][:-16] + bytes(16)  # tampered
    field.post(manifest, files)
    return len(sent) + 3 + 1 + 1 + 1 + 1  # edits, duplicate, conflict, refused, tampered


def _snapshot(session) -> dict:
    """Everything reconciliation decides, keyed by instanceID / case code (never by row id)."""
    iid = {a.id: a.instance_id for a in session.scalars(select(Assessment))}
    code = {c.id: c.case_code for c in session.scalars(select(Case))}

    def case_row(c: Case) -> tuple:
        return (c.case_code, c.entity_uuid, c.status, c.intake_date, c.latest_date, c.next_due,
                c.closure_ready, sorted(c.latest_scores.items()), sorted(c.intake_scores.items()),
                tuple(c.flags), c.assessment_count, c.closed_at, c.casework_type, c.office)  # fmt: skip

    def assessment_row(a: Assessment) -> tuple:
        return (a.instance_id, a.state, code.get(a.case_id), iid.get(a.superseded_by_id),
                a.deprecated_id, tuple(a.flags), sorted(a.scores.items()), a.collection_point)  # fmt: skip

    def entity_row(e: Entity) -> tuple:
        return (e.uuid, e.label, e.version, e.deleted_at is None, sorted(e.properties.items()),
                e.conflict or "")  # fmt: skip

    sub_iid = {s.id: s.instance_id for s in session.scalars(select(Submission))}
    uuid_of = {e.id: e.uuid for e in session.scalars(select(Entity))}

    def version_row(v: EntityVersion) -> tuple:
        return (uuid_of[v.entity_id], v.version, v.source, v.base_version or 0, v.branch_id or "",
                v.branch_base_version or 0, v.conflict or "", tuple(v.conflicting_properties or ()),
                sub_iid.get(v.submission_id, ""), sorted(v.data.items()))  # fmt: skip

    def review_row(i: ReviewItem) -> tuple:
        return (i.kind, i.submission_id, iid.get(i.assessment_id), code.get(i.case_id),
                i.resolution, i.summary)  # fmt: skip

    return {
        "cases": sorted(map(case_row, session.scalars(select(Case)))),
        "assessments": sorted(map(assessment_row, session.scalars(select(Assessment)))),
        "entities": sorted(map(entity_row, session.scalars(select(Entity)))),
        "entity_versions": sorted(map(version_row, session.scalars(select(EntityVersion)))),
        "held": sorted(
            (h.entity_uuid, h.branch_id or "", h.branch_base_version, sub_iid[h.submission_id])
            for h in session.scalars(select(EntityBacklog))
        ),
        "review": sorted(map(review_row, session.scalars(select(ReviewItem)))),
        "submissions": sorted(
            (s.instance_id, s.status, s.quarantine_reason or "")
            for s in session.scalars(select(Submission))
        ),
    }


def _reset(session) -> None:
    session.execute(delete(ReviewItem))
    session.execute(update(Assessment).values(superseded_by_id=None))
    session.execute(delete(Assessment))
    session.execute(delete(Case))
    session.execute(delete(EntityBacklog))
    session.execute(delete(EntityVersion))
    session.execute(delete(Entity))
    session.execute(update(Submission).values(status="pending_decryption", quarantine_reason=None))
    session.commit()


@pytest.mark.parametrize("seed", [1, 2])
def test_reconcile__batch_of_one_vs_whole_season__identical_cases_and_queues(field, app, seed):
    """Should give the same cases, assessments, entity versions and queues whatever the batch
    size and however many threads decode it."""
    sent = _messy_season(field, random.Random(seed))
    sessionmaker = field.unlock()
    snapshots, results = [], []
    # one at a time, then the whole season in one batch decoded on two threads
    for batch, threads in ((1, 1), (500, 2)):
        with sessionmaker() as s:
            _reset(s)
        config = {**app.config, "RECONCILE_THREADS": threads}
        results.append(
            reconcile_pending(sessionmaker, field.project_id, config=config, batch=batch)
        )
        with sessionmaker() as s:
            snapshots.append(_snapshot(s))
    one, many = snapshots
    assert results[0].processed == results[1].processed == sent
    assert (results[0].orphans, results[0].conflicts, results[0].quarantined) == (
        results[1].orphans, results[1].conflicts, results[1].quarantined,
    )  # fmt: skip
    assert results[0].quarantined == 1 and results[0].conflicts >= 1
    for part in one:
        assert one[part] == many[part], part
    # the season really exercised the cases it claims to
    states = {a[1] for a in one["assessments"]}
    assert {"active", "superseded", "conflict"} <= states
    assert any(a[5] and "duplicate" in a[5] for a in one["assessments"])
    assert any(c[2] == "closed" for c in one["cases"])
    orphans = [i for i in one["review"] if i[0] == "orphan"]
    assert any(i[4] == "auto_linked" for i in orphans)  # follow-ups that beat their intake
    versions = one["entity_versions"]
    assert any(v[2] == "submission" and v[4] and v[5] >= 1 for v in versions)  # branch updates
    assert any(v[2] == "submission" and not v[4] and v[3] >= 1 for v in versions)  # no branch
    left = [i[5] for i in orphans if i[4] is None]
    assert left and all("KE-0999" in x for x in left)  # only the unknown case waits for an admin


def test_reconcile__orphan_whose_case_appears_later__linked_on_next_run(field, app, db_session):
    """Should link waiting orphans once their case exists (here: committed by another worker
    while this one ran), resolving their review items and counting them in the case."""
    from server.services.cases import review_queues

    r = field.report
    ent = str(uuid.uuid4())
    sessionmaker = field.unlock()
    field.send(case_code="KE-0900", point="six_month", date="2026-07-01", entity_id=ent,
               ratings=ratings_for(r, "2"))  # fmt: skip
    field.send(case_code="KE-0900", point="annual", date="2027-07-01", entity_id=ent,
               ratings=ratings_for(r, "3"))  # fmt: skip
    first = reconcile_pending(sessionmaker, field.project_id, config=app.config)
    assert (first.orphans, first.adopted) == (2, 0)
    db_session.add(
        Case(project_id=field.project_id, case_code="KE-0900", entity_uuid=ent, flags=[])
    )
    db_session.commit()  # the case another worker's intake made
    field.send(
        case_code="KE-0901",
        point="intake",
        date="2026-01-01",
        entity_id=str(uuid.uuid4()),
        ratings=ratings_for(r, "3"),
    )  # fmt: skip  (any new work wakes the worker)
    second = reconcile_pending(sessionmaker, field.project_id, config=app.config)
    assert second.adopted == 2
    db_session.expire_all()
    assert review_queues(db_session, field.project_id)["orphans"] == []
    case = db_session.scalar(select(Case).where(Case.case_code == "KE-0900"))
    assert case.assessment_count == 2 and case.latest_date.isoformat() == "2027-07-01"
    states = db_session.scalars(select(Assessment.state).where(Assessment.case_id == case.id))
    assert sorted(states) == ["active", "active"]


@pytest.mark.postgres_only
def test_two_workers_on_one_case__second_waits_and_sees_the_first(field, app, db_session, backend):
    """Should make a worker whose batch touches a case another worker's batch is changing wait
    for it, then build on it: no case state computed from a stale view, no clash of entity
    versions (PostgreSQL: row locks; SQLite runs one worker at a time)."""
    assert backend == "postgres"  # SQLite has one writer: one worker at a time
    import threading
    import time

    from server.blobs import make_blob_store
    from server.services.reconcile import ReconcileResult as Result
    from server.services.reconcile import _claim, reconcile_batch

    r, ent = field.report, str(uuid.uuid4())
    sessionmaker = field.unlock()
    field.send(case_code="KE-0950", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "1"), branch_id=str(uuid.uuid4()))  # fmt: skip
    reconcile_pending(sessionmaker, field.project_id, config=app.config)
    field.send(case_code="KE-0950", point="six_month", date="2026-07-10", entity_id=ent,
               ratings=ratings_for(r, "2"), base_version=1, trunk_version=1,
               branch_id=str(uuid.uuid4()))  # fmt: skip
    field.send(case_code="KE-0950", point="annual", date="2027-01-10", entity_id=ent,
               ratings=ratings_for(r, "3"), base_version=2, trunk_version=2,
               branch_id=str(uuid.uuid4()))  # fmt: skip

    first = sessionmaker()
    [six] = _claim(first, field.project_id, 1)
    reconcile_batch(
        first, make_blob_store(app.config, first), field.project_id, [six], result=Result()
    )  # fmt: skip  (flushed, not committed: the case is locked)
    done: list[Result] = []
    second = threading.Thread(
        target=lambda: done.append(
            reconcile_pending(sessionmaker, field.project_id, config=app.config)
        )
    )
    second.start()
    time.sleep(0.5)
    assert second.is_alive() and not done  # waiting for the first worker's case
    first.commit()
    first.close()
    second.join(timeout=30)
    assert done and done[0].processed == 1

    db_session.expire_all()
    case = db_session.scalar(select(Case).where(Case.case_code == "KE-0950"))
    assert case.assessment_count == 3 and case.latest_date.isoformat() == "2027-01-10"
    entity = db_session.scalar(select(Entity).where(Entity.uuid == ent))
    versions = db_session.scalars(
        select(EntityVersion.version).where(EntityVersion.entity_id == entity.id)
    ).all()
    assert sorted(versions) == [1, 2, 3] and entity.version == 3
    assert entity.properties["last_assessment_date"] == "2027-01-10"


def test_reconcile__submissions_done_already_pending_again__marked_done_nothing_doubled(
    field, app, db_session
):
    """Should only mark done a submission that has its assessment already (pending again, as
    after a restore of the submissions table): no second assessment or entity version, and
    its updated_at stays that of its processing."""
    r, ent = field.report, str(uuid.uuid4())
    sessionmaker = field.unlock()
    field.send(case_code="KE-0960", point="intake", date="2026-01-10", entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    field.send(case_code="KE-0960", point="six_month", date="2026-07-10", entity_id=ent,
               ratings=ratings_for(r, "2"), base_version=1)  # fmt: skip
    first = reconcile_pending(sessionmaker, field.project_id, config=app.config)
    assert (first.processed, first.assessments) == (2, 2)
    before = _snapshot(db_session)
    processed_at = dict(db_session.execute(select(Submission.id, Submission.updated_at)).all())
    db_session.execute(update(Submission).values(status="pending_decryption"))
    db_session.commit()

    again = reconcile_pending(sessionmaker, field.project_id, config=app.config)

    assert (again.processed, again.assessments, again.quarantined) == (2, 0, 0)
    db_session.expire_all()
    assert _snapshot(db_session) == before  # statuses 'decrypted' again, nothing doubled
    assert dict(db_session.execute(select(Submission.id, Submission.updated_at)).all()) == (
        processed_at
    )
