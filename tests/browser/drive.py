"""Open a page in Debian's headless chromium (Selenium + chromium-driver) and report what it shows.

Runs in .venv-browser (scripts/ensure-browser.sh), not in the project's venv:

    .venv-browser/bin/python tests/browser/drive.py URL --screenshot out.png

Prints one JSON object: the page title, every element with a ``data-testid`` (its
``data-points`` and ``data-max`` when it has them, and its text), the rows of every table with a
``data-testid``, the resources the page loaded (it should load none), the browser's console
errors, and the screenshot's size. Exits non-zero, with the reason on stderr, if the browser
cannot start or the page does not load.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

_COLLECT = """
const found = {};
for (const element of document.querySelectorAll('[data-testid]')) {
  const entry = {tag: element.tagName.toLowerCase(),
                 text: element.textContent.trim().slice(0, 400)};
  if (element.dataset.points !== undefined) entry.points = Number(element.dataset.points);
  if (element.dataset.max !== undefined) entry.max = Number(element.dataset.max);
  if (element.dataset.value !== undefined) entry.value = element.dataset.value;
  if (element.tagName === 'TABLE') {
    entry.rows = [...element.querySelectorAll('tbody tr')].map(
      row => [...row.cells].map(cell => cell.textContent.trim()));
  }
  const svg = element.querySelector('svg');
  if (svg) {
    const box = svg.getBoundingClientRect();
    entry.rendered = {width: box.width, height: box.height,
                      markers: element.querySelectorAll('.marker, .bar').length};
  }
  found[element.dataset.testid] = entry;
}
return {
  title: document.title,
  elements: found,
  resources: performance.getEntriesByType('resource').map(entry => entry.name),
  height: document.documentElement.scrollHeight,
};
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--screenshot", type=Path, required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    profile = Path(tempfile.mkdtemp(prefix="status-page-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={args.width},{args.height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    started = time.monotonic()
    driver = None
    try:
        driver = webdriver.Chrome(options=options, service=Service(args.chromedriver))
        # The viewport is the screenshot: a fixed, small size for the docs.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": args.width, "height": args.height, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.set_page_load_timeout(args.timeout)
        launched = time.monotonic()
        driver.get(args.url)
        WebDriverWait(driver, args.timeout).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        if not driver.find_elements(By.CSS_SELECTOR, "[data-testid]"):
            sys.stderr.write(f"no data-testid on the page: {driver.page_source[:2000]}\n")
            return 1
        report = driver.execute_script(_COLLECT)
        loaded = time.monotonic()
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(args.screenshot)):
            sys.stderr.write("the screenshot could not be saved\n")
            return 1
        report["console_errors"] = [
            entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
        ]
        report["browser"] = driver.capabilities.get("browserVersion")
        report["screenshot_bytes"] = args.screenshot.stat().st_size
        report["seconds"] = {
            "launch": round(launched - started, 2),
            "load": round(loaded - launched, 2),
            "total": round(time.monotonic() - started, 2),
        }
        sys.stdout.write(json.dumps(report) + "\n")
        return 0
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
