"""The activity web page in a real browser: Debian's headless Chromium, through chromium-driver.

Log in, search, open a failed message, press Retry and see it become delivered. With
INBOUND_SCREENSHOTS=DIR the test saves the list and the message page there (the README's pictures).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from .fixtures import Pipeline
from .harness import free_port, send, wait_for
from .test_pipeline import message_with_attachments

pytestmark = pytest.mark.e2e

TOKEN = "browser-token-0123456789abcdef"


@pytest.fixture
def chromium() -> Iterator[webdriver.Chrome]:
    """Headless Chromium from Debian; fails (never skips) when it is not installed: `make tools` installs it."""
    driver_path = shutil.which("chromedriver")
    browser_path = shutil.which("chromium")
    missing = "chromium and chromium-driver are not installed: run `make tools`"
    assert driver_path, missing
    assert browser_path, missing
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1400"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_search_open_and_retry_in_a_browser(tmp_path: Path, chromium: webdriver.Chrome) -> None:
    pipeline = Pipeline(tmp_path, 'backend = "embedded"')
    port = free_port()
    shots = os.environ.get("INBOUND_SCREENSHOTS")
    try:
        config = pipeline.configure(extra=f'[http]\nlisten = "127.0.0.1:{port}"\ntokens = ["{TOKEN}"]\n')
        pipeline.receiver.behaviour["/hook"] = lambda seen: 403 if seen == 0 else 200  # refuses the first POST
        pipeline.start(roles="smtp,publish,process,deliver,record,api")
        queue_id = send(config, "alice@sender.test", ["help@example.org"], message_with_attachments())
        pipeline.wait_status(f"{queue_id}-support", "failed")
        other = send(
            config, "bob@sender.test", ["help@example.org"], message_with_attachments().replace(b"Invoice 42", b"Lunch")
        )
        pipeline.wait_status(f"{other}-support", "delivered")

        base = f"http://localhost:{port}"  # localhost: a secure context, so the Secure cookie is kept
        chromium.get(base + "/")
        assert chromium.current_url == base + "/login"
        chromium.find_element(By.NAME, "token").send_keys(TOKEN)
        chromium.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        wait_for(lambda: chromium.current_url == base + "/", 10, "the list after logging in")
        rows = chromium.find_elements(By.CSS_SELECTOR, "#messages tbody tr")
        assert len(rows) == 2
        assert chromium.find_element(By.ID, "failing").text == "none"  # the endpoint answered the second message
        if shots:
            chromium.save_screenshot(str(Path(shots) / "activity-list.png"))

        search = chromium.find_element(By.NAME, "q")
        search.send_keys("invoice")
        search.submit()
        wait_for(lambda: "q=invoice" in chromium.current_url, 10, "the search")
        rows = chromium.find_elements(By.CSS_SELECTOR, "#messages tbody tr")
        assert [r.find_element(By.CSS_SELECTOR, ".badge").text for r in rows] == ["failed"]

        rows[0].find_element(By.CSS_SELECTOR, "td.subject a").click()
        wait_for(lambda: f"/m/{queue_id}-support" in chromium.current_url, 10, "the message page")
        assert chromium.find_element(By.ID, "status-support").text == "failed"
        assert "invoice-42.pdf" in chromium.page_source
        assert "403" in chromium.find_element(By.CSS_SELECTOR, "ol.timeline").text
        if shots:
            chromium.save_screenshot(str(Path(shots) / "activity-message.png"))

        chromium.find_element(By.ID, "retry-support").click()
        # The click returns before the form's navigation ends: until the redirect lands, the old page
        # (which has no notice) is still the one find_element would search.
        wait_for(lambda: "done=" in chromium.current_url, 10, "the page after the retry")
        assert "retry queued" in chromium.find_element(By.CSS_SELECTOR, ".note.ok").text

        def delivered() -> bool:
            chromium.refresh()
            return chromium.find_element(By.ID, "status-support").text == "delivered"

        wait_for(delivered, 60, "the retried message to show as delivered")
        assert len(chromium.find_elements(By.CSS_SELECTOR, "ol.timeline li")) == 2
    finally:
        pipeline.close()
