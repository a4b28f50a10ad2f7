"""Reading instrument files as JSON while remembering where each object starts.

Designers need ``file:line: message`` errors. The stdlib decoder does not keep positions, so
its pure-Python scanner is used with an object hook that records the line of every ``{`` and
of every member's value; each object is returned as a :class:`Node` (a dict with ``.file``,
``.line`` and ``.line_of(key)``).
"""

from __future__ import annotations

import bisect
import json
import json.decoder
import json.scanner
import re
from pathlib import Path
from typing import Any

from form_compiler.errors import SourceError

__all__ = ["Node", "load_json", "loads_json", "loads_json_fast"]

# XML 1.0 cannot carry these even escaped (C0 controls but tab/LF/CR, lone surrogates,
# U+FFFE/U+FFFF): a text holding one would make the XForm unreadable, so it is refused here.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_CHAR_HINTS = {
    0x0B: " (a manual line break pasted from Word: use a space or a full stop)",
    0x0C: " (a page break pasted from Word)",
}


def _illegal_char(value: Any) -> str | None:
    """``U+000B`` for the first character XML 1.0 cannot carry in ``value``'s strings."""
    if isinstance(value, str):
        found = _XML_ILLEGAL.search(value)
        return (
            f"U+{ord(found.group()):04X}{_CHAR_HINTS.get(ord(found.group()), '')}"
            if found
            else None
        )
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str) and (bad := _illegal_char(item)):
                return bad
    return None


class Node(dict):
    """A JSON object that knows the file and line it starts on."""

    file: str = "<memory>"
    line: int = 1
    #: key -> line its value starts on (set by the loader)
    key_lines: dict[str, int] = {}

    def where(self) -> tuple[str, int]:
        """(file, line) of this object, for error messages."""
        return self.file, self.line

    def line_of(self, key: str) -> int:
        """The line of ``key``'s value in this object (the object's own line if unknown)."""
        return self.key_lines.get(key, self.line)


def loads_json(text: str, file: str = "<memory>") -> Any:
    """Parse JSON text; every object becomes a :class:`Node` carrying its line.

    :raises SourceError: invalid JSON, with the line and column at fault
    """
    line_starts = [0]
    pos = text.find("\n")
    while pos != -1:  # str.find runs in C: a per-character loop cost more than the parse
        line_starts.append(pos + 1)
        pos = text.find("\n", pos + 1)

    def parse_object(s_and_end, strict, scan_once, object_hook, object_pairs_hook, memo=None):
        _s, end = s_and_end
        line = bisect.bisect_right(line_starts, end - 1)
        # JSONObject calls scan_once once per member, at its value: remember where
        value_starts: list[int] = []

        def scan(string: str, idx: int):
            value_starts.append(idx)
            return scan_once(string, idx)

        def make(pairs: list[tuple[str, Any]]) -> Node:
            seen: set[str] = set()
            for key, _value in pairs:
                if key in seen:
                    raise SourceError(
                        f'the key "{key}" appears twice in one object', file=file, line=line
                    )
                seen.add(key)
            node = Node(pairs)
            node.file, node.line = file, line
            node.key_lines = {
                key: bisect.bisect_right(line_starts, pos)
                for (key, _value), pos in zip(pairs, value_starts, strict=False)
            }
            for key, value in pairs:
                bad = _illegal_char(key) or _illegal_char(value)
                if bad:
                    raise SourceError(
                        f'the text of "{key}" contains the invisible character {bad}, which '
                        "forms cannot carry: delete it and retype the text there",
                        file=file,
                        line=node.line_of(key),
                    )
            return node

        return json.decoder.JSONObject(s_and_end, strict, scan, object_hook, make, memo)

    decoder = json.JSONDecoder()
    decoder.parse_object = parse_object  # type: ignore[assignment]
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    try:
        return decoder.decode(text)
    except json.JSONDecodeError as err:
        raise SourceError(
            f"invalid JSON: {err.msg} (column {err.colno})", file=file, line=err.lineno
        ) from err


class _DuplicateKeyError(Exception):
    """Internal: the fast path met a repeated key or an XML-illegal character; the tracking
    parser reports it with its line."""


def _fast_node(pairs: list[tuple[str, Any]]) -> Node:
    node = Node(pairs)
    if len(node) != len(pairs) or any(_illegal_char(k) or _illegal_char(v) for k, v in pairs):
        raise _DuplicateKeyError
    return node


def loads_json_fast(text: str, file: str = "<memory>") -> Any:
    """Like :func:`loads_json` with the C decoder, but objects carry no line numbers.

    For large files whose checks rarely fail (translations): a caller that needs a line for
    an error re-reads with :func:`loads_json`. Syntax errors, duplicate keys and XML-illegal characters fall back to
    the tracking parser, so they are still reported with their line.
    """
    try:
        return json.loads(text, object_pairs_hook=_fast_node)
    except (json.JSONDecodeError, _DuplicateKeyError):
        return loads_json(text, file)


def load_json(path: Path, display: str | None = None, *, track_lines: bool = True) -> Any:
    """Read and parse a JSON file (UTF-8, with or without a BOM). ``display`` names it in messages."""
    name = display or str(path)
    try:
        # utf-8-sig: Notepad and Excel save "UTF-8" with a byte-order mark
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as err:
        raise SourceError("file not found", file=name) from err
    except UnicodeDecodeError as err:
        raise SourceError("the file is not UTF-8 text", file=name) from err
    return loads_json(text, name) if track_lines else loads_json_fast(text, name)
