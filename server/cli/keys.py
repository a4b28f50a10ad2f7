"""``kintsugi keys``: key pairs for encrypted forms."""

from __future__ import annotations

import os
from pathlib import Path

import click

from sync_protocol import keys
from sync_protocol.errors import ProtocolError

#: ODK Central's minimum for managed-key passphrases; the same floor for new keys here
MIN_PASSPHRASE_CHARS = 10


def read_passphrase(path: Path) -> bytes:
    """A passphrase file's content without its trailing newline (as editors save it)."""
    try:
        data = path.read_bytes().rstrip(b"\r\n")
    except OSError as err:
        raise click.UsageError(f"{path}: cannot read the passphrase file.") from err
    if not data:
        raise click.UsageError(f"{path}: the passphrase file is empty.")
    return data


@click.group("keys")
def keys_group() -> None:
    """Generate and inspect RSA key pairs for encrypted forms."""


@keys_group.command("generate")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--passphrase-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the passphrase that protects the private key.",
)
@click.option("--bits", default=2048, show_default=True, type=click.IntRange(2048, 4096))
@click.option("--force", is_flag=True, help="Overwrite an existing key pair in DIR.")
def generate_command(out_dir: Path, passphrase_file: Path, bits: int, force: bool) -> None:
    """Write DIR/private.pem (passphrase-encrypted PKCS#8, mode 0600) and DIR/public.pem."""
    passphrase = read_passphrase(passphrase_file)
    if len(passphrase.decode("utf-8", "replace")) < MIN_PASSPHRASE_CHARS:
        raise click.UsageError(
            f"{passphrase_file}: the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters."
        )
    private_path, public_path = out_dir / "private.pem", out_dir / "public.pem"
    if private_path.exists() and not force:
        raise click.UsageError(f"{private_path} exists; use --force to replace it.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise click.ClickException(f"cannot create {out_dir}: {err.strerror or err}") from err
    try:
        key = keys.generate_private_key(bits)
        pem = keys.encrypt_private_key(key, passphrase)
    except ProtocolError as err:
        raise click.ClickException(str(err)) from err
    try:
        # created 0600 from the start: the key is never readable by others, even briefly
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        os.chmod(private_path, 0o600)  # O_CREAT's mode does not apply to an existing file
        public_path.write_bytes(keys.public_key_pem(key))
    except OSError as err:
        raise click.ClickException(f"cannot write the key pair: {err.strerror or err}") from err
    click.echo(f"private key: {private_path} (encrypted, PBKDF2-SHA256 600k + AES-256-CBC)")
    click.echo(f"public key:  {public_path}")
    click.echo(f"fingerprint: {keys.fingerprint(key)}")


@keys_group.command("public")
@click.argument("key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def public_command(key_file: Path, passphrase_file: Path | None) -> None:
    """Print the base64 public key an XForm's base64RsaPublicKey needs."""
    try:
        data = key_file.read_bytes()
    except OSError as err:
        raise click.ClickException(f"cannot read {key_file}: {err.strerror or err}") from err
    try:
        if b"PRIVATE KEY" in data or data.lstrip().startswith(b"{"):
            passphrase = read_passphrase(passphrase_file) if passphrase_file else None
            key = keys.load_private_key(data, passphrase)
        else:
            key = keys.load_public_key(data)
    except ProtocolError as err:
        raise click.ClickException(str(err)) from err
    click.echo(keys.public_key_b64(key))
