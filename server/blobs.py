"""Blob stores: where submission XML, attachments and form media bytes live.

Two real backends behind one :class:`BlobStore` protocol, shaped so an S3-compatible store can be
added later (keys are opaque ``/``-separated strings; ``put`` returns size and sha256):

* :class:`LocalBlobStore` (embedded default): one file per blob under ``KINTSUGI_DATA_DIR``,
  written to a temp file, fsynced, renamed into place and the directory fsynced, so a blob that
  ``put`` returned for survives a power cut.
* :class:`PostgresBlobStore` (default on PostgreSQL): rows in the ``blobs`` table added to the
  caller's session, so blob and submission rows commit (and fsync) in one transaction and every
  web node sees every blob.

With the local store a rolled-back transaction can leave an orphan file (never an orphan row);
orphans are harmless and can be swept by comparing keys with the database.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from server.db import utcnow
from server.errors import NotFoundError, ServerError

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_\-./]{0,254}$")
_CHUNK = 1 << 20


class BlobStore(Protocol):
    """What every blob backend provides."""

    #: True when puts become durable with the caller's database commit (PostgreSQL); False
    #: when ``put`` is durable on its own (files, object stores).
    transactional: bool

    def put(self, key: str, data: bytes | BinaryIO) -> tuple[int, str]:
        """Store ``data`` durably under ``key``; return (size, sha256 hex)."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the blob (raises NotFoundError)."""
        ...

    def exists(self, key: str) -> bool:
        """True when the blob exists."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob if it exists."""
        ...


def new_key(prefix: str) -> str:
    """A fresh, unguessable blob key under ``prefix`` (e.g. ``"submissions"``)."""
    now = utcnow()
    return f"{prefix}/{now:%Y/%m}/{secrets.token_hex(16)}"


def check_key(key: str) -> str:
    """Refuse keys that could escape the store (``..``, absolute paths, odd characters)."""
    if not _KEY_RE.match(key) or ".." in key.split("/") or "//" in key:
        raise ServerError(f"invalid blob key {key!r}")
    return key


def put_many(store: BlobStore, items: list[tuple[str, bytes]]) -> list[tuple[int, str]]:
    """Store several blobs; one round trip on backends that support batching."""
    batch = getattr(store, "put_many", None)
    if batch is not None:
        return batch(items)
    return [store.put(key, data) for key, data in items]


_DELETE_ON_COMMIT = "kintsugi.blobs_to_delete"


def delete_on_commit(session: Session, store: BlobStore, keys: list[str]) -> None:
    """Remove blobs the rows of ``session``'s transaction stop referring to, once that is final.

    On a transactional store the DELETE joins the transaction (both commit or neither does).
    Elsewhere (files) a delete cannot be undone, so it waits until ``session``'s outermost
    transaction commits; should it (or the savepoint it was asked in) roll back instead, the
    rows still point at the blobs and they stay.
    """
    if store.transactional:
        for key in keys:
            store.delete(key)
        return
    pending = session.info.get(_DELETE_ON_COMMIT)
    if pending is None:
        from sqlalchemy import event

        pending = session.info[_DELETE_ON_COMMIT] = []
        event.listen(session, "after_commit", _delete_committed)
        event.listen(session, "after_soft_rollback", _forget_rolled_back)
        event.listen(session, "after_transaction_end", _forget_ended)
    where = session.get_nested_transaction() or session.get_transaction()
    pending.append((where, store, list(keys)))


def _delete_committed(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint was released: the transaction itself is not committed yet
    pending = session.info.get(_DELETE_ON_COMMIT) or []
    while pending:
        _where, store, keys = pending.pop()
        for key in keys:
            try:
                store.delete(key)
            except OSError as err:  # committed already: the caller must still see success
                log.warning(
                    "could not remove blob %s (%s); nothing refers to it, remove it by hand",
                    key,
                    err.strerror or err,
                )


def _forget_rolled_back(session: Session, previous_transaction: Any) -> None:
    def within(transaction: Any) -> bool:
        while transaction is not None:
            if transaction is previous_transaction:
                return True
            transaction = transaction.parent
        return False

    pending = session.info.get(_DELETE_ON_COMMIT) or []
    pending[:] = [entry for entry in pending if not within(entry[0])]


def _forget_ended(session: Session, transaction: Any) -> None:
    # The outermost transaction ended: after_commit has run if it committed, so whatever is
    # left belongs to a transaction that did not (closed without commit).
    if transaction.parent is None:
        session.info.get(_DELETE_ON_COMMIT, []).clear()


def read_all(store: BlobStore, key: str) -> bytes:
    """Convenience: the whole blob as bytes."""
    with store.open(key) as fh:
        return fh.read()


def read_many(store: BlobStore, keys: list[str]) -> dict[str, bytes]:
    """Several whole blobs by key; one round trip on backends that support batching.

    :raises NotFoundError: a key has no blob
    """
    batch = getattr(store, "read_many", None)
    if batch is not None:
        return batch(keys)
    return {key: read_all(store, key) for key in dict.fromkeys(keys)}


def _iter_chunks(data: bytes | BinaryIO):
    if isinstance(data, bytes | bytearray | memoryview):
        yield bytes(data)
        return
    while True:
        chunk = data.read(_CHUNK)
        if not chunk:
            return
        yield chunk


class LocalBlobStore:
    """Blobs as files under a root directory, written atomically and fsynced."""

    transactional = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes | BinaryIO) -> tuple[int, str]:
        """Write to a temp file, fsync it, rename into place, fsync the directory."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in _iter_chunks(data):
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a crash
        finally:
            os.close(dir_fd)
        return size, digest.hexdigest()

    def open(self, key: str) -> BinaryIO:
        """Open the blob file for reading."""
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as err:
            raise NotFoundError("file not found") from err

    def exists(self, key: str) -> bool:
        """True when the blob file exists."""
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the blob file if present, durably (a removed file must not come back)."""
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


