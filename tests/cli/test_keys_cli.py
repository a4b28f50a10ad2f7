"""``kintsugi keys`` as an admin types it."""

from __future__ import annotations

import stat

from click.testing import CliRunner

from server.cli import main
from sync_protocol import keys


def test_keys_generate__passphrase_file__encrypted_private_and_public(tmp_path):
    """Should write an encrypted private.pem (0600) and public.pem that belong together."""
    pw = tmp_path / "pw.txt"
    pw.write_text("a long field passphrase\n")
    result = CliRunner().invoke(
        main, ["keys", "generate", "--out", str(tmp_path / "k"), "--passphrase-file", str(pw)]
    )
    assert result.exit_code == 0, result.output
    private = (tmp_path / "k" / "private.pem").read_bytes()
    assert private.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert stat.S_IMODE((tmp_path / "k" / "private.pem").stat().st_mode) == 0o600
    key = keys.load_private_key(private, b"a long field passphrase")
    public = keys.load_public_key((tmp_path / "k" / "public.pem").read_bytes())
    assert keys.fingerprint(key) == keys.fingerprint(public)
    assert "a long field passphrase" not in result.output


def test_keys_generate__existing__refuses_without_force(tmp_path):
    """Should not overwrite a key pair by accident (exit 2)."""
    pw = tmp_path / "pw.txt"
    pw.write_text("passphrase-1234")
    args = ["keys", "generate", "--out", str(tmp_path), "--passphrase-file", str(pw)]
    assert CliRunner().invoke(main, args).exit_code == 0
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "--force" in result.output


def test_keys_generate__bad_bits__usage_error(tmp_path):
    """Should refuse key sizes outside 2048..4096."""
    pw = tmp_path / "pw.txt"
    pw.write_text("passphrase-1234")
    result = CliRunner().invoke(
        main,
        [
            "keys",
            "generate",
            "--out",
            str(tmp_path),
            "--passphrase-file",
            str(pw),
            "--bits",
            "1024",
        ],
    )
    assert result.exit_code == 2


def test_keys_public__wrong_passphrase__one_clear_line(tmp_path):
    """Should print a clear error, never a traceback, for a wrong passphrase."""
    pw, wrong = tmp_path / "pw.txt", tmp_path / "wrong.txt"
    pw.write_text("passphrase-1234")
    wrong.write_text("not-it-at-all")
    CliRunner().invoke(
        main, ["keys", "generate", "--out", str(tmp_path), "--passphrase-file", str(pw)]
    )
    result = CliRunner().invoke(
        main, ["keys", "public", str(tmp_path / "private.pem"), "--passphrase-file", str(wrong)]
    )
    assert result.exit_code == 1
    assert "passphrase does not open" in result.output
    assert "Traceback" not in result.output
    ok = CliRunner().invoke(
        main, ["keys", "public", str(tmp_path / "private.pem"), "--passphrase-file", str(pw)]
    )
    assert ok.exit_code == 0
    assert ok.output.strip() == keys.public_key_b64(
        keys.load_public_key((tmp_path / "public.pem").read_bytes())
    )


def test_keys_generate__real_entry_point__0600_and_usable_with_decrypt(tmp_path):
    """Should generate with the installed script; the key opens only with its passphrase."""
    import subprocess
    import sys
    from pathlib import Path

    script = str(Path(sys.executable).with_name("kintsugi"))
    pw = tmp_path / "pw.txt"
    pw.write_text("field office passphrase\n")
    proc = subprocess.run(
        [script, "keys", "generate", "--out", str(tmp_path / "k"), "--passphrase-file", str(pw),
         "--bits", "3072"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    private = tmp_path / "k" / "private.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = keys.load_private_key(private.read_bytes(), b"field office passphrase")
    assert key.key_size == 3072
    assert b"PRIVATE" not in (tmp_path / "k" / "public.pem").read_bytes()
    assert "-----BEGIN" not in proc.stdout  # no key material on the terminal


def test_keys_generate__short_passphrase__usage_error_no_files(tmp_path):
    """Should refuse a passphrase under 10 characters (Central's floor) before writing keys."""
    pw = tmp_path / "pw.txt"
    pw.write_text("short\n")
    result = CliRunner().invoke(
        main, ["keys", "generate", "--out", str(tmp_path / "k"), "--passphrase-file", str(pw)]
    )
    assert result.exit_code == 2
    assert "at least 10 characters" in result.output
    assert not (tmp_path / "k").exists()
