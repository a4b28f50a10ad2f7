"""Fixtures for compiler tests: a private copy of instruments/ that a test may change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO_INSTRUMENTS = Path(__file__).resolve().parents[2] / "instruments"


@pytest.fixture
def instruments(tmp_path) -> Path:
    """A writable copy of the repository's instruments folder."""
    target = tmp_path / "instruments"
    shutil.copytree(REPO_INSTRUMENTS, target)
    return target


def edit_json(path: Path, change) -> None:
    """Load, change (in place) and rewrite a JSON file, one key per line."""
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
