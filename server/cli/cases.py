"""``kintsugi unlock | reconcile | export``: key custody, the reconciliation worker, exports."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from server.cli.admin import _app, _session
from server.cli.keys import read_passphrase


@click.command("unlock")
@click.option("--project", "project_id", required=True, type=int)
@click.option(
    "--passphrase-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def unlock_command(project_id: int, passphrase_file: Path) -> None:
    """Unlock a project's keys as an admin: check the passphrase and lift an admin lock (audited).

    Keys live only in the memory of the process that unlocked them: the worker unlocks for
    itself with ``kintsugi reconcile --passphrase-file``, and does so again once this command
    (or the admin page or API) has lifted an admin lock (``kintsugi lock``). This process
    forgets the keys again before it exits.
    """
    from sqlalchemy import select

    from server.errors import ServerError
    from server.models import Project
    from server.services import custody

    app = _app()
    with _session(app) as session:
        was_locked = session.scalar(select(Project.key_locked_at).where(Project.id == project_id))
        try:
            custody.unlock_project(
                session, project_id, read_passphrase(passphrase_file), actor="cli"
            )
            custody.lock_project(session, project_id, actor="cli", everywhere=False)
        except ServerError as err:
            session.commit()  # keep the audit of the failed attempt
            raise click.ClickException(str(err)) from err
        session.commit()
    click.echo(f"project {project_id}: the passphrase unlocks its keys")
    if was_locked is not None:
        click.echo(
            f"project {project_id}: the admin lock of {was_locked:%Y-%m-%d %H:%M} UTC is lifted; "
            "the reconciliation worker unlocks with its passphrase file again"
        )


@click.command("lock")
@click.option("--project", "project_id", required=True, type=int)
def lock_command(project_id: int) -> None:
    """Lock a project's keys everywhere (audited).

    Every process holding the key forgets it: the reconciliation worker before its next batch.
    The worker then leaves encrypted submissions pending and does not unlock on its own until an
    admin unlocks again (``kintsugi unlock``, the admin page or the API).
    """
    from server.models import Project
    from server.services import custody

    app = _app()
    with _session(app) as session:
        project = session.get(Project, project_id)
        if project is None:
            raise click.ClickException(f"Project {project_id} does not exist on this server.")
        if not project.encrypted:
            raise click.ClickException(f"Project {project_id} is not encrypted: it has no key.")
        custody.lock_project(session, project_id, actor="cli")
        session.commit()
    click.echo(
        f"project {project_id}: key locked; the reconciliation worker forgets it before its "
        "next batch and waits for an admin to unlock it"
    )


@click.command("reconcile")
@click.option("--project", "project_id", required=True, type=int)
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The passphrase of the project's key (an encrypted project needs it; a plain one not).",
)
@click.option("--once", is_flag=True, help="Process what is pending, then exit.")
@click.option(
    "--interval",
    default=10.0,
    show_default=True,
    help="Seconds between polls when running as a worker.",
)
@click.option(
    "--batch",
    default=100,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Submissions claimed and committed together.",
)
@click.option(
    "--idle-lock",
    default=None,
    type=click.IntRange(min=0),
    help="Forget the key after this many seconds without use; it is unlocked again when "
    "encrypted submissions arrive (default: KINTSUGI_KEY_IDLE_SECONDS, 900; 0: keep it while "
    "running).",
)
def reconcile_command(
    project_id: int,
    passphrase_file: Path | None,
    once: bool,
    interval: float,
    batch: int,
    idle_lock: int | None,
) -> None:
    """Decrypt, verify, score and reconcile pending submissions into cases.

    Before each batch the worker checks for an admin lock (admin page, API, ``kintsugi lock``):
    it then forgets its key (audited) and leaves encrypted submissions pending, without
    unlocking from its passphrase file, until an admin unlocks the key again. A key rotated in
    meanwhile (by an admin elsewhere) is opened from the passphrase file (audited as an unlock).
    """
    from server.db import write_lock
    from server.errors import KeyLockedError, ServerError
    from server.services import custody
    from server.services.cases import pending_backlog
    from server.services.projects import get_project
    from server.services.reconcile import ReconcileResult, reconcile_pending

    app = _app()
    database = app.extensions["kintsugi.db"]
    try:
        with database.sessionmaker() as session:
            encrypted = get_project(session, project_id).encrypted
    except ServerError as err:
        database.engine.dispose()
        raise click.ClickException(str(err)) from err
    if encrypted and passphrase_file is None:
        database.engine.dispose()
        raise click.UsageError(
            f"Project {project_id} is encrypted: give --passphrase-file, a file holding the "
            "passphrase of its key."
        )
    # a plain project has no key: its submissions arrive readable and need no passphrase
    passphrase = read_passphrase(passphrase_file) if passphrase_file and encrypted else b""
    if idle_lock is None:
        idle_lock = int(app.config["KEY_IDLE_SECONDS"])
    shown_lock: list[Any] = [None]  # the admin lock last reported

    def prepare(first: bool) -> None:
        """Honour an admin lock; unlock when there is encrypted work and no admin lock."""
        with write_lock(app), database.sessionmaker() as session:
            state = custody.honour_admin_lock(session, project_id, actor="worker")
            rotated = state.locked_at is None and bool(custody.unopened_keys(session, project_id))
            if rotated or (state.locked_at is None and not custody.is_unlocked(project_id)):
                if first or rotated or pending_backlog(session, project_id):
                    try:
                        custody.unlock_project(
                            session, project_id, passphrase, actor="worker",
                            idle_seconds=idle_lock or None, lift_admin_lock=False,
                        )  # fmt: skip
                    except KeyLockedError:
                        pass  # an admin locked it just now: reported on the next check
                    except ServerError as err:
                        session.commit()
                        raise click.ClickException(str(err)) from err
            session.commit()
        if state.locked_at is not None and state.locked_at != shown_lock[0]:
            click.echo(
                f"project {project_id}: key locked by an admin at "
                f"{state.locked_at:%Y-%m-%d %H:%M:%S} UTC"
                + (" (this worker forgot it)" if state.forgot else "")
                + "; encrypted submissions stay pending until an admin unlocks it"
            )
        elif state.locked_at is None and shown_lock[0] is not None:
            click.echo(f"project {project_id}: an admin unlocked the key; decrypting again")
        shown_lock[0] = state.locked_at

    def one_pass(first: bool) -> ReconcileResult:
        total = ReconcileResult()
        while True:  # one batch at a time, each after a check for an admin lock
            if encrypted:
                prepare(first)
            first = False
            result = reconcile_pending(
                database.sessionmaker,
                project_id,
                config=app.config,
                limit=batch,
                batch=batch,
                actor="worker",
                write_lock=write_lock(app),
            )
            total.add(result)
            if result.processed < batch or result.skipped_locked:
                return total

    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        first = True
        while True:
            result = one_pass(first)
            first = False
            if result.processed or once:
                click.echo(
                    f"processed {result.processed}: {result.assessments} assessments, "
                    f"{result.quarantined} quarantined, {result.orphans} orphans, "
                    f"{result.conflicts} conflicts, {result.mismatches} score mismatches"
                    + (f", {result.adopted} waiting orphans linked" if result.adopted else "")
                )
            if once and result.skipped_locked:
                with database.sessionmaker() as session:
                    waiting = pending_backlog(session, project_id)
                click.echo(f"{waiting} encrypted submission(s) left pending: the key is locked")
            if once or stopping:
                break
            time.sleep(interval)
    finally:
        try:
            if custody.is_unlocked(project_id):
                with write_lock(app), database.sessionmaker() as session:
                    custody.lock_project(session, project_id, actor="worker", everywhere=False)
                    session.commit()
        finally:
            database.engine.dispose()


@click.group("submissions")
def submissions_group() -> None:
    """Work with stored submissions."""


@submissions_group.command("retry")
@click.option("--project", "project_id", required=True, type=int)
@click.option("--instance-id", "instance_ids", required=True, multiple=True)
def submissions_retry_command(project_id: int, instance_ids: tuple[str, ...]) -> None:
    """Send quarantined submissions back to the reconciliation worker (audited).

    Each becomes pending again (``pending_decryption`` when encrypted, else ``received``), its
    quarantine review item is resolved as ``retry``, and the worker's next pass processes it.
    """
    from sqlalchemy import select

    from server.errors import ServerError
    from server.models import Form, Submission
    from server.services.cases import retry_submission

    app = _app()
    with _session(app) as session:
        done = []
        for instance_id in instance_ids:
            subs = session.scalars(
                select(Submission)
                .join(Form, Form.id == Submission.form_id)
                .where(Form.project_id == project_id, Submission.instance_id == instance_id)
            ).all()
            if not subs:
                raise click.ClickException(f"No submission {instance_id} in project {project_id}.")
            for sub in subs:
                try:
                    done.append((instance_id, retry_submission(session, sub, actor="cli")))
                except ServerError as err:
                    raise click.ClickException(str(err)) from err
        session.commit()
    for instance_id, status in done:
        click.echo(f"{instance_id}: {status}, the worker processes it on its next pass")


@submissions_group.command("encrypt-stored")
@click.option("--project", "project_id", required=True, type=int)
@click.option("--dry-run", is_flag=True, help="Only count what would be encrypted.")
def submissions_encrypt_stored_command(project_id: int, dry_run: bool) -> None:
    """Encrypt submissions stored in plaintext for a form that declares a public key (audited).

    A server from before encryption on arrival stored what Collect sent in plaintext to an
    encrypted form as it came. Each complete one is encrypted to its form version's key as
    Collect would have, in its own transaction, and its plaintext files are removed. One not
    reconciled yet then waits for the key; one reconciled keeps its assessment (its notes are
    decrypted on demand with the key). An upload whose last part never arrived is left alone.
    No key is needed. Running it again finds nothing.
    """
    from server.db import write_lock
    from server.errors import ServerError
    from server.services.stored_plaintext import encrypt_stored

    app = _app()
    database = app.extensions["kintsugi.db"]
    try:
        result = encrypt_stored(
            database.sessionmaker, project_id, config=app.config, actor="cli",
            dry_run=dry_run, write_lock=write_lock(app),
        )  # fmt: skip
    except ServerError as err:
        raise click.ClickException(str(err)) from err
    finally:
        database.engine.dispose()
    if not dry_run:
        for instance_id, reason in result.failed:
            click.echo(f"{instance_id}: not encrypted: {reason}", err=True)
    click.echo(_encrypt_stored_summary(project_id, result))
    if result.failed and not dry_run:
        raise click.exceptions.Exit(1)


def _encrypt_stored_summary(project_id: int, result: Any) -> str:
    """One line: what was (or would be) encrypted, and what is left for the admin to do."""
    n = result.encrypted
    if not (n or result.incomplete or result.failed):
        return f"project {project_id}: no submission stored in plaintext for an encrypted form"
    if result.dry_run:
        head = f"project {project_id} (dry run, nothing changed): {n} would be encrypted"
    else:
        head = f"project {project_id}: {n} encrypted"
    kinds = [
        (result.pending, "not reconciled yet: wait for the key (kintsugi reconcile)"),
        (result.reconciled, "reconciled: keep their assessments"),
        (result.quarantined, "quarantined: stay so until retried"),
    ]
    detail = ", ".join(f"{count} {what}" for count, what in kinds if count)
    line = head + (f" ({detail})" if detail else "")
    if result.foreign_key:
        line += f"; {result.foreign_key} to a key this project does not hold"
    if result.incomplete:
        line += (
            f"; {result.incomplete} incomplete left in plaintext (last part never arrived; "
            "encrypted when the device sends it)"
        )
    if result.failed:
        left = "a run lists why" if result.dry_run else "listed above, fix and run again"
        line += f"; {len(result.failed)} cannot be encrypted ({left})"
    return line


@click.group("export")
def export_group() -> None:
    """Export reconciled data."""


@export_group.command("cases")
@click.option("--project", "project_id", required=True, type=int)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "xlsx"]), default="csv", show_default=True
)
@click.option(
    "--wide", is_flag=True, help="One row per assessment instead of per assessment x domain."
)
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="The file to write (readable by its owner only; an existing file is replaced once "
    "the export is complete), or - for standard output (to pipe into gpg, say).",
)
def export_cases_command(project_id: int, fmt: str, wide: bool, out_file: Path) -> None:
    """Write the project's assessments (long format by default).

    The file appears only when it is complete: until then the rows go to a hidden
    ``.NAME.*.part`` file beside it, removed if the export stops (Ctrl-C, a lost database
    connection). Each export is recorded in the audit log (``export.file``).
    """
    from server.db import begin_snapshot
    from server.errors import ServerError
    from server.services import audit
    from server.services.export import count_rows, export_cases
    from server.services.projects import get_project

    app = _app()
    show = sys.stderr.isatty()
    to_stdout = str(out_file) == "-"

    def progress(n: int) -> None:
        if show:
            click.echo(f"\r{n} rows", nl=False, err=True)

    def audited(session: Any, rows: int) -> None:
        audit.record(session, "cli", "export.file", f"project:{project_id}",
                     fmt=fmt, wide=wide, rows=rows, out="-" if to_stdout else str(out_file))  # fmt: skip
        session.commit()

    with _session(app) as session, app.extensions["kintsugi.db"].sessionmaker() as snapshot:
        try:
            get_project(session, project_id)  # no file for a project that is not there
        except ServerError as err:
            raise click.ClickException(str(err)) from err
        session.rollback()  # not idle in a transaction while the export runs (the audit's)
        begin_snapshot(snapshot)  # the rows counted (stdout) or written are the rows audited
        if to_stdout:  # audited before the first byte leaves, as the web download
            audited(session, count_rows(snapshot, project_id, wide=wide))
            out = sys.stdout.buffer
            rows = export_cases(snapshot, project_id, out, fmt=fmt, wide=wide, progress=progress)
            out.flush()
        else:
            rows = _write_whole(
                out_file,
                lambda fh: export_cases(
                    snapshot, project_id, fh, fmt=fmt, wide=wide, progress=progress
                ),
                before_rename=lambda n: audited(session, n),
            )
    if show:
        click.echo("", err=True)
    click.echo(f"wrote {rows} rows to {'standard output' if to_stdout else out_file}",
               err=to_stdout)  # fmt: skip


def _write_whole(path: Path, write: Any, before_rename: Any) -> int:
    """Run ``write(fh)`` into a hidden temporary file beside ``path`` (owner-only, 0600: it
    holds survivor data), then rename it to ``path``: the name never shows a partial export,
    and an earlier file there stays whole until the new one is. Returns what ``write`` did."""
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as err:
        raise click.ClickException(f"Cannot write {path}: {err.strerror or err}.") from err
    try:
        with os.fdopen(fd, "wb") as fh:
            result = write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        before_rename(result)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return result
