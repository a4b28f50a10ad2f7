"""A small, strict ``multipart/form-data`` parser for submission uploads.

Collect's bodies are at most ``ACCEPT_CONTENT_LENGTH`` (+ overhead) and are read whole anyway
(every part is stored), so parsing an in-memory body with ``bytes.find`` is simpler and several
times cheaper than a streaming parser that compiles a regex per boundary. Anything that does not
follow RFC 7578 framing is refused (:class:`MultipartError`), never guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass

from werkzeug.http import parse_options_header

from server.errors import BadSubmissionError


class MultipartError(BadSubmissionError):
    """The body is not well-formed multipart/form-data."""


@dataclass(slots=True)
class Part:
    """One part: its form field name, file name (if any), content type and bytes."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


_BAD = "The upload is damaged (bad multipart framing). Try sending it again."


def parse_multipart(body: bytes, boundary: str, *, max_parts: int) -> list[Part]:
    """Split ``body`` into parts; raise MultipartError on bad framing or too many parts."""
    if not boundary or len(boundary) > 200:
        raise MultipartError(_BAD)
    delim = b"--" + boundary.encode("latin-1")
    start = body.find(delim)
    if start < 0:
        raise MultipartError(_BAD)
    pos = start + len(delim)
    parts: list[Part] = []
    while True:
        if body.startswith(b"--", pos):
            return parts  # closing delimiter; the epilogue is ignored
        if body.startswith(b"\r\n", pos):
            pos += 2
        else:
            raise MultipartError(_BAD)
        head_end = body.find(b"\r\n\r\n", pos)
        if head_end < 0 or head_end - pos > 16_384:
            raise MultipartError(_BAD)
        headers = _headers(body[pos:head_end])
        data_start = head_end + 4
        data_end = body.find(b"\r\n" + delim, data_start)
        if data_end < 0:
            raise MultipartError(_BAD)
        disposition, params = parse_options_header(headers.get("content-disposition", ""))
        if disposition != "form-data" or "name" not in params:
            raise MultipartError(_BAD)
        ctype = headers.get("content-type")
        parts.append(
            Part(
                name=params["name"],
                filename=params.get("filename"),
                content_type=ctype,
                data=body[data_start:data_end],
            )
        )
        if len(parts) > max_parts:
            raise MultipartError(f"Too many files in one upload (more than {max_parts - 1}).")
        pos = data_end + 2 + len(delim)


def _headers(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    # OkHttp writes non-ASCII file names as raw UTF-8 (openrosa.md §6.2)
    for line in raw.decode("utf-8", errors="replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if not sep:
            raise MultipartError(_BAD)
        out[name.strip().lower()] = value.strip()
    return out
