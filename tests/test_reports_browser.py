"""Open a rendered report in headless Chromium: no console errors, no network, every image loaded, hover works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_reports_fixture import write_results

from worldprobe.reports.build import build_report
from worldprobe.workspace import Workspace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _driver(profile: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium/chromedriver not installed (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")  # fmt: skip
def test_report_opens_offline_in_chromium(tmp_path):
    write_results(tmp_path, datasets=("world_place", "historical_figure"), prompts=("empty",), n=200)
    report = build_report(Workspace(tmp_path), tmp_path / "report")
    driver = _driver(tmp_path / "profile")
    try:
        driver.get_log("performance")  # drop the start page's own requests: only the report's count
        driver.get(report.index.as_uri())
        driver.execute_script("return document.readyState")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);"
        )
        assert len(images) == len(report.figures) > 0
        assert all(complete and width > 0 for _, complete, width in images), images

        assert driver.save_screenshot(str(tmp_path / "report-top.png"))
        frame = driver.find_element("css selector", ".frame[data-hover]")
        points = json.loads(driver.execute_script(
            "return document.getElementById(arguments[0].dataset.hover).textContent;", frame))  # fmt: skip
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", frame)
        box = driver.execute_script("const b = arguments[0].querySelector('img').getBoundingClientRect();"
                                    "return [b.left, b.top, b.width, b.height];", frame)  # fmt: skip
        x, y, label = points[0]
        _move_mouse(driver, box[0] + x * box[2], box[1] + y * box[3])
        tooltip = driver.find_element("id", "tooltip")
        assert tooltip.is_displayed()
        assert tooltip.text.split(" — ")[0] in {p[2].split(" — ")[0] for p in points}

        assert driver.save_screenshot(str(tmp_path / "report.png"))
        print(f"screenshots: {tmp_path / 'report-top.png'} {tmp_path / 'report.png'}")

        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
        events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
        requested = [  # every request the report's document made (Chromium's own pages have chrome:// documents)
            e["params"]["request"]["url"]
            for e in events
            if e["method"] == "Network.requestWillBeSent" and e["params"].get("documentURL", "").startswith("file://")
        ]
        assert any(url.endswith(".png") for url in requested), "the performance log did not record the images"
        offline = [url for url in requested if not url.startswith(("file://", "data:"))]
        assert not offline, offline
    finally:
        driver.quit()


def _move_mouse(driver, x: float, y: float) -> None:
    """Move the pointer to viewport pixel (x, y) through the DevTools protocol (a real mousemove event)."""
    driver.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
