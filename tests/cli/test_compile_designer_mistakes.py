"""``kintsugi compile`` / ``kintsugi i18n`` with the mistakes a designer really makes.

Each test states the rule a designer relies on: bad input -> ``file:line: message``; the
compiled form loads and scores like the server; same input -> same bytes.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import xml.etree.ElementTree as ET
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli import main

REPO_INSTRUMENTS = Path(__file__).resolve().parents[2] / "instruments"
KENYA = "kenya-police-abuse"


@pytest.fixture
def instruments(tmp_path):
    target = tmp_path / "instruments"
    shutil.copytree(REPO_INSTRUMENTS, target)
    return target


def _compile(instruments: Path, out: Path, *args: str):
    return CliRunner().invoke(
        main, ["compile", *args, "--out", str(out), "--instruments", str(instruments)]
    )


def _i18n(instruments: Path, *args: str):
    return CliRunner().invoke(main, ["i18n", *args, "--instruments", str(instruments)])


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _ctx(instruments: Path, name: str = KENYA) -> Path:
    return instruments / "contexts" / name / "context.json"


def _line_of(path: Path, needle: str) -> int:
    return next(
        i for i, t in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in t
    )


def _not_a_traceback(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"crashed with {type(result.exception).__name__}: {result.exception}"
    )


# ------------------------------------------------------------------ silent wrong forms


def test_compile__closure_threshold_changed__report_rebuilt_with_new_version(tmp_path, instruments):
    """A context's new closure threshold must reach the report (the server scores from it).

    It is not part of the sheets, so input_hash and version stay the same: the CLI says
    "unchanged" and keeps the old report, and even --force yields the same version, which the
    server treats as already published (its stored report keeps the old threshold).
    """
    out = tmp_path / "out"
    first = _compile(instruments, out, "--context", "guatemala-vawc")
    assert first.exit_code == 0, first.output
    v1 = json.loads((out / "aso_gt_vawc.report.json").read_text())["version"]
    _edit(_ctx(instruments, "guatemala-vawc"), lambda c: c.update({"closure": {"threshold": 3.5}}))
    again = _compile(instruments, out, "--context", "guatemala-vawc")
    assert again.exit_code == 0, again.output
    report = json.loads((out / "aso_gt_vawc.report.json").read_text())
    assert report["scoring"]["closure"]["threshold"] == 3.5, again.output
    assert report["version"] != v1


def test_compile__all__copied_context_keeps_same_id__no_silent_overwrite(tmp_path, instruments):
    """Copying a context folder (same "id") must not make --all overwrite the original form."""
    src = instruments / "contexts" / KENYA
    shutil.copytree(src, instruments / "contexts" / "uganda-police-abuse")
    _edit(
        _ctx(instruments, "uganda-police-abuse"),
        lambda c: c.update({"title": "Uganda", "country": "UG"}),
    )
    out = tmp_path / "out"
    result = _compile(instruments, out, "--all")
    reports = [json.loads(p.read_text()) for p in out.glob("*.report.json")]
    written = {r["context"] for r in reports}
    assert (KENYA in written and "uganda-police-abuse" in written) or (
        result.exit_code == 1 and "uganda-police-abuse" in result.output
    ), f"exit {result.exit_code}, reports for {sorted(written)}\n{result.output}"


def test_compile__local_question_list_named_yes_no__consent_keeps_yes_and_no(tmp_path, instruments):
    """A local select's own list must not add options to the core lists (consent uses yes_no)."""
    _edit(
        _ctx(instruments),
        lambda c: c.update(
            {
                "local_questions": [
                    {
                        "name": "local_referred",
                        "type": "select_one yes_no",
                        "label": "Referred to a lawyer?",
                        "choices": [{"value": "unsure", "label": "Not sure"}],
                    }
                ]
            }
        ),
    )
    out = tmp_path / "out"
    result = _compile(instruments, out, "--context", KENYA)
    _not_a_traceback(result)
    if result.exit_code == 0:
        xform = ET.fromstring((out / "aso_ke_pap.xml").read_bytes())
        inst = next(
            e for e in xform.iter() if e.tag.endswith("instance") and e.get("id") == "yes_no"
        )
        names = sorted(n.text for n in inst.iter() if n.tag.endswith("name"))
        assert names == ["no", "yes"], f"consent offers {names}"
    else:
        assert "context.json:" in result.output and "local_referred" in result.output


