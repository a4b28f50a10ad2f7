"""The upload multipart parser: real Collect bodies parse, anything else is refused cleanly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.multipart import MultipartError, parse_multipart
from tests.server.collect import multipart_body, openrosa_message
from tests.server.conftest import publish
from tests.server.forms import instance, xform


def test_parse__collect_vectors__parts_in_order(vectors):
    """Should split every recorded OkHttp body into the parts expected.json lists."""
    for v in vectors:
        boundary = v.content_type.split("boundary=")[1]
        parts = parse_multipart(v.body, boundary, max_parts=200)
        expected = v.expected["upload"]["parts_in_order"]
        assert [(p.name, p.filename) for p in parts] == [
            (e["name"], e["filename"]) for e in expected
        ], v.name
        assert parts[0].data == v.manifest_xml


def test_parse__incomplete_flag_part__no_filename():
    """Should return the *isIncomplete* field as a part without a file name."""
    body, ctype = multipart_body(b"<x/>", files={"a.jpg": b"1"}, incomplete=True)
    parts = parse_multipart(body, ctype.split("boundary=")[1], max_parts=10)
    assert [(p.name, p.filename, p.data) for p in parts][-1] == ("*isIncomplete*", None, b"yes")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\nunterminated',
        b"--b\r\nno header separator",
        b'--b\r\nContent-Disposition: attachment; name="x"\r\n\r\nv\r\n--b--',
        b"--bX",
    ],
    ids=["empty", "unterminated", "no-headers", "not-form-data", "bad-delimiter"],
)
def test_parse__broken_framing__multipart_error(body):
    """Should refuse bodies that do not follow multipart framing."""
    with pytest.raises(MultipartError):
        parse_multipart(body, "b", max_parts=10)


def test_parse__too_many_parts__refused():
    """Should stop counting parts at the limit."""
    body, ctype = multipart_body(b"<x/>", files={f"{i}.jpg": b"1" for i in range(20)})
    with pytest.raises(MultipartError, match="Too many"):
        parse_multipart(body, ctype.split("boundary=")[1], max_parts=5)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parse__arbitrary_bytes__parts_or_multipart_error(data):
    """Should never raise anything but MultipartError on arbitrary input."""
    body = b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n' + data
    try:
        parse_multipart(body, "b", max_parts=10)
    except MultipartError:
        pass


def test_submission__damaged_multipart__400_with_message(app, field):
    """Should answer a damaged body with an OpenRosaResponse Collect can show."""
    publish(app, field.project_id, xform())
    body, ctype = multipart_body(instance())
    resp = field.collect.post_raw(body[:-20], ctype)
    assert resp.status_code == 400
    assert "damaged" in openrosa_message(resp)
