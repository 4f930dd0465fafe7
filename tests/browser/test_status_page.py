"""The status page in a real headless browser, against a running system trained on data: the
browser is sent to the sign-in form, signs in with a viewer key typed into it, sees the page,
and signs out.

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

import httpx
import pytest

from recsys_shared.testing import API_KEYS, Stack, admin_headers, client_headers, wait_for_task

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
VIEWER_KEY = "test-viewer-key"
#: A gateway of its own for the browser, with a viewer key besides the stack's keys.
GATEWAY = "gateway-status"


def _ensure_browser() -> dict[str, str]:
    started = time.monotonic()
    done = subprocess.run(
        ["bash", str(ENSURE)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, f"scripts/ensure-browser.sh failed:\n{done.stdout}{done.stderr}"
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    sys.stderr.write(f"ensure-browser: {time.monotonic() - started:.1f} s\n")
    return found


def _traffic(gateway: str) -> None:
    """What an operator would see on a live system: served recommendations (cache misses, then
    hits), fresh events in the last minute, and a drift check."""
    with httpx.Client(base_url=gateway, timeout=10, headers=client_headers()) as http:
        for _ in range(2):
            for user in ("a3", "b5", "a7"):
                response = http.get(f"/v1/users/{user}/recommendations", params={"k": 10})
                assert response.status_code == 200, response.text
        events = [{"user_id": "a3", "item_id": f"A{index}", "type": "view"} for index in range(5)]
        assert http.post("/v1/events", json={"events": events}).status_code == 202
        check = http.post("/v1/drift/check", headers=admin_headers())
        assert check.status_code == 202, check.text
    wait_for_task(gateway, check.json()["task_id"])
    time.sleep(1.1)  # the events' second is complete: the throughput chart draws it


def test_the_status_page_shows_the_running_system(stack: Stack, trained: dict[str, object]) -> None:
    browser = _ensure_browser()
    stack.start(GATEWAY, env={"API_KEYS": f"{API_KEYS},{VIEWER_KEY}:viewer"})
    gateway = stack.url(GATEWAY)
    _traffic(gateway)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)

    done = subprocess.run(
        [
            browser["BROWSER_PYTHON"],
            str(DRIVE),
            f"{gateway}/v1/status",
            "--screenshot",
            str(SCREENSHOT),
            "--chromium",
            browser["CHROMIUM"],
            "--chromedriver",
            browser["CHROMEDRIVER"],
            "--sign-in-key-env",
            "STATUS_KEY",
            "--sign-out",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "STATUS_KEY": VIEWER_KEY},
    )

    assert done.returncode == 0, f"the browser could not load the page:\n{done.stderr}"
    page = json.loads(done.stdout)
    sys.stderr.write(f"browser {page['browser']}: {page['seconds']}\n")
    # Sent to the form first, signed in by typing the key: a session cookie, no key in a URL.
    assert page["signed_in_from"] == f"{gateway}/v1/status/login"
    assert page["url"] == f"{gateway}/v1/status"
    assert page["cookies"] == [
        {
            "name": "recsys_status_session",
            "path": "/v1/status",
            "httpOnly": True,
            "secure": False,  # plain http on loopback
            "sameSite": "Strict",
            "has_expiry": True,
        }
    ]
    elements = page["elements"]
    assert page["title"] == "recsys status"
    assert page["resources"] == []  # self-contained: the page fetched nothing
    assert page["console_errors"] == []
    # Model versions: the one the stack published is listed as active, with its precision.
    rows = elements["table-models"]["rows"]
    published = next(row for row in rows if row[0] == str(trained["version"]))
    assert published[1] == "active"
    precision = f"{trained['metrics']['precision_at_10']:.3f}"  # type: ignore[index]
    assert precision in published[5]
    assert elements["stat-active-version"]["value"] == str(trained["version"])
    assert elements["stat-active-precision"]["value"] == precision
    assert elements["spark-model-precision"]["points"] == len(rows)
    # Ingestion: the last minute's throughput, second by second, with the events just sent.
    assert elements["spark-accepted"]["points"] == 60
    assert elements["spark-accepted"]["max"] > 0
    assert elements["stat-lag"]["value"].isdigit()
    # Serving: this gateway's latency per route and its cache lookups.
    assert elements["table-latency"]["rows"]
    assert elements["stat-cache-hit-ratio"]["value"].endswith("%")
    # Drift: a check with values, or the line says there is none yet.
    for line in ("spark-drift-psi", "spark-hit-rate"):
        entry = elements[line]
        assert entry["points"] > 0 or "no data yet" in entry["text"], (line, entry)
    # Every sparkline is drawn by the browser, with as many points as it claims.
    for name, entry in elements.items():
        if entry.get("points"):
            assert entry["rendered"]["width"] > 0, name
            assert entry["rendered"]["points"] == entry["points"], name
    assert 0 < page["screenshot_bytes"] == SCREENSHOT.stat().st_size <= MAX_SCREENSHOT_BYTES
    # Signing out drops the cookie; the page then sends the browser to the form again.
    assert page["sign_out"] == {
        "url": f"{gateway}/v1/status/login",
        "cookies": [],
        "reopened": f"{gateway}/v1/status/login",
    }
