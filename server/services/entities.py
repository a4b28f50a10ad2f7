"""Entity lists served to Collect (the reconciliation worker fills the ``entities`` table)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models import Entity, Project

RESERVED = {"name", "label"}


def _properties_of(rows: list[Entity], properties: list[str] | None) -> list[str]:
    if properties:
        return [p for p in properties if p not in RESERVED and not p.startswith("__")]
    names: set[str] = set()
    for row in rows:
        names.update(row.properties or {})
    return sorted(n for n in names if n not in RESERVED and not n.startswith("__"))


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
    """Manifest hash of an entity list: changes whenever the served CSV changes."""
    return "md5:" + hashlib.md5(csv_bytes, usedforsecurity=False).hexdigest()


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
