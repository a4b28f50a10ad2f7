"""``kintsugi i18n``: the translation workflow for designers and translators."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from form_compiler import i18n
from form_compiler.context import list_contexts, load_context
from form_compiler.errors import CompilerError
from form_compiler.instrument import load_instrument
from server.cli.compile import default_instruments_dir

_instruments_option = click.option(
    "--instruments",
    "instruments_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)


def _load(root: Path, context_name: str):
    if context_name not in list_contexts(root):
        raise click.UsageError(f'no context "{context_name}" under {root}/contexts')
    try:
        instrument = load_instrument(root)
        return instrument, load_context(root, context_name, instrument)
    except CompilerError as err:
        click.echo(str(err), err=True)
        sys.exit(1)


def _language(context, code: str):
    for lang in context.languages:
        if lang.code == code:
            return lang
    codes = ", ".join(lang.code for lang in context.languages)
    raise click.UsageError(f'context "{context.name}" has no language "{code}" (it has {codes})')


@click.group("i18n")
def i18n_group() -> None:
    """Export texts for translators, import their work, and report coverage."""


@i18n_group.command("export")
@click.option("--context", "context_name", required=True)
@click.option("--language", "code", required=True, help="Language code, e.g. hi.")
@click.option(
    "--format", "fmt", type=click.Choice(["xlsx", "po"]), default="xlsx", show_default=True
)
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@_instruments_option
def export_command(
    context_name: str, code: str, fmt: str, out_file: Path, instruments_dir: Path | None
) -> None:
    """Write every text of a context in one language, with its source and status."""
    root = instruments_dir or default_instruments_dir()
    instrument, context = _load(root, context_name)
    _language(context, code)
    exporter = i18n.export_xlsx if fmt == "xlsx" else i18n.export_po
    out_file.write_bytes(exporter(root, instrument, context, code))
    click.echo(f"wrote {out_file}")


@i18n_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--context", "context_name", required=True)
@click.option("--language", "code", required=True)
@_instruments_option
def import_command(file: Path, context_name: str, code: str, instruments_dir: Path | None) -> None:
    """Merge a translator's XLSX or PO file into the translation files."""
    root = instruments_dir or default_instruments_dir()
    instrument, context = _load(root, context_name)
    _language(context, code)
    try:
        counts = i18n.import_file(root, instrument, context, code, file)
    except CompilerError as err:
        click.echo(str(err), err=True)
        sys.exit(1)
    click.echo(
        f"updated {counts['updated']}, unchanged {counts['unchanged']}, "
        f"refused (translated an older source text) {counts['refused_stale']}, unknown keys {counts['unknown']}"
    )


@i18n_group.command("status")
@click.option("--context", "context_name", help="One context (default: all).")
@_instruments_option
def status_command(context_name: str | None, instruments_dir: Path | None) -> None:
    """Coverage, stale and reviewed counts per context and language."""
    root = instruments_dir or default_instruments_dir()
    names = [context_name] if context_name else list_contexts(root)
    header = f"{'context':30} {'language':18} {'coverage':>8} {'reviewed':>8} {'draft':>6} {'stale':>6} {'missing':>7}"
    click.echo(header)
    for name in names:
        instrument, context = _load(root, name)
        for row in i18n.status_report(root, instrument, context):
            coverage = "source" if row["is_source"] else f"{row['coverage']:.1f}%"
            click.echo(
                f"{row['context']:30} {row['language']:18} {coverage:>8} {row['reviewed']:>8} "
                f"{row['draft']:>6} {row['stale']:>6} {row['missing']:>7}"
            )
