"""What a compiled form contains: checked by XPath on the XForm and on the report."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from form_compiler.api import compile_context, list_contexts, plan_context
from form_compiler.errors import InstrumentError
from form_compiler.instrument import load_instrument
from form_compiler.scoring import Scorer
from tests.form_compiler.conftest import REPO_INSTRUMENTS, edit_json

NS = {
    "h": "http://www.w3.org/1999/xhtml",
    "x": "http://www.w3.org/2002/xforms",
    "jr": "http://openrosa.org/javarosa",
    "entities": "http://www.opendatakit.org/xforms/entities",
}
CONTEXTS = list_contexts(REPO_INSTRUMENTS)
KEY_B64 = (
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtBlTrQS8xLfKWKBpFSRqIs6zzXa1TLEexwUGsI/i7mbPFRlv"
    "rLJUq2QspxlL+zv3l5XwMHBvT9Ix2g06PiCU1qXq2fP7AokqQ/IOtbHDf79VQK7Ikx9SulKlB5lGd8dAPkbiXMvXgNKk"
    "eG4Sz2Pk/jh82BZT7cIJK0H55ATn23wOAK2moYWgn1nGntBqd+hnj/viVXA4aDooWJ/ZDJlQY1MuaHBIYDA43gYVlZB+"
    "uzFj3GfbkxP8PBOr0l6mxUbsKsljYiZorGuJHoD4SyrTGJyPNYl9PWjstp4MDBmbNcmVWztSf7/Jyh3cDkTZCD9wklah"
    "egB215dlhwOgTLt4XQIDAQAB"
)


def test_contexts__five_real_contextualisations():
    """Should ship at least the five contexts the programme runs."""
    assert {
        "south-asia-sex-trafficking",
        "cambodia-forced-labour",
        "philippines-osec",
        "guatemala-vawc",
        "kenya-police-abuse",
    } <= set(CONTEXTS)


@pytest.fixture(scope="module", params=CONTEXTS)
def compiled(request):
    return compile_context(REPO_INSTRUMENTS, request.param)


def _model(form) -> ET.Element:
    return ET.fromstring(form.xform).find("h:head/x:model", NS)


def test_compile__every_context__languages_in_itext(compiled):
    """Should carry one itext translation per context language, named 'Name (code)'."""
    langs = [t.get("lang") for t in _model(compiled).findall("x:itext/x:translation", NS)]
    assert sorted(langs) == sorted(compiled.languages)


def test_compile__every_context__score_calculates_per_domain(compiled):
    """Should have one unrounded score calculate per domain guarded by the minimum count."""
    binds = {b.get("nodeset"): b for b in _model(compiled).findall("x:bind", NS)}
    for domain in compiled.report["domains"]:
        calc = binds[domain["score_ref"]].get("calculate")
        assert f">= {domain['min_counted']}" in calc and " div " in calc
        count = binds[domain["count_ref"]].get("calculate")
        for ref in domain["rating_refs"]:
            assert ref in count
        for excluded in domain["excluded_values"]:
            assert f"'{excluded}'" not in count  # excluded answers never count


def test_compile__every_context__consent_required_and_gates_assessment(compiled):
    """Should require consent and make the whole assessment relevant only when given."""
    binds = {b.get("nodeset"): b for b in _model(compiled).findall("x:bind", NS)}
    assert binds["/data/consent"].get("required") == "true()"
    assert binds["/data/assessment"].get("relevant") == " /data/consent  = 'yes'"


def test_compile__every_context__cases_entity_list(compiled):
    """Should declare the cases entity list: create at intake, update at follow-ups."""
    model = _model(compiled)
    assert model.get(f"{{{NS['entities']}}}entities-version") == "2024.1.0"
    entity = model.find("x:instance/x:data/x:meta/x:entity", NS)
    assert entity.get("dataset") == "cases"
    assert {"create", "update"} <= set(entity.attrib)
    instances = {i.get("id"): i.get("src") for i in model.findall("x:instance", NS)}
    assert instances["cases"] == "jr://file-csv/cases.csv"
    header = compiled.attachments["cases.csv"].decode().strip().split(",")
    assert header[:3] == ["name", "label", "__version"]
    assert set(compiled.report["entity_list"]["properties"]) <= set(header)
    assert "score_SAF" in header and "case_code" in header


def test_compile__every_context__report_contract(compiled):
    """Should give the report fields the CLI promises."""
    r = compiled.report
    for key in (
        "form_id",
        "version",
        "context",
        "languages",
        "warnings",
        "domains",
        "preconditions",
        "case_code_ref",
    ):
        assert key in r
    assert list(r["preconditions"])[:2] == ["/data/consent", "/data/assessment/collection_point"]
    assert r["case_code_ref"] in r["preconditions"]
    assert len(r["domains"]) == 6
    for d in r["domains"]:
        assert {"id", "score_ref", "rating_refs", "counted_values", "excluded_values"} <= set(d)


def test_compile__public_key__submission_element_and_new_version():
    """Should add base64RsaPublicKey and submission URL and change the version."""
    plain = plan_context(REPO_INSTRUMENTS, "kenya-police-abuse")
    enc = compile_context(
        REPO_INSTRUMENTS,
        "kenya-police-abuse",
        public_key=KEY_B64,
        submission_url="https://k.example/v1/x",
    )
    sub = _model(enc).find("x:submission", NS)
    assert sub.get("base64RsaPublicKey") == KEY_B64
    assert sub.get("action") == "https://k.example/v1/x"
    assert enc.version != plain.version and enc.form_id == plain.form_id


def test_compile__unchanged_input__same_version_changed_content__new_version(instruments):
    """Should derive the version from content: same input, same version; an edit, a new one."""
    first = plan_context(instruments, "guatemala-vawc").version
    assert plan_context(instruments, "guatemala-vawc").version == first
    edit_json(
        instruments / "contexts" / "guatemala-vawc" / "context.json",
        lambda d: d["wording"].update({"MEN2.hint": "Otra redacción."}),
    )
    assert plan_context(instruments, "guatemala-vawc").version != first


def test_compile__reference_wording__labelled_as_ours():
    """Should say in the form that the shipped wording is reference wording, not licensed text."""
    form = compile_context(REPO_INSTRUMENTS, "kenya-police-abuse")
    assert b"Reference wording: not the licensed ASO text." in form.xform
    assert form.report["instrument"]["wording"] == "reference"


def test_wording_pack__made_up_pack__replaces_text_not_structure(tmp_path):
    """Should replace labels and anchors from a pack while ids and scoring stay."""
    pack = tmp_path / "pack.json"
    pack.write_text(
        '{"pack": "Licensed test pack", "instrument": "aso",\n'
        ' "subdomains": {"SAF1": {"label": "LICENSED SAF1 LABEL", "anchors": {"1": "LICENSED ANCHOR ONE"}}},\n'
        ' "domains": {"SAF": {"label": "LICENSED SAFETY"}}}\n'
    )
    base = compile_context(REPO_INSTRUMENTS, "kenya-police-abuse")
    form = compile_context(REPO_INSTRUMENTS, "kenya-police-abuse", wording_pack=pack)
    assert b"LICENSED SAF1 LABEL" in form.xform and b"LICENSED ANCHOR ONE" in form.xform

    def structure(report):
        return [{k: v for k, v in d.items() if k != "label"} for d in report["domains"]]

    assert structure(form.report) == structure(base.report)
    assert form.report["domains"][0]["label"] == "LICENSED SAFETY"
    assert form.report["instrument"]["wording"] == "pack:Licensed test pack"
    assert form.version != base.version


def test_wording_pack__structure_change__refused(tmp_path):
    """Should refuse a pack that adds a subdomain or touches scoring."""
    pack = tmp_path / "pack.json"
    pack.write_text(
        '{"pack": "p", "instrument": "aso",\n "subdomains": {"SAF9": {"label": "new"}}}\n'
    )
    with pytest.raises(InstrumentError, match="SAF9") as err:
        compile_context(REPO_INSTRUMENTS, "kenya-police-abuse", wording_pack=pack)
    assert err.value.line == 2
    pack.write_text('{"pack": "p", "instrument": "aso", "scoring": {}}\n')
    with pytest.raises(InstrumentError, match="never structure"):
        compile_context(REPO_INSTRUMENTS, "kenya-police-abuse", wording_pack=pack)


@pytest.mark.parametrize("text", ["null", '""', '"  "'])
def test_wording_pack__null_or_empty_text__refused_at_its_line(tmp_path, text):
    """Should refuse a pack text that is null or empty (it would show as "None" or blank)."""
    pack = tmp_path / "pack.json"
    pack.write_text(
        '{"pack": "p", "instrument": "aso",\n "subdomains": {"SAF1": {\n'
        f'"anchors": {{"1": {text}}}}}}}}}\n'
    )
    with pytest.raises(InstrumentError, match="SAF1: anchor 1") as err:
        compile_context(REPO_INSTRUMENTS, "kenya-police-abuse", wording_pack=pack)
    assert err.value.line == 3


def test_scorer__from_report__matches_instrument_rules():
    """Should score means over counted ratings, None below the minimum, closure by threshold."""
    form = compile_context(REPO_INSTRUMENTS, "kenya-police-abuse")
    scorer = Scorer.from_report(form.report)
    scores = scorer.score(
        {
            "SAF1": "1",
            "SAF2": "2",
            "SAF3": "99",
            "LEG1": "4",
            "LEG2": "88",
            "LEG3": "99",
            "LEG4": "3",
        }
    )
    assert scores["SAF"] == 1.5
    assert scores["LEG"] == 3.5
    assert scores["MEN"] is None
    assert not scorer.closure_ready(scores)
    full = {
        s: "3"
        for d in load_instrument(REPO_INSTRUMENTS).domains
        for s in (x.id for x in d.subdomains)
    }
    assert scorer.closure_ready(scorer.score(full))
    full["PHY1"] = "2"
    assert scorer.score(full)["PHY"] == 2.75
    assert not scorer.closure_ready(scorer.score(full))
    assert scorer.band(3.6) == "resilient" and scorer.band(1.2) == "crisis"


def test_xlsform__written_workbook__pyxform_reads_it_to_the_same_xform(compiled, tmp_path):
    """Should write an .xlsx a designer can open and re-convert into the very same XForm."""
    from pyxform.xls2xform import convert

    path = tmp_path / f"{compiled.form_id}.xlsx"
    path.write_bytes(compiled.xlsx)
    again = convert(xlsform=str(path), form_name="data").xform
    # Column order may differ from the in-memory sheets, so compare canonical XML
    # (C14N 2.0 orders attributes).
    assert ET.canonicalize(again) == ET.canonicalize(compiled.xform.decode("utf-8"))


def test_closure__context_threshold__in_report_and_scorer(instruments):
    """Should carry a context's own closure threshold, no longer marked as the default."""
    default = compile_context(instruments, "guatemala-vawc").report["scoring"]["closure"]
    assert default["threshold"] == 3.0 and default["is_default"] is True
    edit_json(
        instruments / "contexts" / "guatemala-vawc" / "context.json",
        lambda d: d.update({"closure": {"threshold": 3.5}}),
    )
    report = compile_context(instruments, "guatemala-vawc").report
    assert report["scoring"]["closure"]["is_default"] is False
    scorer = Scorer.from_report(report)
    scores = dict.fromkeys(scorer.domains, 3.25)
    assert not scorer.closure_ready(scores)
    assert scorer.closure_ready(dict.fromkeys(scorer.domains, 3.5))


