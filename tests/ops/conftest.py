"""Reuse the server tests' Collect fixtures (a project with an app user, the shared vectors)."""

from tests.server.conftest import field, vectors, web_user  # noqa: F401 (pytest fixtures)
