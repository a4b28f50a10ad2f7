"""Reading instances: the one-walk index gives what the path lookup gives, repeats included."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from form_compiler.instance import _texts, value_at

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


def test_texts__every_path__same_as_value_at():
    """Should index exactly what value_at finds: the first child of a name at each level."""
    root = ET.fromstring(INSTANCE)
    texts = _texts(root)
    paths = [*_paths(root), "assessment/SAF/SAF3", "missing", "assessment/LEG/LEG1"]
    for path in paths:
        assert texts.get(path) == value_at(root, "/data/" + path), path
    assert texts["assessment/SAF/SAF1"] == "3"  # stripped, from the first SAF
    assert "assessment/SAF/SAF3" not in texts  # only in the second SAF: value_at misses it too
    assert texts["assessment/SAF/SAF2"] is None and texts["note"] == "first"
