"""Two reconcile workers (or a worker and an admin) on one tablet's offline entity sequence.

One tablet registers a survivor offline and makes two follow-ups (Collect: the create at its
version 1 with no branch, then updates based on 1 and 2 in its local branch; openrosa.md
§11.4). Two of the three are reconciled by two workers at once; the third before or after.
The interleaving is forced, not hoped for: the first worker stops just before its commit
(its writes flushed, its locks held) while the second runs to its end or to a wait on the
first; only then does the first commit.

Whatever the order, the result must be the serial one: every assessment in the case, the
list serving version 3 with the annual's scores, versions 1-3 made by the tablet's own
submissions in its order, nothing held (waiting for the backlog days), no conflict to review.
The same for an admin opening or linking the case from an orphan meanwhile, for the pass that
forces held updates, and for two batches crossing two tablets."""

from __future__ import annotations

import fcntl
import threading
import uuid

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import make_url

from server.db import write_lock
from server.models import EntityBacklog
from server.models_cases import Case
from server.services.reconcile import reconcile_pending
from tests.cases.fieldwork import ratings_for, wait_until
from tests.cases.test_entity_offline_sequences import _downloaded, _entity_conflicts, _integrity
from tests.cases.test_entity_versions import _case, _history

DATES = {"intake": "2026-01-05", "six_month": "2026-07-05", "annual": "2027-01-05"}
BASE = {"six_month": 1, "annual": 2}


class _Worker:
    """``reconcile_pending`` in a thread of its own; ``pause`` stops its batch just before the
    commit until :meth:`go` (every write flushed, every lock it took still held)."""

    def __init__(
        self,
        app,
        project_id: int,
        *,
        pause: bool = False,
        at_flush: bool = False,
        batch: int = 1,
        **config,
    ) -> None:
        self.app, self.project_id, self.config = app, project_id, {**app.config, **config}
        self.batch = batch  # submissions it claims (in id order, skipping those claimed)
        self.at_flush = at_flush  # stop before the batch writes, rather than before it commits
        self.sessionmaker = app.extensions["kintsugi.db"].sessionmaker
        self.paused, self._go, self._armed = threading.Event(), threading.Event(), pause
        self.at_write_lock = threading.Event()  # SQLite: asked for the one writer's lock
        self.errors: list[BaseException] = []
        self.processed = 0
        self.thread = threading.Thread(target=self._run)

    def _session(self):
        session = self.sessionmaker()
        if self._armed:  # the first transaction is the batch's
            self._armed = False
            if self.at_flush:
                event.listen(session, "before_flush", self._hold)
            else:
                event.listen(session, "before_commit", self._hold)
        return session

    def _hold(self, _session, *_flush) -> None:
        if not self.paused.is_set():
            self.paused.set()
            self._go.wait(60)

    def __enter__(self) -> None:  # the worker's write lock (entered once per transaction)
        self.at_write_lock.set()
        write_lock(self.app).__enter__()

    def __exit__(self, *exc: object) -> None:
        write_lock(self.app).__exit__(*exc)

    def _run(self) -> None:
        try:
            result = reconcile_pending(
                self._session, self.project_id, config=self.config, limit=self.batch,
                batch=self.batch,
                write_lock=self,
            )  # fmt: skip
            self.processed = result.processed
        except BaseException as err:  # surfaced by the test
            self.errors.append(err)

    def go(self) -> None:
        self._go.set()


def _waits_for_a_lock(app) -> bool:
    """PostgreSQL: a session of this database waits for a lock another one holds."""
    with app.extensions["kintsugi.db"].sessionmaker() as s:  # a fresh statistics snapshot
        return bool(
            s.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            )
        )


def _writer_lock_taken(app) -> bool:
    """SQLite: whether some worker holds the file lock every writer process takes."""
    path = make_url(app.config["DATABASE_URL"]).database + ".writelock"
    with open(path, "a") as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(probe, fcntl.LOCK_UN)
        return False


def _interleave(app, first, second, *, waiting=None) -> bool:
    """Start ``first`` and wait until it stopped at its pause; start ``second`` and wait until
    it is done or waits (``waiting``; by default: for a lock on PostgreSQL); then let ``first``
    go and wait for both. Returns whether ``second`` was still running, i.e. waiting."""
    first.thread.start()
    try:
        wait_until(lambda: first.paused.is_set() or not first.thread.is_alive())
        assert first.paused.is_set(), getattr(first, "errors", None)
        second.thread.start()
        waits = waiting or (lambda: _waits_for_a_lock(app))
        wait_until(lambda: not second.thread.is_alive() or waits())
        return second.thread.is_alive()
    finally:
        first.go()
        for side in (first, second):
            if side.thread.ident is not None:
                side.thread.join(60)


