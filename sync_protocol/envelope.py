"""Submission envelopes: what the ``xml_submission_file`` part of a Collect upload says.

Two shapes arrive (openrosa.md §5, §9.3):

* an **encrypted envelope** (the manifest Collect writes in place of the instance): root with
  ``encrypted="yes"``, ``base64EncryptedKey``, ``meta/instanceID``, ``media/file`` items in
  encryption order, ``encryptedXmlFile`` and ``base64EncryptedElementSignature``. Collect uses
  the namespace ``http://www.opendatakit.org/xforms/encrypted``; copies stored by Aggregate and
  Briefcase use ``http://opendatakit.org/submissions`` and add attributes. Everything is matched
  by local name, never by namespace or element order.
* a **plaintext instance**: the form's own root element with ``id``, optional ``version`` and a
  ``meta`` block (``instanceID``, ``deprecatedID``, ``instanceName``, ``entity``).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from sync_protocol.constants import ENC_SUFFIX
from sync_protocol.errors import MalformedSubmissionError
from sync_protocol.xml import by_name, child, local_name, parse_xml, text_of

__all__ = [
    "EncryptedEnvelope",
    "EntityBlock",
    "PlainInstance",
    "parse_submission",
]

#: an attachment name must be a plain file name: no separators, no parent references
_SAFE_NAME = re.compile(r"^(?!\.{1,2}$)[^/\\\x00]+$")
_TRUE = {"1", "true"}


@dataclass(frozen=True, slots=True)
class EncryptedEnvelope:
    """The manifest of an encrypted submission."""

    form_id: str
    version: str | None
    instance_id: str
    encrypted_key: str
    signature: str | None
    #: encrypted media file names (``x.jpg.enc``) in manifest (= encryption) order
    media: tuple[str, ...]
    encrypted_xml_file: str
    #: Collect keeps deprecatedID inside the ciphertext only; Aggregate copies may carry it
    deprecated_id: str | None = None

    @property
    def expected_files(self) -> tuple[str, ...]:
        """Every file the envelope needs, in decryption order (the XML last)."""
        return (*self.media, self.encrypted_xml_file)


@dataclass(frozen=True, slots=True)
class EntityBlock:
    """One ``meta/entity`` block of a plaintext instance (ODK Entities, openrosa.md §11.3)."""

    dataset: str
    entity_id: str
    create: bool
    update: bool
    base_version: str | None
    trunk_version: str | None
    branch_id: str | None
    label: str | None


@dataclass(frozen=True, slots=True)
class PlainInstance:
    """A plaintext submission instance."""

    form_id: str
    version: str | None
    instance_id: str
    deprecated_id: str | None
    instance_name: str | None
    root_tag: str
    entities: tuple[EntityBlock, ...]
    root: ET.Element = field(repr=False, compare=False)


def parse_submission(data: bytes) -> EncryptedEnvelope | PlainInstance:
    """Parse the ``xml_submission_file`` bytes of an upload.

    :raises UnsafeXMLError: DTD or entity declarations (refused, never expanded)
    :raises MalformedXMLError: not well-formed XML
    :raises MalformedSubmissionError: well-formed but not a usable submission; the message
        tells a field worker what is wrong
    """
    root = parse_xml(data)
    form_id = (root.get("id") or "").strip()
    if not form_id:
        raise MalformedSubmissionError(
            "The submission does not say which form it belongs to (no id on its root element). "
            "Re-download the form on the phone and fill it in again."
        )
    version = root.get("version")
    if root.get("encrypted", "").strip().lower() == "yes":
        return _parse_envelope(root, form_id, version)
    return _parse_instance(root, form_id, version)


def _first(found: dict[str, list[ET.Element]], name: str) -> ET.Element | None:
    """The first of ``by_name``'s children called ``name``, or None."""
    els = found.get(name)
    return els[0] if els else None


