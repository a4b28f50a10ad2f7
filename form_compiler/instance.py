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

__all__ = ["Assessment", "AssessmentReader", "read_assessment", "value_at"]


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


class _Paths:
    """Absolute ``/data/a/b`` refs compiled into a tree of local names, read in one walk.

    A walk visits only the elements on the way to a ref and gives each ref what
    :func:`value_at` gives it: at each level the first child of a name only, the text stripped
    (None when absent or empty), the ref's root name ignored.
    """

    __slots__ = ("_slots", "_tree", "_width")

    def __init__(self, refs: list[str]) -> None:
        #: local name -> (slot, subtree) at each level
        self._tree: dict[str, tuple[int, dict]] = {}
        slots: dict[tuple[str, ...], int] = {}
        self._slots: list[int] = []  # ref i -> its slot
        for ref in refs:
            parts = tuple(ref.strip("/").partition("/")[2].split("/"))
            if not all(parts) or any("{" in p or "}" in p for p in parts):
                # the root itself, an empty step, a brace (never in a local name): no value
                self._slots.append(-1)
                continue
            level = self._tree
            for depth in range(1, len(parts) + 1):
                slot = slots.setdefault(parts[:depth], len(slots))
                level = level.setdefault(parts[depth - 1], (slot, {}))[1]
            self._slots.append(slots[parts])
        self._width = len(slots)

    def read(self, root: ET.Element) -> list[str | None]:
        """The value of each ref, in the order of the refs given."""
        found: list[Any] = [_ABSENT] * self._width
        stack = [(root, self._tree)]
        while stack:
            node, level = stack.pop()
            for child in node:
                tag = child.tag
                entry = level.get(tag)
                if entry is None:
                    if not isinstance(tag, str) or tag[:1] != "{":
                        continue
                    entry = level.get(_local(tag))
                    if entry is None:
                        continue
                slot, below = entry
                if found[slot] is not _ABSENT:
                    continue  # not the first child of that name: value_at never looks here
                text = child.text
                found[slot] = (text.strip() or None) if text is not None else None
                if below:
                    stack.append((child, below))
        return [None if i < 0 or found[i] is _ABSENT else found[i] for i in self._slots]


_ABSENT = object()


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


_FIELDS = ("consent", "case_code", "case_code_new", "assessment_date", "collection_point",
           "casework_type", "office", "assessor", "return_environment")  # fmt: skip


class AssessmentReader:
    """:func:`read_assessment` for one report, its refs resolved once: the server reads every
    submission of a form version with the same reader."""

    __slots__ = ("_domains", "_paths", "_version")

    def __init__(self, report: Mapping[str, Any]) -> None:
        refs = report["refs"]
        paths = [refs[name] for name in _FIELDS]
        #: (domain id, subdomain ids, counted survivor values), in report order
        self._domains: list[tuple[str, tuple[str, ...], set[str]]] = []
        for domain in report["domains"]:
            subs = tuple(domain["subdomains"])
            ratings = list(domain["rating_refs"])
            if len(subs) != len(ratings):
                raise ValueError(f"domain {domain['id']}: not one rating ref per subdomain")
            paths += [*ratings, domain["score_ref"], domain["survivor_rating_ref"]]
            paths += [domain["note_ref"], domain["survivor_comment_ref"]]
            self._domains.append((domain["id"], subs, set(domain["counted_values"])))
        self._paths = _Paths(paths)
        self._version = report.get("instrument", {}).get("version")

    def read(self, root: ET.Element) -> Assessment:
        """Extract an :class:`Assessment` from an instance's root element."""
        values = iter(self._paths.read(root))
        head = {name: next(values) for name in _FIELDS}  # named as Assessment's fields
        code_new = head.pop("case_code_new")
        head["case_code"] = head["case_code"] or code_new
        assessment = Assessment(
            **head, case_entity_id=_case_entity_id(root), instrument_version=self._version
        )
        for did, subs, counted in self._domains:
            for sub_id in subs:
                assessment.ratings[sub_id] = next(values)
            assessment.device_scores[did] = _float(next(values))
            view = next(values)
            assessment.survivor_view[did] = view if view in counted else None
            note, comment = next(values), next(values)
            if note:
                assessment.notes[did] = note
            if comment:
                assessment.survivor_comments[did] = comment
        return assessment


def _case_entity_id(root: ET.Element) -> str | None:
    """The id of the last ``entity`` block of the ``cases`` dataset, lowercased, no ``uuid:``."""
    entity_id = None
    for el in root.iter():  # the attribute first: cheaper than the name, and rarely there
        if el.get("dataset") == "cases" and isinstance(el.tag, str) and _local(el.tag) == "entity":
            entity_id = (el.get("id") or "").removeprefix("uuid:").lower() or None
    return entity_id


def read_assessment(root: ET.Element, report: Mapping[str, Any]) -> Assessment:
    """Extract an :class:`Assessment` from an instance's root element (see
    :class:`AssessmentReader` to read many instances of one report)."""
    return AssessmentReader(report).read(root)


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
