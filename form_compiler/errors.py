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


class SourceError(CompilerError):
    """An instrument, context or translation file cannot be read (syntax, encoding)."""

    code = "SOURCE"


class InstrumentError(CompilerError):
    """The instrument definition breaks a rule (ids, scale, scoring, anchors)."""

    code = "INSTRUMENT"


class ContextRuleError(CompilerError):
    """A contextualisation tries to change what only the instrument may define."""

    code = "CONTEXT_RULE"


class TranslationError(CompilerError):
    """A translation is missing, stale or unreviewed where that is not allowed."""

    code = "TRANSLATION"


class ConversionError(CompilerError):
    """pyxform or ODK Validate rejected the generated form (a compiler bug or a bad local question)."""

    code = "CONVERSION"


class MultipleErrorsError(CompilerError):
    """Several problems found at once; ``errors`` lists them all."""

    code = "MANY"

    def __init__(self, errors: list[CompilerError]) -> None:
        super().__init__(f"{len(errors)} problems")
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
