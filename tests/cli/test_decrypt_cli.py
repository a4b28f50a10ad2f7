"""``kintsugi decrypt`` on the shared vectors, as an admin types it."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from server.cli import main
from tests.sync_protocol.vectors import KEYS_DIR, VECTORS_DIR

pytestmark = pytest.mark.skipif(not VECTORS_DIR.is_dir(), reason="shared vectors missing")
COLLECT_KEY = KEYS_DIR / "collect-gen-rsa2048.pkcs8.pem"


def _copy(tmp_path, *names):
    root = tmp_path / "in"
    for name in names:
        shutil.copytree(VECTORS_DIR / name, root / name)
    return root


def test_decrypt__one_directory__plaintext_and_media_written(tmp_path):
    """Should write OUT/<id>/submission.xml and each media file, exit 0."""
    src = _copy(tmp_path, "gen-03-media-2")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["decrypt", str(src / "gen-03-media-2"), "--key", str(COLLECT_KEY), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    target = out / "651e6fb6-bb9a-4e0d-b50d-9c149b91b386"
    plain = VECTORS_DIR / "gen-03-media-2" / "plaintext"
    for name in ("submission.xml", "1736935200123.jpg", "1736935260456.m4a"):
        assert (target / name).read_bytes() == (plain / name).read_bytes()
    assert "valid" in result.output


def test_decrypt__tree_with_negative__exit_1_and_rejected_note_only(tmp_path):
    """Should decrypt every directory below PATH, reject the tampered one with a note."""
    src = _copy(tmp_path, "gen-01-small-text", "neg-04-truncated-ciphertext", "gen-08-no-version")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["decrypt", str(src), "--key", str(COLLECT_KEY), "--out", str(out)]
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "\t" in line]
    assert len(lines) == 3
    # neg-04 shares gen-01's instanceID: the good one is written, the bad one leaves a note
    assert (out / "25cc7291-be75-42b8-9e6a-a6bd786b878a.rejected").read_text().strip()
    assert (out / "25cc7291-be75-42b8-9e6a-a6bd786b878a" / "submission.xml").exists()


def test_decrypt__tampered_media__nothing_written_but_note(tmp_path):
    """Should write nothing but a .rejected note for an invalid signature."""
    src = _copy(tmp_path, "neg-01-tampered-media")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "decrypt",
            str(src / "neg-01-tampered-media"),
            "--key",
            str(COLLECT_KEY),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "651e6fb6-bb9a-4e0d-b50d-9c149b91b386.rejected"
    ]
    assert (
        "signature invalid" in (out / "651e6fb6-bb9a-4e0d-b50d-9c149b91b386.rejected").read_text()
    )


def test_decrypt__encrypted_key_with_passphrase__works(tmp_path):
    """Should open a passphrase-protected PKCS#8 key."""
    src = _copy(tmp_path, "gen-02-unicode")
    result = CliRunner().invoke(
        main,
        [
            "decrypt", str(src), "--key", str(KEYS_DIR / "collect-gen-rsa2048.encrypted-pkcs8.pem"),
            "--passphrase-file", str(KEYS_DIR / "collect-gen-rsa2048.passphrase.txt"),
            "--out", str(tmp_path / "out"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_decrypt__wrong_passphrase__exit_2_clear(tmp_path):
    """Should exit 2 with one clear line for a wrong passphrase."""
    bad = tmp_path / "bad.txt"
    bad.write_text("nope-nope-nope")
    result = CliRunner().invoke(
        main,
        ["decrypt", str(VECTORS_DIR / "gen-01-small-text"), "--key",
         str(KEYS_DIR / "collect-gen-rsa2048.encrypted-pkcs8.pem"), "--passphrase-file", str(bad),
         "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "passphrase" in result.output and "Traceback" not in result.output


def test_decrypt__central_archive_key__gen10_valid(tmp_path):
    """Should decrypt with ODK Central's managed-key archive and passphrase."""
    result = CliRunner().invoke(
        main,
        ["decrypt", str(VECTORS_DIR / "gen-10-central-managed-key"), "--key",
         str(KEYS_DIR / "central-managed.archive.json"), "--passphrase-file",
         str(KEYS_DIR / "central-managed.passphrase.txt"), "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def test_decrypt__missing_arguments__exit_2(tmp_path):
    """Should exit 2 on usage errors."""
    assert CliRunner().invoke(main, ["decrypt", str(tmp_path)]).exit_code == 2


def _status_lines(output: str) -> dict[str, list[str]]:
    """``{id: [status, reason...]}`` from the per-submission lines."""
    return {
        line.split("\t")[0]: line.split("\t")[1:] for line in output.splitlines() if "\t" in line
    }


def test_decrypt__missing_photo__cannot_verify_and_nothing_written(tmp_path):
    """Should report cannot-verify when a file the manifest lists is absent (Central fixture)."""
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["decrypt", str(VECTORS_DIR / "fixture-central-collect-v1.22.4"), "--key",
         str(KEYS_DIR / "central-test-priv.pem"), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 1
    ((name, (status, reason)),) = _status_lines(result.output).items()
    assert status == "cannot-verify" and "1561432532482.jpg.enc" in reason
    assert [p.name for p in out.iterdir()] == [f"{name}.rejected"]
    assert (out / f"{name}.rejected").read_text().startswith("cannot-verify:")


def test_decrypt__other_projects_key__failed_line_per_submission(tmp_path):
    """Should print failed for each submission a wrong key cannot open, and write only notes."""
    src = _copy(tmp_path, "gen-01-small-text", "gen-03-media-2")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["decrypt", str(src), "--key", str(KEYS_DIR / "briefcase-test-key.pem"), "--out", str(out)],
    )
    assert result.exit_code == 1
    lines = _status_lines(result.output)
    assert [v[0] for v in lines.values()] == ["failed", "failed"]
    assert all("private key" in v[1] for v in lines.values())
    assert sorted(p.suffix for p in out.iterdir()) == [".rejected", ".rejected"]


def test_decrypt__every_vector_tree__statuses_as_documented(tmp_path):
    """Should decrypt the Briefcase fixture tree (two submissions, one key) and say valid."""
    src = _copy(
        tmp_path, "fixture-briefcase-encrypted-form", "fixture-briefcase-encrypted-form-media"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        ["decrypt", str(src), "--key", str(KEYS_DIR / "briefcase-test-key.pem"), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    lines = _status_lines(result.output)
    assert [v for v in lines.values()] == [["valid"], ["valid"]]
    media_case = VECTORS_DIR / "fixture-briefcase-encrypted-form-media" / "plaintext"
    written = {p.name: p.read_bytes() for p in out.rglob("*.jpg")}
    assert written == {p.name: p.read_bytes() for p in media_case.glob("*.jpg")}


def test_decrypt__plaintext_submission_dir__failed(tmp_path):
    """Should refuse a directory whose submission.xml is a plaintext instance."""
    case = tmp_path / "plain"
    case.mkdir()
    (case / "submission.xml").write_bytes(
        b"<data id='f'><meta><instanceID>uuid:p1</instanceID></meta></data>"
    )
    result = CliRunner().invoke(
        main, ["decrypt", str(case), "--key", str(COLLECT_KEY), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert _status_lines(result.output)["p1"][0] == "failed"


def test_decrypt__real_entry_point__wrong_passphrase_one_line(tmp_path):
    """Should print one clear line and exit 2 from the installed ``kintsugi`` script."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("kintsugi")
    bad = tmp_path / "bad.txt"
    bad.write_text("definitely-not-it\n")
    proc = subprocess.run(
        [str(script), "decrypt", str(VECTORS_DIR / "gen-01-small-text"), "--key",
         str(KEYS_DIR / "collect-gen-rsa2048.encrypted-pkcs8.pem"), "--passphrase-file", str(bad),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "passphrase" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_decrypt__rerun_after_missing_file_arrives__stale_note_removed(tmp_path):
    """Should drop an earlier run's .rejected note once the submission decrypts validly."""
    src = _copy(tmp_path, "gen-03-media-2")
    sub = src / "gen-03-media-2"
    photo = sub / "1736935200123.jpg.enc"
    kept = photo.read_bytes()
    photo.unlink()
    out = tmp_path / "out"
    args = ["decrypt", str(sub), "--key", str(COLLECT_KEY), "--out", str(out)]
    note = out / "651e6fb6-bb9a-4e0d-b50d-9c149b91b386.rejected"
    assert CliRunner().invoke(main, args).exit_code == 1
    assert note.read_text().startswith("cannot-verify:")
    photo.write_bytes(kept)
    assert CliRunner().invoke(main, args).exit_code == 0
    assert [p.name for p in out.iterdir()] == ["651e6fb6-bb9a-4e0d-b50d-9c149b91b386"]


def test_decrypt__two_bad_copies_of_one_instance__both_reasons_in_note(tmp_path):
    """Should keep every reason when two rejected directories share an instanceID."""
    src = _copy(tmp_path, "neg-01-tampered-media")
    shutil.copytree(src / "neg-01-tampered-media", src / "copy")
    (src / "copy" / "1736935260456.m4a.enc").unlink()
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["decrypt", str(src), "--key", str(COLLECT_KEY), "--out", str(out)]
    )
    assert result.exit_code == 1
    text = (out / "651e6fb6-bb9a-4e0d-b50d-9c149b91b386.rejected").read_text()
    assert "cannot-verify:" in text and "invalid:" in text
    assert text.count("source: ") == 2
