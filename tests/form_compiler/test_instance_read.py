"""Reading instances: the compiled one-walk reader gives what the path lookup gives, repeats
included."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from form_compiler.instance import _Paths, read_assessment, value_at

INSTANCE = b"""<data xmlns="http://opendatakit.org/submissions" id="f" version="1">
  <meta><instanceID>uuid:1</instanceID></meta>
  <assessment>
    <SAF><SAF1> 3 </SAF1><SAF2></SAF2></SAF>
    <SAF><SAF1>1</SAF1><SAF3>4</SAF3></SAF>
    <SAF_score>3.0</SAF_score>
  </assessment>
  <note>first</note><note>second</note>
</data>"""


def _paths(el: ET.Element, prefix: str = "") -> list[str]:
    out = []
    for child in el:
        name = child.tag.rsplit("}", 1)[-1]
        out.append(prefix + name)
        out.extend(_paths(child, prefix + name + "/"))
    return out


def test_paths__every_path__same_as_value_at():
    """Should read exactly what value_at finds: the first child of a name at each level."""
    root = ET.fromstring(INSTANCE)
    paths = [*_paths(root), "assessment/SAF/SAF3", "missing", "assessment/LEG/LEG1"]
    refs = [f"/data/{p}" for p in paths]
    refs += ["/data", "/other/note", "/data/{x}note", "/data/note/"]
    got = _Paths(refs).read(root)
    assert got == [value_at(root, ref) for ref in refs]
    read = dict(zip(refs, got, strict=True))
    assert read["/data/assessment/SAF/SAF1"] == "3"  # stripped, from the first SAF
    assert read["/data/assessment/SAF/SAF3"] is None  # only in the second SAF: value_at misses it
    assert read["/data/assessment/SAF/SAF2"] is None and read["/data/note"] == "first"
    assert read["/other/note"] == "first"  # the ref's root name is not checked
    # an empty step never matched an element (value_at would skip it)
    assert _Paths(["/data/assessment//SAF_score"]).read(root) == [None]


REPORT = {
    "refs": {
        name: f"/data/a/{name}"
        for name in ("consent", "case_code", "case_code_new", "assessment_date", "office",
                     "collection_point", "casework_type", "assessor", "return_environment")
    },
    "instrument": {"version": "2"},
    "domains": [
        {"id": d, "subdomains": [f"{d}1", f"{d}2"], "rating_refs": [f"/data/a/{d}/{d}1", f"/data/a/{d}/{d}2"],
         "score_ref": f"/data/a/{d}_score", "survivor_rating_ref": f"/data/a/{d}_view",
         "note_ref": f"/data/a/{d}_note", "survivor_comment_ref": f"/data/a/{d}_comment",
         "counted_values": ["1", "2", "3", "4"]}
        for d in ("SAF", "LEG")
    ],
}  # fmt: skip


def test_read_assessment__instance__fields_entity_and_free_text():
    """Should read the case from the last ``cases`` entity block (any namespace, ``uuid:``
    dropped, lowercased), fall back to the new case code, keep only counted survivor views
    and non-empty free text, and read a device score as a number."""
    root = ET.fromstring(
        b'<data xmlns:e="urn:e"><a><consent>yes</consent><case_code_new>KE-1</case_code_new>'
        b"<SAF><SAF1> 3 </SAF1><SAF2>88</SAF2></SAF><SAF_score>3.0</SAF_score><SAF_view>9</SAF_view>"
        b"<SAF_note> private </SAF_note><SAF_comment></SAF_comment>"
        b"<LEG_score>n/a</LEG_score><LEG_view>2</LEG_view><LEG_comment>theirs</LEG_comment></a>"
        b'<meta><entity dataset="cases" id="uuid:AAA"/><e:entity dataset="cases" id="uuid:BBB"/>'
        b'<entity dataset="other" id="CCC"/><entity dataset=" cases" id="DDD"/></meta></data>'
    )
    got = read_assessment(root, REPORT)
    assert (got.consent, got.case_code, got.case_entity_id) == ("yes", "KE-1", "bbb")
    assert got.office is None and got.instrument_version == "2"
    assert got.ratings == {"SAF1": "3", "SAF2": "88", "LEG1": None, "LEG2": None}
    assert got.device_scores == {"SAF": 3.0, "LEG": None}
    assert got.survivor_view == {"SAF": None, "LEG": "2"}
    assert (got.notes, got.survivor_comments) == ({"SAF": "private"}, {"LEG": "theirs"})
