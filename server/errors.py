"""Errors raised by :mod:`server`.

One root, :class:`ServerError`. Each subclass carries the HTTP status it maps to and a message
written for whoever reads it: a field worker (shown by Collect from the OpenRosaResponse
``<message>``), or an admin. Messages never contain answers, tokens, passphrases or keys.
"""

from __future__ import annotations


class ServerError(Exception):
    """Root of every error this package raises."""

    code: str = "SERVER"
    http_status: int = 500

    def __init__(self, message: str, *, http_status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if http_status is not None:
            self.http_status = http_status

    def __str__(self) -> str:
        return self.message


class ConfigError(ServerError):
    """The server is misconfigured (missing secret, bad URL...)."""

    code = "CONFIG"


class NotFoundError(ServerError):
    """A project, form, version or file does not exist (or is not visible to the caller)."""

    code = "NOT_FOUND"
    http_status = 404


class AuthError(ServerError):
    """Authentication failed (401 with a challenge) or the token is not valid (403)."""

    code = "AUTH"
    http_status = 401


class ForbiddenError(ServerError):
    """The caller is known but may not do this."""

    code = "FORBIDDEN"
    http_status = 403


class RateLimitedError(ServerError):
    """Too many failed authentication attempts from this client."""

    code = "RATE_LIMITED"
    http_status = 429


class BadSubmissionError(ServerError):
    """The upload is refused; Collect keeps the data and shows the message."""

    code = "BAD_SUBMISSION"
    http_status = 400


class SubmissionConflictError(ServerError):
    """Same instanceID with different XML, or the form is closed."""

    code = "CONFLICT"
    http_status = 409


class PayloadTooLargeError(ServerError):
    """The request body is over the advertised limit."""

    code = "TOO_LARGE"
    http_status = 413


class PublishError(ServerError):
    """A form could not be published (bad XForm, version already used with other bytes...)."""

    code = "PUBLISH"
    http_status = 400


class ProjectError(ServerError):
    """A project operation failed (bad passphrase, duplicate name...)."""

    code = "PROJECT"
    http_status = 400


class CustodyError(ServerError):
    """A project key cannot be unlocked or used (wrong passphrase, locked, no key)."""

    code = "CUSTODY"
    http_status = 403


class KeyLockedError(CustodyError):
    """The project's private key is locked: submissions wait as pending until an admin unlocks."""

    code = "KEY_LOCKED"
    http_status = 409


class UnusableSubmissionError(ServerError):
    """A stored submission cannot become data (undecryptable, invalid signature...): quarantined."""

    code = "UNUSABLE_SUBMISSION"
    http_status = 422

    @property
    def reason(self) -> str:
        return self.message
