"""The translation workflow: export for translators, import their work, status, stale, --require-reviewed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polib
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from server.cli import main

REPO_INSTRUMENTS = Path(__file__).resolve().parents[2] / "instruments"
CTX = "guatemala-vawc"


@pytest.fixture
def instruments(tmp_path):
    target = tmp_path / "instruments"
    shutil.copytree(REPO_INSTRUMENTS, target)
    for f in target.glob("**/i18n/es.json"):
        f.unlink()  # start from no Spanish at all
    return target


def _cli(*args):
    return CliRunner().invoke(main, list(args))


def _status_line(output: str, language: str) -> list[str]:
    return next(line for line in output.splitlines() if CTX in line and language in line).split()


def test_i18n__po_roundtrip__draft_then_reviewed(tmp_path, instruments):
    """Should export a PO, import translations (fuzzy = draft) and report coverage."""
    po_path = tmp_path / "es.po"
    assert _cli("i18n", "export", "--context", CTX, "--language", "es", "--format", "po",
                "--out", str(po_path), "--instruments", str(instruments)).exit_code == 0  # fmt: skip
    po = polib.pofile(str(po_path))
    assert len(po) > 150
    for entry in po:
        entry.msgstr = f"ES {entry.msgid}"
        entry.flags.append("fuzzy")
    po.save(str(po_path))
    result = _cli(
        "i18n",
        "import",
        str(po_path),
        "--context",
        CTX,
        "--language",
        "es",
        "--instruments",
        str(instruments),
    )
    assert result.exit_code == 0, result.output
    assert f"updated {len(po)}" in result.output
    status = _cli("i18n", "status", "--context", CTX, "--instruments", str(instruments))
    cols = _status_line(status.output, "Spanish")
    assert cols[3] == "100.0%" and cols[4] == "0" and cols[5] == str(len(po))
    # the form now carries the Spanish text
    out = tmp_path / "out"
    compiled = _cli(
        "compile", "--context", CTX, "--out", str(out), "--instruments", str(instruments)
    )
    assert compiled.exit_code == 0, compiled.output
    assert "ES Freedom from current harm" in (out / "aso_gt_vawc.xml").read_text()
    assert "unreviewed drafts" in compiled.output
    strict = _cli("compile", "--context", CTX, "--out", str(out), "--force", "--require-reviewed",
                  "--instruments", str(instruments))  # fmt: skip
    assert strict.exit_code == 1
    assert "is draft (--require-reviewed)" in strict.output


def test_i18n__source_changes__translation_stale_and_warned(tmp_path, instruments):
    """Should mark a translation stale when its English source changes, and warn for scored items."""
    xlsx = tmp_path / "es.xlsx"
    _cli(
        "i18n",
        "export",
        "--context",
        CTX,
        "--language",
        "es",
        "--out",
        str(xlsx),
        "--instruments",
        str(instruments),
    )
    wb = load_workbook(xlsx)
    ws = wb.active
    for row in ws.iter_rows(min_row=2):
        row[3].value = f"ES {row[2].value}"
        row[4].value = "reviewed"
    wb.save(xlsx)
    assert (
        _cli(
            "i18n",
            "import",
            str(xlsx),
            "--context",
            CTX,
            "--language",
            "es",
            "--instruments",
            str(instruments),
        ).exit_code
        == 0
    )
    inst = instruments / "aso" / "instrument.json"
    data = json.loads(inst.read_text())
    data["domains"][0]["subdomains"][0]["label"] = "Safety from harm today"
    inst.write_text(json.dumps(data, indent=2))
    status = _cli("i18n", "status", "--context", CTX, "--instruments", str(instruments))
    cols = _status_line(status.output, "Spanish")
    assert cols[6] == "1"  # one stale
    compiled = _cli(
        "compile", "--context", CTX, "--out", str(tmp_path / "o"), "--instruments", str(instruments)
    )
    assert "stale translations of scored items: SAF1.label" in compiled.output
    # a translator file made for the old source is refused, not merged
    again = _cli(
        "i18n",
        "import",
        str(xlsx),
        "--context",
        CTX,
        "--language",
        "es",
        "--instruments",
        str(instruments),
    )
    assert "refused (translated an older source text) 1" in again.output


def test_i18n__unknown_language__usage_error(tmp_path, instruments):
    """Should name the context's languages."""
    result = _cli("i18n", "export", "--context", CTX, "--language", "fr", "--out", str(tmp_path / "x.po"),
                  "--instruments", str(instruments))  # fmt: skip
    assert result.exit_code == 2 and "es" in result.output