def test_compile__duplicate_office_value__error_with_line(tmp_path, instruments):
    """Two offices with one value give two identical answers and overwrite the first label."""
    path = _ctx(instruments)
    _edit(
        path, lambda c: c["choices"]["office"].append({"value": "nairobi", "label": "Nairobi West"})
    )
    result = _compile(instruments, tmp_path / "out", "--context", KENYA)
    _not_a_traceback(result)
    assert result.exit_code == 1, result.output
    assert f"context.json:{_line_of(path, 'Nairobi West')}" in result.output


def test_compile__wording_override_null__error_not_label_none(tmp_path, instruments):
    """A null wording override must be refused, not shown as the label "None" in every language."""
    path = _ctx(instruments)
    _edit(path, lambda c: c["wording"].update({"SAF1.label": None}))
    out = tmp_path / "out"
    result = _compile(instruments, out, "--context", KENYA)
    _not_a_traceback(result)
    if result.exit_code == 0:
        xml = (out / "aso_ke_pap.xml").read_text()
        labels = re.findall(
            r'<text id="/data/assessment/SAF/SAF1:label">\s*<value>(.*?)</value>', xml, re.S
        )
        assert "None" not in labels, f"SAF1 is labelled {labels}"
    else:
        assert f"context.json:{_line_of(path, 'SAF1.label')}" in result.output


def test_compile__word_line_break_in_guidance__xform_is_well_formed(tmp_path, instruments):
    """Text pasted from Word carries U+000B (manual line break): the XForm must stay XML 1.0.

    The XLSX writer strips such characters but the XForm keeps them: Web Forms and the
    server's publish parser reject the file, and the XLSForm no longer matches the XForm.
    """
    _edit(
        _ctx(instruments),
        lambda c: c.update({"guidance": "Ask gently.\u000bThen note the answer."}),
    )
    out = tmp_path / "out"
    result = _compile(instruments, out, "--context", KENYA)
    _not_a_traceback(result)
    if result.exit_code == 0:
        ET.fromstring((out / "aso_ke_pap.xml").read_bytes())  # raises ParseError today
    else:
        assert "context.json:" in result.output and "guidance" in result.output


def test_compile__collection_point_intake_renamed__form_can_still_create_a_case(
    tmp_path, instruments
):
    """The form hard-codes 'intake': an instrument whose first visit is 'baseline' compiles to a
    form where no case code can be entered (the required case pick has an empty list)."""
    path = instruments / "aso" / "instrument.json"
    _edit(path, lambda i: i["collection_points"][0].update({"value": "baseline"}))
    out = tmp_path / "out"
    result = _compile(instruments, out, "--context", KENYA)
    _not_a_traceback(result)
    if result.exit_code == 0:
        xml = (out / "aso_ke_pap.xml").read_text()
        bind = re.search(r'<bind nodeset="/data/assessment/case_code_new"[^>]*>', xml).group(0)
        assert "baseline" in bind, bind
    else:
        assert "instrument.json:" in result.output and "intake" in result.output


# ------------------------------------------------------------------ crashes (tracebacks)


def _office_value_number(instruments):
    _edit(
        _ctx(instruments), lambda c: c["choices"]["office"].append({"value": 12, "label": "Kisumu"})
    )


def _local_choice_without_label(instruments):
    _edit(
        _ctx(instruments),
        lambda c: c.update(
            {
                "local_questions": [
                    {
                        "name": "local_x",
                        "type": "select_one lx",
                        "label": "X",
                        "choices": [{"value": "a"}],
                    }
                ]
            }
        ),
    )


def _threshold_decimal_comma(instruments):
    _edit(_ctx(instruments), lambda c: c.update({"closure": {"threshold": "3,5"}}))


def _translation_as_plain_string(instruments):
    path = instruments / "contexts" / KENYA / "i18n" / "sw.json"
    _edit(path, lambda t: t["entries"].update({"choice.office.nairobi": "Nairobi"}))


def _translation_text_null(instruments):
    path = instruments / "contexts" / KENYA / "i18n" / "sw.json"
    _edit(path, lambda t: t["entries"]["choice.office.nairobi"].update({"text": None}))


