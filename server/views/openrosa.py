"""OpenRosa endpoints for ODK Collect (Central-compatible URL layout)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("openrosa", __name__)
