"""The served page in a real browser: headless Chromium (Selenium) with a fake camera made from a face.

An age label must appear for an uploaded photo and for the camera stream. Screenshots are kept in
the pytest tmp folder; docs/img/serve_page.png is written when missing (or ORDINALAGE_DOCS_SCREENSHOT=1).
The HTML report (`ordinalage report`, `evaluate --report`) must open from a file:// URL with no
console error, every image decoded, and nothing loaded from the network.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from browser_tools import (
    REPO,
    browser_missing,
    chromium,
    face_scene,
    free_port,
    start_server,
    stop_server,
    write_y4m,
)
from PIL import Image

_MISSING = browser_missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"browser test skipped: {_MISSING}")
LABEL = re.compile(r"^(\d+-\d+|\d+\+) \(\d+ y\)$")
DOCS_SHOT = REPO / "docs" / "img" / "serve_page.png"


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):  # type: ignore[no-untyped-def]
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc = start_server(tiny_run("coral"), port, log=log)
    yield f"http://127.0.0.1:{port}/"
    stop_server(proc)


def _labels(driver) -> list[str]:  # type: ignore[no-untyped-def]
    """The shown age labels, read in one script call: the camera loop redraws them a few times a
    second, so element handles kept across calls go stale."""
    return list(driver.execute_script(
        "return Array.from(document.querySelectorAll('.age-label'), e => e.innerText.trim())"))


def test_page_labels_a_photo_and_the_camera(server: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "face.png"
    Image.fromarray(face_scene(age=40, seed=1)).save(photo)
    camera = write_y4m(tmp_path / "camera.y4m", [face_scene(age=30, seed=2)] * 10)
    driver = chromium(tmp_path, camera)
    try:
        driver.get(server)
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "model-info").text.startswith("model: coral"))

        driver.find_element(By.ID, "photo").send_keys(str(photo))
        wait.until(lambda d: _labels(d))
        labels = _labels(driver)
        assert len(labels) == 1 and LABEL.match(labels[0]), labels
        driver.save_screenshot(str(tmp_path / "photo.png"))

        driver.find_element(By.ID, "start-camera").click()
        wait.until(lambda d: d.find_element(By.ID, "stop-camera").is_enabled())
        wait.until(lambda d: _labels(d) and float(d.find_element(By.ID, "fps").text) > 0)
        labels = _labels(driver)
        assert len(labels) == 1 and LABEL.match(labels[0]), labels
        assert re.match(r"^\d+ ms$", driver.find_element(By.ID, "ms").text)
        assert driver.find_element(By.ID, "status").text == ""
        shot = tmp_path / "camera.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 1000
        if not DOCS_SHOT.exists() or os.environ.get("ORDINALAGE_DOCS_SCREENSHOT") == "1":
            DOCS_SHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, DOCS_SHOT)
    finally:
        driver.quit()


def test_page_shows_the_reason_for_a_bad_upload(server: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    driver = chromium(tmp_path)
    try:
        driver.get(server)
        wait = WebDriverWait(driver, 60, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "model-info").text.startswith("model:"))
        driver.find_element(By.ID, "photo").send_keys(str(bad))
        wait.until(lambda d: d.find_element(By.ID, "status").text)
        assert "broken.png" in driver.find_element(By.ID, "status").text
        assert _labels(driver) == []
    finally:
        driver.quit()


def test_html_report_opens_from_disk_with_nothing_from_the_network(tiny_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from browser_tools import CHROMEDRIVER, CHROMIUM
    from selenium import webdriver
    from selenium.webdriver.support.ui import WebDriverWait

    from ordinalage.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run("coral"), run)  # evaluate a copy: the shared tiny run stays as it is
    assert main(["evaluate", str(run), "--device", "cpu", "--by", "gender", "--threshold", "18", "--report",
                 "--json"]) == 0
    page = run / "eval-test" / "report.html"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1200,900"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    try:
        driver.get(page.as_uri())
        WebDriverWait(driver, 30, poll_frequency=0.2).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        images = driver.execute_script(
            "return Array.from(document.images, i => [i.complete, i.naturalWidth, i.src.slice(0, 22)])")
        assert len(images) >= 5, images
        assert all(done and width > 0 and src == "data:image/png;base64," for done, width, src in images), images
        urls = driver.execute_script(
            "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'))"
            ".map(e => e.name).concat("
            "Array.from(document.querySelectorAll('[src],[href]'), e => e.getAttribute('src') || e.getAttribute('href')))")
        assert all(u.startswith(("data:", "file:", "#")) for u in urls), [u for u in urls if not u.startswith("data:")]
        assert driver.execute_script("return document.scripts.length") == 0
        assert "Test metrics" in driver.find_element("tag name", "body").text
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert errors == []
        driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
