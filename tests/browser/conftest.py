"""Browser tests of the admin: Debian's headless Chromium driven by Selenium against
pytest-django's `live_server` (a threaded WSGI server in this process; Celery is eager, so a
test queued by the page has run by the time the page polls it).

The browser and driver are the system's (/usr/bin/chromium, /usr/bin/chromedriver; `.ci/run`
installs them): Selenium Manager is never asked to download anything. One browser per module.
Screenshots for the README are written to docs/screenshots/ only when LLMCONN_SCREENSHOTS=1.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDTH = 1400
STAFF_PASSWORD = "pw-staff-1234"  # tests/conftest.py: staff_user

# Every WebDriver command is logged at DEBUG (the suite's level): too much noise in reports.
for _name in ("selenium", "urllib3.connectionpool"):
    logging.getLogger(_name).setLevel(logging.INFO)

MISSING = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
needs_browser = pytest.mark.skipif(
    bool(MISSING),
    reason=f"{' and '.join(MISSING)} missing: install Debian's chromium and chromium-driver "
           "(.ci/run does) to run the browser tests")


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (one per test module)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="llmconn-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-extensions",
                 "--password-store=basic", f"--window-size={WIDTH},900",
                 f"--user-data-dir={profile}", "--lang=en-US"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class AdminBrowser:
    """Small helpers over the Selenium driver for the admin pages."""

    def __init__(self, driver, base_url: str):
        self.driver = driver
        self.base_url = base_url.rstrip("/")

    # navigation and lookup
    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def wait_for(self, condition, timeout: float = 30, message: str = ""):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            lambda d: condition(), message)

    def wait_visible(self, css: str, timeout: float = 30):
        return self.wait_for(lambda: next((e for e in self.find_all(css) if e.is_displayed()), None),
                             timeout, f"{css} never became visible")

    def wait_status(self, css: str, timeout: float = 60) -> str:
        """Wait for a result box of the connection form to end; its data-status."""
        return self.wait_for(lambda: self.find(css).get_attribute("data-status"), timeout,
                             f"{css} never finished")

    def text(self, css: str) -> str:
        return self.find(css).text

    # forms
    def fill(self, name: str, value: str) -> None:
        field = self.find(f"[name='{name}']")
        field.clear()
        if value:
            field.send_keys(value)

    def choose(self, name: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.find(f"select[name='{name}']")).select_by_value(value)

    def click(self, css: str) -> None:
        element = self.find(css)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()

    def submit_and_wait(self, css: str) -> None:
        """Click a submit button and wait for the next page."""
        old = self.find("html")
        self.click(css)
        self.wait_for(lambda: _stale(old), 30, "the page did not change")
        self.wait_for(lambda: self.driver.execute_script(
            "return document.readyState === 'complete' && !!document.body;"), 30,
            "the next page did not finish loading")

    def login(self, username: str, password: str) -> None:
        self.open("/admin/login/")
        self.fill("username", username)
        self.fill("password", password)
        self.submit_and_wait("input[type=submit]")
        assert "/admin/login/" not in self.driver.current_url, "login failed"

    # screenshots
    def screenshot(self, name: str) -> None:
        """The whole page as docs/screenshots/<name>.png (only with LLMCONN_SCREENSHOTS=1)."""
        if os.environ.get("LLMCONN_SCREENSHOTS") != "1":
            return
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        height = min(int(metrics["cssContentSize"]["height"]) + 1, 2400)
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1},
        })
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def _stale(element) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.tag_name  # noqa: B018
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        # Chromium sometimes reports an element of a page that was navigated away from as an
        # "unhandled inspector error: Node with given id does not belong to the document".
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


@pytest.fixture
def admin_browser(browser, live_server, staff_user, settings):
    """The browser signed in to the admin of the live server as a staff user."""
    # The live server speaks plain http: cookies must not be Secure-only.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    page = AdminBrowser(browser, live_server.url)
    page.open("/admin/login/")
    browser.delete_all_cookies()
    page.login(staff_user.username, STAFF_PASSWORD)
    # The admin's navigation sidebar stays closed: pages get the whole width (and screenshots
    # show the page, not the menu). Django reads this key on every page.
    browser.execute_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false');")
    return page
