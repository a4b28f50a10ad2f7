"""Envelope and instance parsing, including hostile XML."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_protocol.envelope import EncryptedEnvelope, PlainInstance, parse_submission
from sync_protocol.errors import (
    MalformedSubmissionError,
    MalformedXMLError,
    ProtocolError,
    UnsafeXMLError,
)

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<data id="f"><q>&lol3;</q><meta><instanceID>uuid:1</instanceID></meta></data>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE data [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<data id="f"><q>&xxe;</q><meta><instanceID>uuid:1</instanceID></meta></data>"""


@pytest.mark.parametrize("payload", [BILLION_LAUGHS, XXE], ids=["billion-laughs", "xxe"])
def test_parse__entity_payload__refused_not_expanded(payload):
    """Should refuse DTD/entity payloads with a clear error."""
    with pytest.raises(UnsafeXMLError) as err:
        parse_submission(payload)
    assert "DTD" in str(err.value)
    assert "root:" not in str(err.value)


def test_parse__not_xml__malformed_with_position():
    """Should say the XML is not well-formed, with a line number."""
    with pytest.raises(MalformedXMLError, match="line 1"):
        parse_submission(b"<data id='x'><unclosed></data>")


def test_parse__empty__malformed():
    """Should refuse an empty part."""
    with pytest.raises(MalformedXMLError):
        parse_submission(b"  ")


def test_parse__no_instance_id__message_for_field_worker():
    """Should explain that meta/instanceID is missing."""
    with pytest.raises(MalformedSubmissionError, match="instanceID"):
        parse_submission(b'<data id="f"><q>1</q></data>')


def test_parse__no_form_id__message():
    """Should explain which form is unknown."""
    with pytest.raises(MalformedSubmissionError, match="which form"):
        parse_submission(b"<data><meta><instanceID>uuid:1</instanceID></meta></data>")


def test_parse__plaintext_instance__meta_and_entity():
    """Should read ids, version, deprecatedID, instanceName and an entity block."""
    xml = (
        b'<?xml version="1.0" ?><aso id="aso_sa" version="2026.1" xmlns:entities="http://www.opendatakit.org/xforms/entities">'
        b"<case_code>SA-0001</case_code><meta><instanceID>uuid:new</instanceID>"
        b"<deprecatedID>uuid:old</deprecatedID><instanceName>SA-0001 intake</instanceName>"
        b'<entities:entity dataset="cases" id="2f2b1e0c-1d2a-4c55-9d6b-0a5c3b1e2f10" update="1" '
        b'baseVersion="3" trunkVersion="2" branchId="b5f5c1ee-1c1b-4b8e-9b1d-1f5f0e0d0c0b">'
        b"<entities:label>SA-0001</entities:label></entities:entity></meta></aso>"
    )
    parsed = parse_submission(xml)
    assert isinstance(parsed, PlainInstance)
    assert (parsed.form_id, parsed.version, parsed.instance_id) == ("aso_sa", "2026.1", "uuid:new")
    assert parsed.deprecated_id == "uuid:old"
    assert parsed.instance_name == "SA-0001 intake"
    assert parsed.root_tag == "aso"
    (entity,) = parsed.entities
    assert entity.dataset == "cases" and entity.update and not entity.create
    assert (entity.base_version, entity.trunk_version) == ("3", "2")
    assert entity.label == "SA-0001"


def test_parse__numeric_character_references_in_version__decoded():
    """Should decode an older Collect's &#NNNN; version to the same string as raw UTF-8."""
    raw = "v1-संस्करण"
    encoded = "".join(c if ord(c) < 128 else f"&#{ord(c)};" for c in raw)
    for version in (raw, encoded):
        xml = (
            f'<data id="f" version="{version}" encrypted="yes" '
            'xmlns="http://www.opendatakit.org/xforms/encrypted"><base64EncryptedKey>AA==</base64EncryptedKey>'
            '<orx:meta xmlns:orx="http://openrosa.org/xforms"><orx:instanceID>uuid:1</orx:instanceID></orx:meta>'
            "<encryptedXmlFile>submission.xml.enc</encryptedXmlFile></data>"
        ).encode()
        parsed = parse_submission(xml)
        assert isinstance(parsed, EncryptedEnvelope)
        assert parsed.version == raw


