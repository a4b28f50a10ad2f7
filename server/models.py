"""ORM tables of the sync server (SQLAlchemy 2 typed models).

Secrets policy: app-user tokens are stored as sha256 hashes only; project private keys only
encrypted with the project passphrase; web-user passwords as scrypt hashes, plus the Digest HA1
(see :mod:`server.auth` for why and how it is revocable).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db import Base, utcnow


class FormState(enum.StrEnum):
    """Central's form states: only ``open`` forms take new submissions and show in formList."""

    OPEN = "open"
    CLOSING = "closing"  # hidden from formList, still accepts submissions
    CLOSED = "closed"  # hidden and refuses submissions


class SubmissionStatus(enum.StrEnum):
    """Where a submission is in its life."""

    RECEIVED = "received"  # plaintext, stored
    PENDING_DECRYPTION = "pending_decryption"  # encrypted, waiting for the reconciliation worker
    DECRYPTED = "decrypted"
    QUARANTINED = "quarantined"


class Role(enum.StrEnum):
    """Web-user roles: ``admin`` is site-wide; manager and viewer are held per project
    (:class:`ProjectMembership`, decided in :mod:`server.services.access`)."""

    ADMIN = "admin"
    MANAGER = "manager"
    VIEWER = "viewer"


#: Submission.flags values
FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM = "plaintext_for_encrypted_form"
FLAG_DISCARDED_PARTS = "discarded_unexpected_parts"
#: a plaintext submission to an encrypted form, encrypted by the server to the form's key
#: (on arrival: services.submissions; stored as sent by an older server:
#: services.stored_plaintext)
FLAG_ENCRYPTED_ON_ARRIVAL = "encrypted_on_arrival"


class Project(Base):
    """A field office or programme: the scope of forms, app users and keys."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Key custody across processes (server.services.custody): when an admin last locked the
    # key (page, API, ``kintsugi lock``), cleared by an admin unlock; while set, no process
    # unlocks the key on its own (the worker waits). The generation counts admin locks: a
    # process that unlocked at an older generation forgets its key.
    key_locked_at: Mapped[dt.datetime | None] = mapped_column()
    key_lock_generation: Mapped[int] = mapped_column(default=0, server_default="0")

    keys: Mapped[list[ProjectKey]] = relationship(
        back_populates="project", order_by="ProjectKey.id"
    )
    forms: Mapped[list[Form]] = relationship(back_populates="project", order_by="Form.id")

    @property
    def active_key(self) -> ProjectKey | None:
        """The key new form versions are published with."""
        for key in reversed(self.keys):
            if key.active:
                return key
        return None


class ProjectKey(Base):
    """A project's RSA key pair; historic keys are kept so old submissions stay decryptable."""

    __tablename__ = "project_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    public_key_b64: Mapped[str] = mapped_column(Text)  # DER SubjectPublicKeyInfo, base64
    fingerprint: Mapped[str] = mapped_column(String(128), index=True)
    # PKCS#8 PEM encrypted with the project passphrase; a plaintext private key is never stored
    encrypted_private_pem: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    project: Mapped[Project] = relationship(back_populates="keys")


