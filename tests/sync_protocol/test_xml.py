"""parse_xml: the fast C parser only where no DTD can hide; defusedxml everywhere else."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from defusedxml import ElementTree as SafeET

from sync_protocol.errors import MalformedXMLError, UnsafeXMLError
from sync_protocol.xml import _plainly_without_dtd, parse_xml

LAUGHS = '<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><d>&b;</d>'


@pytest.mark.parametrize(
    "data",
    [
        LAUGHS.encode("utf-8"),
        LAUGHS.encode("utf-16"),  # BOM + NUL bytes: the byte scan cannot see the DOCTYPE
        LAUGHS.encode("utf-16-be"),  # no BOM, NUL bytes
        ('<?xml version="1.0" encoding="ISO-8859-1"?>' + LAUGHS).encode("latin-1"),
        b'<?xml version="1.0"?>\n<!-- a comment --><!DOCTYPE d SYSTEM "file:///etc/passwd"><d/>',
        b"<!doctype d [<!ENTITY x 'y'>]><d>&x;</d>",
    ],
)
def test_parse_xml__any_dtd_in_any_encoding__refused_never_expanded(data):
    """Should refuse (or fail to parse) every document carrying a DTD, never expand it."""
    with pytest.raises((UnsafeXMLError, MalformedXMLError)):
        parse_xml(data)


@pytest.mark.parametrize(
    ("data", "fast"),
    [
        (b"<d><e>x</e></d>", True),
        (b'<?xml version="1.0" encoding="UTF-8"?><d/>', True),
        (b"\xef\xbb\xbf<?xml version='1.0' encoding='utf-8' ?><d/>", True),
        (b'<?xml version="1.0" encoding="ISO-8859-1"?><d>\xe9</d>', False),
        (b'<?xml version="1.0" encoding="cp037"?><d/>', False),
        ("<d>é</d>".encode("utf-16"), False),
        (b"<d><!-- <!ENTITY in a comment --></d>", False),
    ],
)
def test_plainly_without_dtd__only_utf8_without_dtd_markup(data, fast):
    """Should take the C parser only for UTF-8/ASCII bytes with no DTD markup at all."""
    assert _plainly_without_dtd(data) is fast


def test_parse_xml__real_submissions__same_tree_as_defusedxml(shared_dir: Path):
    """Should build exactly the tree defusedxml builds, for every real Collect document."""
    documents = sorted(shared_dir.glob("vectors/*/*.xml"))
    assert documents
    for path in documents:
        data = path.read_bytes()
        ours = parse_xml(data)
        theirs = SafeET.fromstring(data, forbid_dtd=True)
        assert ET.tostring(ours) == ET.tostring(theirs), path
    root = parse_xml("<d a='é'>ü</d>".encode())
    assert (root.get("a"), root.text) == ("é", "ü")
