"""``kintsugi decrypt``: decrypt submission directories like ODK Briefcase.

A submission directory holds the manifest ``submission.xml`` and its ``.enc`` files. Each one
decrypts into ``OUT/<instanceID without uuid:>/`` (``submission.xml`` plus media under their
plaintext names), written to a temporary directory first and renamed only when every file
decrypted and the signature is valid. Anything else leaves only ``OUT/<id>.rejected`` naming
the reason. Exit status: 0 all valid, 1 any invalid or failed, 2 usage errors.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import click

from server.cli.keys import read_passphrase
from sync_protocol import crypto, keys
from sync_protocol.envelope import EncryptedEnvelope, parse_submission
from sync_protocol.errors import ProtocolError


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
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "unknown"


def _decrypt_one(directory: Path, private_key, out_dir: Path) -> tuple[str, str, bool]:
    """Decrypt one directory; return (id, status line, ok)."""
    try:
        env = parse_submission((directory / "submission.xml").read_bytes())
    except ProtocolError as err:
        return directory.name, f"failed: {err}", False
    if not isinstance(env, EncryptedEnvelope):
        return _safe_id(env.instance_id), "failed: not an encrypted submission", False
    target = out_dir / _safe_id(env.instance_id)
    tmp = Path(tempfile.mkdtemp(prefix=".decrypt-", dir=out_dir))
    try:
        aes_key = crypto.unwrap_key(private_key, env.encrypted_key)
        ivs = crypto.file_ivs(env.instance_id, aes_key, len(env.media) + 1)
        media_md5 = []
        for index, enc_name in enumerate(env.expected_files):
            src_path = directory / enc_name
            if not src_path.is_file():
                raise ProtocolError(f"missing file {enc_name}; the signature cannot be verified")
            plain_name = "submission.xml" if enc_name == env.encrypted_xml_file else enc_name[:-4]
            with src_path.open("rb") as src, (tmp / plain_name).open("wb") as dst:
                _size, md5 = crypto.decrypt_stream(src, dst, aes_key, ivs[index])
            media_md5.append((plain_name, md5))
        xml_md5 = media_md5.pop()[1]
        if not env.signature:
            raise ProtocolError("the manifest carries no signature; cannot verify")
        source = crypto.signature_source(
            form_id=env.form_id,
            version=env.version,
            encrypted_key=env.encrypted_key,
            instance_id=env.instance_id,
            media_md5=media_md5,
            xml_md5=xml_md5,
        )
        if not crypto.verify_signature(private_key, env.signature, source):
            raise ProtocolError(
                "signature invalid: the files were altered or do not belong together"
            )
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        return target.name, "valid", True
    except ProtocolError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        (out_dir / f"{target.name}.rejected").write_text(f"{err}\n")
        return target.name, f"rejected: {err}", False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@click.command("decrypt")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
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
    directories = find_submission_dirs(path)
    if not directories:
        click.echo(f"Error: no submission.xml found under {path}", err=True)
        sys.exit(2)
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for directory in directories:
        name, status, ok = _decrypt_one(directory, private_key, out_dir)
        failures += not ok
        click.echo(f"{name}\t{status}")
    click.echo(f"{len(directories) - failures} valid, {failures} rejected", err=True)
    sys.exit(1 if failures else 0)
