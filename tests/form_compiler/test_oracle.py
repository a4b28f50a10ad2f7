"""Every compiled form in ODK's own engines: Web Forms and JavaRosa (as in Collect), + ODK Validate.

Each context is compiled, then loaded in ``../shared/tools/xform-oracle`` (installed by
``make test`` under .cache/) with an intake's answers entered; the domain scores both engines
calculate must equal the Python scorer's, and independent arithmetic in this test.
A follow-up is answered against a ``cases.csv`` entity list as the server serves it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from form_compiler.api import compile_context, list_contexts
from form_compiler.instance import read_assessment
from form_compiler.scoring import Scorer
from tests.form_compiler.conftest import REPO_INSTRUMENTS

pytestmark = [pytest.mark.oracle, pytest.mark.slow]

ORACLE_DIR = Path(
    os.environ.get("KINTSUGI_ORACLE_DIR")
    or Path(__file__).resolve().parents[2] / ".cache" / "xform-oracle"
)
CONTEXTS = list_contexts(REPO_INSTRUMENTS)
# rating patterns: a rotation of values with excluded codes and one sparse domain per context
PATTERNS = ["1", "2", "3", "4", "99", "3", "88", "2", "4", "4", "1", "3"]


def _oracle_missing() -> str | None:
    if not (ORACLE_DIR / "oracle.mjs").exists() or not (ORACLE_DIR / "node_modules").is_dir():
        return f"xform-oracle not installed at {ORACLE_DIR} (run `make oracle`)"
    for tool in ("node", "java", "javac"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    return None


MISSING = _oracle_missing()
if MISSING and os.environ.get("KINTSUGI_REQUIRE_ORACLE") == "1":
    raise RuntimeError(f"KINTSUGI_REQUIRE_ORACLE=1 but the ODK engines cannot run: {MISSING}")
if MISSING:
    pytestmark.append(pytest.mark.skip(reason=f"ODK ENGINES NOT RUN: {MISSING}"))


def _ratings(report: dict, seed: int) -> dict[str, str]:
    ratings = {}
    i = seed
    for d_index, domain in enumerate(report["domains"]):
        for s_index, sub in enumerate(domain["subdomains"]):
            if d_index == seed % 6 and s_index > 0:
                ratings[sub] = "99"  # this domain falls below the minimum: no score
            else:
                ratings[sub] = PATTERNS[i % len(PATTERNS)]
            i += 1
    return ratings


def _expected(report: dict, ratings: dict[str, str]) -> dict[str, float | None]:
    """Independent arithmetic: mean of the 1-4 ratings, blank below max(2, half)."""
    out = {}
    for domain in report["domains"]:
        values = [
            int(ratings[s]) for s in domain["subdomains"] if ratings[s] in {"1", "2", "3", "4"}
        ]
        need = max(2, -(-len(domain["subdomains"]) // 2))
        out[domain["id"]] = sum(values) / len(values) if len(values) >= need else None
    return out


def _answers(report: dict, ratings: dict[str, str], *, follow_up: str | None = None) -> dict:
    answers = list(report["preconditions"].items())
    if follow_up:
        answers = [
            ("/data/consent", "yes"),
            ("/data/assessment/collection_point", "six_month"),
            ("/data/assessment/case", follow_up),
        ]
    answers += [
        ("/data/assessment/assessment_date", "2026-03-01"),
        ("/data/assessment/assessor", "CW-07"),
        ("/data/assessment/casework_type", report["casework_types"][0]),
        ("/data/assessment/return_environment", "yes"),
    ]
    if report["offices"]:
        answers.append(("/data/assessment/office", report["offices"][0]))
    for domain in report["domains"]:
        for sub, ref in zip(domain["subdomains"], domain["rating_refs"], strict=True):
            answers.append((ref, ratings[sub]))
        # the survivor's own view: always "1", which must never move the practitioner's score
        answers.append((domain["survivor_rating_ref"], "1"))
    return {"languages": "none", "answers": [list(a) for a in answers]}


def _run(form_path: Path, answers_path: Path, attachments: Path, *, validate: bool) -> dict:
    env = {**os.environ, "PYTHON": sys.executable}
    # ODK Validate once per form (with its intake run): it checks the form, not the answers
    extra = ["--validate"] if validate else []
    proc = subprocess.run(
        ["node", str(ORACLE_DIR / "oracle.mjs"), str(form_path), str(answers_path),
         "--engine", "both", *extra, "--attachments", str(attachments)],
        capture_output=True, text=True, env=env, timeout=300, cwd=ORACLE_DIR,
    )  # fmt: skip
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"oracle printed no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Compile every context and run the oracle on an intake (and one follow-up), 2 at a time."""
    work = tmp_path_factory.mktemp("oracle")
    jobs = []
    for seed, name in enumerate(CONTEXTS):
        form = compile_context(REPO_INSTRUMENTS, name)
        folder = work / name
        (folder / "att").mkdir(parents=True)
        (folder / "form.xml").write_bytes(form.xform)
        props = form.report["entity_list"]["properties"]
        row = {"case_code": "KE-0107", "score_SAF": "2.5"}
        csv = ",".join(["name", "label", "__version", *props]) + "\n"
        csv += ",".join(["c-0107", "KE-0107", "4", *[row.get(p, "") for p in props]]) + "\n"
        (folder / "att" / "cases.csv").write_text(csv)
        ratings = _ratings(form.report, seed)
        (folder / "intake.json").write_text(json.dumps(_answers(form.report, ratings)))
        jobs.append((name, "intake", form, ratings, folder / "intake.json"))
        if seed == 0:
            follow = _ratings(form.report, seed + 3)
            (folder / "follow.json").write_text(
                json.dumps(_answers(form.report, follow, follow_up="c-0107"))
            )
            jobs.append((name, "follow-up", form, follow, folder / "follow.json"))
            # a refusal, and a form finalised with nothing answered
            (folder / "refusal.json").write_text(
                json.dumps({"languages": "none", "answers": [["/data/consent", "no"]]})
            )
            jobs.append((name, "refusal", form, {}, folder / "refusal.json"))
            (folder / "blank.json").write_text(json.dumps({"languages": "none", "answers": []}))
            jobs.append((name, "blank", form, {}, folder / "blank.json"))

    def one(job):
        name, kind, form, ratings, answers = job
        folder = answers.parent
        result = _run(folder / "form.xml", answers, folder / "att", validate=kind == "intake")
        return (name, kind), (form, ratings, result)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, jobs))


