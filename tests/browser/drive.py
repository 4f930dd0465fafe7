"""Open a page in Debian's headless chromium (Selenium + chromium-driver) and report what it shows.

Runs in .venv-browser (scripts/ensure-browser.sh), not in the project's venv:

    STATUS_KEY=… .venv-browser/bin/python tests/browser/drive.py URL --screenshot out.png \
        --sign-in-key-env STATUS_KEY --sign-out

With ``--sign-in-key-env``, the page is expected to send the browser to a sign-in form: the
key (read from that environment variable, so it is on no command line) is typed into the
form's ``key`` field and submitted, as a person would. ``--sign-out`` presses the page's
"Sign out" button at the end and opens URL again.

Prints one JSON object: the page title, every element with a ``data-testid`` (its
``data-points`` and ``data-max`` when it has them, what the browser drew of its sparkline,
and its text), the rows of every table with a ``data-testid``, the resources the page loaded
(it should load none), the browser's console errors, the cookies the browser holds (their
attributes, never their values), where signing in and out led, and the screenshot's size.
Exits non-zero, with the reason on stderr, if the browser cannot start or the page does not
load.
"""

from __future__ import annotations

import argparse
import json
import os
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
  const svg = element.tagName.toLowerCase() === 'svg' ? element : element.querySelector('svg');
  const line = svg && svg.querySelector('polyline');
  if (line) {
    const box = svg.getBoundingClientRect();
    entry.rendered = {width: box.width, height: box.height, points: line.points.numberOfItems};
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


def _loaded(driver: webdriver.Chrome, timeout: float) -> None:
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def _sign_in(driver: webdriver.Chrome, key: str, timeout: float) -> None:
    """Type the key into the sign-in form and submit it; wait for the page it leads to."""
    form = driver.find_element(By.CSS_SELECTOR, '[data-testid="sign-in"]')
    field = form.find_element(By.NAME, "key")
    field.send_keys(key)
    form.find_element(By.TAG_NAME, "button").click()
    # The sign-in form has neither: wait for the page, or for the form saying why not.
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_elements(
            By.CSS_SELECTOR, '[data-testid="table-models"], [data-testid="sign-in-error"]'
        )
    )
    _loaded(driver, timeout)


def _cookies(driver: webdriver.Chrome) -> list[dict[str, object]]:
    """The cookies the browser holds for the current page: attributes, not values."""
    return [
        {name: cookie.get(name) for name in ("name", "path", "httpOnly", "secure", "sameSite")}
        | {"has_expiry": "expiry" in cookie}
        for cookie in driver.get_cookies()
    ]


def _sign_out(driver: webdriver.Chrome, url: str, timeout: float) -> dict[str, object]:
    """Press "Sign out", then open the page again: where each leads, and the cookies left."""
    driver.find_element(By.XPATH, '//button[normalize-space()="Sign out"]').click()
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="sign-in"]')
    )
    _loaded(driver, timeout)
    after = driver.current_url
    cookies = _cookies(driver)
    driver.get(url)
    _loaded(driver, timeout)
    return {"url": after, "cookies": cookies, "reopened": driver.current_url}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--screenshot", type=Path, required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--sign-in-key-env", help="sign in with the key in this variable")
    parser.add_argument("--sign-out", action="store_true", help="sign out at the end")
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
        _loaded(driver, args.timeout)
        signed_in_from = None
        if args.sign_in_key_env:
            signed_in_from = driver.current_url
            _sign_in(driver, os.environ[args.sign_in_key_env], args.timeout)
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
        report["url"] = driver.current_url
        report["signed_in_from"] = signed_in_from
        report["cookies"] = _cookies(driver)
        if args.sign_out:
            report["sign_out"] = _sign_out(driver, args.url, args.timeout)
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
