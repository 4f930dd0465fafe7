"""The status page in a real headless browser, against a running system trained on data.

Debian's chromium is driven by Selenium through chromium-driver, from a virtualenv of its own
(.venv-browser): ``scripts/ensure-browser.sh`` installs both when missing (so ``make test`` works
on a fresh machine), ``tests/browser/drive.py`` opens the page there and prints what the browser
shows as JSON. A browser that cannot be installed or started fails the test; it is never skipped.
With UPDATE_SCREENSHOT=1 its screenshot replaces the one in docs/status-page.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from recsys_shared.testing import ADMIN_KEY, Stack, admin_headers, client_headers, wait_for_task

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENSURE = ROOT / "scripts" / "ensure-browser.sh"
DRIVE = ROOT / "tests" / "browser" / "drive.py"
# reports/ by default, so `make test` leaves the tree clean; UPDATE_SCREENSHOT=1 refreshes
# the one docs/status-page.md shows.
SCREENSHOT = (
    ROOT / "docs" / "img" / "status-page.png"
    if os.environ.get("UPDATE_SCREENSHOT") == "1"
    else ROOT / "reports" / "status-page.png"
)
MAX_SCREENSHOT_BYTES = 400_000


def _ensure_browser() -> dict[str, str]:
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(ENSURE)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"scripts/ensure-browser.sh failed:\n{done.stdout}{done.stderr}"
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    sys.stderr.write(f"ensure-browser: {time.monotonic() - started:.1f} s\n")
    return found


def _traffic(stack: Stack, trained: dict[str, object]) -> None:
    """What an operator would see on a live system: served recommendations (cache misses, then
    hits), fresh events in the last minute, and a drift check."""
    with httpx.Client(base_url=stack.gateway, timeout=10, headers=client_headers()) as http:
        for _ in range(2):
            for user in ("a3", "b5", "a7"):
                response = http.get(f"/v1/users/{user}/recommendations", params={"k": 10})
                assert response.status_code == 200, response.text
        events = [{"user_id": "a3", "item_id": f"A{index}", "type": "view"} for index in range(5)]
        assert http.post("/v1/events", json={"events": events}).status_code == 202
        check = http.post("/v1/drift/check", headers=admin_headers())
        assert check.status_code == 202, check.text
    wait_for_task(stack.gateway, check.json()["task_id"])
    time.sleep(1.1)  # the events' second is complete: the throughput chart draws it


def test_the_status_page_shows_the_running_system(stack: Stack, trained: dict[str, object]) -> None:
    browser = _ensure_browser()
    _traffic(stack, trained)
    url = f"{stack.gateway}/v1/status?key={quote(ADMIN_KEY)}"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)

    done = subprocess.run(
        [
            browser["BROWSER_PYTHON"],
            str(DRIVE),
            url,
            "--screenshot",
            str(SCREENSHOT),
            "--chromium",
            browser["CHROMIUM"],
            "--chromedriver",
            browser["CHROMEDRIVER"],
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, f"the browser could not load the page:\n{done.stderr}"
    page = json.loads(done.stdout)
    sys.stderr.write(f"browser {page['browser']}: {page['seconds']}\n")
    elements = page["elements"]
    assert page["title"] == "recsys status"
    assert page["resources"] == []  # self-contained: the page fetched nothing
    assert page["console_errors"] == []
    # Model versions: the one the stack published is listed, and drawn with its baseline.
    versions = [row[0] for row in elements["table-models"]["rows"]]
    assert str(trained["version"]) in versions, versions
    published = next(
        row for row in elements["table-models"]["rows"] if row[0] == str(trained["version"])
    )
    assert published[1] == "active"
    assert f"{trained['metrics']['precision_at_10']:.3f}" in published[5]  # type: ignore[index]
    assert elements["chart-model-precision"]["points"] >= 2
    # Ingestion: the last minute's throughput, with the events just sent.
    assert elements["chart-ingestion"]["points"] > 0
    assert elements["chart-ingestion"]["max"] > 0
    assert elements["stat-lag"]["value"].isdigit()
    # Serving: this gateway's latency per route and its cache lookups.
    assert elements["chart-latency"]["points"] > 0
    assert elements["chart-cache"]["points"] > 0
    assert elements["stat-cache-hit-ratio"]["value"].endswith("%")
    # Drift: a report with points, or the chart says there is none yet.
    for chart in ("chart-drift-psi", "chart-hit-rate"):
        entry = elements[chart]
        assert entry["points"] > 0 or "no data yet" in entry["text"], (chart, entry)
    # Every chart is drawn by the browser, with as many markers as it claims.
    for name, entry in elements.items():
        if "points" in entry:
            assert entry["rendered"]["width"] > 0, name
            assert entry["rendered"]["markers"] == entry["points"], name
    assert 0 < page["screenshot_bytes"] == SCREENSHOT.stat().st_size <= MAX_SCREENSHOT_BYTES
