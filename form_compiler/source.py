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

__all__ = ["Node", "load_json", "loads_json"]


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


def load_json(path: Path, display: str | None = None) -> Any:
    """Read and parse a JSON file (UTF-8). ``display`` is the name used in messages."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise SourceError("file not found", file=name) from err
    except UnicodeDecodeError as err:
        raise SourceError("the file is not UTF-8 text", file=name) from err
    return loads_json(text, name)
