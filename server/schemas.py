"""Marshmallow schemas of the admin JSON API (``/api/v1``); the OpenAPI document is built from
these (see :mod:`server.openapi`), so they are the single description of every body."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from server.models import FormState, Role, SubmissionStatus


class ErrorSchema(Schema):
    """Every error body."""

    error = fields.String(required=True, metadata={"description": "error class"})
    message = fields.String(required=True, metadata={"description": "for the reader"})
    code = fields.Integer(required=True, metadata={"description": "HTTP status"})
    fields_ = fields.Dict(
        data_key="fields",
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "per-field validation messages"},
    )


PROJECT_ROLES = [Role.MANAGER.value, Role.VIEWER.value]


class MembershipSchema(Schema):
    """A web user's role in one project (admins have none: they see every project)."""

    project_id = fields.Integer(required=True)
    project_name = fields.String(required=True)
    user_id = fields.Integer(required=True, attribute="web_user_id")
    username = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(PROJECT_ROLES))


class ProjectRoleSchema(Schema):
    role = fields.String(
        required=True,
        validate=validate.OneOf(PROJECT_ROLES),
        metadata={"description": "the user's role in this project"},
    )


class MeSchema(Schema):
    id = fields.Integer(required=True)
    username = fields.String(required=True)
    role = fields.String(
        required=True,
        validate=validate.OneOf([r.value for r in Role]),
        metadata={"description": "admin is site-wide; others act through their projects' roles"},
    )
    projects = fields.List(fields.Nested(MembershipSchema), required=True)
    csrf_token = fields.String(metadata={"description": "send as X-CSRF-Token with the cookie"})


class ProjectSchema(Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    encrypted = fields.Boolean(required=True)
    created_at = fields.DateTime(required=True)
    key_fingerprint = fields.String(allow_none=True)


class ProjectCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    passphrase = fields.String(
        load_only=True,
        validate=validate.Length(min=10),
        metadata={"description": "makes the project encrypted; never stored"},
    )


class FormVersionSchema(Schema):
    id = fields.Integer(required=True)
    version = fields.String(required=True)
    title = fields.String(required=True)
    md5 = fields.String(required=True)
    encrypted = fields.Boolean(required=True)
    key_fingerprint = fields.String(allow_none=True)
    published_at = fields.DateTime(required=True)


class FormSchema(Schema):
    id = fields.Integer(required=True)
    xml_form_id = fields.String(required=True)
    title = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf([s.value for s in FormState]))
    current_version = fields.Nested(FormVersionSchema, allow_none=True)
    versions = fields.List(fields.Nested(FormVersionSchema))


class FormPublishContextSchema(Schema):
    context = fields.String(required=True, validate=validate.Length(min=1, max=200))


class FormPublishResultSchema(Schema):
    form = fields.Nested(FormSchema, required=True)
    created = fields.Boolean(required=True, metadata={"description": "false: same bytes again"})


class FormStateSchema(Schema):
    state = fields.String(required=True, validate=validate.OneOf([s.value for s in FormState]))


class AppUserSchema(Schema):
    id = fields.Integer(required=True)
    display_name = fields.String(required=True)
    form_scope = fields.List(fields.String(), allow_none=True)
    created_at = fields.DateTime(required=True)
    revoked_at = fields.DateTime(allow_none=True)


class AppUserCreateSchema(Schema):
    display_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    forms = fields.List(fields.String(), load_default=None, allow_none=True)


class AppUserCreatedSchema(AppUserSchema):
    token = fields.String(required=True, metadata={"description": "shown once"})
    server_url = fields.String(required=True, metadata={"description": "URL to give Collect"})
    qr_payload = fields.String(required=True, metadata={"description": "Collect settings QR"})


class SubmissionSchema(Schema):
    id = fields.Integer(required=True)
    xml_form_id = fields.String(required=True)
    instance_id = fields.String(required=True)
    instance_name = fields.String(allow_none=True)
    status = fields.String(
        required=True, validate=validate.OneOf([s.value for s in SubmissionStatus])
    )
    encrypted = fields.Boolean(required=True)
    flags = fields.List(fields.String(), required=True)
    flagged = fields.Boolean(required=True)
    complete = fields.Boolean(required=True)
    received_at = fields.DateTime(required=True)
    quarantine_reason = fields.String(allow_none=True)


class PageSchema(Schema):
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class SubmissionPageSchema(PageSchema):
    items = fields.List(fields.Nested(SubmissionSchema), required=True)
    quarantined_uploads = fields.Integer(
        required=True,
        metadata={"description": "uploads that could not be read as a submission (kept raw)"},
    )


class KeyStatusSchema(Schema):
    encrypted = fields.Boolean(required=True)
    unlocked = fields.Boolean(required=True)
    pending_backlog = fields.Integer(required=True)
    key_fingerprint = fields.String(allow_none=True)
    #: when an admin locked the key everywhere (None: no admin lock in force)
    locked_by_admin_at = fields.DateTime(allow_none=True)


class PassphraseSchema(Schema):
    passphrase = fields.String(required=True, load_only=True, validate=validate.Length(min=1))


class RotatedKeySchema(Schema):
    key_fingerprint = fields.String(required=True)


class CasePageSchema(PageSchema):
    items = fields.List(fields.Dict(), required=True)


class ReviewResolveSchema(Schema):
    action = fields.String(required=True, validate=validate.Length(min=1, max=64))
    case_id = fields.Integer(load_default=None, allow_none=True)
    #: create_case: the new case's code when the orphan's code is another survivor's
    case_code = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))


class WebUserSchema(Schema):
    id = fields.Integer(required=True)
    username = fields.String(required=True)
    email = fields.String(allow_none=True)
    role = fields.String(required=True)
    disabled = fields.Boolean(required=True)
    projects = fields.List(fields.Nested(MembershipSchema), required=True)


class WebUserCreateSchema(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=200))
    role = fields.String(required=True, validate=validate.OneOf([r.value for r in Role]))
    email = fields.Email(load_default=None, allow_none=True)
    password = fields.String(load_only=True, validate=validate.Length(min=12))


class WebUserCreatedSchema(WebUserSchema):
    password = fields.String(metadata={"description": "generated password, shown once"})


class NotesSchema(Schema):
    notes = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class FreeFormSchema(Schema):
    """Objects whose shape belongs to the case services (documented there)."""

    class Meta:
        unknown = "include"
