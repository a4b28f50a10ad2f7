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
