"""The instrument definition: domains, subdomains, scale, scoring, collection points.

An instrument lives in ``instruments/<id>/instrument.json``; its translations in
``instruments/<id>/i18n/<lang>.json``. Everything here is structure that no context may
change; a *wording pack* (:func:`apply_wording_pack`) may replace labels, hints and anchors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from form_compiler.errors import InstrumentError
from form_compiler.source import Node, load_json

__all__ = [
    "Domain",
    "Instrument",
    "Scoring",
    "Subdomain",
    "apply_wording_pack",
    "load_instrument",
]

_ID = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")
_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
POINTS = ("1", "2", "3", "4")


@dataclass(frozen=True)
class Subdomain:
    """One rated construct (1 = most vulnerable, 4 = least)."""

    id: str
    label: str
    hint: str
    anchors: dict[str, str]


@dataclass(frozen=True)
class Domain:
    """A domain and its subdomains; its score is the mean of the counted ratings."""

    id: str
    label: str
    subdomains: tuple[Subdomain, ...]


@dataclass(frozen=True)
class Scoring:
    """The one scoring definition both the XForm calculates and the Python scorer use."""

    counted_values: tuple[str, ...]
    excluded_values: tuple[str, ...]
    min_counted: int
    min_counted_fraction: float
    decimals: int
    bands: tuple[dict[str, Any], ...]
    closure: dict[str, Any]
    change: dict[str, float]
    regression_drop: float
    survivor_gap: int

    def minimum_for(self, n_subdomains: int) -> int:
        """How many counted ratings a domain of ``n_subdomains`` needs for a score."""
        import math

        return max(self.min_counted, math.ceil(self.min_counted_fraction * n_subdomains))

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form, embedded in each compiled form's report."""
        return {
            "method": "mean",
            "counted_values": list(self.counted_values),
            "excluded_values": list(self.excluded_values),
            "min_counted": self.min_counted,
            "min_counted_fraction": self.min_counted_fraction,
            "decimals": self.decimals,
            "bands": [dict(b) for b in self.bands],
            "closure": dict(self.closure),
            "change": dict(self.change),
            "regression_drop": self.regression_drop,
            "survivor_gap": self.survivor_gap,
        }


@dataclass(frozen=True)
class Instrument:
    """A loaded, validated instrument."""

    id: str
    title: str
    version: str
    wording_kind: str
    wording_notice: str
    scale_labels: dict[str, str]
    excluded_labels: dict[str, str]
    scoring: Scoring
    collection_points: tuple[tuple[str, str], ...]
    case_code_pattern: str
    case_code_example: str
    case_code_hint: str
    domains: tuple[Domain, ...]
    version_map: dict[str, Any]
    form_text: dict[str, str]
    path: Path
    file: str = ""
    #: source texts by translation key (e.g. ``SAF1.label``), for the i18n workflow
    texts: dict[str, str] = field(default_factory=dict)

    def subdomain(self, sub_id: str) -> Subdomain | None:
        """The subdomain with ``sub_id``, or None."""
        for domain in self.domains:
            for sub in domain.subdomains:
                if sub.id == sub_id:
                    return sub
        return None

    @property
    def subdomain_ids(self) -> list[str]:
        return [s.id for d in self.domains for s in d.subdomains]


def _require(node: Node, key: str, kind: type | tuple[type, ...], file: str) -> Any:
    if not isinstance(node, dict) or key not in node:
        line = getattr(node, "line", None)
        raise InstrumentError(f'missing required field "{key}"', file=file, line=line)
    value = node[key]
    if not isinstance(value, kind):
        raise InstrumentError(f'field "{key}" has the wrong type', file=file, line=node.line)
    return value


def _texts(
    domains: tuple[Domain, ...],
    scale: dict[str, str],
    points,
    title: str,
    form_text: dict[str, str],
) -> dict[str, str]:
    texts = {"title": title}
    for key, text in form_text.items():
        texts[f"form.{key}"] = text
    for value, label in scale.items():
        texts[f"scale.{value}"] = label
    for value, label in points:
        texts[f"collection_point.{value}"] = label
    for d in domains:
        texts[f"{d.id}.label"] = d.label
        for s in d.subdomains:
            texts[f"{s.id}.label"] = s.label
            texts[f"{s.id}.hint"] = s.hint
            for p, anchor in s.anchors.items():
                texts[f"{s.id}.anchor.{p}"] = anchor
    return texts