def _at_once(app, backend, project_id: int) -> None:
    """Reconcile the two pending submissions with two workers: the older one's worker stops
    before its commit; the other runs until it is done or waits for the first; then the first
    commits."""
    first, second = _Worker(app, project_id, pause=True), _Worker(app, project_id)
    if backend == "postgres":
        _interleave(app, first, second)
    else:  # one writer at a time: the second worker cannot even start its batch
        asked = second.at_write_lock.is_set
        assert _interleave(app, first, second, waiting=lambda: asked() and _writer_lock_taken(app))
    for worker in (first, second):
        assert not worker.thread.is_alive() and not worker.errors, worker.errors
        assert worker.processed == 1  # each worker reconciled one of the two


@pytest.mark.parametrize(
    ("before", "pair"),
    [
        # the intake and the 6-month at once (the annual later)
        ((), ("intake", "six_month")),
        ((), ("six_month", "intake")),
        # the two follow-ups at once, the intake synced before
        (("intake",), ("six_month", "annual")),
        (("intake",), ("annual", "six_month")),
        # the intake and the annual at once, the 6-month synced (and held) before
        (("six_month",), ("intake", "annual")),
        (("six_month",), ("annual", "intake")),
    ],
    ids=lambda v: "+".join(v) or "none",
)
def test_two_workers_at_once__the_offline_branch_applies_as_in_serial_order(
    field, reconcile, app, backend, db_session, admin_api, before, pair
):
    """Should give the serial result when two of the tablet's three submissions are reconciled
    by two workers at once, in either commit order: an intake and a follow-up at once must not
    leave the follow-up's list update held (it was: the follow-up's worker saw no case yet,
    and the intake's worker no held update yet) until the backlog days force it."""
    r, ent, branch = field.report, str(uuid.uuid4()), str(uuid.uuid4())
    code = "KE-0950"
    rating = {"intake": "1", "six_month": "2", "annual": "3"}
    made = {
        point: field.encrypt(
            case_code=code,
            point=point,
            date=DATES[point],
            entity_id=ent,
            ratings=ratings_for(r, rating[point]),
            **({"base_version": BASE[point], "branch_id": branch} if point in BASE else {}),
        )
        for point in DATES
    }
    for point in before:
        field.post(*made[point][1:])
        reconcile()
    for point in pair:  # the older one is claimed by the first worker
        field.post(*made[point][1:])
    field.unlock()  # the CLI locked it when done
    _at_once(app, backend, field.project_id)
    for point in DATES.keys() - {*before, *pair}:
        field.post(*made[point][1:])
    reconcile()  # the rest, and what a worker does after its batches

    row = _downloaded(field)[ent]  # what every tablet gets
    assert (row["__version"], row["last_collection_point"]) == ("3", "annual")
    assert {row[f"score_{d['id']}"] for d in r["domains"]} == {"3.00"}
    assert _integrity(field, [ent]) == {ent: "false"}
    case = _case(db_session, code)
    assert case.assessment_count == 3 and case.latest_date.isoformat() == DATES["annual"]
    assert set(case.latest_scores.values()) == {3.0}
    assert not [f for f in case.flags if f.startswith("entity_")]
    assert _history(db_session, ent) == [
        (1, "submission", None, None, None),
        (2, "submission", 1, branch, None),
        (3, "submission", 2, branch, None),
    ]
    assert db_session.scalars(select(EntityBacklog)).all() == []  # nothing waits for 5 days
    assert _entity_conflicts(admin_api) == []
    assert admin_api("GET", "/review-queues").get_json()["orphans"] == []


class _PausedAdmin:
    """An admin's request in a thread of its own; with ``pause``, it stops just before the
    commit of the transaction that opened a case until :meth:`go`."""

    def __init__(self, app, call, *, pause: bool) -> None:
        self.sessionmaker = app.extensions["kintsugi.db"].sessionmaker
        self.paused, self._go, self._opened = threading.Event(), threading.Event(), False
        self.answers: list = []
        self.thread = threading.Thread(target=lambda: self.answers.append(call()))
        if pause:
            event.listen(self.sessionmaker, "after_flush", self._flushed)
            event.listen(self.sessionmaker, "before_commit", self._hold)

    def _flushed(self, session, _context) -> None:
        if threading.current_thread() is self.thread and any(
            isinstance(o, Case) for o in session.new
        ):
            self._opened = True

    def _hold(self, _session) -> None:
        if threading.current_thread() is self.thread and self._opened:
            self.paused.set()
            self._go.wait(60)

    def go(self) -> None:
        self._go.set()

    def close(self) -> None:
        """Unhook (once its thread is done: listeners must not change while they run)."""
        for name, fn in (("after_flush", self._flushed), ("before_commit", self._hold)):
            if event.contains(self.sessionmaker, name, fn):
                event.remove(self.sessionmaker, name, fn)


