"""sync_protocol.openrosa renders documents Collect's parsers accept."""

from __future__ import annotations

import pytest
from defusedxml import ElementTree

from sync_protocol.errors import ProtocolError
from sync_protocol.openrosa import (
    OPENROSA_HEADERS,
    XML_CONTENT_TYPE,
    FormListEntry,
    ManifestFile,
    md5_hash,
    render_form_list,
    render_integrity,
    render_manifest,
    render_openrosa_response,
)


def test_headers__as_data():
    """Should expose the OpenRosa header and a text/xml content type."""
    assert OPENROSA_HEADERS == {"X-OpenRosa-Version": "1.0"}
    assert "text/xml" in XML_CONTENT_TYPE and "utf-8" in XML_CONTENT_TYPE


def test_md5_hash__lowercase_prefixed():
    """Should give md5:<lowercase hex>."""
    assert md5_hash(b"a") == "md5:0cc175b9c0f1b6a831c399e269772661"


def test_form_list__namespaced_children_and_escaping():
    """Should put every child in the xformsList namespace and escape text."""
    body = render_form_list(
        [
            FormListEntry("f&1", "A <b> form", "1", md5_hash(b"x"), "http://h/f.xml?a=1&b=2"),
            FormListEntry("f2", "B", None, md5_hash(b"y"), "http://h/2.xml", "http://h/2/m"),
        ]
    )
    root = ElementTree.fromstring(body)
    ns = "{http://openrosa.org/xforms/xformsList}"
    assert root.tag == f"{ns}xforms"
    first, second = list(root)
    assert first.find(f"{ns}formID").text == "f&1"
    assert first.find(f"{ns}name").text == "A <b> form"
    assert first.find(f"{ns}downloadUrl").text == "http://h/f.xml?a=1&b=2"
    assert first.find(f"{ns}manifestUrl") is None
    assert second.find(f"{ns}manifestUrl").text == "http://h/2/m"


@pytest.mark.parametrize(
    "entry",
    [
        FormListEntry("", "n", "1", "md5:00", "u"),
        FormListEntry("f", "", "1", "md5:00", "u"),
        FormListEntry("f", "n", "1", "md5:00", ""),
        FormListEntry("f", "n", "1", "sha1:00", "u"),
    ],
)
def test_form_list__missing_required_value__raises(entry):
    """Should refuse entries Collect would reject the whole list for."""
    with pytest.raises(ProtocolError):
        render_form_list([entry])


def test_manifest__entity_list_type_and_integrity_url():
    """Should mark entity lists with type=entityList and give integrityUrl."""
    body = render_manifest(
        [
            ManifestFile("logo.png", "md5:ab", "http://h/a/logo.png"),
            ManifestFile("cases.csv", "md5:cd", "http://h/a/cases.csv", "entityList", "http://h/i"),
        ]
    )
    ns = "{http://openrosa.org/xforms/xformsManifest}"
    root = ElementTree.fromstring(body)
    assert root.tag == f"{ns}manifest"
    plain, ent = list(root)
    assert plain.get("type") is None and ent.get("type") == "entityList"
    assert ent.find(f"{ns}integrityUrl").text == "http://h/i"
    assert plain.find(f"{ns}hash").text == "md5:ab"


def test_integrity__true_false_strict():
    """Should write deleted as exactly true/false under data/entities."""
    root = ElementTree.fromstring(render_integrity([("a", True), ("b", False)]))
    assert root.tag == "data"
    assert [(e.get("id"), e.find("deleted").text) for e in root.find("entities")] == [
        ("a", "true"),
        ("b", "false"),
    ]


def test_openrosa_response__message_and_nature():
    """Should wrap the message in OpenRosaResponse with items=0 and the nature attribute."""
    root = ElementTree.fromstring(render_openrosa_response("Bad <form> & co", nature="error"))
    assert root.tag == "{http://openrosa.org/http/response}OpenRosaResponse"
    msg = root.find("{http://openrosa.org/http/response}message")
    assert msg.text == "Bad <form> & co" and msg.get("nature") == "error"