_INSERT_BLOB: list[Any] = []


def _insert_blob() -> Any:
    """The blob INSERT statement, built once."""
    if not _INSERT_BLOB:
        from server.models import Blob

        _INSERT_BLOB.append(insert(Blob.__table__))
    return _INSERT_BLOB[0]


def _blob_rows(items: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """``blobs`` table rows (key checked, size, sha256) for ``(key, bytes)`` items."""
    now = utcnow()
    return [
        {
            "key": check_key(key),
            "data": data,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "created_at": now,
        }
        for key, data in items
    ]


class PostgresBlobStore:
    """Blobs as rows of the ``blobs`` table, in the caller's transaction."""

    transactional = True

    def __init__(self, session: Session) -> None:
        self.session = session

    def put(self, key: str, data: bytes | BinaryIO) -> tuple[int, str]:
        """Add the blob row to the session; durable when the caller commits."""
        from server.models import Blob

        body = b"".join(_iter_chunks(data))
        sha = hashlib.sha256(body).hexdigest()
        # A Core INSERT (not session.add): no unit-of-work bookkeeping on the ingest hot path.
        with self.session.no_autoflush:  # callers may hold half-built ORM objects
            self.session.execute(
                insert(Blob.__table__).values(
                    key=check_key(key), data=body, size=len(body), sha256=sha, created_at=utcnow()
                )
            )
        return len(body), sha

    def put_many(self, items: list[tuple[str, bytes]]) -> list[tuple[int, str]]:
        """Insert several blob rows in one statement (executemany)."""

        rows = _blob_rows(items)
        if rows:
            with self.session.no_autoflush:
                self.session.execute(_insert_blob(), rows)
        return [(r["size"], r["sha256"]) for r in rows]

    def open(self, key: str) -> BinaryIO:
        """Read the blob row."""
        from server.models import Blob

        data = self.session.scalar(select(Blob.data).where(Blob.key == key))
        if data is None:
            raise NotFoundError("file not found")
        return io.BytesIO(data)

    @staticmethod
    def insert_cte(count: int, *, when: Any) -> Any:
        """``INSERT INTO blobs ... SELECT ... WHERE EXISTS (when)`` for ``count`` blobs, as a CTE.

        Lets a caller write its own rows and these blobs in one statement (the blobs are written
        only if ``when``, e.g. the caller's ``INSERT ... RETURNING`` CTE, returned a row). The
        values are bind parameters ``blob<i>_<column>``: fill them with :meth:`cte_params`.
        Build it once per ``count`` and reuse it (SQLAlchemy then compiles it once).
        """
        from sqlalchemy import bindparam, exists, literal_column, union_all

        from server.models import Blob

        table = Blob.__table__
        names = ("key", "data", "size", "sha256", "created_at")
        rows = union_all(
            *(
                select(*(bindparam(f"blob{i}_{n}", type_=table.c[n].type).label(n) for n in names))
                for i in range(count)
            )
        ).subquery("blob_rows")
        return (
            insert(table)
            .from_select(
                list(names),
                select(*(rows.c[n] for n in names)).where(
                    exists(select(literal_column("1")).select_from(when))
                ),
            )
            .cte("blob_insert")
        )

    @staticmethod
    def cte_params(items: list[tuple[str, bytes]]) -> tuple[dict[str, Any], list[tuple[int, str]]]:
        """Parameters for :meth:`insert_cte` and ``(size, sha256)`` per item, as ``put_many``."""
        rows = _blob_rows(items)
        params = {f"blob{i}_{k}": v for i, row in enumerate(rows) for k, v in row.items()}
        return params, [(r["size"], r["sha256"]) for r in rows]

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """Several blob rows in one query."""
        from server.models import Blob

        wanted = set(keys)
        rows = self.session.execute(select(Blob.key, Blob.data).where(Blob.key.in_(wanted)))
        found = {key: bytes(data) for key, data in rows}
        if len(found) != len(wanted):
            raise NotFoundError("file not found")
        return found

    def exists(self, key: str) -> bool:
        """True when the row exists."""
        from server.models import Blob

        return self.session.scalar(select(Blob.key).where(Blob.key == key)) is not None

    def delete(self, key: str) -> None:
        """Delete the row (committed with the caller's transaction)."""
        from server.models import Blob

        self.session.execute(delete(Blob).where(Blob.key == key))


def make_blob_store(config: dict, session: Session) -> BlobStore:
    """The configured backend (``BLOB_BACKEND``) bound to ``session`` where it needs one."""
    if config["BLOB_BACKEND"] == "postgres":
        return PostgresBlobStore(session)
    return LocalBlobStore(config["DATA_DIR"])
