"""``kintsugi compile``: instruments + contexts -> XForm, XLSForm and report per context."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from form_compiler.api import convert_plan, list_contexts, plan_context
from form_compiler.errors import CompilerError, ContextRuleError
from form_compiler.source import load_json

REPO_INSTRUMENTS = Path(__file__).resolve().parents[2] / "instruments"


def default_instruments_dir() -> Path:
    """``$KINTSUGI_INSTRUMENTS_DIR``, else ``./instruments`` when present, else the repo's."""
    env = os.environ.get("KINTSUGI_INSTRUMENTS_DIR")
    if env:
        return Path(env)
    local = Path("instruments")
    return local if (local / "contexts").is_dir() else REPO_INSTRUMENTS


def read_public_key(path: Path) -> str:
    """The base64 DER SubjectPublicKeyInfo XForms carry, from a PEM (public or private) file."""
    from sync_protocol import keys
    from sync_protocol.errors import ProtocolError

    data = path.read_bytes()
    try:
        key = keys.load_public_key(data) if b"PRIVATE" not in data else keys.load_private_key(data)
    except ProtocolError as err:
        raise click.UsageError(f"{path}: {err}") from err
    return keys.public_key_b64(key)


def _as_typed(err: CompilerError, root: Path, wording_pack: Path | None) -> CompilerError:
    """Make the error's file a path the designer can open from where they typed the command.

    The compiler names files relative to the instruments folder (``contexts/x/context.json``);
    prefixing that folder gives ``instruments/contexts/x/context.json:12: ...``.
    """
    for e in getattr(err, "errors", None) or [err]:
        if not e.file:
            continue
        if wording_pack is not None and e.file == wording_pack.name:
            e.file = str(wording_pack)
        elif not Path(e.file).is_absolute() and (root / e.file).exists():
            e.file = str(root / e.file)
    return err


def _same_form_id(root: Path, file: str, first: str, form_id: str) -> ContextRuleError:
    """Two contexts with one "id" would overwrite each other's form (a copied folder)."""
    data = load_json(root / file, file)
    line = data.line_of("id") if "id" in data else getattr(data, "line", None)
    return ContextRuleError(
        f'"id" gives form_id {form_id}, already the form of {root / first}: '
        'give this context its own "id" (the form_id is made from it)',
        file=file,
        line=line,
    )


def _fail(err: CompilerError) -> None:
    for line in str(err).splitlines():
        click.echo(line, err=True)
    sys.exit(1)


@click.command("compile")
@click.option("--context", "context_name", help="Context folder name under instruments/contexts/.")
@click.option("--all", "all_contexts", is_flag=True, help="Compile every context.")
@click.option(
    "--public-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="RSA public key PEM: encrypt submissions.",
)
@click.option(
    "--submission-url",
    help="Where Collect sends submissions (the form's submission action). Leave it out for a "
    "Kintsugi server: app users (QR codes) cannot send to a fixed URL.",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--instruments",
    "instruments_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "--require-reviewed", is_flag=True, help="Drafts, stale and missing translations are errors."
)
@click.option(
    "--wording-pack",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Licensed wording overlay (labels, hints, anchors).",
)
@click.option("--validate", is_flag=True, help="Also run ODK Validate (needs Java).")
@click.option("--force", is_flag=True, help="Rebuild even when the content hash is unchanged.")
def compile_command(
    context_name: str | None,
    all_contexts: bool,
    public_key: Path | None,
    submission_url: str | None,
    out_dir: Path,
    instruments_dir: Path | None,
    require_reviewed: bool,
    wording_pack: Path | None,
    validate: bool,
    force: bool,
) -> None:
    """Compile contexts into DIR/<form_id>.xml, .xlsx and .report.json.

    Unchanged contexts (same content hash as the report already in DIR) are skipped.
    """
    root = instruments_dir or default_instruments_dir()
    if bool(context_name) == bool(all_contexts):
        raise click.UsageError("give either --context NAME or --all")
    if context_name:
        # accept the folder name, or a path to the folder or to its context.json
        given = Path(context_name)
        context_name = given.parent.name if given.name == "context.json" else given.name
    names = list_contexts(root) if all_contexts else [context_name]
    if context_name and context_name not in list_contexts(root):
        known = ", ".join(list_contexts(root)) or "none"
        raise click.UsageError(
            f'no context "{context_name}" under {root}/contexts (known: {known})'
        )
    key_b64 = read_public_key(public_key) if public_key else None
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    #: form_id -> the context that compiled to it (two contexts must never share a form)
    owners: dict[str, str] = {}
    for index, name in enumerate(names, start=1):
        prefix = f"[{index}/{len(names)}] " if all_contexts else ""
        try:
            plan = plan_context(
                root,
                name,
                public_key=key_b64,
                submission_url=submission_url,
                require_reviewed=require_reviewed,
                wording_pack=wording_pack,
            )
            if plan.form_id in owners:
                raise _same_form_id(root, plan.context.file, owners[plan.form_id], plan.form_id)
            owners[plan.form_id] = plan.context.file
            report_path = out_dir / f"{plan.form_id}.report.json"
            if not force and report_path.exists():
                previous = json.loads(report_path.read_text(encoding="utf-8"))
                if (
                    previous.get("input_hash") == plan.input_hash
                    and (out_dir / f"{plan.form_id}.xml").exists()
                    and (out_dir / f"{plan.form_id}.xlsx").exists()
                ):
                    click.echo(f"{prefix}{name}: unchanged ({plan.form_id} {plan.version})")
                    continue
            form = convert_plan(plan, validate=validate)
        except CompilerError as err:
            err = _as_typed(err, root, wording_pack)
            failed += 1
            if not all_contexts:
                _fail(err)
            click.echo(f"{prefix}{name}: FAILED", err=True)
            for line in str(err).splitlines():
                click.echo(line, err=True)
            continue
        (out_dir / f"{form.form_id}.xml").write_bytes(form.xform)
        (out_dir / f"{form.form_id}.xlsx").write_bytes(form.xlsx)
        for attachment, data in form.attachments.items():
            (out_dir / f"{form.form_id}.{attachment}").write_bytes(data)
        report_path = out_dir / f"{form.form_id}.report.json"
        report_path.write_text(
            json.dumps(form.report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        click.echo(f"{prefix}{name}: {form.form_id} {form.version} ({len(form.warnings)} warnings)")
        for warning in form.warnings:
            click.echo(f"  warning: {warning}", err=True)
    if failed:
        sys.exit(1)
