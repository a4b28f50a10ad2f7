"""Translations and the translator workflow.

Every text has a key (``SAF1.label``, ``form.consent.label``, ``choice.office.dhaka``...).
Source texts are English: the instrument's in ``instrument.json``, a context's own texts and
wording overrides in its ``context.json``. Translations live per language:

* ``instruments/<instrument>/i18n/<code>.json`` for the instrument's texts, shared by contexts;
* ``instruments/contexts/<name>/i18n/<code>.json`` for the context's own texts.

Each entry remembers the source text it translated (``source``) and a ``status``:
``draft`` (written by us or a machine, not yet checked) or ``reviewed`` (checked by a
qualified translator). When the source changes the entry is *stale*.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from form_compiler.context import Context
from form_compiler.errors import TranslationError
from form_compiler.instrument import Instrument
from form_compiler.source import Node, load_json

__all__ = [
    "SOURCE_LANGUAGE",
    "Resolved",
    "entry_location",
    "export_po",
    "export_xlsx",
    "import_file",
    "is_source",
    "resolve",
    "scored_key",
    "status_report",
    "unknown_keys",
]

SOURCE_LANGUAGE = "en"
STATUSES = ("draft", "reviewed")


@dataclass(frozen=True)
class Resolved:
    """The text to use for one key in one language, and how it was found."""

    key: str
    source: str
    text: str
    #: source | reviewed | draft | stale | missing
    state: str
    origin: str  # "instrument" | "context"


def scored_key(key: str) -> bool:
    """True for texts a rating depends on (domain/subdomain labels, hints and anchors)."""
    head = key.split(".", 1)[0]
    return len(head) >= 3 and head[:3].isupper() and head[:3].isalpha() and "." in key


def _file(base: Path, code: str) -> Path:
    return base / "i18n" / f"{code}.json"


def is_source(code: str) -> bool:
    """True for English in any region (``en``, ``en-GB``, ``en-KE``): the source texts."""
    return code.split("-", 1)[0].lower() == SOURCE_LANGUAGE


def _valid_entry(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and entry.get("status") in STATUSES
        and isinstance(entry.get("text"), str)
        and isinstance(entry.get("source"), str)
    )


def _load_entries(path: Path, display: str) -> dict:
    if not path.exists():
        return {}
    # translation files are the bulk of what a compile reads: parse them at C speed and
    # re-read with line tracking only to point at a broken entry
    data = load_json(path, display, track_lines=False)
    entries = data.get("entries", {}) if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        located = load_json(path, display)
        raise TranslationError(
            'a translation file is an object with "entries": {"key": {...}, ...}',
            file=display,
            line=located.line_of("entries") if isinstance(located, dict) else 1,
        )
    for key, entry in entries.items():
        if not _valid_entry(entry):
            located = load_json(path, display)["entries"]
            raise TranslationError(
                f'entry "{key}" must be {{"source": "...", "text": "...", "status": "draft"}} '
                '(source and text in quotes, status "draft" or "reviewed")',
                file=display,
                line=located.line_of(key),
            )
    return entries


def entry_location(
    root: Path, instrument: Instrument, context: Context, code: str, origin: str
) -> tuple[str, Node | None]:
    """The display name of ``origin``'s translation file in ``code``, and its line-tracked
    entries (``None`` when the file does not exist), for messages naming an entry's line."""
    base, display = _bases(root, instrument, context)[origin]
    path, name = _file(base, code), f"{display}/{code}.json"
    if not path.exists():
        return name, None
    entries = load_json(path, name).get("entries")
    return name, entries if isinstance(entries, Node) else None


def unknown_keys(root: Path, instrument: Instrument, context: Context, code: str) -> list[str]:
    """``file:line: ...`` for each translation entry whose key is no text of the form
    (a mistyped key silently drops its translation)."""
    known = {"instrument": instrument.texts, "context": context.texts}
    out = []
    for origin, (base, display) in _bases(root, instrument, context).items():
        entries = _load_entries(_file(base, code), f"{display}/{code}.json")
        stray = [key for key in entries if key not in known[origin]]
        if not stray:
            continue
        name, located = entry_location(root, instrument, context, code, origin)
        for key in stray:
            line = located.line_of(key) if located is not None else None
            out.append(
                f'{name}:{line}: unknown key "{key}" (a typo? its translation is not used; '
                f"keys are listed by kintsugi i18n export)"
            )
    return out


def _bases(root: Path, instrument: Instrument, context: Context) -> dict[str, tuple[Path, str]]:
    return {
        "instrument": (root / instrument.id, f"{instrument.id}/i18n"),
        "context": (root / "contexts" / context.name, f"contexts/{context.name}/i18n"),
    }


def resolve(root: Path, instrument: Instrument, context: Context, code: str) -> dict[str, Resolved]:
    """Every text of the compiled form in language ``code``."""
    bases = _bases(root, instrument, context)
    entries = {
        origin: _load_entries(_file(base, code), f"{display}/{code}.json")
        for origin, (base, display) in bases.items()
    }
    out: dict[str, Resolved] = {}
    keys = dict.fromkeys([*instrument.texts, *context.texts])
    for key in keys:
        origin = "context" if key in context.texts else "instrument"
        source = context.texts[key] if origin == "context" else instrument.texts[key]
        if is_source(code):
            out[key] = Resolved(key, source, source, "source", origin)
            continue
        entry = entries[origin].get(key)
        if entry is None or not entry["text"].strip():
            out[key] = Resolved(key, source, source, "missing", origin)
        elif entry["source"] != source:
            out[key] = Resolved(key, source, entry["text"], "stale", origin)
        else:
            out[key] = Resolved(key, source, entry["text"], entry["status"], origin)
    return out