def load_instrument(root: Path, instrument_id: str = "aso") -> Instrument:
    """Load and validate ``<root>/<instrument_id>/instrument.json``.

    :raises InstrumentError: naming the file, line and rule broken
    """
    path = root / instrument_id / "instrument.json"
    file = f"{instrument_id}/instrument.json"
    data = load_json(path, file)
    if not isinstance(data, Node):
        raise InstrumentError("the instrument must be a JSON object", file=file, line=1)
    version = _require(data, "version", str, file)
    if not _SEMVER.match(version):
        raise InstrumentError(
            f'version "{version}" is not semver (MAJOR.MINOR.PATCH)', file=file, line=data.line
        )
    scale = _require(data, "scale", dict, file)
    points = [p["value"] for p in _require(scale, "points", list, file)]
    if tuple(points) != POINTS:
        raise InstrumentError(
            "the scale must be exactly the points 1, 2, 3, 4", file=file, line=scale.line
        )
    excluded = {e["value"]: e["label"] for e in _require(scale, "excluded", list, file)}
    if set(excluded) & set(POINTS):
        raise InstrumentError(
            "an excluded answer may not reuse a scale point", file=file, line=scale.line
        )
    sc = _require(data, "scoring", dict, file)
    if sc.get("method") != "mean":
        raise InstrumentError('scoring.method must be "mean"', file=file, line=sc.line)
    scoring = Scoring(
        counted_values=POINTS,
        excluded_values=tuple(excluded),
        min_counted=int(_require(sc, "min_counted", int, file)),
        min_counted_fraction=float(_require(sc, "min_counted_fraction", (int, float), file)),
        decimals=int(_require(sc, "decimals", int, file)),
        bands=tuple(dict(b) for b in _require(sc, "bands", list, file)),
        closure=dict(_require(sc, "closure", dict, file)),
        change=dict(_require(sc, "change", dict, file)),
        regression_drop=float(_require(sc, "regression_drop", (int, float), file)),
        survivor_gap=int(_require(sc, "survivor_gap", int, file)),
    )
    domains = []
    seen: set[str] = set()
    for dnode in _require(data, "domains", list, file):
        did = _require(dnode, "id", str, file)
        if not _ID.match(did) or did in seen:
            raise InstrumentError(
                f'domain id "{did}" is not a unique UPPER_CASE id', file=file, line=dnode.line
            )
        seen.add(did)
        subs = []
        for snode in _require(dnode, "subdomains", list, file):
            sid = _require(snode, "id", str, file)
            if not _ID.match(sid) or sid in seen:
                raise InstrumentError(
                    f'subdomain id "{sid}" is not a unique UPPER_CASE id',
                    file=file,
                    line=snode.line,
                )
            seen.add(sid)
            anchors = _require(snode, "anchors", dict, file)
            if tuple(sorted(anchors)) != POINTS:
                raise InstrumentError(
                    f"subdomain {sid} needs one anchor for each point 1-4",
                    file=file,
                    line=snode.line,
                )
            subs.append(
                Subdomain(
                    sid, _require(snode, "label", str, file), snode.get("hint", ""), dict(anchors)
                )
            )
        if not 3 <= len(subs) <= 5:
            raise InstrumentError(
                f"domain {did} must have 3 to 5 subdomains, not {len(subs)}",
                file=file,
                line=dnode.line,
            )
        domains.append(Domain(did, _require(dnode, "label", str, file), tuple(subs)))
    if len(domains) != 6:
        raise InstrumentError(
            f"the instrument must have the six ASO domains, not {len(domains)}",
            file=file,
            line=data.line,
        )
    case_code = _require(data, "case_code", dict, file)
    try:
        re.compile(case_code["pattern"])
    except re.error as err:
        raise InstrumentError(
            f"case_code.pattern is not a valid regular expression: {err}",
            file=file,
            line=case_code.line,
        ) from err
    cps = tuple((c["value"], c["label"]) for c in _require(data, "collection_points", list, file))
    if "intake" not in {value for value, _label in cps}:
        # the form creates the case at "intake" (case code entry, entity create) and the
        # server schedules visits from it: a renamed first visit makes cases impossible
        raise InstrumentError(
            'collection_points must include the value "intake" (the first visit, where the '
            "case is created); keep that value and change only its label",
            file=file,
            line=data.line_of("collection_points"),
        )
    scale_labels = {p["value"]: p["label"] for p in scale["points"]}
    wording = data.get("wording", {})
    title = _require(data, "title", str, file)
    inst = Instrument(
        id=_require(data, "id", str, file),
        title=title,
        version=version,
        wording_kind=wording.get("kind", "reference"),
        wording_notice=wording.get("notice", ""),
        scale_labels=scale_labels,
        excluded_labels=excluded,
        scoring=scoring,
        collection_points=cps,
        case_code_pattern=case_code["pattern"],
        case_code_example=case_code.get("example", ""),
        case_code_hint=case_code.get("hint", ""),
        domains=tuple(domains),
        version_map=dict(data.get("version_map", {})),
        form_text={
            # the case-code hint doubles as its constraint message; both are translated
            **(
                {
                    "case_code_new.hint": case_code["hint"],
                    "case_code_new.constraint_message": case_code["hint"],
                }
                if case_code.get("hint")
                else {}
            ),
            **_require(data, "form_text", dict, file),
        },
        path=path,
        file=file,
    )
    texts = _texts(inst.domains, {**scale_labels, **excluded}, cps, title, inst.form_text)
    return replace(inst, texts=texts)


