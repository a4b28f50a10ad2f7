"""Regenerate docs/screenshots/*.png: runs the browser tests with KINTSUGI_SCREENSHOTS=1.

Usage: ``.venv/bin/python docs/screenshots.py`` (needs chromium and chromium-driver).
The data shown is fictional (tests/browser/conftest.py and tests/admin/case_double.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    env = {**os.environ, "KINTSUGI_SCREENSHOTS": "1", "KINTSUGI_REQUIRE_BROWSER": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "browser", "tests/browser"]
    sys.exit(subprocess.call(cmd, cwd=ROOT, env=env))