def status_report(root: Path, instrument: Instrument, context: Context) -> list[dict]:
    """Per language: counts of reviewed, draft, stale and missing texts, and coverage."""
    rows = []
    for lang in context.languages:
        resolved = resolve(root, instrument, context, lang.code)
        counts = {"reviewed": 0, "draft": 0, "stale": 0, "missing": 0, "source": 0}
        for r in resolved.values():
            counts[r.state] += 1
        total = len(resolved)
        translated = total - counts["missing"]
        rows.append(
            {
                "context": context.name,
                "language": lang.column,
                "total": total,
                **{k: v for k, v in counts.items() if k != "source"},
                "coverage": round(100.0 * translated / total, 1) if total else 100.0,
                "is_source": is_source(lang.code),
            }
        )
    return rows


def _rows(root: Path, instrument: Instrument, context: Context, code: str) -> list[list[str]]:
    resolved = resolve(root, instrument, context, code)
    return [
        [r.key, r.origin, r.source, "" if r.state == "missing" else r.text, r.state]
        for r in resolved.values()
    ]


def export_xlsx(root: Path, instrument: Instrument, context: Context, code: str) -> bytes:
    """A workbook for translators: key, origin, source, translation, status."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font

    wb = Workbook()
    ws = wb.active
    ws.title = code
    ws.append(["key", "origin", "source (English)", "translation", "status"])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in _rows(root, instrument, context, code):
        ws.append(row)
    for col, width in zip("ABCDE", (28, 12, 60, 60, 10), strict=True):
        ws.column_dimensions[col].width = width
    for row in ws.iter_rows(min_row=2):
        for cell in row[2:4]:
            cell.alignment = Alignment(wrap_text=True, vertical="top")
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def export_po(root: Path, instrument: Instrument, context: Context, code: str) -> bytes:
    """A gettext PO file: msgctxt = key, msgid = source; drafts and stale entries are fuzzy."""
    import polib

    po = polib.POFile()
    po.metadata = {
        "Project-Id-Version": f"{instrument.id} {instrument.version} / {context.name}",
        "Language": code,
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=UTF-8",
        "Content-Transfer-Encoding": "8bit",
    }
    for key, origin, source, text, state in _rows(root, instrument, context, code):
        entry = polib.POEntry(msgctxt=key, msgid=source, msgstr=text, occurrences=[(origin, "")])
        if state in ("draft", "stale"):
            entry.flags.append("fuzzy")
        po.append(entry)
    return str(po).encode("utf-8")


def _read_import(path: Path) -> list[tuple[str, str, str, str]]:
    """(key, source, text, status) rows from an XLSX or PO file a translator returns."""
    if path.suffix == ".po":
        import polib

        po = polib.pofile(str(path))
        return [
            (e.msgctxt or "", e.msgid, e.msgstr, "draft" if "fuzzy" in e.flags else "reviewed")
            for e in po
            if e.msgstr
        ]
    if path.suffix == ".xlsx":
        from openpyxl import load_workbook

        wb = load_workbook(path, read_only=True)
        ws = wb.active
        rows = []
        for i, row in enumerate(ws.iter_rows(min_row=2, values_only=True), start=2):
            key, _origin, source, text, status = (list(row) + [None] * 5)[:5]
            if not key or not text:
                continue
            status = (status or "draft").strip().lower()
            if status not in STATUSES:
                status = "draft"  # "stale"/"missing" from the export: a new translation is a draft
            if not isinstance(source, str):
                raise TranslationError(
                    f"row {i}: the source column is empty", file=path.name, line=i
                )
            rows.append((str(key), source, str(text), status))
        return rows
    raise TranslationError("import takes a .po or .xlsx file", file=path.name)


def import_file(
    root: Path, instrument: Instrument, context: Context, code: str, path: Path
) -> dict:
    """Merge a translator's file into the translation files; return counts.

    A row whose source text no longer matches the current source is refused (it translates
    an old text); translations become ``reviewed`` only when the file says so.
    """
    if is_source(code):
        raise TranslationError(
            "English is the source language; edit instrument.json or context.json"
        )
    resolved = resolve(root, instrument, context, code)
    bases = _bases(root, instrument, context)
    files: dict[str, dict] = {}
    counts = {"updated": 0, "unchanged": 0, "refused_stale": 0, "unknown": 0}
    for key, source, text, status in _read_import(path):
        current = resolved.get(key)
        if current is None:
            counts["unknown"] += 1
            continue
        if source != current.source:
            counts["refused_stale"] += 1
            continue
        base, _display = bases[current.origin]
        target = _file(base, code)
        doc = files.get(current.origin)
        if doc is None:
            doc = (
                json.loads(target.read_text(encoding="utf-8-sig"))
                if target.exists()
                else {
                    "language": code,
                    "entries": {},
                }
            )
            files[current.origin] = doc
        new = {"source": source, "text": text, "status": status}
        if doc["entries"].get(key) == new:
            counts["unchanged"] += 1
        else:
            doc["entries"][key] = new
            counts["updated"] += 1
    for origin, doc in files.items():
        target = _file(bases[origin][0], code)
        target.parent.mkdir(parents=True, exist_ok=True)
        doc["entries"] = dict(sorted(doc["entries"].items()))
        target.write_text(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return counts
