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


def seed_caseload(app: Any, project_id: int) -> dict[str, int]:
    """Six fictional cases with three assessments each, an orphan follow-up with its review
    item, as the reconciliation worker leaves them (written through the case models)."""
    import datetime as dt

    from server.blobs import make_blob_store
    from server.models import Project
    from server.models_cases import Assessment, Case, ReviewItem
    from server.services.publishing import list_contexts, publish_context
    from tests.admin.conftest import add_submission

    today = dt.date.today()
    domains = ["SAF", "LEG", "MEN", "ECO", "SOC", "PHY"]
    base = [1.25, 1.8, 2.1, 1.5, 2.75, 1.9]
    step = [0.6, 0.35, 0.5, 0.3, 0.15, 0.45]
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        project = s.get(Project, project_id)
        context = list_contexts(Path(app.config["INSTRUMENTS_DIR"]))[0]
        version, _ = publish_context(s, make_blob_store(app.config, s), project, app.config,
                                     context)  # fmt: skip
        form = version.form
        ids: dict[str, int] = {}
        for n in range(1, 12):  # offices CEB and MNL (5 each), KLA (1: suppressed)
            dates = [today - dt.timedelta(days=d) for d in (300, 200, 100)]
            scores = [
                {dom: round(min(4.0, base[k] + step[k] * i * (1 + n % 3) / 2), 2)
                 for k, dom in enumerate(domains)}
                for i in range(3)
            ]  # fmt: skip
            next_due = {1: today - dt.timedelta(days=20), 2: today + dt.timedelta(days=10)}.get(
                n, today + dt.timedelta(days=60 + n)
            )
            case = Case(
                project_id=project_id, case_code=f"K-{n:04d}",
                casework_type="forced_labour" if n < 6 else "csx",
                office="CEB" if n < 6 else "MNL" if n < 11 else "KLA", intake_date=dates[0],
                latest_date=dates[-1],
                next_due=next_due, closure_ready=n == 3, latest_scores=scores[-1],
                intake_scores=scores[0], assessment_count=3,
            )  # fmt: skip
            s.add(case)
            s.flush()
            ids[case.case_code] = case.id
            for i, (day, sc) in enumerate(zip(dates, scores, strict=True)):
                sub = add_submission(s, form, f"uuid:00000000-0000-4000-8000-{n:06d}{i:06d}")
                s.add(Assessment(
                    project_id=project_id, case_id=case.id, submission_id=sub.id,
                    instance_id=sub.instance_id, case_code=case.case_code, assessment_date=day,
                    collection_point=("intake", "six_month", "annual")[i], scores=sc,
                    survivor_view={"SAF": "3"} if i == 2 else {},
                ))  # fmt: skip
        sub = add_submission(s, form, "uuid:00000000-0000-4000-8000-999999999999")
        orphan = Assessment(
            project_id=project_id, case_id=None, submission_id=sub.id,
            instance_id=sub.instance_id, case_code="K-0099", assessment_date=today,
            collection_point="six_month", state="orphan", scores={"SAF": 3.0},
        )  # fmt: skip
        s.add(orphan)
        s.flush()
        s.add(ReviewItem(project_id=project_id, kind="orphan", assessment_id=orphan.id,
                         summary="Follow-up names case K-0099, which this project does not "
                                 "have"))  # fmt: skip
        s.commit()
        ids["orphan_assessment"] = orphan.id
        return ids


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A served app on a fresh SQLite database: users, an encrypted project with a compiled
    instrument form, submissions and a fictional caseload; the real case services."""
    from sqlalchemy import select

    from server import create_app, db
    from server.blobs import make_blob_store
    from server.models import FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM, WebUser
    from server.services.access import grant_project_role
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
            "INSTRUMENTS_DIR": str(REPO_ROOT / "instruments"),
            "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        }
    )
    with app.extensions["kintsugi.db"].sessionmaker() as s:
        for role in ("admin", "manager", "viewer"):
            create_web_user(s, role, PASSWORD, role=role, realm="kintsugi",
                            method="pbkdf2:sha256:1000")  # fmt: skip
        project = create_project(s, "Cebu aftercare", passphrase=b"correct passphrase")
        other = create_project(s, "Kampala aftercare")
        for role in ("manager", "viewer"):
            member = s.scalar(select(WebUser).where(WebUser.username == role))
            for p in (project, other):
                grant_project_role(s, member, p, role)
        store = make_blob_store(app.config, s)
        key = project.active_key.public_key_b64
        v, _ = publish_form(s, store, project, xform("aso_followup", "2026.1",
                            title="ASO follow-up (uploaded XForm)", public_key=key))  # fmt: skip
        publish_form(s, store, other, xform("household"))
        add_submission(s, v.form, "uuid:0b9d6a51-0000-4000-8000-000000000001", encrypted=True,
                       status="pending_decryption")  # fmt: skip
        add_submission(s, v.form, "uuid:0b9d6a51-0000-4000-8000-000000000002",
                       flags=[FLAG_PLAINTEXT_FOR_ENCRYPTED_FORM])  # fmt: skip
        s.commit()
        pid = project.id
    server = LiveServer(app)
    server.project_id = pid  # type: ignore[attr-defined]
    server.ids = seed_caseload(app, pid)  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()
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
