"""``kintsugi decrypt``: decrypt submission directories like ODK Briefcase.

A submission directory holds the manifest ``submission.xml`` and its ``.enc`` files. Each one
decrypts into ``OUT/<instanceID without uuid:>/`` (``submission.xml`` plus media under their
plaintext names), written to a temporary directory first and renamed only when every file
decrypted and the signature is valid. Anything else leaves only ``OUT/<id>.rejected`` naming
the reason. One line per submission: ``<id>\\t<status>[\\t<reason>]`` where status is
``valid``, ``invalid`` (signature mismatch), ``cannot-verify`` (a file is missing or the
manifest has no signature) or ``failed`` (unreadable manifest, wrong key, damaged file).
Exit status: 0 all valid, 1 any other status, 2 usage errors (bad key, passphrase, paths).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import click

from server.cli.keys import read_passphrase
from sync_protocol import crypto, keys
from sync_protocol.envelope import EncryptedEnvelope, PlainInstance, parse_submission
from sync_protocol.errors import ProtocolError

FAILED = "failed"


class _RejectedError(Exception):
    """One submission is not written: ``status`` for the summary line, ``reason`` for the note."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def find_submission_dirs(path: Path) -> list[Path]:
    """``path`` itself if it is a submission directory, else every one below it (sorted).

    Below ``path``, a submission directory is one with a ``submission.xml`` manifest and at
    least one ``.enc`` file, so decrypted output or plaintext copies lying around are skipped.
    """
    if (path / "submission.xml").is_file():
        return [path]
    return sorted(
        p.parent
        for p in path.rglob("submission.xml")
        if p.parent != path and any(p.parent.glob("*.enc"))
    )


def _safe_id(instance_id: str) -> str:
    name = instance_id.removeprefix("uuid:")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".") or "unknown"


def _read_envelope(directory: Path) -> EncryptedEnvelope | PlainInstance:
    try:
        return parse_submission((directory / "submission.xml").read_bytes())
    except ProtocolError as err:
        raise _RejectedError(FAILED, f"the manifest cannot be read: {err}") from err


def _decrypt_into(directory: Path, env: EncryptedEnvelope, private_key, tmp: Path) -> None:
    """Decrypt every file of ``env`` from ``directory`` into ``tmp``; raise _RejectedError if not VALID."""
    missing = [n for n in env.expected_files if not (directory / n).is_file()]
    if missing:
        raise _RejectedError(
            crypto.SignatureStatus.CANNOT_VERIFY.value,
            f"missing file(s) {', '.join(missing)}; the signature cannot be verified",
        )
    if not env.signature:
        raise _RejectedError(
            crypto.SignatureStatus.CANNOT_VERIFY.value, "the manifest carries no signature"
        )
    try:
        decryptor = crypto.SubmissionDecryptor(env, private_key)
        for enc_name in env.expected_files:
            with (
                (directory / enc_name).open("rb") as src,
                (tmp / decryptor.plain_name(enc_name)).open("wb") as dst,
            ):
                decryptor.decrypt_file(enc_name, src, dst)
    except ProtocolError as err:
        raise _RejectedError(FAILED, str(err)) from err
    status = decryptor.signature_status()
    if status is not crypto.SignatureStatus.VALID:
        raise _RejectedError(
            status.value, "signature invalid: the files were altered or do not belong together"
        )


def _decrypt_one(
    directory: Path, private_key, out_dir: Path, noted: set[str]
) -> tuple[str, str, str | None]:
    """Decrypt one directory; return (output name, status, reason or None).

    ``noted`` holds the names given a ``.rejected`` note in this run: a second copy of the same
    instance (e.g. a tampered duplicate) appends to that note instead of hiding the first
    reason, and a valid copy removes only notes left by earlier runs.
    """
    name = directory.name
    tmp: Path | None = None
    try:
        env = _read_envelope(directory)
        name = _safe_id(env.instance_id)
        if not isinstance(env, EncryptedEnvelope):
            raise _RejectedError(FAILED, "submission.xml is a plaintext instance, not encrypted")
        tmp = Path(tempfile.mkdtemp(prefix=".decrypt-", dir=out_dir))
        _decrypt_into(directory, env, private_key, tmp)
        target = out_dir / name
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        tmp = None
        if name not in noted:  # a stale note from an earlier run no longer applies
            (out_dir / f"{name}.rejected").unlink(missing_ok=True)
        return name, crypto.SignatureStatus.VALID.value, None
    except (_RejectedError, OSError) as err:
        status, reason = (
            (err.status, err.reason)
            if isinstance(err, _RejectedError)
            else (FAILED, f"cannot read or write a file ({err.strerror or err})")
        )
        try:
            mode = "a" if name in noted else "w"
            with (out_dir / f"{name}.rejected").open(mode, encoding="utf-8") as note:
                note.write(f"{status}: {reason}\nsource: {directory}\n")
            noted.add(name)
        except OSError:
            pass  # the summary line still reports it
        return name, status, reason
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@click.command("decrypt")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Private key: PEM (PKCS#1/PKCS#8, encrypted or not) or a Central key archive (.json).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the key's passphrase (trailing newline ignored).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
def decrypt_command(
    path: Path, key_file: Path, passphrase_file: Path | None, out_dir: Path
) -> None:
    """Decrypt the submission directory PATH, or every one below it, into OUT."""
    passphrase = read_passphrase(passphrase_file) if passphrase_file else None
    try:
        private_key = keys.load_private_key(key_file.read_bytes(), passphrase)
    except ProtocolError as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(2)
    except OSError as err:
        click.echo(f"Error: cannot read {key_file}: {err.strerror or err}", err=True)
        sys.exit(2)
    directories = find_submission_dirs(path)
    if not directories:
        click.echo(f"Error: no submission.xml found under {path}", err=True)
        sys.exit(2)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        click.echo(f"Error: cannot create {out_dir}: {err.strerror or err}", err=True)
        sys.exit(2)
    failures = 0
    noted: set[str] = set()
    for directory in directories:
        name, status, reason = _decrypt_one(directory, private_key, out_dir, noted)
        failures += status != crypto.SignatureStatus.VALID.value
        click.echo(f"{name}\t{status}" + (f"\t{reason}" if reason else ""))
    click.echo(f"{len(directories) - failures} valid, {failures} rejected", err=True)
    sys.exit(1 if failures else 0)