@pytest.mark.parametrize(
    ("mistake", "file"),
    [
        (_office_value_number, "context.json"),
        (_local_choice_without_label, "context.json"),
        (_threshold_decimal_comma, "context.json"),
        (_translation_as_plain_string, "i18n/sw.json"),
        (_translation_text_null, "i18n/sw.json"),
    ],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_compile__wrong_value_type__file_line_error_not_traceback(
    tmp_path, instruments, mistake, file
):
    """A value of the wrong type must give file:line: message, not a Python traceback."""
    mistake(instruments)
    result = _compile(instruments, tmp_path / "out", "--context", KENYA)
    _not_a_traceback(result)
    assert result.exit_code == 1
    assert re.search(re.escape(file) + r":\d+: ", result.output), result.output


# ------------------------------------------------------------------ unclear messages


def test_compile__require_reviewed__names_the_translation_file_and_line(tmp_path, instruments):
    """A draft instrument text lives in aso/i18n/<code>.json: the error must point there."""
    result = _compile(instruments, tmp_path / "out", "--context", KENYA, "--require-reviewed")
    assert result.exit_code == 1
    line = next(t for t in result.output.splitlines() if "SAF1.label " in t)
    sw = instruments / "aso" / "i18n" / "sw.json"
    expected = _line_of(sw, '"SAF1.label"')
    assert f"aso/i18n/sw.json:{expected}" in line, line


def test_compile__pyxform_rejects_local_question__error_names_its_line(tmp_path, instruments):
    """A local select without choices: the error must name context.json:<line>, not a row of
    a generated sheet the designer never sees (the .xlsx is not even written on failure)."""
    path = _ctx(instruments)
    _edit(
        path,
        lambda c: c.update(
            {
                "local_questions": [
                    {"name": "local_school", "type": "select_one school", "label": "School"}
                ]
            }
        ),
    )
    result = _compile(instruments, tmp_path / "out", "--context", KENYA)
    assert result.exit_code == 1
    assert f"context.json:{_line_of(path, 'local_school')}:" in result.output, result.output


def test_compile__context_saved_with_bom__accepted_or_named(tmp_path, instruments):
    """Notepad's UTF-8 with BOM: "Expecting value (column 1)" gives no clue what is wrong."""
    path = _ctx(instruments)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    result = _compile(instruments, tmp_path / "out", "--context", KENYA)
    assert result.exit_code == 0 or "BOM" in result.output, result.output


def test_compile__english_with_region_code__not_treated_as_untranslated(tmp_path, instruments):
    """en-GB / en-KE are valid IANA codes for the source language, not a missing translation."""
    _edit(
        _ctx(instruments),
        lambda c: (
            c["languages"].__setitem__(0, {"name": "English", "code": "en-KE"}),
            c.update({"default_language": "en-KE"}),
        ),
    )
    result = _compile(instruments, tmp_path / "out", "--context", KENYA)
    assert result.exit_code == 0, result.output
    assert not [t for t in result.output.splitlines() if "en-KE" in t and "untranslated" in t], (
        result.output
    )


def test_compile__translation_key_typo__named_in_a_warning(tmp_path, instruments):
    """A translator's mistyped key silently drops the translation; say which key is unknown."""
    path = instruments / "contexts" / KENYA / "i18n" / "sw.json"

    def typo(t):
        t["entries"]["choice.office.nairobbi"] = t["entries"].pop("choice.office.nairobi")

    _edit(path, typo)
    result = _compile(instruments, tmp_path / "out", "--context", KENYA)
    assert result.exit_code == 0, result.output
    assert "choice.office.nairobbi" in result.output, result.output


def test_i18n_export__case_code_hint__offered_for_translation(tmp_path, instruments):
    """The case-code hint and constraint message are shown in English in every language."""
    hint = json.loads((instruments / "aso" / "instrument.json").read_text())["case_code"]["hint"]
    po = tmp_path / "sw.po"
    result = _i18n(
        instruments,
        "export",
        "--context",
        KENYA,
        "--language",
        "sw",
        "--format",
        "po",
        "--out",
        str(po),
    )
    assert result.exit_code == 0, result.output
    assert json.dumps(hint)[1:-1] in po.read_text(encoding="utf-8")


# ------------------------------------------------------------------ determinism


def test_compile__same_input__byte_identical_xlsx(tmp_path, instruments, monkeypatch):
    """Same input, same bytes: the XLSX zip entries carry the wall-clock time today."""
    first = _compile(instruments, tmp_path / "a", "--context", KENYA)
    assert first.exit_code == 0, first.output
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # an hour later
    second = _compile(instruments, tmp_path / "b", "--context", KENYA)
    assert second.exit_code == 0, second.output
    a = (tmp_path / "a" / "aso_ke_pap.xlsx").read_bytes()
    b = (tmp_path / "b" / "aso_ke_pap.xlsx").read_bytes()
    stamps = {i.date_time for i in zipfile.ZipFile(BytesIO(a)).infolist()}
    assert a == b, f"zip entries stamped {sorted(stamps)[:1]}"
