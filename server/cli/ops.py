"""``kintsugi backup`` and ``kintsugi restore`` (operations, issue 6)."""

from __future__ import annotations

import click


def _config() -> dict:
    from server.config import load_config

    return load_config()


@click.command("backup")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="Archive to write (tar.gz, mode 0600). It holds survivor data: store it like the DB.",
)
def backup_command(out: str) -> None:
    """Write a consistent snapshot of the database and blobs to --out."""
    from server.backup import create_backup
    from server.errors import ServerError

    try:
        summary = create_backup(_config(), out)
    except ServerError as err:
        raise click.ClickException(err.message) from err
    except OSError as err:  # a folder that cannot be made, a file where a folder should be
        raise click.ClickException(f"Cannot write {out}: {err.strerror or err}.") from err
    rows = sum(summary.tables.values())
    click.echo(
        f"backup written: {summary.path} (schema {summary.revision}, "
        f"{len(summary.tables)} tables, {rows} rows, {summary.blobs} blob files)"
    )
    if summary.missing_blobs:
        # the database names files the blob store no longer has: the archive keeps what is
        # there, and whoever runs the backup (or its cron job) must hear about the rest
        shown = ", ".join(summary.missing_blobs[:5])
        more = len(summary.missing_blobs) - 5
        raise click.ClickException(
            f"{len(summary.missing_blobs)} blob files named by the database are missing from "
            f"the blob store ({shown}{f' and {more} more' if more > 0 else ''}), so they are "
            "not in this backup either. Check the data folder (KINTSUGI_DATA_DIR) and restore "
            "those files from an earlier backup."
        )


@click.command("restore")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
def restore_command(archive: str) -> None:
    """Restore ARCHIVE into this (empty) instance: database rows and blobs."""
    from server.backup import restore_backup
    from server.errors import ServerError

    try:
        summary = restore_backup(_config(), archive)
    except ServerError as err:
        raise click.ClickException(err.message) from err
    rows = sum(summary.tables.values())
    click.echo(
        f"restored {rows} rows in {len(summary.tables)} tables and {summary.blobs} blob files "
        f"(schema {summary.revision}). Unlock project keys again with their passphrases."
    )
