"""Headless Chromium against the real app served by a real WSGI server in a thread.

Chromium and chromedriver come from Debian (``apt-get install chromium chromium-driver``).
Without them the browser tests are skipped loudly, unless ``KINTSUGI_REQUIRE_BROWSER=1`` (CI),
in which case they fail. ``KINTSUGI_SCREENSHOTS=1`` saves the main pages to docs/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.admin import case_double

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO_ROOT / "docs" / "screenshots"
PASSWORD = "long enough password"

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1000",
]


def _find(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def _missing(reason: str) -> None:
    if os.environ.get("KINTSUGI_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} and KINTSUGI_REQUIRE_BROWSER=1")
    pytest.skip(f"!!! BROWSER TESTS SKIPPED: {reason}")


class LiveServer:
    """The app on 127.0.0.1:<free port> (werkzeug's threaded WSGI server)."""

    def __init__(self, app: Any) -> None:
        from werkzeug.serving import make_server

        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A served app on a fresh SQLite database with users, projects, a form and case data."""
    from server import create_app, db
    from server.blobs import make_blob_store
    from server.models import FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM
    from server.services.forms import publish_form
    from server.services.projects import create_project
    from server.services.users import create_web_user
    from tests.admin.conftest import add_submission
    from tests.server.forms import xform

    tmp = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{tmp / 'k.sqlite3'}"
    db.upgrade(url)
    app = create_app(
        {
            "ENV": "testing",
            "SECRET_KEY": "browser-" + "x" * 40,
            "DATABASE_URL": url,
            "VAR_DIR": str(tmp / "var"),
            "DATA_DIR": str(tmp / "data"),
            "BASE_URL": "http://127.0.0.1",
            "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        }
    )
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        for role in ("admin", "manager", "viewer"):
            create_web_user(s, role, PASSWORD, role=role, realm="kintsugi",
                            method="pbkdf2:sha256:1000")  # fmt: skip
        project = create_project(s, "Cebu aftercare", passphrase=b"correct passphrase")
        other = create_project(s, "Kampala aftercare")
        store = make_blob_store(app.config, s)
        from server.compat import generate_project_key  # noqa: F401 (project has a key)

        key = project.active_key.public_key_b64
        v, _ = publish_form(s, store, project, xform("aso_followup", "2026.1",
                            title="ASO follow-up", public_key=key))  # fmt: skip
        publish_form(s, store, other, xform("household"))
        add_submission(s, v.form, "uuid:0b9d6a51-0000-4000-8000-000000000001", encrypted=True,
                       status="pending_decryption")  # fmt: skip
        add_submission(s, v.form, "uuid:0b9d6a51-0000-4000-8000-000000000002",
                       flags=[FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM])  # fmt: skip
        s.commit()
        pid = project.id
    mp = pytest.MonkeyPatch()
    cases = case_double.CaseWorld(pid)
    case_double.install(mp, cases)
    server = LiveServer(app)
    server.project_id = pid  # type: ignore[attr-defined]
    server.cases = cases  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()
        mp.undo()
        app.extensions["kintsugi.db"].engine.dispose()


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium driven by chromedriver, with a fresh profile and download dir."""
    chromium = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver")
    if chromium is None or driver_path is None:
        _missing("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    profile = tmp_path_factory.mktemp("chromium-profile")
    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    opts.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads  # type: ignore[attr-defined]
    driver.implicitly_wait(2)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, name: str) -> None:
    """Save the page as docs/screenshots/<name>.png when KINTSUGI_SCREENSHOTS=1."""
    if os.environ.get("KINTSUGI_SCREENSHOTS") != "1":
        return
    import base64

    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    # the whole page, not just the viewport (headless windows cannot grow past the screen)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": 1280, "height": min(int(size["height"]) + 16, 2400),
            "scale": 1}  # fmt: skip
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    (SCREENSHOT_DIR / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