@pytest.mark.postgres_only
@pytest.mark.parametrize("first", ["worker", "admin"])
def test_admin_opens_the_case_while_a_worker_reconciles_its_next_follow_up__nothing_waits(
    field, reconcile, app, db_session, admin_api, first
):
    """Should give the serial result when an admin opens a case from an orphan (the tablet's
    intake was lost) while a worker reconciles the tablet's next follow-up, whichever commits
    first: the admin's case create is the version 1 the tablet's branch builds on, so neither
    follow-up may stay held, or an orphan, until the backlog days force it. (PostgreSQL: on
    SQLite the admin's request and the worker's batch take the one writer's lock in turn.)"""
    r, ent, branch, code = field.report, str(uuid.uuid4()), str(uuid.uuid4()), "KE-0951"
    common = {"case_code": code, "entity_id": ent, "branch_id": branch}
    field.send(point="six_month", date=DATES["six_month"], ratings=ratings_for(r, "2"),
               base_version=1, **common)  # fmt: skip
    reconcile()
    [orphan] = admin_api("GET", "/review-queues").get_json()["orphans"]
    field.send(point="annual", date=DATES["annual"], ratings=ratings_for(r, "3"),
               base_version=2, **common)  # fmt: skip
    field.unlock()

    worker = _Worker(app, field.project_id, pause=first == "worker")
    admin = _PausedAdmin(app, lambda: admin_api(
        "POST", f"/review-items/{orphan['id']}/resolve",
        json={"action": "create_case", "case_code": code},
    ), pause=first == "admin")  # fmt: skip
    try:
        _interleave(app, *((worker, admin) if first == "worker" else (admin, worker)))
    finally:
        admin.close()
    assert not worker.errors and worker.processed == 1
    assert [a.status_code for a in admin.answers] == [204]
    reconcile()  # what a worker does next

    row = _downloaded(field)[ent]
    assert row["last_collection_point"] == "annual"
    assert {row[f"score_{d['id']}"] for d in r["domains"]} == {"3.00"}
    case = _case(db_session, code)
    assert case.assessment_count == 2 and set(case.latest_scores.values()) == {3.0}
    assert not [f for f in case.flags if f.startswith("entity_")]
    assert db_session.scalars(select(EntityBacklog)).all() == []  # nothing waits for 5 days
    assert [(v, src, base) for v, src, base, _, _ in _history(db_session, ent)][:3] == [
        (1, "server", None),
        (2, "submission", 1),
        (3, "submission", 2),
    ]
    assert _entity_conflicts(admin_api) == []
    assert admin_api("GET", "/review-queues").get_json()["orphans"] == []


