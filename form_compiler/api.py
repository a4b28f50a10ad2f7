"""The compiler's entry points: load -> validate -> apply context -> XLSForm sheets -> XForm.

``compile_context`` is pure: it reads the instruments folder it is given and returns bytes;
the CLI decides where to write them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from form_compiler.context import Context, load_context
from form_compiler.context import list_contexts as _list_contexts
from form_compiler.errors import (
    CompilerError,
    ConversionError,
    MultipleErrorsError,
    TranslationError,
)
from form_compiler.i18n import entry_location, is_source, resolve, scored_key, unknown_keys
from form_compiler.instrument import Instrument, apply_wording_pack, load_instrument
from form_compiler.source import Node, load_json
from form_compiler.xlsform import FormPlan, build_sheets
from form_compiler.xlsx import write_xlsx

__all__ = ["COMPILER_VERSION", "CompiledForm", "compile_context", "list_contexts", "plan_context"]

#: bump when the generated form changes for the same inputs (part of the version hash)
COMPILER_VERSION = "1"


@dataclass(frozen=True)
class CompiledForm:
    """Everything one compilation produces."""

    form_id: str
    version: str
    context: str
    title: str
    languages: list[str]
    xform: bytes
    xlsx: bytes
    report: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    #: form attachments, e.g. the header-only ``cases.csv`` entity-list template
    attachments: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """A compilation up to the sheets, with its content-derived version (no pyxform yet)."""

    instrument: Instrument
    context: Context
    form_plan: FormPlan
    form_id: str
    version: str
    input_hash: str
    warnings: list[str]
    #: what the report carries beyond the sheets (scoring, refs, ...); part of the hash
    report_data: dict[str, Any] = field(default_factory=dict)


def list_contexts(instruments_root: Path) -> list[str]:
    """The context names under ``instruments_root/contexts``."""
    return _list_contexts(instruments_root)


def _form_id(context: Context) -> str:
    return "aso_" + re.sub(r"[^a-z0-9_]", "_", context.id.lower())


def plan_context(
    instruments_root: Path,
    context_name: str,
    *,
    public_key: str | None = None,
    submission_url: str | None = None,
    require_reviewed: bool = False,
    wording_pack: Path | None = None,
) -> Plan:
    """Validate and build the sheets; cheap enough to decide whether a rebuild is needed."""
    instrument = load_instrument(instruments_root, "aso")
    if wording_pack is not None:
        instrument = apply_wording_pack(instrument, wording_pack)
    context = load_context(instruments_root, context_name, instrument)
    resolved = {
        lang.code: resolve(instruments_root, instrument, context, lang.code)
        for lang in context.languages
    }
    warnings: list[str] = []
    problems = []
    for lang in context.languages:
        if is_source(lang.code):
            continue
        warnings.extend(unknown_keys(instruments_root, instrument, context, lang.code))
        states: dict[str, list[str]] = {"missing": [], "stale": [], "draft": []}
        for r in resolved[lang.code].values():
            if r.state in states:
                states[r.state].append(r.key)
        stale_scored = [k for k in states["stale"] if scored_key(k)]
        if states["missing"]:
            warnings.append(
                f"{lang.column}: {len(states['missing'])} texts untranslated (English shown)"
            )
        if stale_scored:
            warnings.append(
                f"{lang.column}: stale translations of scored items: {', '.join(stale_scored[:8])}"
                + (" ..." if len(stale_scored) > 8 else "")
            )
        if states["draft"]:
            warnings.append(
                f"{lang.column}: {len(states['draft'])} translations are unreviewed drafts"
            )
        if require_reviewed:
            files = {
                origin: entry_location(instruments_root, instrument, context, lang.code, origin)
                for origin in ("instrument", "context")
            }
            for state in ("missing", "stale", "draft"):
                for key in states[state]:
                    # point at the entry to review (or the file a missing one belongs in)
                    name, located = files[resolved[lang.code][key].origin]
                    line = located.line_of(key) if located is not None and key in located else None
                    problems.append(
                        TranslationError(
                            f"{lang.column}: {key} is {state} (--require-reviewed)",
                            file=name,
                            line=line,
                        )
                    )
    if problems:
        raise MultipleErrorsError(problems)
    form_id = _form_id(context)
    form_plan = build_sheets(
        instrument,
        context,
        resolved,
        form_id=form_id,
        public_key=public_key,
        submission_url=submission_url,
    )
    report_data = _report_data(instrument, context, form_plan)
    # the hash covers everything the outputs are made of: a change that only reaches the
    # report (a closure threshold, bands, the version map) must still give a new version
    digest = hashlib.sha256()
    digest.update(COMPILER_VERSION.encode())
    digest.update(
        json.dumps(
            {"sheets": form_plan.sheets, "report": report_data}, sort_keys=True, ensure_ascii=False
        ).encode("utf-8")
    )
    input_hash = digest.hexdigest()
    version = f"{instrument.version}-{input_hash[:10]}"
    form_plan.sheets["settings"][0]["version"] = version
    return Plan(instrument, context, form_plan, form_id, version, input_hash, warnings, report_data)


def _report_data(instrument: Instrument, context: Context, fp: FormPlan) -> dict[str, Any]:
    """The report's fields that come from the inputs but are not in the sheets."""
    scoring = instrument.scoring.as_dict()
    if context.closure_threshold != scoring["closure"]["threshold"]:
        # the context's own rule replaces the project default: say so where readers look
        scoring["closure"]["threshold"] = context.closure_threshold
        scoring["closure"]["is_default"] = False
        scoring["closure"]["notice"] = (
            f"Set by context {context.name}: every domain scored "
            f"{context.closure_threshold} or higher at the latest assessment."
        )
    return {
        "context": context.name,
        "languages": [lang.column for lang in context.languages],
        "default_language": context.default_language.column,
        "instrument": {
            "id": instrument.id,
            "version": instrument.version,
            "wording": instrument.wording_kind,
        },
        "domains": fp.domains,
        "scoring": scoring,
        "preconditions": fp.preconditions,
        "case_code_ref": fp.case_code_ref,
        "case_code_pattern": instrument.case_code_pattern,
        "refs": fp.refs,
        "entity_list": {"dataset": "cases", "properties": fp.entity_properties},
        "version_map": instrument.version_map,
        "casework_types": [c["value"] for c in context.choices.get("casework_type", [])],
        "offices": [c["value"] for c in context.choices.get("office", [])],
    }


