"""Errors raised by :mod:`form_compiler`.

One root, :class:`CompilerError`. Designer-facing errors name the file, the line and the rule
at fault, and print as ``file:line: message``.
"""

from __future__ import annotations


class CompilerError(Exception):
    """Root of every error this package raises."""

    code: str = "COMPILER"

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        where = self.file or "<instrument>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"
