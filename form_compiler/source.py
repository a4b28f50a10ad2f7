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
from pathlib import Path
from typing import Any

from form_compiler.errors import SourceError

__all__ = ["Node", "load_json", "loads_json", "loads_json_fast"]


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
    """Internal: the fast path met a repeated key; the tracking parser reports it."""


def _fast_node(pairs: list[tuple[str, Any]]) -> Node:
    node = Node(pairs)
    if len(node) != len(pairs):
        raise _DuplicateKeyError
    return node


def loads_json_fast(text: str, file: str = "<memory>") -> Any:
    """Like :func:`loads_json` with the C decoder, but objects carry no line numbers.

    For large files whose checks rarely fail (translations): a caller that needs a line for
    an error re-reads with :func:`loads_json`. Syntax errors and duplicate keys fall back to
    the tracking parser, so they are still reported with their line.
    """
    try:
        return json.loads(text, object_pairs_hook=_fast_node)
    except (json.JSONDecodeError, _DuplicateKeyError):
        return loads_json(text, file)


def load_json(path: Path, display: str | None = None, *, track_lines: bool = True) -> Any:
    """Read and parse a JSON file (UTF-8). ``display`` is the name used in messages."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise SourceError("file not found", file=name) from err
    except UnicodeDecodeError as err:
        raise SourceError("the file is not UTF-8 text", file=name) from err
    return loads_json(text, name) if track_lines else loads_json_fast(text, name)