class Form(Base):
    """A form (xmlFormId) in a project; its published bytes live in :class:`FormVersion`."""

    __tablename__ = "forms"
    __table_args__ = (UniqueConstraint("project_id", "xml_form_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    xml_form_id: Mapped[str] = mapped_column(String(255))
    title: Mapped[str] = mapped_column(String(500), default="")
    state: Mapped[str] = mapped_column(String(16), default=FormState.OPEN.value)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    project: Mapped[Project] = relationship(back_populates="forms")
    versions: Mapped[list[FormVersion]] = relationship(
        back_populates="form", order_by="FormVersion.id"
    )

    @property
    def current_version(self) -> FormVersion | None:
        """The most recently published version (the one in formList)."""
        return self.versions[-1] if self.versions else None


class FormVersion(Base):
    """One published version of a form; every version stays downloadable by hash."""

    __tablename__ = "form_versions"
    __table_args__ = (UniqueConstraint("form_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    form_id: Mapped[int] = mapped_column(ForeignKey("forms.id"), index=True)
    version: Mapped[str] = mapped_column(String(255))  # "" when the form has none
    title: Mapped[str] = mapped_column(String(500), default="")
    # deferred: the ingest path loads versions on every upload and must not pull the XForm
    xml: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    md5: Mapped[str] = mapped_column(String(32), index=True)
    key_fingerprint: Mapped[str | None] = mapped_column(String(128))
    public_key_b64: Mapped[str | None] = mapped_column(Text)
    submission_url: Mapped[str | None] = mapped_column(Text)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, deferred=True)  # compiler report
    published_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    form: Mapped[Form] = relationship(back_populates="versions")
    attachments: Mapped[list[FormAttachment]] = relationship(
        back_populates="form_version", order_by="FormAttachment.id"
    )

    @property
    def encrypted(self) -> bool:
        """True when this version declares a public key (Collect encrypts its submissions)."""
        return bool(self.public_key_b64)


class FormAttachment(Base):
    """A media file or entity list a form version expects (listed in its manifest)."""

    __tablename__ = "form_attachments"
    __table_args__ = (UniqueConstraint("form_version_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    form_version_id: Mapped[int] = mapped_column(ForeignKey("form_versions.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16), default="file")  # file | entityList
    dataset: Mapped[str | None] = mapped_column(String(255))  # for entity lists
    blob_key: Mapped[str | None] = mapped_column(String(255))
    md5: Mapped[str | None] = mapped_column(String(32))
    size: Mapped[int | None] = mapped_column(Integer)
    content_type: Mapped[str] = mapped_column(String(100), default="application/octet-stream")

    form_version: Mapped[FormVersion] = relationship(back_populates="attachments")


class AppUser(Base):
    """A device credential: a token in the URL, stored hashed, revocable, project-scoped."""

    __tablename__ = "app_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    form_scope: Mapped[list[str] | None] = mapped_column(JSON)  # xmlFormIds, None = all
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column()

    project: Mapped[Project] = relationship()

    def may_use_form(self, xml_form_id: str) -> bool:
        """True when the user's form scope (if any) includes ``xml_form_id``."""
        return self.form_scope is None or xml_form_id in self.form_scope


class WebUser(Base):
    """A person who logs in with username and password (admin pages, Collect with Digest)."""

    __tablename__ = "web_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    password_hash: Mapped[str] = mapped_column(String(255))
    # md5(username:realm:password), needed to verify Digest; replaced on password change
    digest_ha1: Mapped[str | None] = mapped_column(String(32))
    role: Mapped[str] = mapped_column(String(16), default=Role.VIEWER.value)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[dt.datetime | None] = mapped_column()


class ProjectMembership(Base):
    """A web user's role in one project (Central's "project manager" / "project viewer").

    Admins are site-wide and have no rows here; anyone else sees only their projects.
    """

    __tablename__ = "project_memberships"

    web_user_id: Mapped[int] = mapped_column(ForeignKey("web_users.id"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(16))  # manager | viewer
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Submission(Base):
    """One instance (form + instanceID) as received; its XML and parts are blobs."""

    __tablename__ = "submissions"
    __table_args__ = (
        UniqueConstraint("form_id", "instance_id"),
        Index("ix_submissions_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    form_id: Mapped[int] = mapped_column(ForeignKey("forms.id"))
    form_version_id: Mapped[int] = mapped_column(ForeignKey("form_versions.id"), index=True)
    instance_id: Mapped[str] = mapped_column(String(255))
    deprecated_id: Mapped[str | None] = mapped_column(String(255))
    instance_name: Mapped[str | None] = mapped_column(String(500))
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(32), default=SubmissionStatus.RECEIVED.value)
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    complete: Mapped[bool] = mapped_column(Boolean, default=True)
    xml_blob_key: Mapped[str] = mapped_column(String(255))
    xml_sha256: Mapped[str] = mapped_column(String(64))
    xml_size: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    app_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_users.id"))
    web_user_id: Mapped[int | None] = mapped_column(ForeignKey("web_users.id"))
    device_id: Mapped[str | None] = mapped_column(String(255))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    quarantine_reason: Mapped[str | None] = mapped_column(Text)

    form: Mapped[Form] = relationship()
    form_version: Mapped[FormVersion] = relationship()
    attachments: Mapped[list[SubmissionAttachment]] = relationship(
        back_populates="submission", order_by="SubmissionAttachment.id"
    )


class SubmissionAttachment(Base):
    """A file a submission names (expected), present once its bytes arrived."""

    __tablename__ = "submission_attachments"
    __table_args__ = (UniqueConstraint("submission_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    blob_key: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    present: Mapped[bool] = mapped_column(Boolean, default=False)
    # manifest order for encrypted media (IV index); None for plaintext
    position: Mapped[int | None] = mapped_column(Integer)

    submission: Mapped[Submission] = relationship(back_populates="attachments")


class QuarantinedUpload(Base):
    """An authenticated upload the server could not turn into a submission, kept raw for admins."""

    __tablename__ = "quarantined_uploads"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    blob_key: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    part_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    app_user_id: Mapped[int | None] = mapped_column(ForeignKey("app_users.id"))
    web_user_id: Mapped[int | None] = mapped_column(ForeignKey("web_users.id"))
    device_id: Mapped[str | None] = mapped_column(String(255))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[dt.datetime | None] = mapped_column()


class Entity(Base):
    """A case row of a dataset, served to Collect as an entity-list CSV.

    Filled by the reconciliation worker; the sync server only reads it.
    """

    __tablename__ = "entities"
    __table_args__ = (
        UniqueConstraint("project_id", "dataset", "uuid"),
        Index("ix_entities_project_dataset_updated", "project_id", "dataset", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    dataset: Mapped[str] = mapped_column(String(255))
    uuid: Mapped[str] = mapped_column(String(36))  # bare lowercase v4 UUID
    label: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer, default=1)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    deleted_at: Mapped[dt.datetime | None] = mapped_column()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: Central's conflict state: None, "soft" (parallel update) or "hard" (the same property
    #: changed on both sides); only an admin's "mark as resolved" clears it
    conflict: Mapped[str | None] = mapped_column(String(8))


class EntityVersion(Base):
    """One version of an entity, as Central keeps them (``entity_defs``).

    ``data`` is what the list served at this version; ``data_received`` what the submission
    that made it sent (None for versions the server made). ``branch_id``/``trunk_version``/
    ``branch_base_version`` record the device's offline branch so its later updates find their
    base (openrosa.md §11.5).
    """

    __tablename__ = "entity_versions"
    __table_args__ = (
        UniqueConstraint("entity_id", "version"),
        Index("ix_entity_versions_branch", "entity_id", "branch_id", "branch_base_version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    entity_id: Mapped[int] = mapped_column(ForeignKey("entities.id"))
    version: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data_received: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    base_version: Mapped[int | None] = mapped_column(Integer)
    trunk_version: Mapped[int | None] = mapped_column(Integer)
    branch_id: Mapped[str | None] = mapped_column(String(36))
    branch_base_version: Mapped[int | None] = mapped_column(Integer)
    conflict: Mapped[str | None] = mapped_column(String(8))  # the entity's state after it
    conflicting_properties: Mapped[list[str] | None] = mapped_column(JSON)
    #: "submission", "server" (recomputed or changed by an admin), "forced" (a held update
    #: applied against the latest version after waiting too long for its predecessor) or
    #: "merged" (a device's entity an admin merged into another case: deleted at once)
    source: Mapped[str] = mapped_column(String(16), default="server")
    submission_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    entity: Mapped[Entity] = relationship()


class EntityBacklog(Base):
    """An offline update held until its predecessor in the device's branch arrives.

    Central's ``entity_submission_backlog``: the update is applied when the version it was
    based on exists, or against the latest version after ``ENTITY_BACKLOG_DAYS``. Only the
    entity side waits: the assessment itself is in its case at once.
    """

    __tablename__ = "entity_backlog"
    __table_args__ = (Index("ix_entity_backlog_branch", "project_id", "entity_uuid", "branch_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), unique=True)
    entity_uuid: Mapped[str] = mapped_column(String(36))
    branch_id: Mapped[str | None] = mapped_column(String(36))
    #: the device's ``baseVersion`` (Central's ``branchBaseVersion`` of the held row)
    branch_base_version: Mapped[int] = mapped_column(Integer)
    trunk_version: Mapped[int | None] = mapped_column(Integer)
    create: Mapped[bool] = mapped_column(Boolean, default=False)
    label: Mapped[str | None] = mapped_column(Text)
    data_received: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    held_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditLog(Base):
    """Who did what; ``details`` never holds secrets or answers."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuthFailure(Base):
    """A failed authentication, for rate limiting across stateless web nodes."""

    __tablename__ = "auth_failures"
    __table_args__ = (Index("ix_auth_failures_client_at", "client", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    client: Mapped[str] = mapped_column(String(64))  # client IP
    username: Mapped[str | None] = mapped_column(String(200))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DigestNonce(Base):
    """The highest Digest nonce count (``nc``) accepted for a nonce, shared by every node.

    A request whose ``nc`` is not above it is a replay (see :mod:`server.auth`). Rows are
    useless once the nonce is stale (``expires_at``) and are pruned now and then.
    """

    __tablename__ = "digest_nonces"

    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    nc: Mapped[int] = mapped_column(BigInteger)  # 8 hex digits: up to 2**32 - 1
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)


class Blob(Base):
    """Blob bytes for :class:`server.blobs.PostgresBlobStore` (every node sees every blob)."""

    __tablename__ = "blobs"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# case tables live in their own module; imported here so Base.metadata holds every table
from server import models_cases  # noqa: E402, F401
