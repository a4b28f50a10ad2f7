"""Hardened XML parsing for everything that arrives from the network.

Every document (submission envelopes, instances, manifests) goes through :func:`parse_xml`,
which uses defusedxml: a DTD, an entity declaration or an external reference is refused with
:class:`~sync_protocol.errors.UnsafeXMLError` and never expanded (billion laughs, XXE).
Collect never sends a DTD, so refusing them costs no real client anything.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from sync_protocol.errors import MalformedXMLError, UnsafeXMLError

__all__ = ["child", "children", "local_name", "parse_xml", "text_of"]


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
    try:
        return SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        raise UnsafeXMLError(
            "The XML declares a DTD or entities, which this server refuses for safety."
        ) from err
    except ET.ParseError as err:
        line, column = getattr(err, "position", (None, None))
        where = f" (line {line}, column {column})" if line else ""
        raise MalformedXMLError(f"The XML is not well-formed{where}.") from err


def local_name(tag: str) -> str:
    """The tag without its ``{namespace}``: ODK envelopes are matched by local name."""
    return tag.rsplit("}", 1)[-1] if tag.startswith("{") else tag


def children(element: ET.Element, name: str) -> list[ET.Element]:
    """Direct children of ``element`` whose local name is ``name``, in document order."""
    return [c for c in element if isinstance(c.tag, str) and local_name(c.tag) == name]


def child(element: ET.Element, name: str) -> ET.Element | None:
    """The first direct child of ``element`` with local name ``name``, or None."""
    for c in element:
        if isinstance(c.tag, str) and local_name(c.tag) == name:
            return c
    return None


def text_of(element: ET.Element | None) -> str | None:
    """Stripped text of ``element``; None when absent or empty."""
    if element is None or element.text is None:
        return None
    text = element.text.strip()
    return text or None
