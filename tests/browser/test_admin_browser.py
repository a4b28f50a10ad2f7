"""Scenarios an admin walks through in a real browser (headless Chromium)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import PASSWORD, screenshot

pytestmark = pytest.mark.browser


def instrument_labels() -> list[str]:
    """Domain labels in instrument order (what the chart legend shows)."""
    import json

    from tests.browser.conftest import REPO_ROOT

    data = json.loads((REPO_ROOT / "instruments" / "aso" / "instrument.json").read_text())
    return [d["label"] for d in data["domains"]]


def click_and_wait(browser: Any, element: Any) -> None:
    """Click something that loads a new page and wait until the old page is gone."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = browser.find_element(By.TAG_NAME, "html")
    element.click()

    def old_page_gone(_driver: Any) -> bool:
        try:
            old.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as err:  # ChromeDriver's other way of saying "stale"
            if "does not belong to the document" in str(err):
                return True
            raise
        return False

    wait = WebDriverWait(browser, 10)
    wait.until(old_page_gone)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def sign_in(browser: Any, live: Any, username: str) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(live.url + "/admin/login")
    browser.find_element(By.ID, "username").send_keys(username)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    click_and_wait(browser, browser.find_element(By.ID, "sign-in"))


def test_sign_in__wrong_then_right__projects_page(browser: Any, live: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    browser.get(live.url + "/admin/")
    assert "/admin/login" in browser.current_url
    screenshot(browser, "01-sign-in")
    browser.find_element(By.ID, "username").send_keys("admin")
    browser.find_element(By.ID, "password").send_keys("not the password")
    click_and_wait(browser, browser.find_element(By.ID, "sign-in"))
    assert "Wrong username or password" in browser.find_element(By.CSS_SELECTOR, ".error").text
    sign_in(browser, live, "admin")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Projects"
    assert "Cebu aftercare" in browser.page_source
    screenshot(browser, "02-projects")
    browser.get(f"{live.url}/admin/projects/{live.project_id}")
    assert "aso_followup" in browser.page_source
    screenshot(browser, "03-project")


def test_caseload__filter_closure_ready(browser: Any, live: Any) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, live, "viewer")
    browser.get(f"{live.url}/admin/projects/{live.project_id}/cases")
    links = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "a.case-link")]
    assert links == [f"K-{n:04d}" for n in range(1, 12)]  # by next due date
    assert browser.find_element(By.CSS_SELECTOR, ".badge.bad").text == "overdue"
    screenshot(browser, "04-caseload")
    browser.find_element(By.NAME, "closure_ready").click()
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    links = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "a.case-link")]
    assert links == ["K-0003"]


def test_case__trend_chart_has_a_line_per_domain(browser: Any, live: Any) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, live, "viewer")
    browser.get(f"{live.url}/admin/projects/{live.project_id}/cases")
    click_and_wait(browser, browser.find_element(By.LINK_TEXT, "K-0001"))
    lines = browser.find_elements(By.CSS_SELECTOR, "svg.trend polyline.series-line")
    assert [el.get_attribute("data-domain") for el in lines] == instrument_labels()
    for el in lines:
        assert len(el.get_attribute("points").split()) == 3  # three assessments
        assert el.size["width"] > 100  # really drawn across the plot
    legend = browser.find_elements(By.CSS_SELECTOR, "svg.trend .legend-item")
    assert len(legend) == 6
    screenshot(browser, "05-case-chart")


def test_review_queue__link_orphan_to_case(browser: Any, live: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    sign_in(browser, live, "manager")
    browser.get(f"{live.url}/admin/projects/{live.project_id}/review")
    screenshot(browser, "06-review-queues")
    orphans = browser.find_element(By.ID, "queue-orphans")
    Select(orphans.find_element(By.NAME, "action")).select_by_value("link")
    Select(orphans.find_element(By.NAME, "case_id")).select_by_visible_text("K-0002")
    click_and_wait(browser, orphans.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    orphans = browser.find_element(By.ID, "queue-orphans")
    assert "Nothing to review" in orphans.text
    browser.get(f"{live.url}/admin/projects/{live.project_id}/cases/{live.ids['K-0002']}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#assessments tbody tr")
    assert len(rows) == 4  # its three assessments and the linked follow-up


def test_export__csv_downloads(browser: Any, live: Any) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, live, "manager")
    browser.get(f"{live.url}/admin/projects/{live.project_id}/export")
    screenshot(browser, "09-export")
    browser.find_element(By.ID, "export-csv").click()
    downloads: Path = browser.downloads
    deadline = time.monotonic() + 15
    found: list[Path] = []
    while time.monotonic() < deadline:  # wait for the file (not a timing assertion)
        found = [p for p in downloads.glob("*.csv")]
        if found:
            break
        time.sleep(0.1)
    assert found, "no CSV downloaded"
    text = found[0].read_text()
    assert "K-0001" in text and "K-0006" in text


def test_other_pages__render_for_screenshots(browser: Any, live: Any) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, live, "admin")
    pid = live.project_id
    browser.get(f"{live.url}/admin/projects/{pid}/submissions")
    assert "Arrived unencrypted although the form is encrypted" in browser.page_source
    screenshot(browser, "07-submissions")
    browser.get(f"{live.url}/admin/projects/{pid}/key")
    assert browser.find_element(By.ID, "backlog").text.startswith("1 ")
    screenshot(browser, "08-key-custody")
    browser.get(f"{live.url}/admin/projects/{pid}/impact")
    # KLA (1 case) and, so that it cannot be worked out from the others, CEB
    assert browser.find_elements(By.CSS_SELECTOR, "svg.bars rect.suppressed")
    assert browser.find_elements(By.CSS_SELECTOR, "svg.bars rect.bar:not(.suppressed)")
    screenshot(browser, "10-impact")
    browser.get(f"{live.url}/admin/projects/{pid}")
    browser.find_element(By.NAME, "name").send_keys("Tablet 4")
    click_and_wait(browser, browser.find_element(By.XPATH, "//button[contains(., 'QR code')]"))
    assert browser.find_elements(By.CSS_SELECTOR, "figure.qr svg")
    screenshot(browser, "11-app-user-qr")


#: the texts of every chart on the page that stick out of their chart's drawing area
TEXTS_OUTSIDE_THEIR_CHART = """
return [...document.querySelectorAll('svg.chart text')].filter(t => {
  const box = t.getBoundingClientRect(), chart = t.ownerSVGElement.getBoundingClientRect();
  return box.left < chart.left - 0.5 || box.right > chart.right + 0.5
    || box.top < chart.top - 0.5 || box.bottom > chart.bottom + 0.5;
}).map(t => t.textContent);
"""


def test_charts__every_label_whole_inside_its_chart(browser: Any, live: Any) -> None:
    """Should draw every group and domain name whole: the impact charts cut off the start of
    long ones ("… Economic Empowerment & Education" without its group), leaving a row of
    figures nobody can attribute."""
    sign_in(browser, live, "viewer")
    pid = live.project_id
    for path in ("impact", f"cases/{live.ids['K-0001']}"):
        browser.get(f"{live.url}/admin/projects/{pid}/{path}")
        assert browser.execute_script(TEXTS_OUTSIDE_THEIR_CHART) == [], path
