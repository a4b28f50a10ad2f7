"""Hardened XML parsing for everything that arrives from the network.

Every document (submission envelopes, instances, manifests) goes through :func:`parse_xml`,
which uses defusedxml: a DTD, an entity declaration or an external reference is refused with
:class:`~sync_protocol.errors.UnsafeXMLError` and never expanded (billion laughs, XXE).
Collect never sends a DTD, so refusing them costs no real client anything.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from sync_protocol.errors import MalformedXMLError, UnsafeXMLError

__all__ = ["by_name", "child", "local_name", "parse_xml", "text_of"]

_CHAR_REF = re.compile(rb"&#(x[0-9a-fA-F]{1,6}|[0-9]{1,7});")


def _join_surrogate_refs(data: bytes) -> bytes:
    """Turn UTF-16 surrogate-pair character references into one reference.

    Collect before v2025.3.0 wrote every non-ASCII character of a manifest attribute as a
    numeric character reference, one per UTF-16 unit, so an emoji became ``&#55357;&#56832;``.
    XML forbids surrogate code points and expat rejects them; Collect's signature is over the
    real character, so the pair is joined into ``&#128512;`` before parsing.
    """
    refs = list(_CHAR_REF.finditer(data))
    if len(refs) < 2:
        return data
    out, pos, i = [], 0, 0
    while i < len(refs) - 1:
        hi, lo = refs[i], refs[i + 1]
        hi_cp, lo_cp = _ref_value(hi.group(1)), _ref_value(lo.group(1))
        if hi.end() == lo.start() and 0xD800 <= hi_cp <= 0xDBFF and 0xDC00 <= lo_cp <= 0xDFFF:
            joined = 0x10000 + ((hi_cp - 0xD800) << 10) + (lo_cp - 0xDC00)
            out += [data[pos : hi.start()], b"&#%d;" % joined]
            pos = lo.end()
            i += 2
        else:
            i += 1
    out.append(data[pos:])
    return b"".join(out)


def _ref_value(body: bytes) -> int:
    return int(body[1:], 16) if body[:1] in (b"x", b"X") else int(body)


_DTD_MARKUP = re.compile(rb"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_DECLARED_ENCODING = re.compile(rb"""^<\?xml[^>]*?\sencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_UTF8 = {b"utf-8", b"utf8", b"us-ascii", b"ascii"}


def _plainly_without_dtd(data: bytes) -> bool:
    """True when ``data`` is UTF-8 (or ASCII) and holds no DTD markup.

    Entities can only be declared inside a DOCTYPE. In UTF-8 ``<!DOCTYPE`` and ``<!ENTITY``
    can only appear as those very bytes, so their absence proves the document has no DTD.
    Anything else (another declared encoding, a NUL byte or UTF-16 byte-order mark, DTD
    markup anywhere, even in a comment) goes to defusedxml.
    """
    if b"\x00" in data or data.startswith((b"\xfe\xff", b"\xff\xfe")):
        return False
    declared = _DECLARED_ENCODING.match(data.lstrip(b"\xef\xbb\xbf"))
    if declared is not None and declared.group(1).lower() not in _UTF8:
        return False
    return _DTD_MARKUP.search(data) is None


def parse_xml(data: bytes) -> ET.Element:
    """Parse ``data`` with DTDs, entities and external references forbidden.

    :param data: the raw document bytes (any encoding XML declares; UTF-8 without a
        declaration, as Collect writes it)
    :return: the root element
    :raises UnsafeXMLError: the document declares a DTD or entities
    :raises MalformedXMLError: the document is not well-formed XML
    """
    if not data or not data.strip():
        raise MalformedXMLError("The XML document is empty.")
    if b"&#" in data:
        data = _join_surrogate_refs(data)
    try:
        if _plainly_without_dtd(data):
            # No DTD can hide in these bytes, so there is nothing to declare an entity with
            # and nothing external to fetch: the C parser is safe here and 2-3x faster than
            # defusedxml, which must use the pure-Python tree builder to watch every event.
            return ET.fromstring(data)  # noqa: S314 - no DTD: _plainly_without_dtd
        return SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise UnsafeXMLError(
            "The XML declares a DTD or entities, which this server refuses for safety."
        ) from err
    except LookupError as err:  # <?xml encoding="..."?> names a codec Python does not have
        raise MalformedXMLError("The XML declares a character encoding that is not known.") from err
    except ET.ParseError as err:
        line, column = getattr(err, "position", (None, None))
        where = f" (line {line}, column {column})" if line else ""
        raise MalformedXMLError(f"The XML is not well-formed{where}.") from err


def local_name(tag: str) -> str:
    """The tag without its ``{namespace}``: ODK envelopes are matched by local name."""
    return tag.rsplit("}", 1)[-1] if tag.startswith("{") else tag


def child(element: ET.Element, name: str) -> ET.Element | None:
    """The first direct child of ``element`` with local name ``name``, or None."""
    for c in element:
        if isinstance(c.tag, str) and local_name(c.tag) == name:
            return c
    return None


def by_name(element: ET.Element) -> dict[str, list[ET.Element]]:
    """Direct children of ``element`` by local name, each list in document order: one pass
    where several :func:`child` calls would each walk the children again."""
    out: dict[str, list[ET.Element]] = {}
    for c in element:
        if isinstance(c.tag, str):
            out.setdefault(local_name(c.tag), []).append(c)
    return out


def text_of(element: ET.Element | None) -> str | None:
    """Stripped text of ``element``; None when absent or empty."""
    if element is None or element.text is None:
        return None
    text = element.text.strip()
    return text or None
