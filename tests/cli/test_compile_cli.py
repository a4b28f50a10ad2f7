"""``kintsugi compile`` as a designer types it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli import main
from sync_protocol import keys

REPO_INSTRUMENTS = Path(__file__).resolve().parents[2] / "instruments"


@pytest.fixture
def instruments(tmp_path):
    target = tmp_path / "instruments"
    shutil.copytree(REPO_INSTRUMENTS, target)
    return target


def _run(*args):
    return CliRunner().invoke(main, ["compile", *args])


def test_compile__all__writes_three_files_per_context_with_progress(tmp_path, instruments):
    """Should write <form_id>.xml/.xlsx/.report.json for each context and show [i/n]."""
    out = tmp_path / "out"
    result = _run("--all", "--out", str(out), "--instruments", str(instruments))
    assert result.exit_code == 0, result.output
    reports = sorted(out.glob("*.report.json"))
    assert len(reports) == 5
    for report_path in reports:
        report = json.loads(report_path.read_text())
        form_id = report["form_id"]
        assert (out / f"{form_id}.xml").read_bytes().startswith(b"<?xml")
        assert (out / f"{form_id}.xlsx").read_bytes()[:2] == b"PK"
        assert report["context"] and report["version"]
    assert "[1/5]" in result.output and "[5/5]" in result.output
    again = _run("--all", "--out", str(out), "--instruments", str(instruments))
    assert again.output.count("unchanged") == 5


def test_compile__public_key_and_url__encrypted_form(tmp_path, instruments):
    """Should embed the key from a PEM and the submission URL, with a new version."""
    key = keys.generate_private_key()
    pem = tmp_path / "public.pem"
    pem.write_bytes(keys.public_key_pem(key))
    out = tmp_path / "out"
    result = _run(
        "--context", "kenya-police-abuse", "--public-key", str(pem),
        "--submission-url", "https://kintsugi.example/v1/projects/1/submission",
        "--out", str(out), "--instruments", str(instruments),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    xml = (out / "aso_ke_pap.xml").read_text()
    assert f'base64RsaPublicKey="{keys.public_key_b64(key)}"' in xml
    assert 'action="https://kintsugi.example/v1/projects/1/submission"' in xml
    assert json.loads((out / "aso_ke_pap.report.json").read_text())["encrypted"] is True


def test_compile__rule_violation__file_line_message_exit_1(tmp_path, instruments):
    """Should print file:line: message and exit 1."""
    path = instruments / "contexts" / "cambodia-forced-labour" / "context.json"
    data = json.loads(path.read_text())
    data["scoring"] = {"method": "sum"}
    path.write_text(json.dumps(data, indent=2))
    result = _run(
        "--context",
        "cambodia-forced-labour",
        "--out",
        str(tmp_path / "o"),
        "--instruments",
        str(instruments),
    )
    assert result.exit_code == 1
    lines = path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if '"scoring"' in text)
    assert f"contexts/cambodia-forced-labour/context.json:{line}: CTX001" in result.output


def test_compile__unknown_context__usage_error(tmp_path, instruments):
    """Should name the known contexts."""
    result = _run(
        "--context", "atlantis", "--out", str(tmp_path), "--instruments", str(instruments)
    )
    assert result.exit_code == 2
    assert "kenya-police-abuse" in result.output


def test_compile__neither_context_nor_all__usage_error(tmp_path):
    """Should ask for --context or --all."""
    assert _run("--out", str(tmp_path)).exit_code == 2


def test_compile__context_given_as_path__error_names_openable_file(tmp_path, instruments):
    """Should accept a context's folder or context.json path and print that file's path."""
    folder = instruments / "contexts" / "kenya-police-abuse"
    ok = _run("--context", str(folder), "--out", str(tmp_path / "o"), "--instruments", str(instruments))  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "o" / "aso_ke_pap.xml").exists()
    path = folder / "context.json"
    data = json.loads(path.read_text())
    data["wording"]["SAF9.label"] = "a new subdomain"
    path.write_text(json.dumps(data, indent=2))
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "SAF9.label" in t)
    bad = _run("--context", str(path), "--out", str(tmp_path / "o"), "--instruments", str(instruments))  # fmt: skip
    assert bad.exit_code == 1
    assert f"{path}:{line}: CTX002" in bad.output


def test_compile__all_with_one_broken_context__others_written_exit_1(tmp_path, instruments):
    """Should compile the sound contexts, report the broken one with file:line, and exit 1."""
    path = instruments / "contexts" / "guatemala-vawc" / "context.json"
    data = json.loads(path.read_text())
    data["closure"] = {"threshold": 7}
    path.write_text(json.dumps(data, indent=2))
    out = tmp_path / "o"
    result = _run("--all", "--out", str(out), "--instruments", str(instruments))
    assert result.exit_code == 1
    assert "guatemala-vawc: FAILED" in result.output
    assert "contexts/guatemala-vawc/context.json:" in result.output and "CTX005" in result.output
    assert (out / "aso_ke_pap.xml").exists() and not (out / "aso_gt_vawc.xml").exists()