@pytest.mark.postgres_only
def test_admin_links_an_orphan_the_worker_is_adopting__told_it_is_resolved(
    field, reconcile, app, db_session, admin_api
):
    """Should answer as in serial order when an admin links an orphan to a case while a
    worker's batch adopts that same orphan into the case its intake makes: the item is
    resolved already (404), and the follow-up stays in its own survivor's case rather than
    being moved, from a stale read, to the case the admin picked."""
    r, ent, code = field.report, str(uuid.uuid4()), "KE-0952"
    field.send(case_code="KE-0953", point="intake", date=DATES["intake"],
               entity_id=str(uuid.uuid4()), ratings=ratings_for(r, "1"))  # fmt: skip
    field.send(case_code=code, point="six_month", date=DATES["six_month"], entity_id=ent,
               ratings=ratings_for(r, "2"), base_version=1, branch_id=str(uuid.uuid4()))  # fmt: skip
    reconcile()
    [orphan] = admin_api("GET", "/review-queues").get_json()["orphans"]
    other = _case(db_session, "KE-0953").id
    field.send(case_code=code, point="intake", date=DATES["intake"], entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    field.unlock()

    worker = _Worker(app, field.project_id, pause=True)
    admin = _PausedAdmin(app, lambda: admin_api(
        "POST", f"/review-items/{orphan['id']}/resolve", json={"action": "link", "case_id": other},
    ), pause=False)  # fmt: skip
    _interleave(app, worker, admin)
    assert not worker.errors and worker.processed == 1
    assert [a.status_code for a in admin.answers] == [404]

    case = _case(db_session, code)
    assert case.assessment_count == 2 and case.latest_date.isoformat() == DATES["six_month"]
    assert _case(db_session, "KE-0953").assessment_count == 1
    assert _downloaded(field)[ent]["last_collection_point"] == "six_month"
    assert admin_api("GET", "/review-queues").get_json()["orphans"] == []


@pytest.mark.postgres_only
def test_held_update_forced_while_its_predecessor_is_reconciled__both_workers_carry_on(
    field, reconcile, app, db_session
):
    """Should let a worker's forced-backlog pass and another worker's batch meet on one held
    update without either failing: the tablet's 6-month arrives just as its annual (held for
    it) has waited the backlog days. The batch applies the 6-month and releases the annual in
    the tablet's order; the forcing pass finds nothing left to force. (Before, each locked
    what the other wanted next - the held row, the case row - and PostgreSQL broke the
    deadlock by failing the forcing worker's pass.)"""
    r, ent, branch, code = field.report, str(uuid.uuid4()), str(uuid.uuid4()), "KE-0954"
    common = {"case_code": code, "entity_id": ent, "branch_id": branch}
    field.send(case_code=code, point="intake", date=DATES["intake"], entity_id=ent,
               ratings=ratings_for(r, "1"))  # fmt: skip
    field.send(point="annual", date=DATES["annual"], ratings=ratings_for(r, "3"),
               base_version=2, **common)  # fmt: skip
    reconcile()
    field.send(point="six_month", date=DATES["six_month"], ratings=ratings_for(r, "2"),
               base_version=1, **common)  # fmt: skip
    field.unlock()

    batch = _Worker(app, field.project_id, pause=True, at_flush=True)
    forcing = _Worker(app, field.project_id, ENTITY_BACKLOG_DAYS=0)  # all waited long enough
    _interleave(app, batch, forcing)
    assert (batch.errors, forcing.errors) == ([], [])
    assert (batch.processed, forcing.processed) == (1, 0)

    assert [(v, src, base) for v, src, base, _, _ in _history(db_session, ent)] == [
        (1, "submission", None),
        (2, "submission", 1),
        (3, "submission", 2),
    ]
    assert db_session.scalars(select(EntityBacklog)).all() == []
    row = _downloaded(field)[ent]
    assert (row["__version"], row["last_collection_point"]) == ("3", "annual")


@pytest.mark.postgres_only
def test_two_batches_crossing_two_tablets__each_waits_for_the_other_in_turn_not_in_a_circle(
    field, reconcile, app, db_session, admin_api
):
    """Should serialise, not deadlock, two batches that each hold one tablet's intake and the
    other tablet's follow-up (the locks are taken together, in one order): both cases end at
    version 2 from the tablets' own submissions, nothing held, no orphan."""
    r = field.report
    tablets = [(f"KE-096{i}", str(uuid.uuid4()), str(uuid.uuid4())) for i in (1, 2)]

    def upload(tablet, point):
        code, ent, branch = tablet
        extra = {"base_version": 1, "branch_id": branch} if point == "six_month" else {}
        field.send(case_code=code, point=point, date=DATES[point], entity_id=ent,
                   ratings=ratings_for(r, "2" if extra else "1"), **extra)  # fmt: skip

    one, two = tablets
    for tablet, point in ((one, "intake"), (two, "six_month"), (one, "six_month"), (two, "intake")):
        upload(tablet, point)  # the first worker claims the first two, the second the others
    field.unlock()
    first = _Worker(app, field.project_id, pause=True, batch=2)
    second = _Worker(app, field.project_id, batch=2)
    _interleave(app, first, second)
    assert (first.errors, second.errors) == ([], [])
    assert (first.processed, second.processed) == (2, 2)
    reconcile()  # what a worker does next

    served = _downloaded(field)
    for code, ent, branch in tablets:
        assert (served[ent]["__version"], served[ent]["last_collection_point"]) == (
            "2",
            "six_month",
        )
        assert _case(db_session, code).assessment_count == 2
        assert [(v, src, base, b) for v, src, base, b, _ in _history(db_session, ent)] == [
            (1, "submission", None, None),
            (2, "submission", 1, branch),
        ]
    assert db_session.scalars(select(EntityBacklog)).all() == []
    assert admin_api("GET", "/review-queues").get_json()["orphans"] == []
    assert _entity_conflicts(admin_api) == []
