"""A few seconds of memory for the facts every Collect upload looks up.

Each upload needs the app user behind its token and the form version it names. Both change
rarely (a token revoked, a form closed), and on this hot path each lookup is a database round
trip. They are kept here for ``HOT_CACHE_SECONDS`` (default 2 s; 0 turns it off):

* only positive results are kept (an unknown or revoked token is never cached);
* a change made in this process (``invalidate``: revoking a token, closing a form) takes
  effect at once; one made by another worker or node within the TTL;
* the cache lives on the pooled database connection, never in a module global keyed by ids:
  ids are only unique within one database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

__all__ = ["cached", "invalidate", "invalidate_on_commit"]

T = TypeVar("T")
_INFO_KEY = "kintsugi.hotcache"
_MAX_ENTRIES = 4096
_lock = threading.Lock()
_generation = 0


def invalidate() -> None:
    """Forget everything cached in this process (call after revoking or closing anything)."""
    global _generation
    with _lock:
        _generation += 1


def invalidate_on_commit(session: Session) -> None:
    """Invalidate now and again once ``session`` commits (so nothing re-caches the old state
    between the change and its commit)."""
    from sqlalchemy import event

    invalidate()
    event.listen(session, "after_commit", lambda _session: invalidate(), once=True)


def cached(
    session: Session,
    key: Hashable,
    seconds: float,
    load: Callable[[], T],
    keep: Callable[[T], bool] = lambda value: value is not None,
) -> T:
    """``load()``, or its result from the last ``seconds`` on this session's connection."""
    if seconds <= 0:
        return load()
    store: dict[Hashable, tuple[int, float, Any]] = session.connection().info.setdefault(
        _INFO_KEY, {}
    )
    now = time.monotonic()
    entry = store.get(key)
    if entry is not None and entry[0] == _generation and now - entry[1] < seconds:
        return entry[2]
    generation = _generation
    value = load()
    if keep(value):
        if len(store) >= _MAX_ENTRIES:
            store.clear()
        store[key] = (generation, now, value)
    return value