def test_parse__storage_form_envelope__by_local_name():
    """Should read Aggregate/Briefcase's http://opendatakit.org/submissions storage form."""
    xml = (
        b'<data id="enc" encrypted="yes" instanceID="uuid:9" xmlns="http://opendatakit.org/submissions">'
        b"<base64EncryptedKey>AA==</base64EncryptedKey>"
        b'<n0:meta xmlns:n0="http://openrosa.org/xforms"><n0:instanceID>uuid:9</n0:instanceID></n0:meta>'
        b"<media><file>a.jpg.enc</file></media><media><file>b.m4a.enc</file></media>"
        b"<encryptedXmlFile>submission.xml.enc</encryptedXmlFile></data>"
    )
    parsed = parse_submission(xml)
    assert isinstance(parsed, EncryptedEnvelope)
    assert parsed.media == ("a.jpg.enc", "b.m4a.enc")
    assert parsed.expected_files == ("a.jpg.enc", "b.m4a.enc", "submission.xml.enc")
    assert parsed.signature is None


def test_parse__repeated_elements__first_of_each_name_counts():
    """Should read the first element of a name where one is expected (meta, its ids, the key,
    the signature), every media/file in order, and skip comments between them."""
    envelope = parse_submission(
        b'<data id="f" encrypted="yes" xmlns="http://www.opendatakit.org/xforms/encrypted">'
        b"<!-- c --><base64EncryptedKey>AA==</base64EncryptedKey><base64EncryptedKey>BB==</base64EncryptedKey>"
        b'<orx:meta xmlns:orx="http://openrosa.org/xforms"><orx:instanceID>uuid:1</orx:instanceID>'
        b"<orx:instanceID>uuid:2</orx:instanceID><orx:deprecatedID>uuid:0</orx:deprecatedID></orx:meta>"
        b"<meta><instanceID>uuid:3</instanceID><deprecatedID>uuid:9</deprecatedID></meta>"
        b"<media><file>a.jpg.enc</file><!-- c --><file>b.jpg.enc</file></media><media><file>c.enc</file></media>"
        b"<encryptedXmlFile>submission.xml.enc</encryptedXmlFile><encryptedXmlFile>x.enc</encryptedXmlFile>"
        b"<base64EncryptedElementSignature>S1==</base64EncryptedElementSignature>"
        b"<base64EncryptedElementSignature>S2==</base64EncryptedElementSignature></data>"
    )
    assert isinstance(envelope, EncryptedEnvelope)
    assert (envelope.encrypted_key, envelope.signature) == ("AA==", "S1==")
    assert (envelope.instance_id, envelope.deprecated_id) == ("uuid:1", "uuid:0")
    assert envelope.media == ("a.jpg.enc", "b.jpg.enc", "c.enc")
    assert envelope.encrypted_xml_file == "submission.xml.enc"
    instance = parse_submission(
        b'<data id="f" instanceID="uuid:root"><meta><instanceName> first </instanceName></meta>'
        b"<meta><instanceID>uuid:second</instanceID></meta>"
        b'<g><meta><entity dataset="cases" id="1"/></meta></g><entity dataset="" id="2"/></data>'
    )
    assert isinstance(instance, PlainInstance)
    # the first meta has no instanceID: the root attribute's, never the second meta's
    assert (instance.instance_id, instance.instance_name) == ("uuid:root", "first")
    assert [e.entity_id for e in instance.entities] == ["1"]  # an empty dataset is no block


@pytest.mark.parametrize("name", ["../x.enc", "a/b.enc", "..", "c\\\\d.enc"])
def test_parse__media_name_with_path__refused(name):
    """Should refuse manifest file names that could escape a directory."""
    xml = (
        '<data id="f" encrypted="yes"><base64EncryptedKey>AA==</base64EncryptedKey>'
        "<meta><instanceID>uuid:1</instanceID></meta>"
        f"<media><file>{name}</file></media><encryptedXmlFile>submission.xml.enc</encryptedXmlFile></data>"
    ).encode()
    with pytest.raises(MalformedSubmissionError, match="path"):
        parse_submission(xml)


