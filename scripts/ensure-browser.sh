#!/usr/bin/env bash
# Installs what the headless-browser tests (tests/browser) need, once:
#   - Debian's chromium and chromium-driver (scripts/apt-install.sh, as root) when
#     /usr/bin/chromium or /usr/bin/chromedriver is missing;
#   - the Python driver (selenium, pinned in tests/browser/requirements.txt) into BROWSER_VENV
#     (default .venv-browser at the root), with uv when there is one, else python3 -m venv + pip.
# Nothing is downloaded besides Debian and PyPI packages: no browser build of Selenium's or
# Playwright's own. Safe to run again: it returns at once when everything is in place.
# Prints the paths found as KEY=value lines (CHROMIUM, CHROMEDRIVER, BROWSER_PYTHON).
set -euo pipefail
# shellcheck source=lib/tool-venv.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tool-venv.sh"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROWSER_VENV="${BROWSER_VENV:-$ROOT/.venv-browser}"
REQUIREMENTS="$ROOT/tests/browser/requirements.txt"
CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

say() { printf '%s\n' "$*" >&2; }

ensure_chromium() {
    local wanted=()
    [[ -x "$CHROMIUM" ]] || wanted+=(chromium)
    [[ -x "$CHROMEDRIVER" ]] || wanted+=(chromium-driver)
    [[ ${#wanted[@]} -eq 0 ]] || "$ROOT/scripts/apt-install.sh" "${wanted[@]}"
}

ensure_venv() {
    say "the browser driver's venv: ${BROWSER_VENV#"$ROOT"/} (tests/browser/requirements.txt)"
    tool_venv "$BROWSER_VENV" "$REQUIREMENTS"
}

ensure_chromium
ensure_venv
"$CHROMIUM" --version >&2
printf 'CHROMIUM=%s\nCHROMEDRIVER=%s\nBROWSER_PYTHON=%s\n' \
    "$CHROMIUM" "$CHROMEDRIVER" "$BROWSER_VENV/bin/python"