def _pack_text(text: Any, what: str, file: str, line: int) -> None:
    """A pack's text must be text: null or "" would show as "None" or a blank question."""
    if not isinstance(text, str) or not text.strip():
        raise InstrumentError(
            f"{what} needs the new text; leave the key out to keep the instrument's wording",
            file=file,
            line=line,
        )


def apply_wording_pack(instrument: Instrument, pack_path: Path) -> Instrument:
    """Replace labels, hints and anchors from a licensed wording pack; never structure.

    A pack is JSON ``{"pack": name, "instrument": id, "subdomains": {ID: {label, hint,
    anchors}}, "domains": {ID: {label}}}``. Unknown ids or any other key are errors.
    """
    file = pack_path.name
    pack = load_json(pack_path, file)
    allowed_top = {"pack", "instrument", "notice", "domains", "subdomains"}
    for key in pack:
        if key not in allowed_top:
            raise InstrumentError(
                f'a wording pack may not set "{key}": it replaces wording, never structure',
                file=file,
                line=pack.line_of(key),
            )
    if pack.get("instrument") != instrument.id:
        raise InstrumentError(
            f'this pack is for instrument "{pack.get("instrument")}", not "{instrument.id}"',
            file=file,
            line=pack.line,
        )
    subs_over = pack.get("subdomains", {})
    doms_over = pack.get("domains", {})
    for sid, over in subs_over.items():
        if instrument.subdomain(sid) is None:
            raise InstrumentError(
                f'unknown subdomain "{sid}": a pack cannot add subdomains',
                file=file,
                line=subs_over.line_of(sid),
            )
        for key in over:
            if key not in {"label", "hint", "anchors"}:
                raise InstrumentError(
                    f'subdomain {sid}: a pack may not set "{key}"',
                    file=file,
                    line=over.line_of(key),
                )
        if "anchors" in over and not set(over["anchors"]) <= set(POINTS):
            raise InstrumentError(
                f"subdomain {sid}: anchors must be for points 1-4 only", file=file, line=over.line
            )
        for key in ("label", "hint"):
            if key in over:
                _pack_text(over[key], f"subdomain {sid}: {key}", file, over.line_of(key))
        for point, text in over.get("anchors", {}).items():
            _pack_text(
                text, f"subdomain {sid}: anchor {point}", file, over["anchors"].line_of(point)
            )
    for did, over in doms_over.items():
        if did not in {d.id for d in instrument.domains}:
            raise InstrumentError(f'unknown domain "{did}"', file=file, line=doms_over.line_of(did))
        if set(over) - {"label"}:
            raise InstrumentError(
                f"domain {did}: a pack may only change the label", file=file, line=over.line
            )
        if "label" in over:
            _pack_text(over["label"], f"domain {did}: label", file, over.line_of("label"))
    domains = []
    for d in instrument.domains:
        subs = []
        for s in d.subdomains:
            over = subs_over.get(s.id, {})
            subs.append(
                Subdomain(
                    s.id,
                    over.get("label", s.label),
                    over.get("hint", s.hint),
                    {**s.anchors, **over.get("anchors", {})},
                )
            )
        domains.append(Domain(d.id, doms_over.get(d.id, {}).get("label", d.label), tuple(subs)))
    new = replace(
        instrument,
        domains=tuple(domains),
        wording_kind=f"pack:{pack.get('pack', file)}",
        wording_notice=pack.get("notice", ""),
    )
    scale = {**instrument.scale_labels, **instrument.excluded_labels}
    texts = _texts(new.domains, scale, new.collection_points, new.title, new.form_text)
    return replace(new, texts=texts)