def _conversion_error(plan: Plan, message: str) -> CompilerError:
    """pyxform's error, pointed at the local question it is about when it names one's row.

    pyxform counts rows of the generated survey sheet (header = row 1), which designers never
    see: a row that comes from a local question is reported at that question's line.
    """
    match = re.match(r"\[row : (\d+)\]\s*(.*)", message, re.S)
    survey = plan.form_plan.sheets.get("survey", [])
    if match and 2 <= int(match.group(1)) <= len(survey) + 1:
        name = survey[int(match.group(1)) - 2].get("name")
        if any(q.get("name") == name for q in plan.context.local_questions):
            line = None
            try:
                data = load_json(plan.context.path, plan.context.file)
                line = next(
                    q.line_of("name")
                    for q in data.get("local_questions", [])
                    if isinstance(q, Node) and q.get("name") == name
                )
            except (CompilerError, StopIteration, AttributeError):
                pass
            return ConversionError(
                f'local question "{name}": {match.group(2)} (for a select, give the question '
                'its "choices")',
                file=plan.context.file,
                line=line,
            )
    return ConversionError(
        f"pyxform rejected the generated form: {message}", file=plan.context.file
    )


def convert_plan(plan: Plan, *, validate: bool = False) -> CompiledForm:
    """Run pyxform (and optionally ODK Validate) on a plan's sheets."""
    from pyxform.errors import PyXFormError
    from pyxform.validators.odk_validate import ODKValidateError
    from pyxform.xls2xform import convert

    sheets = plan.form_plan.sheets
    pyxform_warnings: list[str] = []
    try:
        result = convert(
            xlsform=json.loads(json.dumps(sheets)),
            warnings=pyxform_warnings,
            validate=validate,
            form_name="data",
        )
    except PyXFormError as err:
        raise _conversion_error(plan, str(err)) from err
    except ODKValidateError as err:
        raise ConversionError(
            f"ODK Validate rejected the generated form: {err}", file=plan.context.file
        ) from err
    # result.warnings is the list passed in as ``warnings``: take each warning once
    warnings = plan.warnings + [
        f"pyxform: {w}" for w in dict.fromkeys([*pyxform_warnings, *(result.warnings or [])])
    ]
    context, fp = plan.context, plan.form_plan
    data = plan.report_data
    report = {
        "form_id": plan.form_id,
        "version": plan.version,
        "context": data["context"],
        "title": sheets["settings"][0]["form_title"],
        "languages": data["languages"],
        "default_language": data["default_language"],
        "warnings": warnings,
        **{k: v for k, v in data.items() if k not in {"context", "languages", "default_language"}},
        "encrypted": "public_key" in sheets["settings"][0],
        "input_hash": plan.input_hash,
    }
    header = ",".join(["name", "label", "__version", *fp.entity_properties]) + "\n"
    return CompiledForm(
        form_id=plan.form_id,
        version=plan.version,
        context=context.name,
        title=report["title"],
        languages=report["languages"],
        xform=result.xform.encode("utf-8"),
        xlsx=write_xlsx(sheets),
        report=report,
        warnings=warnings,
        attachments={"cases.csv": header.encode("utf-8")},
    )


def compile_context(
    instruments_root: Path,
    context: str,
    *,
    public_key: str | None = None,
    submission_url: str | None = None,
    require_reviewed: bool = False,
    wording_pack: Path | None = None,
    validate: bool = False,
) -> CompiledForm:
    """Compile one context into XForm, XLSForm and report.

    :raises CompilerError: any rule broken, with file and line where they are known
    """
    plan = plan_context(
        instruments_root,
        context,
        public_key=public_key,
        submission_url=submission_url,
        require_reviewed=require_reviewed,
        wording_pack=wording_pack,
    )
    return convert_plan(plan, validate=validate)
