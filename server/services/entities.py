"""Entity lists served to Collect (the reconciliation worker fills the ``entities`` table)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from server.errors import ForbiddenError, NotFoundError
from server.models import AppUser, Entity, Form, FormVersion, Project

RESERVED = {"name", "label"}


def _properties_of(rows: list[Entity], properties: list[str] | None) -> list[str]:
    if properties:
        return [p for p in properties if p not in RESERVED and not p.startswith("__")]
    names: set[str] = set()
    for row in rows:
        names.update(row.properties or {})
    return sorted(n for n in names if n not in RESERVED and not n.startswith("__"))


_COLUMNS_CACHE = "kintsugi.dataset_columns"


def dataset_properties(session: Session, project: Project, dataset: str) -> list[str] | None:
    """The columns of a list, the same whichever form a device downloads it with.

    Collect keeps one copy of a list per name, with one hash, whatever form brought it; so,
    as Central's dataset properties, these are every property a published form version of
    the project declares for ``dataset``, in the order they first appeared (a form published
    later only adds columns at the end). None when no version declares any (then every
    property seen, sorted). Versions never change once published: the answer is cached on the
    pooled connection until the project publishes another one.
    """
    newest = session.scalar(
        select(func.max(FormVersion.id)).join(Form).where(Form.project_id == project.id)
    )
    cache: dict[tuple[int, str], tuple[int | None, list[str] | None]] = (
        session.connection().info.setdefault(_COLUMNS_CACHE, {})
    )
    hit = cache.get((project.id, dataset))
    if hit is not None and hit[0] == newest:
        return hit[1]
    reports = session.scalars(
        select(FormVersion.report)
        .join(Form)
        .where(Form.project_id == project.id, FormVersion.report.is_not(None))
        .order_by(FormVersion.published_at, FormVersion.id)
    )
    columns: list[str] = []
    for report in reports:
        ent = report.get("entity_list") if isinstance(report, dict) else None
        if not isinstance(ent, dict) or ent.get("dataset", "cases") != dataset:
            continue
        for prop in ent.get("properties") or []:
            if str(prop) not in columns:
                columns.append(str(prop))
    result = columns or None
    cache[(project.id, dataset)] = (newest, result)
    return result


def entity_list_csv(
    session: Session, project: Project, dataset: str, properties: list[str] | None = None
) -> bytes:
    """``name,label,__version,<properties>`` CSV of the live entities of ``dataset``.

    :param properties: column order (the published form's report ``entity_list.properties``);
        when absent, every property seen, sorted.
    """
    rows = session.scalars(
        select(Entity)
        .where(
            Entity.project_id == project.id,
            Entity.dataset == dataset,
            Entity.deleted_at.is_(None),
        )
        .order_by(Entity.id)
    ).all()
    columns = _properties_of(list(rows), properties)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "label", "__version", *columns])
    for row in rows:
        props = row.properties or {}
        writer.writerow(
            [row.uuid, row.label, int(row.version), *(_cell(props.get(c)) for c in columns)]
        )
    return out.getvalue().encode("utf-8")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def entity_list_hash(csv_bytes: bytes) -> str:
    """The md5 of a CSV's bytes, ``md5:``-prefixed (what the manifest carried before
    :func:`entity_list_state_hash`; kept for the benchmark's comparison)."""
    return "md5:" + hashlib.md5(csv_bytes, usedforsecurity=False).hexdigest()


#: Part of every state hash: bump it when :func:`entity_list_csv` changes what it writes for
#: the same rows, so that devices download the list again.
CSV_FORMAT = 1


def entity_list_state_hash(
    session: Session, project: Project, dataset: str, properties: list[str] | None = None
) -> str:
    """Manifest hash of an entity list, without building it (openrosa.md §4.1: the hash of an
    entity list is opaque; it must change whenever the served CSV changes).

    One aggregate query over the dataset's rows. The CSV is a function of the live rows'
    ``(id, uuid, label, version, properties)`` and the column list. Every write that changes a
    row's label or properties makes a new version (``version`` + 1) and sets ``updated_at``;
    closing removes a row from the live set and sets ``updated_at``; reopening makes a version
    and puts it back; a new entity adds a row. So any change to the CSV moves the live count,
    the live sum of versions or of ids, or the newest ``updated_at``, each on its own enough.
    Changes that do not show in the CSV (an admin resolving a conflict) may move it too, which
    only costs devices one download, as in Central.
    """
    live = Entity.deleted_at.is_(None)
    row = session.execute(
        select(
            func.count(),
            func.max(Entity.updated_at),
            func.max(Entity.id),
            func.sum(case((live, 1), else_=0)),
            func.sum(case((live, Entity.version), else_=0)),
            func.sum(case((live, Entity.id), else_=0)),
        ).where(Entity.project_id == project.id, Entity.dataset == dataset)
    ).one()
    total, newest, max_id, n_live, versions, ids = row
    columns = None if not properties else _properties_of([], properties)
    state = [
        CSV_FORMAT,
        project.id,
        dataset,
        columns,
        int(total or 0),
        None if newest is None else str(newest),
        int(max_id or 0),
        int(n_live or 0),
        int(versions or 0),
        int(ids or 0),
    ]
    text = json.dumps(state, separators=(",", ":"))
    return "md5:" + hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class CsvCache:
    """Served entity-list CSVs by state hash, least recently used first out, bounded in bytes.

    One per app (per process); safe across threads. A hash names exactly one CSV, so an entry
    never goes stale: a change to the list makes a new hash and the old entry ages out.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> bytes | None:
        with self._lock:
            body = self._items.get(key)
            if body is not None:
                self._items.move_to_end(key)
            return body

    def put(self, key: tuple[object, ...], body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = body
            self._size += len(body)
            while self._size > self.max_bytes:
                _key, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)


def entity_list(
    session: Session,
    project: Project,
    dataset: str,
    properties: list[str] | None = None,
    cache: CsvCache | None = None,
) -> tuple[str, bytes]:
    """``(state hash, CSV bytes)`` of an entity list, the bytes from ``cache`` when it has them.

    A CSV is cached only when the hash is the same before and after it was built, so a write
    committed in between never files a CSV under a hash it does not belong to.
    """
    digest = entity_list_state_hash(session, project, dataset, properties)
    key = (project.id, dataset, tuple(properties or ()), digest)
    body = cache.get(key) if cache is not None else None
    if body is None:
        body = entity_list_csv(session, project, dataset, properties)
        if (
            cache is not None
            and entity_list_state_hash(session, project, dataset, properties) == digest
        ):
            cache.put(key, body)
    return digest, body


def require_list_access(
    session: Session, project: Project, dataset: str, app_user: AppUser | None
) -> None:
    """Refuse a caller who may not use any form of the project that uses ``dataset``.

    As Central does for the integrity API: the entity ids of a list, and whether each was
    closed, are for devices that download the list with one of their forms.
    """
    from server.services.forms import visible_forms

    using = [
        form.xml_form_id
        for form in visible_forms(session, project, None)
        if any(
            att.kind == "entityList" and att.dataset == dataset
            for version in form.versions
            for att in version.attachments
        )
    ]
    if not using:
        raise NotFoundError(f"No form of this project uses a list named {dataset!r}.")
    if app_user is not None and not any(app_user.may_use_form(f) for f in using):
        raise ForbiddenError(
            f"This device has no form that uses the list {dataset!r}. Ask your supervisor."
        )


def integrity(
    session: Session, project: Project, dataset: str, ids: Iterable[str] | None
) -> list[tuple[str, bool]]:
    """``(uuid, deleted)`` for the requested ids the server knows (all when ``ids`` is None)."""
    query = select(Entity.uuid, Entity.deleted_at).where(
        Entity.project_id == project.id, Entity.dataset == dataset
    )
    if ids is not None:
        wanted = [i.strip() for i in ids if i.strip()]
        if not wanted:
            return []
        query = query.where(Entity.uuid.in_(wanted))
    return [
        (uuid, deleted is not None) for uuid, deleted in session.execute(query.order_by(Entity.id))
    ]
