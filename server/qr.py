"""Collect's settings QR code for an app user.

Collect reads a QR code holding ``base64(zlib(JSON))`` of its settings: ``general`` (here the
server URL with the app-user token in it), ``admin`` (protected settings, none here) and
``project`` (name, icon and colour of the project tile Collect shows). The token is in the
payload, so a QR is generated only when the token is known: at app-user creation.
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path
from typing import Any

DEFAULT_COLOR = "#8a5a00"  # kintsugi gold


def settings_payload(
    server_url: str, project_name: str, *, icon: str | None = None, color: str = DEFAULT_COLOR
) -> str:
    """The QR text: base64 of the zlib-compressed settings JSON."""
    settings: dict[str, Any] = {
        "general": {"server_url": server_url, "form_update_mode": "match_exactly"},
        "admin": {},
        "project": {
            "name": project_name,
            # Collect shows one character on the project tile
            "icon": icon or (project_name.strip()[:1].upper() or "K"),
            "color": color,
        },
    }
    raw = json.dumps(settings, separators=(",", ":")).encode("utf-8")
    return base64.b64encode(zlib.compress(raw)).decode("ascii")


def decode_payload(payload: str) -> dict[str, Any]:
    """Inverse of :func:`settings_payload` (what Collect does when scanning)."""
    return json.loads(zlib.decompress(base64.b64decode(payload)))


def _qr(payload: str) -> Any:
    import segno

    return segno.make(payload, error="l", micro=False)


def qr_png_bytes(payload: str, *, scale: int = 6) -> bytes:
    """The QR code as PNG bytes."""
    import io

    buf = io.BytesIO()
    _qr(payload).save(buf, kind="png", scale=scale, border=4)
    return buf.getvalue()


def save_qr_png(payload: str, path: str | Path, *, scale: int = 6) -> None:
    """Write the QR code as a PNG file (``kintsugi app-users create --qr``).

    The picture carries the app user's token, so it is readable by its owner only (0600),
    whatever the umask or an earlier file of that name allowed.
    """
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(qr_png_bytes(payload, scale=scale))


def qr_svg_inline(payload: str, *, scale: int = 4) -> str:
    """The QR code as an inline ``<svg>`` element (no external asset, CSP-safe)."""
    return _qr(payload).svg_inline(scale=scale, border=4, title="Collect settings QR code")
