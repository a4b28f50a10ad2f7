"""Reading a submitted (decrypted) instance into an assessment, using the form's report.

The report of the form version a submission targets says where every value lives
(``refs``, ``domains[*].rating_refs`` ...), so old submissions read correctly after the form
changes. Free-text notes are returned separately: the server keeps them encrypted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Assessment", "read_assessment", "value_at"]


@dataclass
class Assessment:
    """What case work needs from one submission."""

    consent: str | None
    case_code: str | None
    case_entity_id: str | None
    assessment_date: str | None
    collection_point: str | None
    casework_type: str | None
    office: str | None
    assessor: str | None
    return_environment: str | None
    #: subdomain id -> raw value ("1".."4", an excluded code, or None)
    ratings: dict[str, str | None] = field(default_factory=dict)
    #: domain id -> score the device calculated (unrounded), None when blank
    device_scores: dict[str, float | None] = field(default_factory=dict)
    #: domain id -> the survivor's own 1-4 view (None when not answered or declined)
    survivor_view: dict[str, str | None] = field(default_factory=dict)
    #: domain id -> free text: sensitive, never stored in plaintext by the server
    notes: dict[str, str] = field(default_factory=dict)
    survivor_comments: dict[str, str] = field(default_factory=dict)
    instrument_version: str | None = None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def value_at(root: ET.Element, ref: str) -> str | None:
    """Text at an absolute ``/data/a/b`` path (namespaces ignored); None when absent or empty."""
    parts = [p for p in ref.split("/") if p]
    if not parts or _local(root.tag) != parts[0]:
        # a submission's root is named after the form's root; accept any root name
        parts = parts[1:] if parts else parts
    else:
        parts = parts[1:]
    node: ET.Element | None = root
    for part in parts:
        if node is None:
            return None
        node = next((c for c in node if isinstance(c.tag, str) and _local(c.tag) == part), None)
    if node is None or node.text is None:
        return None
    text = node.text.strip()
    return text or None


def _texts(root: ET.Element) -> dict[str, str | None]:
    """Every path ``a/b`` under ``root`` (root name dropped) -> stripped text, in one walk.

    Keeps what :func:`value_at` would find: at each level the first child of a name only.
    """
    out: dict[str, str | None] = {}

    def walk(node: ET.Element, prefix: str) -> None:
        seen: set[str] = set()
        for child in node:
            if not isinstance(child.tag, str):
                continue
            name = _local(child.tag)
            if name in seen:
                continue
            seen.add(name)
            path = f"{prefix}{name}"
            text = child.text.strip() if child.text is not None else ""
            out[path] = text or None
            walk(child, path + "/")

    walk(root, "")
    return out


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def read_assessment(root: ET.Element, report: Mapping[str, Any]) -> Assessment:
    """Extract an :class:`Assessment` from an instance's root element."""
    refs = report["refs"]
    texts = _texts(root)

    def at(ref: str) -> str | None:  # at(ref) without walking the tree again
        return texts.get(ref.strip("/").partition("/")[2])

    entity_id = None
    for el in root.iter():
        if isinstance(el.tag, str) and _local(el.tag) == "entity" and el.get("dataset") == "cases":
            entity_id = (el.get("id") or "").removeprefix("uuid:").lower() or None
    assessment = Assessment(
        consent=at(refs["consent"]),
        case_code=at(refs["case_code"]) or at(refs["case_code_new"]),
        case_entity_id=entity_id,
        assessment_date=at(refs["assessment_date"]),
        collection_point=at(refs["collection_point"]),
        casework_type=at(refs["casework_type"]),
        office=at(refs["office"]),
        assessor=at(refs["assessor"]),
        return_environment=at(refs["return_environment"]),
        instrument_version=report.get("instrument", {}).get("version"),
    )
    for domain in report["domains"]:
        did = domain["id"]
        for sub_id, ref in zip(domain["subdomains"], domain["rating_refs"], strict=True):
            assessment.ratings[sub_id] = at(ref)
        assessment.device_scores[did] = _float(at(domain["score_ref"]))
        view = at(domain["survivor_rating_ref"])
        assessment.survivor_view[did] = view if view in set(domain["counted_values"]) else None
        note = at(domain["note_ref"])
        if note:
            assessment.notes[did] = note
        comment = at(domain["survivor_comment_ref"])
        if comment:
            assessment.survivor_comments[did] = comment
    return assessment


def build_instance(
    report: Mapping[str, Any],
    answers: Mapping[str, str],
    *,
    instance_id: str,
    entity: Mapping[str, str] | None = None,
    deprecated_id: str | None = None,
) -> bytes:
    """A submission instance for the form ``report`` describes, as Collect serialises one.

    Used to produce fictional demo data and test submissions through the real path (the
    result is then encrypted like Collect does). ``answers`` maps absolute refs to values.
    ``entity`` holds the ``meta/entity`` attributes (``dataset``, ``id``, ``create`` ...)
    and an optional ``label``.
    """
    root = ET.Element("data", {"id": report["form_id"], "version": report["version"]})
    nodes: dict[str, ET.Element] = {"/data": root}

    def node(ref: str) -> ET.Element:
        if ref in nodes:
            return nodes[ref]
        parent_ref, _, name = ref.rpartition("/")
        el = ET.SubElement(node(parent_ref), name)
        nodes[ref] = el
        return el

    for ref, value in answers.items():
        node(ref).text = str(value)
    meta = node("/data/meta")
    if entity:
        attrs = {k: str(v) for k, v in entity.items() if k != "label"}
        ent = ET.SubElement(meta, "entity", attrs)
        ET.SubElement(ent, "label").text = entity.get("label", "")
    ET.SubElement(meta, "instanceID").text = instance_id
    if deprecated_id:
        ET.SubElement(meta, "deprecatedID").text = deprecated_id
    body = ET.tostring(root, encoding="unicode")
    return ("<?xml version='1.0' encoding='UTF-8' ?>" + body).encode("utf-8")
