"""Audit log entries (never with secrets or answers in ``details``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from server.models import AuditLog


def record(
    session: Session, actor: str, action: str, target: str | None = None, **details: Any
) -> None:
    """Add an audit row; committed with the caller's transaction."""
    session.add(AuditLog(actor=actor, action=action, target=target, details=details))
