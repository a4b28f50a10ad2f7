"""Reuse the server and admin tests' fixtures (Collect project, vectors, web users per role)."""

from tests.admin.conftest import api, world  # noqa: F401 (pytest fixtures)
from tests.server.conftest import field, vectors, web_user  # noqa: F401 (pytest fixtures)