def _manifest(media: list[str], xml_file: str = "submission.xml.enc") -> bytes:
    items = "".join(f"<media><file>{name}</file></media>" for name in media)
    return (
        '<data id="f" encrypted="yes"><base64EncryptedKey>AA==</base64EncryptedKey>'
        f"<meta><instanceID>uuid:1</instanceID></meta>{items}"
        f"<encryptedXmlFile>{xml_file}</encryptedXmlFile></data>"
    ).encode()


@pytest.mark.parametrize(
    ("media", "xml_file"),
    [(["photo.jpg"], "submission.xml.enc"), ([], "submission.xml"), ([".enc"], "s.xml.enc")],
)
def test_parse__file_not_named_enc__refused(media, xml_file):
    """Should refuse a manifest file name without the .enc suffix Collect always adds."""
    with pytest.raises(MalformedSubmissionError, match=r"\.enc"):
        parse_submission(_manifest(media, xml_file))


@pytest.mark.parametrize(
    "media", [["a.jpg.enc", "a.jpg.enc"], ["submission.xml.enc"]], ids=["dup", "xml"]
)
def test_parse__file_listed_twice__refused(media):
    """Should refuse a manifest listing one file twice (two IV indexes for one file)."""
    with pytest.raises(MalformedSubmissionError, match="twice"):
        parse_submission(_manifest(media))


def test_parse__surrogate_pair_references__joined_to_one_character():
    """Should read an old Collect's emoji written as two UTF-16 references as one character."""
    version = "v1-\N{GRINNING FACE}"
    legacy = "v1-&#55357;&#56832;"
    raw = (
        _manifest([])
        .replace(b'id="f"', f'id="f" version="{legacy}"'.encode())
        .replace(b"<data", b'<data xmlns="http://www.opendatakit.org/xforms/encrypted"')
    )
    parsed = parse_submission(raw)
    assert parsed.version == version
    lone = raw.replace(b"&#55357;&#56832;", b"&#56832;")
    with pytest.raises(MalformedXMLError):
        parse_submission(lone)


@pytest.mark.parametrize(
    ("create", "expected"), [("1", True), ("true", True), ("True", False), ("yes", False)]
)
def test_parse__entity_action_flags__exact_strings_like_central(create, expected):
    """Should turn an action on only for the exact strings "1" or "true"."""
    xml = (
        '<data id="f"><meta><instanceID>uuid:1</instanceID>'
        f'<entity dataset="cases" id="uuid:x" create="{create}"><label>L</label></entity>'
        "</meta></data>"
    ).encode()
    (entity,) = parse_submission(xml).entities
    assert entity.create is expected and entity.update is False


_FRAGMENTS = [
    b"<data",
    b' id="f"',
    b' encrypted="yes"',
    b">",
    b"</data>",
    b"<meta><instanceID>uuid:1</instanceID></meta>",
    b"<base64EncryptedKey>AA==</base64EncryptedKey>",
    b"<media><file>a.jpg.enc</file></media>",
    b"<encryptedXmlFile>submission.xml.enc</encryptedXmlFile>",
    b"<!DOCTYPE d>",
    b'<!ENTITY e "x">',
    b"&#55357;",
    b"&#56832;",
    b"&amp;",
    b"\xff",
    b"<?xml version='1.0' ?>",
    b"<?xml version='1.0' encoding='no-such-codec' ?>",
]


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map(b"".join),
    )
)
def test_parse__arbitrary_bytes__only_protocol_errors(data):
    """Should answer any byte string with a result or a ProtocolError, never another exception."""
    try:
        result = parse_submission(data)
    except ProtocolError as err:
        assert str(err)  # a message for the field worker
    else:
        assert result.form_id and result.instance_id


def test_parse__unknown_encoding_declared__malformed_not_lookup_error():
    """Should answer an unknown encoding declaration with MalformedXMLError."""
    with pytest.raises(MalformedXMLError, match="encoding"):
        parse_submission(b'<?xml version="1.0" encoding="foo-bar"?><data id="f"/>')