def _case_ids():
    ids = [(name, "intake") for name in CONTEXTS]
    return [*ids, (CONTEXTS[0], "follow-up")] if CONTEXTS else ids


@pytest.mark.parametrize("case", _case_ids(), ids=lambda c: f"{c[0]}-{c[1]}")
def test_oracle__both_engines__load_validate_and_scores_match_python(runs, case):
    """Should load in Web Forms and JavaRosa, pass ODK Validate, and agree with the scorer."""
    form, ratings, result = runs[case]
    engines = result["engines"]
    assert len(engines) == 2
    expected = _expected(form.report, ratings)
    python = Scorer.from_report(form.report).score(ratings)
    assert python == expected
    assert any(v is None for v in expected.values())  # the sparse domain stays blank
    for engine in engines:
        name = engine["engine"]
        assert engine["load"]["status"] == "ok", (name, engine["load"])
        assert engine["answers"]["errors"] == [], (name, engine["answers"]["errors"])
        for domain in form.report["domains"]:
            got = engine["calculated"][domain["score_ref"]]
            want = expected[domain["id"]]
            if want is None:
                assert got == "", (name, domain["id"], got)
            else:
                assert abs(float(got) - want) < 1e-9, (name, domain["id"], got, want)
        xml = engine["submission"]["instance_xml"]
        if case[1] == "intake":
            # JavaRosa writes "1", Web Forms "true": Central and our parser accept both
            assert ('create="1"' in xml or 'create="true"' in xml) and "<label>" in xml
        else:
            assert 'update="1"' in xml or 'update="true"' in xml
            assert 'baseVersion="4"' in xml and 'id="c-0107"' in xml
            assert "<case_code>KE-0107</case_code>" in xml
        # what the server reads back from this engine's submission
        read = read_assessment(ET.fromstring(xml), form.report)
        assert read.consent == "yes" and read.assessor == "CW-07", name
        assert read.ratings == ratings, name
        assert read.survivor_view == dict.fromkeys(expected, "1"), name
        assert re.fullmatch(form.report["case_code_pattern"], read.case_code or ""), name
        for domain_id, want in expected.items():
            got = read.device_scores[domain_id]
            assert (got is None) if want is None else abs(got - want) < 1e-9, (name, domain_id)
    if case[1] == "intake":
        validations = [e.get("validate") for e in engines if e.get("validate")]
        assert validations and all(v["status"] == "valid" for v in validations), validations


_UUID = re.compile(r"^(uuid:)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _only_timestamps_differ(result: dict) -> None:
    """The engines may differ on clock readings and fresh uuids, on nothing else."""

    def harmless(ref: str | None, value: object) -> bool:
        return ref in {"/data/start", "/data/end"} or bool(_UUID.match(str(value or "")))

    for d in result.get("disagreements", []):
        if "ref" in d:
            assert harmless(d["ref"], d.get("first")) and harmless(d["ref"], d.get("second")), d
        for item in d.get("only_first", []) + d.get("only_second", []):
            assert harmless(*item.split("=", 1)), d


@pytest.mark.parametrize("case", _case_ids(), ids=lambda c: f"{c[0]}-{c[1]}")
def test_oracle__both_engines__agree_except_clock(runs, case):
    """Should give the same values, relevance and submission in Web Forms and JavaRosa."""
    _only_timestamps_differ(runs[case][2])


def test_oracle__consent_refused__only_the_refusal_recorded(runs):
    """Should finalise a refusal with no violations, no ratings and no case entity."""
    form, _ratings, result = runs[(CONTEXTS[0], "refusal")]
    _only_timestamps_differ(result)
    for engine in result["engines"]:
        assert engine["violations"] == [], engine["engine"]
        xml = engine["submission"]["instance_xml"]
        root = ET.fromstring(xml)
        assert root.find("assessment") is None or not "".join(root.find("assessment").itertext())
        assert 'create="1"' not in xml and 'create="true"' not in xml
        read = read_assessment(root, form.report)
        assert read.consent == "no"
        assert all(v is None for v in read.ratings.values())
        assert read.case_code is None and read.notes == {}


def test_oracle__nothing_answered__consent_blocks_finalising(runs):
    """Should refuse to finalise without a consent answer, in both engines."""
    _form, _ratings, result = runs[(CONTEXTS[0], "blank")]
    for engine in result["engines"]:
        refs = [v["ref"] for v in engine["violations"]]
        assert refs == ["/data/consent"], (engine["engine"], refs)
