"""``kintsugi unlock | reconcile | export``: key custody, the reconciliation worker, exports."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click

from server.cli.admin import _app, _session
from server.cli.keys import read_passphrase


@click.command("unlock")
@click.option("--project", "project_id", required=True, type=int)
@click.option(
    "--passphrase-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def unlock_command(project_id: int, passphrase_file: Path) -> None:
    """Check that a passphrase unlocks a project's keys (audited).

    Keys live only in the memory of the process that unlocked them: the worker unlocks for
    itself with ``kintsugi reconcile --passphrase-file``; this command verifies the passphrase.
    """
    from server.errors import ServerError
    from server.services import custody

    app = _app()
    with _session(app) as session:
        try:
            custody.unlock_project(
                session, project_id, read_passphrase(passphrase_file), actor="cli"
            )
            custody.lock_project(session, project_id, actor="cli")
        except ServerError as err:
            session.commit()  # keep the audit of the failed attempt
            raise click.ClickException(str(err)) from err
        session.commit()
    click.echo(f"project {project_id}: the passphrase unlocks its keys")


@click.command("reconcile")
@click.option("--project", "project_id", required=True, type=int)
@click.option(
    "--passphrase-file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
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
    default=0,
    type=int,
    help="Lock the key after this many idle seconds (0: stay unlocked while running).",
)
def reconcile_command(
    project_id: int,
    passphrase_file: Path,
    once: bool,
    interval: float,
    batch: int,
    idle_lock: int,
) -> None:
    """Decrypt, verify, score and reconcile pending submissions into cases."""
    from server.db import write_lock
    from server.errors import ServerError
    from server.services import custody
    from server.services.reconcile import reconcile_pending

    app = _app()
    database = app.extensions["kintsugi.db"]
    passphrase = read_passphrase(passphrase_file)

    def unlock() -> None:
        with database.sessionmaker() as session:
            try:
                custody.unlock_project(
                    session, project_id, passphrase, actor="worker", idle_seconds=idle_lock or 10**9
                )
            except ServerError as err:
                session.commit()
                raise click.ClickException(str(err)) from err
            session.commit()

    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    try:
        unlock()
        while True:
            if not custody.is_unlocked(project_id):
                unlock()
            result = reconcile_pending(
                database.sessionmaker,
                project_id,
                config=app.config,
                batch=batch,
                actor="worker",
                write_lock=write_lock(app),
            )
            if result.processed or once:
                click.echo(
                    f"processed {result.processed}: {result.assessments} assessments, "
                    f"{result.quarantined} quarantined, {result.orphans} orphans, "
                    f"{result.conflicts} conflicts, {result.mismatches} score mismatches"
                    + (f", {result.adopted} waiting orphans linked" if result.adopted else "")
                )
            if once or stopping:
                break
            time.sleep(interval)
    finally:
        try:
            if custody.is_unlocked(project_id):
                with database.sessionmaker() as session:
                    custody.lock_project(session, project_id, actor="worker")
                    session.commit()
        finally:
            database.engine.dispose()


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
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
def export_cases_command(project_id: int, fmt: str, wide: bool, out_file: Path) -> None:
    """Write the project's assessments (long format by default)."""
    from server.services.export import export_cases

    app = _app()
    show = sys.stderr.isatty()

    def progress(n: int) -> None:
        if show:
            click.echo(f"\r{n} rows", nl=False, err=True)

    with _session(app) as session, out_file.open("wb") as fh:
        rows = export_cases(session, project_id, fh, fmt=fmt, wide=wide, progress=progress)
    if show:
        click.echo("", err=True)
    click.echo(f"wrote {rows} rows to {out_file}")
