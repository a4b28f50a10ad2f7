"""Errors raised by :mod:`sync_protocol`.

One root, :class:`ProtocolError`; every subclass carries a message written for the person who
reads it (an admin, or a field worker via an OpenRosaResponse). Messages never contain key
material, passphrases or decrypted answers.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every error this package raises."""

    #: a short stable code, for logs and API bodies
    code: str = "PROTOCOL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class MalformedXMLError(ProtocolError):
    """A document is not well-formed XML."""

    code = "XML_MALFORMED"


class UnsafeXMLError(ProtocolError):
    """A document declares a DTD, entities or external references (refused, never expanded)."""

    code = "XML_UNSAFE"


class MalformedSubmissionError(ProtocolError):
    """A submission is XML but lacks what a submission needs (form id, instanceID, ...)."""

    code = "SUBMISSION_MALFORMED"


class KeyProblemError(ProtocolError):
    """Root of key problems."""

    code = "KEY"


class KeyFormatError(KeyProblemError):
    """Key bytes are not a supported RSA key (PKCS#1/PKCS#8 PEM, Central archive)."""

    code = "KEY_FORMAT"


class WrongPassphraseError(KeyProblemError):
    """The passphrase does not open the private key."""

    code = "KEY_PASSPHRASE"


class KeySizeError(KeyProblemError):
    """RSA key outside the supported 2048 to 4096 bits."""

    code = "KEY_SIZE"


class DecryptionError(ProtocolError):
    """A submission or file cannot be decrypted (wrong key, corrupt or truncated data)."""

    code = "DECRYPTION"


class MissingFileError(DecryptionError):
    """A file the manifest names has not been received."""

    code = "DECRYPTION_MISSING_FILE"


class SignatureError(DecryptionError):
    """The submission decrypted, but its signature is invalid or cannot be checked."""

    code = "DECRYPTION_SIGNATURE"
