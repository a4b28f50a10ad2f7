"""Contexts may adapt wording, never structure: each violation names file, line and rule."""

from __future__ import annotations

import pytest

from form_compiler.api import compile_context, plan_context
from form_compiler.errors import ContextRuleError, InstrumentError, SourceError
from tests.form_compiler.conftest import edit_json

CTX = "kenya-police-abuse"


def _ctx(instruments):
    return instruments / "contexts" / CTX / "context.json"


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda d: d.update(scale={"points": []}), "CTX001"),
        (lambda d: d.update(scoring={"method": "sum"}), "CTX001"),
        (lambda d: d.update(domains=[]), "CTX001"),
        (lambda d: d["wording"].update({"SAF9.label": "A new subdomain"}), "CTX002"),
        (lambda d: d["wording"].update({"scale.1": "Terrible"}), "CTX003"),
        (
            lambda d: d.update(local_questions=[{"name": "SAF1", "type": "text", "label": "x"}]),
            "CTX004",
        ),
        (
            lambda d: d.update(
                local_questions=[{"name": "local_x", "type": "calculate", "label": "x"}]
            ),
            "CTX004",
        ),
        (lambda d: d.update(closure={"threshold": 5}), "CTX005"),
        (lambda d: d.update(closure={"threshold": 3, "all_domains": False}), "CTX001"),
        (lambda d: d.update(default_language="fr"), "CTX006"),
        (lambda d: d["choices"].update(domain_list=[{"value": "x", "label": "y"}]), "CTX007"),
        (lambda d: d.update(instrument={"id": "aso", "major": 2}), "CTX008"),
        (lambda d: d.update(colour="red"), "CTX009"),
    ],
)
def test_context__forbidden_change__error_names_file_line_rule(instruments, change, rule):
    """Should refuse the change with file:line: RULE in the message."""
    edit_json(_ctx(instruments), change)
    with pytest.raises(ContextRuleError) as err:
        plan_context(instruments, CTX)
    text = str(err.value)
    assert text.startswith(f"contexts/{CTX}/context.json:")
    assert rule in text
    assert err.value.line is not None and err.value.line >= 1


def test_context__wording_line__points_at_the_offending_key(instruments):
    """Should report the line of the offending wording entry, not line 1."""
    path = _ctx(instruments)
    edit_json(path, lambda d: d["wording"].update({"NOPE.hint": "x"}))
    lines = path.read_text().splitlines()
    bad_line = next(i for i, line in enumerate(lines, 1) if '"NOPE.hint"' in line)
    with pytest.raises(ContextRuleError) as err:
        plan_context(instruments, CTX)
    assert err.value.line == bad_line
    assert str(err.value).startswith(f"contexts/{CTX}/context.json:{bad_line}: CTX002")


def test_context__forbidden_key__line_of_that_key(instruments):
    """Should point at the line where the forbidden member is written."""
    path = _ctx(instruments)
    edit_json(path, lambda d: d.update(scoring={"method": "sum"}))
    lines = path.read_text().splitlines()
    bad_line = next(i for i, line in enumerate(lines, 1) if '"scoring"' in line)
    assert bad_line > 1
    with pytest.raises(ContextRuleError) as err:
        plan_context(instruments, CTX)
    assert err.value.line == bad_line and "CTX001" in str(err.value)


def test_context__bad_json__syntax_error_with_line(instruments):
    """Should point at the broken line of a hand-edited file."""
    path = _ctx(instruments)
    lines = path.read_text().splitlines()
    lines[3] = lines[3] + ","  # a trailing comma the JSON grammar refuses
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError) as err:
        plan_context(instruments, CTX)
    assert f"contexts/{CTX}/context.json:" in str(err.value)


def test_instrument__wrong_anchor_points__error(instruments):
    """Should refuse a subdomain without one anchor per point."""
    edit_json(
        instruments / "aso" / "instrument.json",
        lambda d: d["domains"][0]["subdomains"][0]["anchors"].pop("4"),
    )
    with pytest.raises(InstrumentError, match="SAF1 needs one anchor"):
        plan_context(instruments, CTX)


def test_context__allowed_changes__compile(instruments):
    """Should accept reworded hints, local choices, a local question and a stricter threshold."""

    def change(d):
        d["wording"]["MEN1.hint"] = "Local wording for distress."
        d["closure"] = {"threshold": 3.5}
        d["local_questions"] = [
            {"name": "local_referral", "type": "select_one yes_no", "label": "Referred?"}
        ]

    edit_json(_ctx(instruments), change)
    form = compile_context(instruments, CTX)
    assert b"Local wording for distress." in form.xform
    assert b"/data/assessment/local/local_referral" in form.xform
    assert form.report["scoring"]["closure"]["threshold"] == 3.5


def test_translation__broken_entry__file_and_line_of_that_entry(instruments):
    """Should name the translation file and the line of the entry missing its status."""
    from form_compiler.errors import TranslationError

    path = instruments / "aso" / "i18n" / "es.json"
    edit_json(path, lambda d: d["entries"]["SAF1.label"].pop("status"))
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if '"SAF1.label"' in t)
    with pytest.raises(TranslationError) as err:
        plan_context(instruments, "guatemala-vawc")
    assert str(err.value).startswith(f"aso/i18n/es.json:{line}: ")


def test_translation__duplicate_key__source_error_with_line(instruments):
    """Should refuse a hand-edited translation file that repeats a key, naming its line."""
    path = instruments / "aso" / "i18n" / "es.json"
    lines = path.read_text().splitlines()
    i = next(n for n, t in enumerate(lines) if '"SAF1.label"' in t)
    dup = ['    "SAF1.label": {"source": "x", "text": "y", "status": "draft"},']
    path.write_text("\n".join(lines[:i] + dup + lines[i:]) + "\n")
    with pytest.raises(SourceError, match="appears twice") as err:
        plan_context(instruments, "guatemala-vawc")
    assert "aso/i18n/es.json:" in str(err.value)
