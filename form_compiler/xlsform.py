"""Instrument + context + translations -> XLSForm sheets (plain dicts, as pyxform takes them).

The form's shape, with ``/data`` as root:

* ``consent`` (required) - nothing else is asked or recorded when it is "no";
* ``assessment`` (group): collection point, the case (a new case code at intake, otherwise a
  pick from the ``cases`` entity list), date, assessor, casework type, office, the
  return-environment flag; one group per domain with its subdomain ratings, an optional note
  and the optional survivor-perspective block; the score calculates; a summary screen;
  the context's local questions;
* an ``entities`` sheet: intake creates the case entity (label = case code), any later
  assessment updates it, so case lists work offline across visits.

Every score calculate is derived from :class:`~form_compiler.instrument.Scoring`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from form_compiler.context import Context
from form_compiler.i18n import Resolved
from form_compiler.instrument import Instrument

__all__ = ["ROOT", "FormPlan", "build_sheets"]

ROOT = "/data"
GROUP = f"{ROOT}/assessment"
YES_NO = "yes_no"


@dataclass
class FormPlan:
    """The sheets plus what the report needs to know about them."""

    sheets: dict[str, list[dict[str, Any]]]
    domains: list[dict[str, Any]] = field(default_factory=list)
    preconditions: dict[str, str] = field(default_factory=dict)
    case_code_ref: str = ""
    entity_properties: list[str] = field(default_factory=list)
    refs: dict[str, str] = field(default_factory=dict)


class _Texts:
    """Per-language lookups producing ``label::Lang (code)`` columns."""

    def __init__(self, context: Context, resolved: dict[str, dict[str, Resolved]]) -> None:
        self.languages = context.languages
        self.resolved = resolved

    def cols(self, column: str, key: str, fmt: str = "{}") -> dict[str, str]:
        return {
            f"{column}::{lang.column}": fmt.format(self.resolved[lang.code][key].text)
            for lang in self.languages
        }

    def compose(self, column: str, build) -> dict[str, str]:
        """A column per language built by ``build(lookup)`` where lookup(key) -> text."""
        return {
            f"{column}::{lang.column}": build(lambda k, c=lang.code: self.resolved[c][k].text)
            for lang in self.languages
        }


def _counted_expr(ref: str, counted: tuple[str, ...]) -> str:
    return "(" + " or ".join(f"{ref} = '{v}'" for v in counted) + ")"


def _optional(t: _Texts, instrument: Instrument, column: str, key: str) -> dict[str, str]:
    """``t.cols(column, key)``, or no columns when the instrument has no such text."""
    return t.cols(column, key) if key in instrument.texts else {}


def build_sheets(
    instrument: Instrument,
    context: Context,
    resolved: dict[str, dict[str, Resolved]],
    *,
    form_id: str,
    public_key: str | None,
    submission_url: str | None,
) -> FormPlan:
    """Build the XLSForm sheets for one context. The version is set by the caller."""
    t = _Texts(context, resolved)
    scoring = instrument.scoring
    survey: list[dict[str, Any]] = []
    choices: list[dict[str, Any]] = []
    plan = FormPlan(sheets={})

    def row(type_: str, name: str = "", **extra: Any) -> dict[str, Any]:
        r = {"type": type_, "name": name}
        r.update({k: v for k, v in extra.items() if v not in (None, "")})
        survey.append(r)
        return r

    # ----------------------------------------------------------------- choice lists
    for value in ("yes", "no"):
        choices.append({"list_name": YES_NO, "name": value, **t.cols("label", f"form.{value}")})
    for value, _label in instrument.collection_points:
        choices.append(
            {
                "list_name": "collection_point",
                "name": value,
                **t.cols("label", f"collection_point.{value}"),
            }
        )
    for list_name in ("casework_type", "office"):
        for item in context.choices.get(list_name, []):
            choices.append(
                {
                    "list_name": list_name,
                    "name": item["value"],
                    **t.cols("label", f"choice.{list_name}.{item['value']}"),
                }
            )
    for domain in instrument.domains:
        for sub in domain.subdomains:
            for point in scoring.counted_values:
                choices.append(
                    {
                        "list_name": f"r_{sub.id}",
                        "name": point,
                        **t.compose(
                            "label",
                            lambda tx, s=sub.id, p=point: (
                                f"{p} - {tx(f'scale.{p}')}: {tx(f'{s}.anchor.{p}')}"
                            ),
                        ),
                    }
                )
            for value in scoring.excluded_values:
                choices.append(
                    {"list_name": f"r_{sub.id}", "name": value, **t.cols("label", f"scale.{value}")}
                )
    for point in scoring.counted_values:
        choices.append(
            {
                "list_name": "survivor_view",
                "name": point,
                **t.compose("label", lambda tx, p=point: f"{p} - {tx(f'scale.{p}')}"),
            }
        )
    choices.append(
        {"list_name": "survivor_view", "name": "99", **t.cols("label", "form.survivor_rating.skip")}
    )

    # ----------------------------------------------------------------- survey
    row("start", "start")
    row("end", "end")
    has_guidance = "ctx.guidance" in context.texts
    intro = t.compose(
        "label",
        lambda tx: (tx("ctx.guidance") + " " if has_guidance else "") + tx("form.wording.note"),
    )
    row("note", "intro", **intro)
    row(
        f"select_one {YES_NO}",
        "consent",
        required="yes",
        **t.cols("label", "form.consent.label"),
        **t.cols("hint", "form.consent.hint"),
    )
    row("note", "refused", relevant="${consent} = 'no'", **t.cols("label", "form.refused.note"))
    row("begin_group", "assessment", relevant="${consent} = 'yes'")
    row(
        "select_one collection_point",
        "collection_point",
        required="yes",
        **t.cols("label", "form.collection_point.label"),
    )
    pattern = instrument.case_code_pattern.replace("'", "")
    row(
        "text",
        "case_code_new",
        relevant="${collection_point} = 'intake'",
        required="yes",
        constraint=f"regex(., '{pattern}')",
        **t.cols("label", "form.case_code_new.label"),
        **_optional(t, instrument, "hint", "form.case_code_new.hint"),
        **_optional(t, instrument, "constraint_message", "form.case_code_new.constraint_message"),
    )
    row(
        "select_one_from_file cases.csv",
        "case",
        relevant="${collection_point} != '' and ${collection_point} != 'intake'",
        required="yes",
        **t.cols("label", "form.case.label"),
        **t.cols("hint", "form.case.hint"),
    )
    row(
        "calculate",
        "case_code",
        calculation=(
            "if(${collection_point} = 'intake', ${case_code_new}, "
            "instance('cases')/root/item[name = ${case}]/case_code)"
        ),
        save_to="case_code",
    )
    row("calculate", "new_case_id", calculation="once(uuid())")
    row(
        "date",
        "assessment_date",
        required="yes",
        default="today()",
        save_to="last_assessment_date",
        **t.cols("label", "form.assessment_date.label"),
    )
    row("text", "assessor", required="yes", **t.cols("label", "form.assessor.label"))
    row(
        "select_one casework_type",
        "casework_type",
        required="yes",
        save_to="casework_type",
        **t.cols("label", "form.casework_type.label"),
    )
    if context.choices.get("office"):
        row(
            "select_one office",
            "office",
            required="yes",
            save_to="office",
            **t.cols("label", "form.office.label"),
        )
    else:
        row("text", "office", save_to="office", **t.cols("label", "form.office.label"))
    row(
        f"select_one {YES_NO}",
        "return_environment",
        required="yes",
        **t.cols("label", "form.return_environment.label"),
    )
    row(
        "calculate",
        "last_collection_point",
        calculation="${collection_point}",
        save_to="last_collection_point",
    )

    for domain in instrument.domains:
        did = domain.id
        row("begin_group", did, **t.cols("label", f"{did}.label"))
        for sub in domain.subdomains:
            row(
                f"select_one r_{sub.id}",
                sub.id,
                required="yes",
                **t.cols("label", f"{sub.id}.label"),
                **t.cols("hint", f"{sub.id}.hint"),
            )
        row(
            "text",
            f"{did}_note",
            appearance="multiline",
            **t.cols("label", "form.domain_note.label"),
        )
        row("begin_group", f"{did}_sv", **t.cols("label", "form.survivor_view.label"))
        row(
            "select_one survivor_view",
            f"{did}_sv_rating",
            **t.cols("label", "form.survivor_rating.label"),
        )
        row("text", f"{did}_sv_comment", **t.cols("label", "form.survivor_comment.label"))
        row("end_group", f"{did}_sv")
        row("end_group", did)

        refs = ["${" + s.id + "}" for s in domain.subdomains]
        minimum = scoring.minimum_for(len(domain.subdomains))
        count = " + ".join(f"if({_counted_expr(r, scoring.counted_values)}, 1, 0)" for r in refs)
        total = " + ".join(
            f"if({_counted_expr(r, scoring.counted_values)}, number({r}), 0)" for r in refs
        )
        row("calculate", f"{did}_count", calculation=count)
        row("calculate", f"{did}_sum", calculation=total)
        row(
            "calculate",
            f"{did}_score",
            calculation=f"if(${{{did}_count}} >= {minimum}, ${{{did}_sum}} div ${{{did}_count}}, '')",
            save_to=f"score_{did}",
        )
        row(
            "calculate",
            f"{did}_display",
            calculation=f"if(${{{did}_score}} = '', '-', round(${{{did}_score}}, {scoring.decimals}))",
        )
        plan.domains.append(
            {
                "id": did,
                "label": domain.label,
                "subdomains": [s.id for s in domain.subdomains],
                "score_ref": f"{GROUP}/{did}_score",
                "count_ref": f"{GROUP}/{did}_count",
                "rating_refs": [f"{GROUP}/{did}/{s.id}" for s in domain.subdomains],
                "note_ref": f"{GROUP}/{did}/{did}_note",
                "survivor_rating_ref": f"{GROUP}/{did}/{did}_sv/{did}_sv_rating",
                "survivor_comment_ref": f"{GROUP}/{did}/{did}_sv/{did}_sv_comment",
                "counted_values": list(scoring.counted_values),
                "excluded_values": list(scoring.excluded_values),
                "min_counted": minimum,
            }
        )

    row("begin_group", "summary", **t.cols("label", "form.summary.label"))
    for domain in instrument.domains:
        row(
            "note",
            f"{domain.id}_summary",
            **t.cols("label", f"{domain.id}.label", "{}: ${{" + domain.id + "_display}}"),
        )
    row("end_group", "summary")

    if context.local_questions:
        row("begin_group", "local", **t.cols("label", "form.local.label"))
        for q in context.local_questions:
            name = q["name"]
            extra = t.cols("label", f"local.{name}.label")
            if q.get("hint"):
                extra.update(t.cols("hint", f"local.{name}.hint"))
            row(q["type"], name, required="yes" if q.get("required") else "", **extra)
            for item in q.get("choices", []):
                choices.append(
                    {
                        "list_name": q["type"].split(" ", 1)[1],
                        "name": item["value"],
                        **t.cols("label", f"local.{name}.choice.{item['value']}"),
                    }
                )
        row("end_group", "local")
    row("end_group", "assessment")

    settings = {
        "form_title": resolved[context.default_language.code]["ctx.title"].text,
        "form_id": form_id,
        "default_language": context.default_language.column,
        "instance_name": (
            "if(${consent} = 'no', concat('consent-refused ', format-date(now(), '%Y-%m-%d')), "
            "concat(${case_code}, ' ', ${collection_point}, ' ', ${assessment_date}))"
        ),
        "allow_choice_duplicates": "yes",
    }
    if public_key:
        settings["public_key"] = public_key
    if submission_url:
        settings["submission_url"] = submission_url
    entities = [
        {
            "list_name": "cases",
            "label": "${case_code}",
            "entity_id": "coalesce(${case}, ${new_case_id})",
            "create_if": "${consent} = 'yes' and ${collection_point} = 'intake'",
            "update_if": "${consent} = 'yes' and ${collection_point} != '' and ${collection_point} != 'intake'",
        }
    ]
    plan.sheets = {
        "survey": survey,
        "choices": choices,
        "settings": [settings],
        "entities": entities,
    }
    plan.preconditions = {
        f"{ROOT}/consent": "yes",
        f"{GROUP}/collection_point": "intake",
        f"{GROUP}/case_code_new": instrument.case_code_example,
    }
    plan.case_code_ref = f"{GROUP}/case_code_new"
    plan.entity_properties = [r["save_to"] for r in survey if r.get("save_to")]
    plan.refs = {
        "consent": f"{ROOT}/consent",
        "collection_point": f"{GROUP}/collection_point",
        "case_code": f"{GROUP}/case_code",
        "case_code_new": f"{GROUP}/case_code_new",
        "case": f"{GROUP}/case",
        "assessment_date": f"{GROUP}/assessment_date",
        "assessor": f"{GROUP}/assessor",
        "casework_type": f"{GROUP}/casework_type",
        "office": f"{GROUP}/office",
        "return_environment": f"{GROUP}/return_environment",
    }
    return plan
