"""Audit log entries (never with secrets or answers in ``details``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from server.db import utcnow
from server.models import AuditLog


def record(
    session: Session, actor: str, action: str, target: str | None = None, **details: Any
) -> None:
    """Add an audit row; committed with the caller's transaction."""
    session.add(AuditLog(actor=actor, action=action, target=target, details=details))


def record_many(
    session: Session,
    actor: str,
    entries: list[tuple[str, str | None] | tuple[str, str | None, dict[str, Any]]],
) -> None:
    """Add many ``(action, target[, details])`` rows in one executemany (no per-row
    unit-of-work cost)."""
    if entries:
        now = utcnow()
        session.execute(
            insert(AuditLog),
            [
                {"actor": actor, "action": e[0], "target": e[1],
                 "details": e[2] if len(e) > 2 else {}, "at": now}
                for e in entries
            ],
        )  # fmt: skip
