"""Central's version and conflict model for the ``cases`` entity list (openrosa.md §11.4-11.5).

Collect edits case entities offline. Each device keeps an offline *branch* per entity: its
updates carry ``baseVersion`` (the device's local version before the edit), ``trunkVersion``
(the server version the branch started from) and ``branchId``. Uploads can arrive out of
order, so the server has to find each update's real base before it can tell whether somebody
else changed the case meanwhile. This module does what Central does:

* versions: an entity starts at version 1; every applied update adds ``current + 1``, recorded
  in ``entity_versions`` with its branch and what the device sent;
* base version: without a branch, the version the device names; in a branch, version 1, the
  trunk version at the start of a branch, or else the version made by the branch's previous
  update - and if that update has not arrived yet, this one is *held* in ``entity_backlog``
  until it does, or is applied against the latest version after ``ENTITY_BACKLOG_DAYS``;
* conflicts: an update based on an older version than the current one is a *soft* conflict
  ("parallel update"), or *hard* when a property the device sent was changed on the server
  since its base to another value; a branch interrupted by another device's or the server's
  version is soft too. Conflicts never downgrade; an admin marks them resolved. The update is
  applied all the same (Central: last write wins, the conflict is flagged, not rejected).

One deliberate difference: the list's properties are not merged from what devices sent. The
case's state is recomputed from all its assessments in assessment-date order (a late-synced old
assessment cannot overwrite a newer one), and every version serves that state. So the
assessment of a held update is in its case at once; only the entity's version waits.

Errors (an update of an unknown entity, a create of one that exists, a base version that never
existed, a trunk version beyond the current one) never lose anything: the assessment is kept as
usual, the error is audited as ``entity.error``, and the entity gets a server version if the
case changed.

Two more differences, both from what a case is: a closed case leaves the list (its entity is
marked deleted, so the integrity API tells devices to drop it) but still takes late updates -
an assessment from before the closure that syncs late belongs to its history - where Central
refuses updates of a deleted entity (like Central, such an update flags no conflict: no device
holds the case any more); and an edit (``deprecatedID``) of a submission the server
has is not processed as a create or update again, as Central never processes a submission's
entity block twice (the edit's state is served as a server version, or waits with the held
update it corrects).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models import Entity, EntityBacklog, EntityVersion
from server.models_cases import Case, CaseStatus, ReviewItem

__all__ = [
    "DATASET",
    "EntityBook",
    "EntityUpdate",
    "case_properties",
    "merged_into",
    "received_properties",
]

DATASET = "cases"
SOFT, HARD = "soft", "hard"
_DIGITS = re.compile(r"^\d+$")
_UUID = re.compile(
    r"^(uuid:)?[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.I
)

MERGED = "merged"  # the source of the one version of an entity merged into another case

# what an update asked for, and what became of it
APPLIED, HELD, ERROR, EDITED = "applied", "held", "error", "edited"


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def case_properties(case: Case, last_point: str | None) -> dict[str, str]:
    """The row a case has in the list: the same names the compiled form saves to."""
    return {
        "case_code": case.case_code,
        "last_assessment_date": case.latest_date.isoformat() if case.latest_date else "",
        "last_collection_point": last_point or "",
        "casework_type": case.casework_type or "",
        "office": case.office or "",
        **{f"score_{d}": _score(v) for d, v in (case.latest_scores or {}).items()},
    }


def received_properties(assessment: Any, declared: list[str] | None) -> dict[str, str]:
    """What the device's ``save_to`` fields sent, in the list's own format.

    Read from the assessment (its device-calculated scores, not the server's), formatted as
    :func:`case_properties` formats them, so a value compares equal when it is the same.
    """
    values: dict[str, str | None] = {
        "case_code": assessment.case_code,
        "last_assessment_date": (
            assessment.assessment_date.isoformat() if assessment.assessment_date else None
        ),
        "last_collection_point": assessment.collection_point,
        "casework_type": assessment.casework_type,
        "office": assessment.office,
        **{f"score_{d}": _score(v) for d, v in (assessment.device_scores or {}).items()},
    }
    keep = set(declared) if declared else set(values)
    return {k: v for k, v in values.items() if k in keep and v is not None}


def merged_into(session: Session, project_id: int, uuids: set[str]) -> dict[str, str]:
    """Of ``uuids``, the entity ids an admin merged into another case, each with that case's
    code (see :meth:`EntityBook.retire`): a tablet may still send follow-ups made on its own
    copy before it learns the copy is gone."""
    if not uuids:
        return {}
    rows = session.execute(
        select(Entity.uuid, Entity.label)
        .join(EntityVersion, EntityVersion.entity_id == Entity.id)
        .where(
            Entity.project_id == project_id,
            Entity.dataset == DATASET,
            Entity.uuid.in_(uuids),
            EntityVersion.source == MERGED,
        )
    )
    return {entity_uuid: code for entity_uuid, code in rows}


def _int(text: str | None) -> int | None:
    return int(text) if text and _DIGITS.match(text) else None


@dataclass(frozen=True)
class EntityUpdate:
    """What one submission's ``meta/entity`` block asks of a case entity."""

    submission_id: int
    entity_uuid: str
    create: bool
    update: bool
    base_version: int | None
    trunk_version: int | None
    branch_id: str | None
    label: str | None
    received: dict[str, str] = field(default_factory=dict)
    base_text: str | None = None  # as sent, for the error message when it is not a number
    #: the submission this one edits (``deprecatedID``), when the server has that one
    replaces: int | None = None

    @classmethod
    def of(cls, block: Any, submission_id: int, received: dict[str, str]) -> EntityUpdate | None:
        """From a parsed ``EntityBlock`` of the ``cases`` dataset; None when it asks nothing."""
        if block is None or block.dataset != DATASET or not (block.create or block.update):
            return None
        if not _UUID.match(block.entity_id or ""):
            return None  # Central refuses such an id; the case is then found by its code
        branch = (block.branch_id or "").lower() or None
        label = (block.label or "").strip() or None
        data = dict(received)
        if label is not None:
            data["label"] = label
        return cls(
            submission_id=submission_id,
            entity_uuid=block.entity_id.lower().removeprefix("uuid:"),
            create=block.create,
            update=block.update,
            base_version=_int(block.base_version),
            trunk_version=_int(block.trunk_version),
            branch_id=branch if branch and _UUID.match(branch) else None,
            label=label,
            received=data,
            base_text=block.base_version,
        )

    def editing(self, submission_id: int | None) -> EntityUpdate:
        """This block as sent by an edit of submission ``submission_id`` (None: not an edit,
        or one whose original the server has not seen: its block is processed as usual)."""
        return replace(self, replaces=submission_id)

    @classmethod
    def held(cls, row: EntityBacklog) -> EntityUpdate:
        return cls(
            submission_id=row.submission_id,
            entity_uuid=row.entity_uuid,
            create=row.create,
            update=True,
            base_version=row.branch_base_version,
            trunk_version=row.trunk_version,
            branch_id=row.branch_id,
            label=row.label,
            received=dict(row.data_received or {}),
        )


class _Error(Exception):
    """An update Central would not apply (audited as ``entity.error``)."""


class EntityBook:
    """The ``cases`` entities a unit of work touches: rows, their versions, held updates.

    Loaded in three queries, then kept current in memory while the batch is applied; the
    caller flushes. ``audit`` collects ``(action, target)`` pairs for the caller to write.
    """

    def __init__(self, session: Session, project_id: int, *, now: dt.datetime | None = None):
        self.session, self.project_id = session, project_id
        self.now = now or dt.datetime.now(dt.UTC)
        self.entities: dict[str, Entity] = {}
        self.versions: dict[str, list[EntityVersion]] = {}
        self.held: dict[str, list[EntityBacklog]] = {}
        #: ``(action, target[, details])`` for :func:`server.services.audit.record_many`
        self.audit: list[tuple[str, str] | tuple[str, str, dict[str, str]]] = []
        self.conflicts = 0
        self.held_count = 0

    def load(self, uuids: set[str]) -> None:
        uuids = {u for u in uuids if u and u not in self.entities}
        if not uuids:
            return
        found = self.session.scalars(
            select(Entity).where(
                Entity.project_id == self.project_id,
                Entity.dataset == DATASET,
                Entity.uuid.in_(uuids),
            )
        ).all()
        for entity in found:
            self.entities[entity.uuid] = entity
            self.versions[entity.uuid] = []
        if found:
            by_id = {e.id: e.uuid for e in found}
            for v in self.session.scalars(
                select(EntityVersion)
                .where(EntityVersion.entity_id.in_(by_id))
                .order_by(EntityVersion.entity_id, EntityVersion.version)
            ):
                self.versions[by_id[v.entity_id]].append(v)
        for row in self.session.scalars(
            select(EntityBacklog)
            .where(
                EntityBacklog.project_id == self.project_id,
                EntityBacklog.entity_uuid.in_(uuids),
            )
            .order_by(EntityBacklog.id)
        ):
            self.held.setdefault(row.entity_uuid, []).append(row)

    # -- the one entry point ---------------------------------------------------------------

    def sync(
        self,
        case: Case,
        props: dict[str, str],
        change: EntityUpdate | None = None,
        *,
        force: bool = False,
    ) -> None:
        """Bring the case's entity up to date after the case changed.

        ``change`` is the entity block of the submission that changed it (None when the server
        or an admin did): it is applied by Central's rules, held, or audited as an error. With
        nothing applied, a server version is made when what the list serves changed.
        ``force`` applies a held update against the latest version (the backlog timed out).
        """
        if not case.entity_uuid:
            raise ValueError("a case needs its entity uuid before its entity is synced")
        outcome = None
        if change is not None:
            outcome = self._submitted(case, props, change, force=force)
        if outcome != APPLIED:
            # while an offline update of this entity waits for its predecessor, the case holds
            # its assessment but the list does not: a server version now would serve it ahead
            # of its branch and interrupt that branch (every update in it then a conflict).
            # The change is served by the next version made when the branch applies (or is
            # forced), as Central makes none for what is not an entity update.
            deferred = bool(self.held.get(case.entity_uuid))
            self._server_version(case, props, waiting=outcome == HELD, deferred=deferred)
        self._deleted(case)
        self._flags(case)

    def hold_orphan(self, change: EntityUpdate) -> None:
        """A follow-up of a case the server does not know yet: an update in a branch waits
        for the create it builds on (Central holds it; without a branch it is an error)."""
        if change.replaces is not None:
            self._edited(change)
        elif change.update and change.branch_id and change.base_version is not None:
            self._hold(change)
        else:
            self._error(change, "the case entity does not exist on the server")

    def retire(self, entity_uuid: str, case: Case) -> None:
        """A device's case entity that an admin merged into ``case`` (the same survivor,
        registered twice): it will never be in the list, so it is recorded at version 1 and
        deleted at once. The integrity API then tells the device to drop its offline copy,
        which Collect would otherwise keep, and offer for follow-ups, for good.

        Nothing happens when the server has an entity with that id already (another case's).
        """
        self.load({entity_uuid})
        if not entity_uuid or entity_uuid in self.entities:
            return
        entity = Entity(
            project_id=self.project_id,
            dataset=DATASET,
            uuid=entity_uuid,
            label=case.case_code,
            version=0,
            properties={},
            updated_at=self.now,
        )
        self.session.add(entity)
        self.entities[entity_uuid] = entity
        self.versions[entity_uuid] = []
        self._version(entity, {}, case.case_code, source=MERGED)
        entity.deleted_at = self.now
        self.audit.append(("entity.merge", f"entity:{entity_uuid}"))

    # -- applying a submitted update -------------------------------------------------------

    def _submitted(
        self,
        case: Case,
        props: dict[str, str],
        ch: EntityUpdate,
        *,
        force: bool,
        release: bool = True,
    ) -> str:
        if ch.entity_uuid != case.entity_uuid:
            return self._error(ch, f"the case's entity is {case.entity_uuid}, not {ch.entity_uuid}")
        if ch.replaces is not None:
            return self._edited(ch)
        entity = self.entities.get(ch.entity_uuid)
        try:
            if ch.update:
                if entity is None:
                    if ch.create:
                        self._create(case, props, ch)
                        return self._released(case, props, release)
                    if ch.branch_id and ch.base_version is not None:
                        return self._hold(ch)  # its create has not arrived yet
                    raise _Error("the case entity does not exist on the server")
                if ch.base_version is None:
                    raise _Error(f"baseVersion {ch.base_text!r} is not a version number")
                base = self._base(entity, ch, force=force)
                if base is None:
                    return self._hold(ch)
                if ch.trunk_version is not None and ch.trunk_version > entity.version:
                    raise _Error(
                        f"trunkVersion {ch.trunk_version} is beyond the server's version "
                        f"{entity.version}"
                    )
                self._update(case, entity, props, ch, base, force=force)
            elif ch.create:
                if entity is not None:
                    raise _Error("an entity with this id already exists")
                self._create(case, props, ch)
        except _Error as err:
            return self._error(ch, str(err))
        return self._released(case, props, release)

    def _released(self, case: Case, props: dict[str, str], release: bool) -> str:
        if release:
            self._release(case, props)
        return APPLIED

    def _base(self, entity: Entity, ch: EntityUpdate, *, force: bool) -> EntityVersion | None:
        """Central's ``_computeBaseVersion``; None when the update must wait in the backlog."""
        versions = self.versions[entity.uuid]
        if not versions:  # not possible after migration 0007; never guess a base
            raise _Error("the case entity has no version history on this server")
        if ch.branch_id is None:
            found = next((v for v in versions if v.version == ch.base_version), None)
            if found is None:
                raise _Error(f"version {ch.base_version} of the case entity does not exist")
            return found
        if ch.base_version == 1 or ch.base_version == ch.trunk_version:
            found = next((v for v in versions if v.version == ch.base_version), None)
        else:  # the middle of an offline branch: the version the branch's previous update made
            found = next(
                (
                    v
                    for v in versions
                    if v.branch_id == ch.branch_id and v.branch_base_version == ch.base_version - 1
                ),
                None,
            )
        if found is None and force:
            return versions[-1]
        return found

    def _update(
        self,
        case: Case,
        entity: Entity,
        props: dict[str, str],
        ch: EntityUpdate,
        base: EntityVersion,
        *,
        force: bool,
    ) -> None:
        versions = self.versions[entity.uuid]
        current = versions[-1]
        conflicting: list[str] | None = None
        found: str | None = None  # the conflict this update itself brings
        if entity.deleted_at is not None:
            pass  # a closed case: no device holds it any more, so nobody's list is in conflict
        elif base.version != current.version:
            changed = {
                k: current.data.get(k)
                for k in {*current.data, *base.data}
                if current.data.get(k) != base.data.get(k)
            }
            if current.label != base.label:
                changed["label"] = current.label
            conflicting = sorted(
                k for k, v in ch.received.items() if k in changed and changed[k] != v
            )
            found = HARD if conflicting else SOFT
        elif ch.branch_id is not None and any(
            v.branch_id != ch.branch_id and v.version > (ch.trunk_version or 1) for v in versions
        ):  # another device or the server made a version inside this offline branch
            found = SOFT
        if found is not None and entity.conflict != HARD:  # never downgraded
            entity.conflict = found
        self._version(
            entity,
            props,
            case.case_code,
            source="forced" if force else "submission",
            change=ch,
            base=base.version,
            conflicting=conflicting,
        )
        if found is not None:
            self._conflict_review(
                case, entity, ch, found, base.version, current.version, conflicting
            )

    def _create(self, case: Case, props: dict[str, str], ch: EntityUpdate | None = None) -> str:
        """A new entity at version 1: from a submission's create, or made by the server."""
        entity = Entity(
            project_id=self.project_id,
            dataset=DATASET,
            uuid=ch.entity_uuid if ch else case.entity_uuid,
            label=case.case_code,
            version=0,
            properties=props,
            updated_at=self.now,
        )
        self.session.add(entity)
        self.entities[entity.uuid] = entity
        self.versions[entity.uuid] = []
        source = "submission" if ch else "server"
        self._version(entity, props, case.case_code, source=source, change=ch)
        return APPLIED

    def _edited(self, ch: EntityUpdate) -> str:
        """An edit of a submission whose entity block was processed already: Central never
        processes a submission's block twice (an edit is a new version of the same
        submission), so it is no new device update - it would otherwise be compared with the
        very update it corrects, from that update's base, and flagged as a conflict. The case's
        corrected state is served as a server version; or, while the update it corrects waits
        in the backlog, the edit takes its place there and waits too."""
        row = next(
            (r for r in self.held.get(ch.entity_uuid) or [] if r.submission_id == ch.replaces),
            None,
        )
        if row is None:
            return EDITED
        row.submission_id = ch.submission_id
        row.label = ch.label if ch.label is not None else row.label
        row.data_received = {k: v for k, v in ch.received.items() if k != "label"}
        return HELD

    # -- held updates ----------------------------------------------------------------------

    def _hold(self, ch: EntityUpdate) -> str:
        rows = self.held.setdefault(ch.entity_uuid, [])
        if not any(r.submission_id == ch.submission_id for r in rows):
            row = EntityBacklog(
                project_id=self.project_id,
                submission_id=ch.submission_id,
                entity_uuid=ch.entity_uuid,
                branch_id=ch.branch_id,
                branch_base_version=ch.base_version,
                trunk_version=ch.trunk_version,
                create=ch.create,
                label=ch.label,
                data_received={k: v for k, v in ch.received.items() if k != "label"},
                held_at=self.now,
            )
            self.session.add(row)
            rows.append(row)
            self.held_count += 1
            self.audit.append(("entity.backlog.hold", f"submission:{ch.submission_id}"))
        return HELD

    def _release(self, case: Case, props: dict[str, str]) -> None:
        """Apply held updates that follow the version just made in the same branch."""
        entity = self.entities[case.entity_uuid]
        while True:
            made = self.versions[entity.uuid][-1]
            rows = self.held.get(entity.uuid) or []
            if made.branch_id is None:
                nxt = next((r for r in rows if r.branch_base_version == 1), None)
            else:
                want = (made.branch_base_version or 0) + 1
                nxt = next(
                    (
                        r
                        for r in rows
                        if r.branch_id == made.branch_id and r.branch_base_version == want
                    ),
                    None,
                )
            if nxt is None:
                return
            rows.remove(nxt)
            self.session.delete(nxt) if nxt.id is not None else self.session.expunge(nxt)
            self.audit.append(("entity.backlog.reprocess", f"submission:{nxt.submission_id}"))
            ch = EntityUpdate.held(nxt)
            if self._submitted(case, props, ch, force=False, release=False) != APPLIED:
                return

    def release_forced(
        self, case: Case | None, row: EntityBacklog, props: dict[str, str] | None
    ) -> None:
        """A held update waited too long: apply it against the latest version (Central's
        forced backlog processing), or audit why it cannot be (no case, no entity)."""
        rows = self.held.get(row.entity_uuid) or []
        if row in rows:
            rows.remove(row)
        self.session.delete(row)
        self.audit.append(("entity.backlog.force", f"submission:{row.submission_id}"))
        ch = EntityUpdate.held(row)
        entity = self.entities.get(row.entity_uuid)
        if case is None or entity is None:
            self._error(ch, "the case entity does not exist on the server")
            return
        self.sync(case, dict(entity.properties) if props is None else props, ch, force=True)

    # -- server versions, deletion, flags --------------------------------------------------

    def _server_version(
        self, case: Case, props: dict[str, str], *, waiting: bool, deferred: bool = False
    ) -> None:
        if waiting:
            return  # the update that changed the case waits for its predecessor
        entity = self.entities.get(case.entity_uuid)
        if entity is not None and deferred:
            return  # another offline update of the entity waits (see sync)
        if entity is None:
            # made by the server (an admin created the case from an orphan follow-up): held
            # updates built on version 1 follow it, as they follow a submitted create
            self._create(case, props)
            self._release(case, props)
            return
        closed = case.status == CaseStatus.CLOSED
        reopened = entity.deleted_at is not None and not closed
        if entity.properties != props or entity.label != case.case_code or reopened:
            self._version(entity, props, case.case_code, source="server")

    def _version(
        self,
        entity: Entity,
        props: dict[str, str],
        label: str,
        *,
        source: str,
        change: EntityUpdate | None = None,
        base: int | None = None,
        conflicting: list[str] | None = None,
    ) -> EntityVersion:
        entity.version = (entity.version or 0) + 1
        entity.properties = dict(props)
        entity.label = label
        entity.updated_at = self.now
        v = EntityVersion(
            entity=entity,
            version=entity.version,
            label=label,
            data=dict(props),
            data_received=dict(change.received) if change else None,
            base_version=base,
            trunk_version=change.trunk_version if change else None,
            branch_id=change.branch_id if change else None,
            branch_base_version=(
                change.base_version if change and change.branch_id is not None else None
            ),
            conflict=entity.conflict,
            conflicting_properties=conflicting,
            source=source,
            submission_id=change.submission_id if change else None,
            created_at=self.now,
        )
        self.session.add(v)
        self.versions[entity.uuid].append(v)
        return v

    def _deleted(self, case: Case) -> None:
        """A closed case leaves the list devices download (integrity: deleted); reopened, it
        comes back (its new version was made above)."""
        entity = self.entities.get(case.entity_uuid)
        if entity is None:
            return
        closed = case.status == CaseStatus.CLOSED
        if closed and entity.deleted_at is None:
            entity.deleted_at = entity.updated_at = self.now
        elif not closed and entity.deleted_at is not None:
            entity.deleted_at = None
            entity.updated_at = self.now

    def _flags(self, case: Case) -> None:
        entity = self.entities.get(case.entity_uuid)
        flags = {f for f in case.flags or [] if not f.startswith("entity_")}
        if entity is not None and entity.conflict:
            flags.add("entity_conflict")
        if self.held.get(case.entity_uuid):
            flags.add("entity_update_held")
        case.flags = sorted(flags)

    # -- reporting -------------------------------------------------------------------------

    def _error(self, ch: EntityUpdate, reason: str) -> str:
        self.audit.append(("entity.error", f"submission:{ch.submission_id}", {"reason": reason}))
        return ERROR

    def _conflict_review(
        self,
        case: Case,
        entity: Entity,
        ch: EntityUpdate,
        found: str,
        base: int,
        current: int,
        conflicting: list[str] | None,
    ) -> None:
        self.conflicts += 1
        if base != current:
            what = f"it was based on version {base} while the server had version {current}"
        else:
            what = (
                "another device or the server changed the case during this device's offline edits"
            )
        detail = (
            f"; both sides changed {', '.join(conflicting)}"
            if conflicting
            else "; no property was changed on both sides"
        )
        self.session.add(
            ReviewItem(
                project_id=self.project_id,
                kind="entity_conflict",
                submission_id=ch.submission_id,
                case=case,
                summary=(
                    f"Case {case.case_code}: {found} conflict on the case list - {what}"
                    f"{detail}. The case shows every assessment in date order; check them, "
                    "then mark the conflict resolved."
                ),
            )
        )
