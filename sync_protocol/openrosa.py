"""OpenRosa documents as Collect parses them: form list, manifest, integrity, OpenRosaResponse.

Pure rendering (stdlib only): callers pass plain values and get UTF-8 bytes back, plus the
headers every OpenRosa XML response needs as data (:data:`OPENROSA_HEADERS`,
:data:`XML_CONTENT_TYPE`). Collect's parsers are strict about namespaces and reject a whole
list when one entry lacks a required child, so every required value is checked here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from sync_protocol.errors import ProtocolError

OPENROSA_HEADERS: dict[str, str] = {"X-OpenRosa-Version": "1.0"}
#: Collect's getXML() requires the content type to contain "text/xml" (application/xml fails).
XML_CONTENT_TYPE = "text/xml; charset=utf-8"

NS_FORM_LIST = "http://openrosa.org/xforms/xformsList"
NS_MANIFEST = "http://openrosa.org/xforms/xformsManifest"
NS_RESPONSE = "http://openrosa.org/http/response"

_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


def md5_hash(data: bytes) -> str:
    """``md5:<lowercase hex>`` of ``data``, as form lists and manifests carry it."""
    return "md5:" + hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class FormListEntry:
    """One ``<xform>`` of a form list."""

    form_id: str
    name: str
    version: str | None
    hash: str  # "md5:<hex of the exact bytes served at download_url>"
    download_url: str
    manifest_url: str | None = None


@dataclass(frozen=True, slots=True)
class ManifestFile:
    """One ``<mediaFile>`` of a manifest."""

    filename: str
    hash: str  # "md5:<hex>" for files; opaque but changing for entity lists
    download_url: str
    type: str | None = None  # "entityList" | "approvalEntityList" | None for a plain file
    integrity_url: str | None = None


def _el(tag: str, text: str) -> str:
    return f"<{tag}>{escape(text)}</{tag}>"


def _require(value: str | None, what: str) -> str:
    if value is None or not str(value).strip():
        raise ProtocolError(f"{what} is required")
    return value


def render_form_list(entries: Iterable[FormListEntry]) -> bytes:
    """The ``<xforms>`` document (OpenRosa Form List API)."""
    parts = [_DECL, f'<xforms xmlns="{NS_FORM_LIST}">']
    for e in entries:
        if not e.hash.startswith("md5:"):
            raise ProtocolError("form list hash must start with 'md5:'")
        parts.append("<xform>")
        parts.append(_el("formID", _require(e.form_id, "formID")))
        parts.append(_el("name", _require(e.name, "name")))
        parts.append(_el("version", e.version or ""))
        parts.append(_el("hash", e.hash))
        parts.append(_el("downloadUrl", _require(e.download_url, "downloadUrl")))
        if e.manifest_url:
            parts.append(_el("manifestUrl", e.manifest_url))
        parts.append("</xform>")
    parts.append("</xforms>")
    return "".join(parts).encode("utf-8")


def render_manifest(files: Iterable[ManifestFile]) -> bytes:
    """The ``<manifest>`` document: media files and entity lists of one form version."""
    parts = [_DECL, f'<manifest xmlns="{NS_MANIFEST}">']
    for f in files:
        type_attr = f" type={quoteattr(f.type)}" if f.type else ""
        parts.append(f"<mediaFile{type_attr}>")
        parts.append(_el("filename", _require(f.filename, "filename")))
        parts.append(_el("hash", _require(f.hash, "hash")))
        parts.append(_el("downloadUrl", _require(f.download_url, "downloadUrl")))
        if f.integrity_url:
            parts.append(_el("integrityUrl", f.integrity_url))
        parts.append("</mediaFile>")
    parts.append("</manifest>")
    return "".join(parts).encode("utf-8")


def render_integrity(states: Iterable[tuple[str, bool]]) -> bytes:
    """The entity integrity document: ``(uuid, deleted)`` pairs, ``deleted`` as true/false."""
    parts = [_DECL, "<data><entities>"]
    for uuid, deleted in states:
        parts.append(
            f"<entity id={quoteattr(uuid)}><deleted>{'true' if deleted else 'false'}</deleted>"
            "</entity>"
        )
    parts.append("</entities></data>")
    return "".join(parts).encode("utf-8")


def render_openrosa_response(message: str, *, nature: str = "") -> bytes:
    """An ``<OpenRosaResponse>`` whose first ``<message>`` Collect shows to the user.

    :param nature: ``""`` for success, ``"error"`` for failures (as Central does).
    """
    return (
        f'{_DECL}<OpenRosaResponse xmlns="{NS_RESPONSE}" items="0">'
        f"<message nature={quoteattr(nature)}>{escape(message)}</message>"
        "</OpenRosaResponse>"
    ).encode()
