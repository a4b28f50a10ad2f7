"""Backups: one archive holding a consistent snapshot of the database and the blob store.

Archive (``tar.gz``, written 0600 and renamed into place only when complete)::

    manifest.json             format, schema revision, per-table row counts, sha256 of members
    tables/<table>.jsonl      one JSON object per row (bytes, datetimes, JSON tagged)
    blobs/<key>               local blob files (the PostgreSQL blob backend is the blobs table)

Consistency: PostgreSQL is read in one REPEATABLE READ transaction; SQLite is first copied with
its online backup API. Blobs are immutable and written before the rows that name them commit,
so a blob a snapshot row names exists when the files are copied afterwards, unless a commit
since replaced it and removed the file: the backup then starts again from a newer snapshot.
Files written after the snapshot are orphans, which the blob store already tolerates.

Restore goes into an *empty* instance: it migrates the target to the archive's revision,
verifies every member's sha256 before writing anything, writes blobs, then inserts every row in
one transaction (foreign-key order) and moves PostgreSQL sequences past the restored ids.
The archive holds survivor data and key material (passphrase-protected): store it like the
database itself.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import io
import json
import os
import sqlite3
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, func, insert, select, text, update

from server.errors import ServerError

FORMAT = "kintsugi-backup/1"
_SKIP_TABLES = {"alembic_version"}
_BATCH = 500
_ATTEMPTS = 3  # snapshots tried while blobs they name are being replaced


class BackupError(ServerError):
    """A backup could not be written or an archive cannot be restored."""

    code = "BACKUP"


@dataclass(slots=True)
class BackupSummary:
    """What a backup or restore covered."""

    path: Path
    revision: str | None
    tables: dict[str, int] = field(default_factory=dict)
    blobs: int = 0
    missing_blobs: list[str] = field(default_factory=list)


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$dec": str(value)}
    if isinstance(value, dict | list):
        return {"$json": value}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "$b":
            return base64.b64decode(inner)
        if tag == "$dt":
            return dt.datetime.fromisoformat(inner)
        if tag == "$date":
            return dt.date.fromisoformat(inner)
        if tag == "$dec":
            return decimal.Decimal(inner)
        if tag == "$json":
            return inner
    return value


def _sqlite_path(engine: Engine) -> str | None:
    return engine.url.database if engine.dialect.name == "sqlite" else None


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Any]:
    """A connection that sees one consistent state of the whole database."""
    from sqlalchemy import create_engine

    path = _sqlite_path(engine)
    if path:
        with tempfile.TemporaryDirectory(prefix="kintsugi-backup-") as tmp:
            copy = os.path.join(tmp, "snapshot.sqlite3")
            src, dst = sqlite3.connect(path), sqlite3.connect(copy)
            try:
                src.backup(dst)  # SQLite's online backup: a consistent copy while writers run
            finally:
                src.close()
                dst.close()
            snap = create_engine(f"sqlite:///{copy}")
            try:
                with snap.connect() as conn:
                    yield conn
            finally:
                snap.dispose()
        return
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            conn.execute(text("SET TRANSACTION READ ONLY"))
            yield conn


def _revision(conn: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(dt.datetime.now(dt.UTC).timestamp())
    tar.addfile(info, io.BytesIO(data))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _blob_files(data_dir: Path) -> Iterator[tuple[str, Path]]:
    if not data_dir.is_dir():
        return
    for path in sorted(data_dir.rglob("*")):
        if path.is_file() and not path.name.startswith((".tmp-", ".readyz-")):
            yield path.relative_to(data_dir).as_posix(), path


def _write_archive(engine: Engine, config: dict, raw: Any) -> tuple[dict[str, Any], list[str]]:
    """Write one archive to ``raw``; return its manifest and the named blobs that were gone."""
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "dialect": engine.dialect.name,
        "blob_backend": config["BLOB_BACKEND"],
        "tables": {},
        "blobs": {},
    }
    named: set[str] = set()  # blob keys the snapshot's rows point at
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        with _snapshot(engine) as conn:
            manifest["revision"] = _revision(conn)
            meta = MetaData()
            meta.reflect(conn)
            for table in meta.sorted_tables:
                if table.name in _SKIP_TABLES:
                    continue
                pk = list(table.primary_key.columns) or list(table.columns)
                key_columns = [c.name for c in table.columns if c.name.endswith("blob_key")]
                buf = io.BytesIO()
                rows = 0
                for row in conn.execute(select(table).order_by(*pk)).mappings():
                    named.update(row[c] for c in key_columns if row[c])
                    line = {k: _encode(v) for k, v in row.items()}
                    buf.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
                    rows += 1
                data = buf.getvalue()
                _add_bytes(tar, f"tables/{table.name}.jsonl", data)
                manifest["tables"][table.name] = {
                    "rows": rows,
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
        missing: list[str] = []
        if config["BLOB_BACKEND"] == "local":
            # After the snapshot. Blobs are written before the rows naming them commit, so each
            # named blob is on disk, unless a later commit replaced it and removed the file (as
            # ``encrypt-stored`` and completed split uploads do): that is reported, not hidden.
            for key, path in _blob_files(Path(config["DATA_DIR"])):
                try:
                    digest = _sha256_file(path)
                    tar.add(path, arcname=f"blobs/{key}", recursive=False)
                except FileNotFoundError:
                    continue  # removed while we walked: a named one is counted missing below
                manifest["blobs"][key] = digest
            missing = sorted(named - manifest["blobs"].keys())
            if missing:
                manifest["missing_blobs"] = missing
        _add_bytes(tar, "manifest.json", json.dumps(manifest, indent=1).encode())
    return manifest, missing


def create_backup(config: dict, out: str | Path) -> BackupSummary:
    """Write a consistent database + blob snapshot of the instance in ``config`` to ``out``.

    Should a blob named by the snapshot be removed before it is copied (a writer replaced it
    after the snapshot), the backup is taken again from a newer snapshot. Blobs still missing
    after that are missing from the store itself: the archive is kept, and the summary's
    ``missing_blobs`` names them so the caller can say so.
    """
    from server.db import make_engine

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(config["DATABASE_URL"])
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=".backup-", suffix=".tmp")
    os.fchmod(fd, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            for _attempt in range(_ATTEMPTS):
                raw.seek(0)
                raw.truncate()
                manifest, missing = _write_archive(engine, config, raw)
                if not missing:
                    break
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    finally:
        engine.dispose()
    return BackupSummary(
        out,
        manifest.get("revision"),
        {k: v["rows"] for k, v in manifest["tables"].items()},
        len(manifest["blobs"]),
        missing,
    )


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        member = tar.extractfile("manifest.json")
    except KeyError as err:
        raise BackupError("This file is not a Kintsugi backup (no manifest).") from err
    manifest = json.loads(member.read()) if member else {}
    if manifest.get("format") != FORMAT:
        raise BackupError(f"Unsupported backup format {manifest.get('format')!r}.")
    return manifest


def _verify(tar: tarfile.TarFile, manifest: dict[str, Any]) -> None:
    expected = {f"tables/{k}.jsonl": v["sha256"] for k, v in manifest["tables"].items()}
    expected.update({f"blobs/{k}": v for k, v in manifest["blobs"].items()})
    seen = set()
    for member in tar:
        if member.name == "manifest.json":
            continue
        if member.name not in expected or not member.isfile():
            raise BackupError(f"Unexpected member {member.name!r} in the backup.")
        fh = tar.extractfile(member)
        h = hashlib.sha256()
        while chunk := fh.read(1 << 20):  # type: ignore[union-attr]
            h.update(chunk)
        if h.hexdigest() != expected[member.name]:
            raise BackupError(f"{member.name} is damaged (checksum mismatch); nothing restored.")
        seen.add(member.name)
    missing = set(expected) - seen
    if missing:
        raise BackupError(f"The backup is incomplete ({len(missing)} members missing).")


def _refuse_data(engine: Engine, meta: MetaData | None = None) -> None:
    """BackupError when any table of the target database holds a row."""
    if meta is None:
        meta = MetaData()
        meta.reflect(engine)
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            if (
                table.name not in _SKIP_TABLES
                and conn.execute(select(func.count()).select_from(table)).scalar()
            ):
                raise BackupError(
                    f"The target database is not empty (table {table.name}); "
                    "restore only into a fresh instance."
                )


def restore_backup(config: dict, archive: str | Path) -> BackupSummary:
    """Restore ``archive`` into the empty instance in ``config`` (refuses a non-empty one)."""
    from server import db
    from server.blobs import LocalBlobStore

    archive = Path(archive)
    try:
        tar = tarfile.open(archive, mode="r:gz")
    except (OSError, tarfile.TarError) as err:
        raise BackupError(f"Cannot read {archive.name}: not a Kintsugi backup archive.") from err
    with tar:
        try:
            manifest = _read_manifest(tar)
            _verify(tar, manifest)
        except (EOFError, tarfile.TarError, zlib.error) as err:
            raise BackupError(
                f"The backup {archive.name} is incomplete or damaged (was it copied whole?); "
                "nothing restored."
            ) from err
        if manifest["blobs"] and config["BLOB_BACKEND"] != "local":
            raise BackupError(
                "This backup holds blob files: restore with KINTSUGI_BLOB_BACKEND=local."
            )
        if manifest.get("blob_backend") == "postgres" and config["BLOB_BACKEND"] != "postgres":
            # its blobs are rows of the blobs table: an instance reading files would find none
            raise BackupError(
                "This backup keeps its blobs in the database: restore with "
                "KINTSUGI_BLOB_BACKEND=postgres."
            )
        revision = manifest.get("revision")
        engine = db.make_engine(config["DATABASE_URL"])
        try:
            _refuse_data(engine)  # before migrating: a wrong target is left as it was
        finally:
            engine.dispose()
        db.upgrade(config["DATABASE_URL"], revision or "head")
        engine = db.make_engine(config["DATABASE_URL"])
        try:
            meta = MetaData()
            meta.reflect(engine)
            _refuse_data(engine, meta)
            unknown = set(manifest["tables"]) - set(meta.tables)
            if unknown:
                raise BackupError(f"Tables {sorted(unknown)} do not exist at revision {revision}.")
            if manifest["blobs"]:
                store = LocalBlobStore(config["DATA_DIR"])
                for key in manifest["blobs"]:
                    store.put(key, tar.extractfile(f"blobs/{key}"))  # type: ignore[arg-type]
            counts: dict[str, int] = {}
            with engine.begin() as conn:
                for table in meta.sorted_tables:
                    if table.name not in manifest["tables"]:
                        continue
                    fh = tar.extractfile(f"tables/{table.name}.jsonl")
                    # a row may point at a later row of its own table (an assessment superseded
                    # by a newer one): such links are set once every row is in
                    self_refs = [
                        fk.parent.name for fk in table.foreign_keys if fk.column.table is table
                    ]
                    (pk,) = table.primary_key.columns if self_refs else (None,)
                    links: list[dict[str, Any]] = []
                    batch: list[dict[str, Any]] = []
                    n = 0
                    for line in fh:  # type: ignore[union-attr]
                        row = {k: _decode(v) for k, v in json.loads(line).items()}
                        later = {c: row[c] for c in self_refs if row.get(c) is not None}
                        if later:
                            links.append({"_pk": row[pk.name], **later})
                            row.update(dict.fromkeys(later))
                        batch.append(row)
                        if len(batch) >= _BATCH:
                            conn.execute(insert(table), batch)
                            n += len(batch)
                            batch = []
                    if batch:
                        conn.execute(insert(table), batch)
                        n += len(batch)
                    for link in links:
                        conn.execute(
                            update(table)
                            .where(pk == link["_pk"])
                            .values({c: v for c, v in link.items() if c != "_pk"})
                        )
                    counts[table.name] = n
                if conn.dialect.name == "postgresql":
                    _reset_sequences(conn, meta)
        finally:
            engine.dispose()
    return BackupSummary(archive, revision, counts, len(manifest["blobs"]))


def _reset_sequences(conn: Any, meta: MetaData) -> None:
    """Move every serial/identity sequence past the restored ids (next insert must not clash)."""
    for table in meta.sorted_tables:
        for col in table.primary_key.columns:
            seq = conn.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": col.name}
            ).scalar()
            if seq:
                top = conn.execute(select(func.max(col))).scalar()
                conn.execute(
                    text("SELECT setval(:s, :v, :called)"),
                    {"s": seq, "v": top or 1, "called": top is not None},
                )