def test_report__version_map__declared_for_trends():
    """Should publish how older instrument versions' subdomains map to the current ids."""
    report = compile_context(REPO_INSTRUMENTS, "kenya-police-abuse").report
    current = {s for d in report["domains"] for s in d["subdomains"]}
    assert report["version_map"], "no version map"
    for old_version in report["version_map"].values():
        for target in old_version["subdomains"].values():
            targets = target if isinstance(target, list) else [target]
            assert set(targets) <= current


_REPORT = compile_context(REPO_INSTRUMENTS, "kenya-police-abuse").report
_SUBS = [s for d in _REPORT["domains"] for s in d["subdomains"]]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["1", "2", "3", "4", "88", "99", "", None, 3, " 2 "]),
                min_size=len(_SUBS), max_size=len(_SUBS)))  # fmt: skip
def test_scorer__any_ratings__mean_of_counted_or_none(values):
    """Should score the mean of 1-4 ratings, never counting 88/99/blank, None below the minimum."""
    ratings = dict(zip(_SUBS, values, strict=True))
    scores = Scorer.from_report(_REPORT).score(ratings)
    for domain in _REPORT["domains"]:
        counted = [
            int(str(ratings[s]).strip())
            for s in domain["subdomains"]
            if str(ratings[s]).strip() in {"1", "2", "3", "4"}
        ]
        need = max(2, -(-len(domain["subdomains"]) // 2))
        want = sum(counted) / len(counted) if len(counted) >= need else None
        assert scores[domain["id"]] == want
