"""The Swagger UI as a dermatologist uses it, in a real headless Chromium (Debian's, with its
chromedriver; nothing is downloaded) that can reach nothing but loopback: the operations are
listed, the key is authorized, the chart operation runs and its image renders, and the key is
still there after a reload."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.helpers import assessment_body, bearer, patient_body
from tests.dbs import empty_database, migrate
from tests.live import LiveServer

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
# The PNG: Swagger UI shows an image/png answer as an <img> (an SVG answer as its source text).
CHART_PATH = "/v1/patients/{patient_id}/chart.png"

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        raise RuntimeError(
            "CI must have Debian's chromium and chromium-driver (.ci/run installs them)"
        )
    pytest.skip("Debian's chromium and chromium-driver are not installed", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with empty_database("sqlite", tmp_path) as url:
        migrate(url)
        data = tmp_path / "data"
        data.mkdir()
        with LiveServer(url, data) as live:
            yield live


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,1000",
        # Every host but loopback resolves to nothing: the page must work offline.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not fetch anything either
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: WebDriver, seconds: float = 30) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, seconds)


def test_the_swagger_ui_works_offline_authorizes_and_renders_the_chart(
    server: LiveServer, browser: WebDriver
) -> None:
    with httpx.Client(base_url=server.url, headers=bearer(server.admin_key)) as api:
        patient = api.post("/v1/patients", json=patient_body("S-UI")).json()
        for day, level in (("2011-10-20", 28.7), ("2012-01-12", 6.2), ("2012-10-18", 0)):
            body = assessment_body(day, pasi_level=level)
            assert api.post(f"/v1/patients/{patient['id']}/assessments", json=body).is_success

    browser.get(f"{server.url}/docs")
    _wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 20)
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert loaded, "the page loaded no resources"
    assert all(u.startswith(server.url) for u in loaded), loaded

    # Authorize with the key alone.
    browser.find_element(By.CSS_SELECTOR, ".btn.authorize").click()
    field = _wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".auth-container input"))
    )
    field.send_keys(server.admin_key)
    browser.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper .btn.modal-btn.auth").click()
    browser.find_element(By.CSS_SELECTOR, ".btn-done").click()

    # Open the chart operation, try it out, and see the image.
    summary = browser.find_element(
        By.CSS_SELECTOR, f'.opblock-summary-path[data-path="{CHART_PATH}"]'
    )
    browser.execute_script("arguments[0].scrollIntoView()", summary)
    summary.click()
    block = summary.find_element(By.XPATH, "./ancestor::div[contains(@class, 'opblock ')]")
    _wait(browser).until(lambda _d: block.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    block.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    block.find_element(By.CSS_SELECTOR, 'input[placeholder="patient_id"]').send_keys(patient["id"])
    block.find_element(By.CSS_SELECTOR, ".btn.execute").click()
    try:
        image = _wait(browser).until(
            lambda _d: next(
                iter(block.find_elements(By.CSS_SELECTOR, ".responses-inner img")), None
            )
        )
    except Exception:
        browser.save_screenshot("/tmp/swagger-failure.png")
        raise AssertionError(
            "no rendered image in the response (screenshot: /tmp/swagger-failure.png):\n"
            + block.text[:3000]
        ) from None
    _wait(browser).until(lambda d: d.execute_script("return arguments[0].naturalWidth", image) > 0)
    status = block.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status")
    assert status.text.strip().startswith("200")

    # The authorization survives a reload.
    browser.refresh()
    _wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 20)
    assert browser.execute_script("return window.localStorage.getItem('authorized')")