def _meta_texts(root: ET.Element, meta: ET.Element | None) -> dict[str, str | None]:
    """instanceID, deprecatedID and instanceName of the root's first ``meta`` block, read in
    one pass over its children."""
    found = by_name(meta) if meta is not None else {}
    texts = {name: text_of(_first(found, name)) for name in _META}
    # Aggregate/Briefcase storage copies also carry the instanceID as a root attribute
    instance_id = texts["instanceID"] or (root.get("instanceID") or "").strip() or None
    if not instance_id:
        raise MalformedSubmissionError(
            "The submission has no instance ID (meta/instanceID). The form must be fixed by its "
            "designer; keep the data on the phone and contact your supervisor."
        )
    texts["instanceID"] = instance_id
    return texts


_META = ("instanceID", "deprecatedID", "instanceName")


def _parse_envelope(root: ET.Element, form_id: str, version: str | None) -> EncryptedEnvelope:
    top = by_name(root)
    key = text_of(_first(top, "base64EncryptedKey"))
    if not key:
        raise MalformedSubmissionError(
            "The encrypted submission is missing its encrypted key (base64EncryptedKey)."
        )
    xml_file = text_of(_first(top, "encryptedXmlFile"))
    if not xml_file:
        raise MalformedSubmissionError(
            "The encrypted submission does not name its encrypted data file (encryptedXmlFile)."
        )
    media: list[str] = []
    for media_el in top.get("media", ()):
        for file_el in by_name(media_el).get("file", ()):
            name = text_of(file_el)
            if name:
                media.append(name)
    for name in (*media, xml_file):
        if not _SAFE_NAME.match(name):
            raise MalformedSubmissionError(
                "The encrypted submission names a file with a path in it, which is not allowed."
            )
        # Collect names every encrypted file <plaintext name>.enc; anything else would have
        # no plaintext name to decrypt to
        if not name.endswith(ENC_SUFFIX) or name == ENC_SUFFIX:
            raise MalformedSubmissionError(
                "The encrypted submission names a file that is not an encrypted (.enc) file."
            )
    if len(set(media)) != len(media) or xml_file in media:
        # each file has one IV index: a name listed twice cannot be decrypted unambiguously
        raise MalformedSubmissionError("The encrypted submission lists the same file twice.")
    meta = _meta_texts(root, _first(top, "meta"))
    return EncryptedEnvelope(
        form_id=form_id,
        version=version,
        instance_id=meta["instanceID"],
        encrypted_key=key,
        signature=text_of(_first(top, "base64EncryptedElementSignature")),
        media=tuple(media),
        encrypted_xml_file=xml_file,
        deprecated_id=meta["deprecatedID"],
    )


def _entity(el: ET.Element) -> EntityBlock:
    return EntityBlock(
        dataset=(el.get("dataset") or "").strip(),
        entity_id=(el.get("id") or "").strip(),
        # Central: an action is on only for the exact strings "1" or "true"
        create=el.get("create") in _TRUE,
        update=el.get("update") in _TRUE,
        base_version=(el.get("baseVersion") or "").strip() or None,
        trunk_version=(el.get("trunkVersion") or "").strip() or None,
        branch_id=(el.get("branchId") or "").strip() or None,
        label=text_of(child(el, "label")),
    )


def _parse_instance(root: ET.Element, form_id: str, version: str | None) -> PlainInstance:
    meta = _meta_texts(root, child(root, "meta"))
    # entity blocks live in meta at survey level, or in meta inside groups/repeats (2025.1);
    # the attribute first: most elements have none, and get() is cheaper than the name
    entities = tuple(
        _entity(el)
        for el in root.iter()
        if el.get("dataset") and isinstance(el.tag, str) and local_name(el.tag) == "entity"
    )
    return PlainInstance(
        form_id=form_id,
        version=version,
        instance_id=meta["instanceID"],
        deprecated_id=meta["deprecatedID"],
        instance_name=meta["instanceName"],
        root_tag=local_name(root.tag),
        entities=entities,
        root=root,
    )
