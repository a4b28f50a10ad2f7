"""Contextualisations: small overlays that adapt the instrument to a country, language and casework type.

A context lives in ``instruments/contexts/<name>/context.json`` (translations of its own texts
beside it in ``i18n/<lang>.json``). What a context MAY do: change wording and hints of existing
texts, set its languages, its local choice lists (casework types, offices), a stricter or looser
closure threshold, guidance, and add questions in the designated local section. What it MAY NOT
do: change the scale, the scoring, the domain structure or a core subdomain. Each rule has a
code; a violation names the file, the line and the rule.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from form_compiler.errors import ContextRuleError
from form_compiler.instrument import Instrument
from form_compiler.source import Node, load_json

__all__ = ["RULES", "Context", "Language", "list_contexts", "load_context"]

#: rule code -> what it protects (shown to designers)
RULES = {
    "CTX001": "a context may not redefine the scale, the scoring or the domain structure",
    "CTX002": "wording overrides may only change existing texts (labels, hints, anchors)",
    "CTX003": "the scale's point labels belong to the instrument",
    "CTX004": "local questions must be named local_* and use a plain question type",
    "CTX005": "the closure threshold must lie between 1 and 4",
    "CTX006": "languages need a name and an IANA code, and the default must be one of them",
    "CTX007": "choice lists may only be casework_type and office",
    "CTX008": "the context names an instrument version this compiler does not have",
    "CTX009": "unknown field in context",
}

_ALLOWED = {
    "id", "title", "description", "instrument", "country", "casework", "audience",
    "languages", "default_language", "guidance", "wording", "choices", "closure",
    "local_questions", "offices_note",
}  # fmt: skip
_FORBIDDEN = {
    "domains",
    "subdomains",
    "scale",
    "scoring",
    "points",
    "anchors",
    "bands",
    "collection_points",
}
_LOCAL_TYPES = re.compile(
    r"^(text|integer|decimal|date|note|select_one [a-z_][a-z0-9_]*|select_multiple [a-z_][a-z0-9_]*)$"
)
_LOCAL_NAME = re.compile(r"^local_[a-z0-9_]{1,40}$")
_LANG_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class Language:
    """A form language, rendered as ``Name (code)`` in XLSForm columns."""

    name: str
    code: str

    @property
    def column(self) -> str:
        return f"{self.name} ({self.code})"


@dataclass(frozen=True)
class Context:
    """A validated context overlay."""

    name: str
    id: str
    title: str
    languages: tuple[Language, ...]
    default_language: Language
    wording: dict[str, str]
    choices: dict[str, list[dict[str, Any]]]
    closure_threshold: float
    guidance: str
    local_questions: tuple[dict[str, Any], ...]
    country: str
    casework: str
    audience: str
    path: Path
    file: str
    #: the context's own source texts by translation key
    texts: dict[str, str] = field(default_factory=dict)


def _err(rule: str, detail: str, file: str, node: Any, key: str | None = None) -> ContextRuleError:
    line = getattr(node, "line", None)
    if key is not None and isinstance(node, Node):
        line = node.line_of(key)  # the offending member's own line
    return ContextRuleError(f"{rule}: {detail} ({RULES[rule]})", file=file, line=line)


def _no_duplicate_values(rule: str, what: str, items: list[Any], file: str) -> None:
    """Two choices with one value are one answer: the second label silently replaces the first."""
    first: dict[Any, Any] = {}
    for item in items:
        value = item.get("value")
        if value in first:
            line = item.line_of("label") if isinstance(item, Node) else None
            raise ContextRuleError(
                f'{rule}: {what}: value "{value}" is listed twice (first at line '
                f"{getattr(first[value], 'line', '?')}); give each choice its own value",
                file=file,
                line=line,
            )
        first[value] = item


def _is_choice(item: Any) -> bool:
    """A choice object: a value of a-z, 0-9 and _, and a non-empty text label."""
    return (
        isinstance(item, dict)
        and isinstance(item.get("value"), str)
        and re.match(r"^[a-z0-9_]{1,40}$", item["value"]) is not None
        and isinstance(item.get("label"), str)
        and item["label"].strip() != ""
    )


def list_contexts(root: Path) -> list[str]:
    """Names of the contexts under ``<root>/contexts`` (folders with a context.json)."""
    base = root / "contexts"
    if not base.is_dir():
        return []
    return sorted(p.parent.name for p in base.glob("*/context.json"))


def load_context(root: Path, name: str, instrument: Instrument) -> Context:
    """Load ``<root>/contexts/<name>/context.json`` and check every rule against ``instrument``.

    :raises ContextRuleError: the first rule broken, with file and line
    """
    path = root / "contexts" / name / "context.json"
    file = f"contexts/{name}/context.json"
    data = load_json(path, file)
    if not isinstance(data, Node):
        raise _err("CTX009", "the context must be a JSON object", file, None)
    for key in data:
        if key in _FORBIDDEN:
            raise _err("CTX001", f'"{key}" cannot be set by a context', file, data, key)
        if key not in _ALLOWED:
            raise _err("CTX009", f'unknown field "{key}"', file, data, key)
    inst_ref = data.get("instrument", {})
    if inst_ref.get("id", instrument.id) != instrument.id or (
        "major" in inst_ref and int(inst_ref["major"]) != int(instrument.version.split(".")[0])
    ):
        raise _err(
            "CTX008",
            f"asks for {inst_ref}, have {instrument.id} {instrument.version}",
            file,
            inst_ref or data,
        )

    languages = []
    for lang in data.get("languages", []):
        if (
            not isinstance(lang, dict)
            or not lang.get("name")
            or not isinstance(lang.get("code"), str)
            or not _LANG_CODE.match(lang["code"])
        ):
            raise _err(
                "CTX006",
                f"bad language entry {dict(lang) if isinstance(lang, dict) else lang}",
                file,
                lang if isinstance(lang, dict) else data,
            )
        languages.append(Language(lang["name"], lang["code"]))
    if not languages:
        raise _err("CTX006", "no languages", file, data)
    default_code = data.get("default_language", languages[0].code)
    default = next((lang for lang in languages if lang.code == default_code), None)
    if default is None:
        raise _err("CTX006", f'default language "{default_code}" is not listed', file, data)

    wording = data.get("wording", {})
    for key in wording:
        if key.startswith("scale."):
            raise _err("CTX003", f'"{key}" cannot be reworded by a context', file, wording, key)
        if key not in instrument.texts:
            raise _err(
                "CTX002",
                f'"{key}" is not a text of {instrument.id} {instrument.version}',
                file,
                wording,
                key,
            )
        if not isinstance(wording[key], str) or not wording[key].strip():
            raise _err(
                "CTX002",
                f'"{key}" needs the new text; remove the line to keep the instrument\'s wording',
                file,
                wording,
                key,
            )

    choices = data.get("choices", {})
    if not isinstance(choices, dict):
        raise _err("CTX007", "choices must be an object of lists", file, data, "choices")
    for list_name, items in choices.items():
        if list_name not in {"casework_type", "office"}:
            raise _err("CTX007", f'"{list_name}"', file, choices, list_name)
        if not isinstance(items, list):
            raise _err("CTX007", f'"{list_name}" must be a list', file, choices, list_name)
        for item in items:
            if not _is_choice(item):
                raise _err(
                    "CTX007",
                    f"each {list_name} choice needs a value (a-z, 0-9, _) and a label, "
                    f'both in quotes, e.g. {{"value": "kisumu", "label": "Kisumu"}}',
                    file,
                    item if isinstance(item, Node) else choices,
                    None if isinstance(item, Node) else list_name,
                )
        _no_duplicate_values("CTX007", list_name, items, file)
    if not choices.get("casework_type"):
        raise _err("CTX007", "a context must list its casework types", file, data)

    closure = data.get("closure", {})
    if set(closure) - {"threshold", "note"}:
        bad = next(k for k in closure if k not in {"threshold", "note"})
        raise _err("CTX001", "closure may only set its threshold", file, closure, bad)
    threshold = closure.get("threshold", instrument.scoring.closure["threshold"])
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise _err(
            "CTX005",
            f"threshold {json.dumps(threshold)} is not a number: write it without quotes, "
            "with a decimal point (3.5)",
            file,
            closure,
            "threshold",
        )
    threshold = float(threshold)
    if not 1.0 <= threshold <= 4.0:
        raise _err("CTX005", f"threshold {threshold}", file, closure or data, "threshold")

    local = []
    seen: set[str] = set()
    #: lists the form itself defines: a local question adding to them would change core answers
    reserved = {"yes_no", "collection_point", "casework_type", "office", "survivor_view"} | {
        f"r_{s.id}".lower() for d in instrument.domains for s in d.subdomains
    }
    local_lists: dict[str, list[Any]] = {}
    for q in data.get("local_questions", []):
        if not isinstance(q, dict):
            raise _err("CTX004", "each local question must be an object", file, data)
        name_ = q.get("name", "")
        if (
            not isinstance(name_, str)
            or not _LOCAL_NAME.match(name_)
            or name_ in seen
            or not isinstance(q.get("type"), str)
            or not _LOCAL_TYPES.match(q["type"])
            or not isinstance(q.get("label"), str)
            or not q["label"].strip()
        ):
            raise _err("CTX004", f'local question "{name_}"', file, q)
        if set(q) - {"name", "type", "label", "hint", "required", "choices"}:
            raise _err(
                "CTX004",
                f'local question "{name_}" may only set name, type, label, hint, required, choices',
                file,
                q,
            )
        if not isinstance(q.get("hint", ""), str) or not isinstance(q.get("choices", []), list):
            raise _err("CTX004", f'local question "{name_}": hint is text, choices a list', file, q)
        for item in q.get("choices", []):
            if not _is_choice(item):
                raise _err(
                    "CTX004",
                    f'each choice of local question "{name_}" needs a value (a-z, 0-9, _) and '
                    'a label, both in quotes, e.g. {"value": "yes", "label": "Yes"}',
                    file,
                    item if isinstance(item, Node) else q,
                    None if isinstance(item, Node) else "choices",
                )
        list_name = q["type"].split(" ", 1)[1] if " " in q["type"] else None
        if list_name is not None:
            if list_name in reserved and "choices" in q:
                raise _err(
                    "CTX004",
                    f'local question "{name_}" may not add choices to the form\'s own list '
                    f'"{list_name}": give it its own list, e.g. '
                    f'"{q["type"].split(" ", 1)[0]} {name_}", or drop "choices" to reuse it',
                    file,
                    q,
                    "choices",
                )
            items = q.get("choices", [])
            _no_duplicate_values(
                "CTX004", f'local question "{name_}"', local_lists.get(list_name, []) + items, file
            )
            local_lists.setdefault(list_name, []).extend(items)
        seen.add(name_)
        local.append(dict(q))

    texts: dict[str, str] = {"ctx.title": data.get("title", name)}
    if data.get("guidance"):
        texts["ctx.guidance"] = data["guidance"]
    for key, text in wording.items():
        texts[key] = text
    for list_name, items in choices.items():
        for item in items:
            texts[f"choice.{list_name}.{item['value']}"] = item["label"]
    for q in local:
        texts[f"local.{q['name']}.label"] = q["label"]
        if q.get("hint"):
            texts[f"local.{q['name']}.hint"] = q["hint"]
        for item in q.get("choices", []):
            texts[f"local.{q['name']}.choice.{item['value']}"] = item["label"]

    return Context(
        name=name,
        id=data.get("id", name),
        title=data.get("title", name),
        languages=tuple(languages),
        default_language=default,
        wording=dict(wording),
        choices={k: [dict(i) for i in v] for k, v in choices.items()},
        closure_threshold=threshold,
        guidance=data.get("guidance", ""),
        local_questions=tuple(local),
        country=data.get("country", ""),
        casework=data.get("casework", ""),
        audience=data.get("audience", "adult"),
        path=path,
        file=file,
        texts=texts,
    )
